package mailaddr

import "testing"

func TestParsePattern(t *testing.T) {
	for in, want := range map[string]string{
		"*@Example.org":      "*@example.org",
		"example.org.":       "*@example.org",
		"CEO@example.org":    "ceo@example.org",
		"*@*.example.org":    "*@*.example.org",
		"*.example.org":      "*@*.example.org",
		".example.org":       "*@*.example.org",
		"user@*.example.org": "",
		"*":                  "",
		"@example.org":       "",
		"a b@example.org":    "",
		"*@org":              "",
		"":                   "",
	} {
		p, err := ParsePattern(in)
		got := ""
		if err == nil {
			got = p.String()
		}
		if got != want {
			t.Errorf("ParsePattern(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func FuzzParsePattern(f *testing.F) {
	for _, s := range []string{"*@example.org", "u@x.example", "*.a.example", "\x00@"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePattern(s)
		if err != nil {
			return
		}
		// The canonical form parses to the same pattern.
		q, err := ParsePattern(p.String())
		if err != nil || q != p {
			t.Fatalf("%q -> %q -> %+v, %v", s, p.String(), q, err)
		}
	})
}
