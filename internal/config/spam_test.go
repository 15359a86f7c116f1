package config

import (
	"strings"
	"testing"
)

// The spam filter's keys: each bad value is refused at its own key, with
// its position, and the store's path follows paths.postkit_run.
func TestMilterSpam(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       string // the error; "" = valid
	}{
		{"defaults", "", ""},
		{"the reference's settings", "milter:\n  spam:\n    rewrite_subject: \"*****SPAM*****\"\n    report: all\n    whitelist_from: [\"*@exemple.fr\"]\n", ""},
		{"reject below required", "milter:\n  spam:\n    required_score: 5.0\n    reject_score: 4\n",
			`x.yaml:6:19: milter.spam.reject_score: 4.0 is not above required_score (5.0): spam would be refused before it is marked (e.g. 15.0, well above required_score, or 0 to refuse none)`},
		{"required not positive", "milter:\n  spam:\n    required_score: 0\n", "x.yaml:5:21: milter.spam.required_score: must be above 0"},
		{"scan size", "milter:\n  spam:\n    max_scan_bytes: 100\n", "x.yaml:5:21: milter.spam.max_scan_bytes: 100 bytes: want from 1024"},
		{"time budget past Postfix's", "milter:\n  spam:\n    time_budget: 5m\n", "milter.spam.time_budget: 5m0s reaches Postfix's milter_content_timeout"},
		{"dns budget above the time budget", "milter:\n  spam:\n    time_budget: 2s\n    dns_budget: 3s\n", "x.yaml:6:17: milter.spam.dns_budget: want 0 < dns_budget (3s) <= time_budget (2s)"},
		{"autolearn thresholds crossed", "milter:\n  spam:\n    bayes: {autolearn_spam: 12, autolearn_ham: 13}\n", "milter.spam.bayes.autolearn_ham: autolearn_ham (13.0) must be below autolearn_spam (12.0)"},
		{"autolearn spam below required", "milter:\n  spam:\n    bayes: {autolearn_spam: 3, autolearn_ham: 0}\n", "milter.spam.bayes.autolearn_spam: 3.0 is below required_score"},
		{"min trained", "milter:\n  spam:\n    bayes: {min_trained: 0}\n", "milter.spam.bayes.min_trained: must be at least 1"},
		{"expiry too short", "milter:\n  spam:\n    bayes: {expiry: 1h}\n", "milter.spam.bayes.expiry: 1h0m0s: want 0 or at least 24h"},
		{"expiry never", "milter:\n  spam:\n    bayes: {expiry: 0s}\n", ""},
		{"pattern without @", "milter:\n  spam:\n    whitelist_from: [exemple.fr]\n", `x.yaml:5:22: milter.spam.whitelist_from[0]: "exemple.fr" has no @: write *@exemple.fr for every address of a domain`},
		{"pattern with a space", "milter:\n  spam:\n    blacklist_from: [\"a b@x.fr\"]\n", `milter.spam.blacklist_from[0]: "a b@x.fr" is not an address pattern`},
		{"subject prefix on two lines", "milter:\n  spam:\n    rewrite_subject: \"a\\nBcc: x@y.fr\"\n", "milter.spam.rewrite_subject: \"a\\nBcc: x@y.fr\" holds a line break"},
		{"report", "milter:\n  spam:\n    report: everything\n", `milter.spam.report: "everything" is not allowed (one of: none, spam, all)`},
		{"on_error", "milter:\n  spam:\n    on_error: reject\n", `milter.spam.on_error: "reject" is not allowed (one of: accept, tempfail)`},
		{"store path", "milter:\n  spam:\n    bayes: {path: bayes.db}\n", `milter.spam.bayes.path: "bayes.db" is not an absolute path`},
		{"learn user", "milter:\n  enabled: true\n  spam:\n    learn: {user: \"\"}\n", "milter.spam.learn.user: is required for learning from moves"},
		{"learn user, learning off", "milter:\n  enabled: true\n  spam:\n    learn: {user: \"\", imapsieve: false}\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Parse("x.yaml", []byte(minimal+tt.yaml))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Parse: %v, want no error", err)
			case tt.want == "":
			case err == nil:
				t.Fatalf("Parse = nil error, want one containing %q", tt.want)
			case !strings.Contains(err.Error(), tt.want):
				t.Fatalf("Parse error\n%s\nwant it to contain\n%s", err, tt.want)
			}
		})
	}
	c, _, err := Parse("x.yaml", []byte(minimal+"paths: {postkit_run: /srv/postkit/}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Milter.Spam.Bayes.Path; got != "/srv/postkit/bayes.sqlite" {
		t.Errorf("bayes.path = %q, want it under paths.postkit_run", got)
	}
	for _, tc := range []struct {
		yaml string
		want bool
	}{
		{"", false}, // the milter is off by default
		{"milter: {enabled: true}\n", true},
		{"milter: {enabled: true, spam: {enabled: false}}\n", false},
		{"milter: {enabled: true, spam: {bayes: {enabled: false}}}\n", false},
		{"milter: {enabled: true}\nsieve: {enabled: false}\n", false},
		{"milter: {enabled: true, spam: {learn: {imapsieve: false}}}\n", false},
	} {
		c, _, err := Parse("x.yaml", []byte(minimal+tc.yaml))
		if err != nil {
			t.Fatal(err)
		}
		if got := c.LearnFromMoves(); got != tc.want {
			t.Errorf("%q: LearnFromMoves = %v, want %v", tc.yaml, got, tc.want)
		}
	}
}
