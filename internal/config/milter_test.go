package config

import (
	"strings"
	"testing"
)

// The milter's scrub rules: every action the scrub filter knows is accepted,
// and a replace rule needs its one-line value.
func TestMilterScrubRules(t *testing.T) {
	tests := []struct {
		name, rule string
		want       string // substring of the error; "" = valid
	}{
		{"delete", "{header: X-Mailer, action: delete}", ""},
		{"redact-received", "{header: Received, match: \"with ESMTPSA\", action: redact-received}", ""},
		{"replace", "{header: X-Client, action: replace, with: hidden}", ""},
		{"replace without with", "{header: X-Client, action: replace}", "milter.scrub.rules[0].with"},
		{"multi-line with", "{header: X-Client, action: replace, with: \"a\\nb\"}", "milter.scrub.rules[0].with: \"a\\nb\" holds a line break"},
		{"unknown action", "{header: X-Client, action: hide}", "milter.scrub.rules[0].action"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			y := minimal + "milter:\n  scrub:\n    rules:\n      - " + tt.rule + "\n"
			cfg, _, err := Parse("x.yaml", []byte(y))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Parse: %v, want no error", err)
			case tt.want == "":
				if n := len(cfg.Milter.Scrub.Rules); n != 1 {
					t.Fatalf("%d rules parsed, want 1", n)
				}
			case err == nil:
				t.Fatalf("Parse = nil error, want one containing %q", tt.want)
			case !strings.Contains(err.Error(), tt.want):
				t.Fatalf("Parse error %q, want it to contain %q", err, tt.want)
			}
		})
	}
}
