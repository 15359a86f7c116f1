package provision

import (
	"fmt"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"testing"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/internal/testlib"
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

// On the live system the accounts are created: the mailbox owner with
// postkit.yaml's ids, the daemons' account in Postfix's group; a second
// run changes nothing.
func TestAccountsCreated(t *testing.T) {
	testlib.NeedRoot(t)
	testlib.NeedBinary(t, "useradd", "groupadd", "userdel", "groupdel")
	const mbox, daemon = "postkit-t-vmail", "postkit-t-daemon"
	cleanup := func() {
		for _, n := range []string{mbox, daemon} {
			exec.Command("userdel", n).Run()
			exec.Command("groupdel", n).Run()
		}
	}
	cleanup()
	t.Cleanup(cleanup)
	// A free id: above the range of this host's accounts.
	id := 3917
	for lookupUserID(id) || lookupGroupID(id) {
		id++
	}
	cfg := accountsConfig(t, fmt.Sprintf("mailbox: {user: %s, uid: %d, gid: %d}\nmilter: {spam: {learn: {user: %s}}}\n", mbox, id, id, daemon))
	r := &run{cfg: cfg, o: Options{Root: "/"}, live: true, note: func(string, ...any) {}}
	s := &Step{}
	if err := r.accounts(s); err != nil {
		t.Fatal(err)
	}
	if !s.Changed || lookupUser(mbox) != id || lookupGroup(mbox) != id || lookupUser(daemon) < 0 {
		t.Fatalf("accounts not created: %+v", s)
	}
	if lookupGroup("postfix") >= 0 && !inGroup(daemon, "postfix") {
		t.Errorf("%s is not in group postfix", daemon)
	}
	s = &Step{}
	if err := r.accounts(s); err != nil || s.Changed {
		t.Errorf("second run: %v %+v", err, s)
	}
}

func lookupUserID(id int) bool {
	_, err := user.LookupId(strconv.Itoa(id))
	return err == nil
}

func lookupGroupID(id int) bool {
	_, err := user.LookupGroupId(strconv.Itoa(id))
	return err == nil
}
