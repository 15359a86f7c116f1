package config

import (
	"strings"
	"testing"
)

// sender_logins: addresses and whole domains, each with the logins that may
// use them; every bad value is refused at its position with a hint.
func TestSenderLogins(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string // substrings of the error; nil = valid
	}{
		{"address", "sender_logins:\n  - {sender: Billing@Exemple.fr, logins: [Test@exemple.fr]}\n", nil},
		{"domain", "sender_logins:\n  - {sender: \"@lettre.exemple.fr\", logins: [a@exemple.fr, b@exemple.fr]}\n", nil},
		{"bare domain", "sender_logins:\n  - {sender: exemple.org, logins: [a@exemple.fr]}\n",
			[]string{"x.yaml:4:14:", "sender_logins[0].sender", "write @exemple.org"}},
		{"bad domain", "sender_logins:\n  - {sender: \"@exemple\", logins: [a@exemple.fr]}\n", []string{"sender_logins[0].sender", "not @ and a valid domain"}},
		{"line break", "sender_logins:\n  - {sender: \"a@b.fr\\nmynetworks = 0.0.0.0/0\", logins: [a@exemple.fr]}\n", []string{"sender_logins[0].sender", "holds a line break"}},
		{"no logins", "sender_logins:\n  - {sender: a@exemple.fr}\n", []string{"sender_logins[0].logins", "is required"}},
		{"bad login", "sender_logins:\n  - {sender: a@exemple.fr, logins: [a@exemple.fr, \"x'); --\"]}\n", []string{"x.yaml:4:51:", "sender_logins[0].logins[1]", "is not an address"}},
		{"catch-all login", "sender_logins:\n  - {sender: a@exemple.fr, logins: [\"@exemple.fr\"]}\n", []string{"sender_logins[0].logins[0]"}},
		{"unowned_from", "milter:\n  dkim:\n    unowned_from: unsigned\n", nil},
		{"bad unowned_from", "milter:\n  dkim:\n    unowned_from: sign\n", []string{"milter.dkim.unowned_from", "one of: reject, unsigned"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, _, err := Parse("x.yaml", []byte(minimal+tt.yaml))
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				for _, g := range cfg.SenderLogins {
					if g.Sender != strings.ToLower(g.Sender) || strings.Join(g.Logins, ",") != strings.ToLower(strings.Join(g.Logins, ",")) {
						t.Errorf("not folded to lower case: %+v", g)
					}
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse succeeded; want an error with %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
	cfg, _, err := Parse("x.yaml", []byte(minimal))
	if err != nil || cfg.Milter.DKIM.UnownedFrom != "reject" || len(cfg.SenderLogins) != 0 {
		t.Errorf("defaults: unowned_from %q, sender_logins %v, %v; want reject and none", cfg.Milter.DKIM.UnownedFrom, cfg.SenderLogins, err)
	}
}

// The examples printed in examples/postkit.yaml parse.
func TestSenderLoginsExample(t *testing.T) {
	var items []string
	for _, line := range strings.Split(string(Example()), "\n") {
		if strings.HasPrefix(line, "#   - {sender:") {
			items = append(items, "  - "+strings.TrimPrefix(line, "#   - "))
		}
	}
	if len(items) == 0 {
		t.Fatal("no sender_logins example in the example file")
	}
	cfg, _, err := Parse("x.yaml", []byte(minimal+"sender_logins:\n"+strings.Join(items, "\n")+"\n"))
	if err != nil || len(cfg.SenderLogins) != len(items) {
		t.Fatalf("the examples do not parse: %v", err)
	}
}
