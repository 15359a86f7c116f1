package templates

import (
	"strings"
	"testing"

	"github.com/postkit/postkit/internal/config"
)

// With the state in PostgreSQL, Dovecot's learning services teach the
// shared Bayes store (the URL and the password file, never a password),
// and a DSN that would split the command line is refused.
func TestLearnServiceUsesSharedState(t *testing.T) {
	for _, tc := range []struct{ state, want string }{
		{"", "spam learn --bayes /var/lib/postkit/bayes.sqlite --expiry 4320h0m0s --spam"},
		{"state: {driver: postgresql, dsn: \"postgres://postkit@db.example.org:5432/postkit?sslmode=verify-full\", password_file: /etc/postkit/pg.pass}",
			"spam learn --bayes-dsn postgres://postkit@db.example.org:5432/postkit?sslmode=verify-full --bayes-password-file /etc/postkit/pg.pass --expiry 4320h0m0s --spam"},
	} {
		y := "hostname: mail.exemple.fr\ndomains: [exemple.fr]\npaths: {postkit_run: /var/lib/postkit}\nmilter: {enabled: true, spam: {enabled: true, bayes: {enabled: true}, learn: {imapsieve: true}}}\nsieve: {enabled: true}\n" + tc.state + "\n"
		cfg, _, err := config.Parse("state.yaml", []byte(y))
		if err != nil {
			t.Fatal(err)
		}
		files, err := Render(cfg)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, f := range files {
			if strings.HasSuffix(f.Path, "90-imapsieve.conf") {
				found = true
				if !strings.Contains(string(f.Data), tc.want) {
					t.Errorf("%s: 90-imapsieve.conf lacks %q:\n%s", tc.state, tc.want, f.Data)
				}
			}
		}
		if !found {
			t.Fatalf("%s: no 90-imapsieve.conf rendered", tc.state)
		}
	}
	_, _, err := config.Parse("bad.yaml", []byte("hostname: mail.exemple.fr\ndomains: [exemple.fr]\nstate: {driver: postgresql, dsn: \"host=db user=x\"}\n"))
	if err == nil || !strings.Contains(err.Error(), "state.dsn") {
		t.Errorf("a key=value DSN with spaces = %v; want an error at state.dsn", err)
	}
}
