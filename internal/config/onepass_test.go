package config

import (
	"errors"
	"strings"
	"testing"
)

// One run reports every problem of a file, decoding and validation alike,
// in file order, each at its line.
func TestErrorsInOnePass(t *testing.T) {
	yaml := `hostname: mail.exemple.fr
domains: [exemple.fr]
message_size_limit: 10
mailbox:
  uid: [1]
  layot: "%d/%n"
policy:
  time_budget: 0s
milter:
  drain: soon
`
	_, _, err := Parse("postkit.yaml", []byte(yaml))
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatalf("Parse = %v; want Errors", err)
	}
	want := []string{
		"postkit.yaml:3:21: message_size_limit: 10 bytes is too small",
		"postkit.yaml:5:8: mailbox.uid: want a whole number, got a list",
		`postkit.yaml:6:3: mailbox.layot: unknown key "layot"`,
		"postkit.yaml:8:16: policy.time_budget: must be positive",
		`postkit.yaml:10:10: milter.drain: "soon" is not a duration`,
	}
	if len(errs) != len(want) {
		t.Errorf("got %d errors; want %d:\n%v", len(errs), len(want), err)
	}
	for i, w := range want {
		if i >= len(errs) || !strings.HasPrefix(errs[i].Error(), w) {
			t.Errorf("error %d = %v; want prefix %q", i, errs[min(i, len(errs)-1)], w)
		}
	}
	// The uid that failed to decode is not judged again by Validate.
	if strings.Count(err.Error(), "mailbox.uid") != 1 {
		t.Errorf("mailbox.uid reported more than once:\n%v", err)
	}
}

// domains: [] would write an empty postmaster_address; it is refused like
// a missing domains key.
func TestEmptyDomainsRefused(t *testing.T) {
	for _, yaml := range []string{"hostname: mail.exemple.fr\ndomains: []\n", "hostname: mail.exemple.fr\n"} {
		_, _, err := Parse("postkit.yaml", []byte(yaml))
		if err == nil || !strings.Contains(err.Error(), "domains: is required (give at least one item; see 'postkit config example')") {
			t.Errorf("Parse(%q) = %v; want domains is required", yaml, err)
		}
	}
}
