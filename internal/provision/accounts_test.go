package provision

import (
	"strings"
	"testing"

	"github.com/postkit/postkit/internal/config"
)

func accountsConfig(t *testing.T, yaml string) *config.Config {
	t.Helper()
	c, _, err := config.Parse("t.yaml", []byte("hostname: mail.exemple.fr\ndomains: [exemple.fr]\n"+yaml))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// On the live system, missing accounts are created (here: reported, with
// --check); an account that exists with other ids than postkit.yaml's is
// an error that says what to change. Under another root, accounts are only
// reported.
func TestAccounts(t *testing.T) {
	cfg := accountsConfig(t, "mailbox: {user: postkit-no-such-vmail, uid: 3999, gid: 3999}\nmilter: {spam: {learn: {user: postkit-no-such-daemon}}}\n")
	r := &run{cfg: cfg, o: Options{Root: "/", Check: true}, live: true, note: func(string, ...any) {}}
	s := &Step{}
	if err := r.accounts(s); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(s.Detail, "\n")
	for _, want := range []string{"would create group postkit-no-such-vmail (uid 3999, gid 3999)", "would create user postkit-no-such-vmail",
		"would create group postkit-no-such-daemon", "would create user postkit-no-such-daemon"} {
		if !strings.Contains(got, want) {
			t.Errorf("accounts --check lacks %q:\n%s", want, got)
		}
	}
	if !s.Changed || lookupUser("postkit-no-such-vmail") >= 0 {
		t.Errorf("--check: changed=%v, or it created the account", s.Changed)
	}

	wrong := accountsConfig(t, "mailbox: {user: daemon, uid: 3000, gid: 1}\n")
	r = &run{cfg: wrong, o: Options{Root: "/", Check: true}, live: true, note: func(string, ...any) {}}
	if err := r.accounts(&Step{}); err == nil || !strings.Contains(err.Error(), "user daemon exists with uid 1, postkit.yaml says 3000") {
		t.Errorf("daemon as mailbox.user with uid 3000: %v", err)
	}

	r = &run{cfg: cfg, o: Options{Root: "/srv/img"}, live: false, note: func(string, ...any) {}}
	s = &Step{}
	if err := r.accounts(s); err != nil || s.Changed || !strings.Contains(strings.Join(s.Detail, "\n"), "not created under --root /srv/img") {
		t.Errorf("under --root: %v %+v", err, s)
	}
}
