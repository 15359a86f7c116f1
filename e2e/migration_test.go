package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postkit/postkit/e2e/harness"
)

// legacyRules is a user's own Sieve script as a mail client wrote it over
// ManageSieve on the reference installation.
const legacyRules = `require ["fileinto"];
# Written by the user's mail client (ManageSieve).
if header :contains "X-Projet" "acme" {
  fileinto "Projets.Clients.Acme";
}
`

// A mailbox laid out the reference installation's way (Maildir++ folders
// nested with its separator '.', the user's Sieve scripts in ~/sieve with
// the active one at ~/sieve/.dovecot.sieve, a symbolic link as ManageSieve
// leaves it), copied in place as its documentation recommends for a
// migration, keeps working under postkit: the user logs in over IMAP and
// sees the same folders and separator, their script files mail on
// delivery, and ManageSieve lists, shows and changes it, at the same place.
func TestReferenceMailboxMigrated(t *testing.T) {
	s := harness.Need(t)
	harness.NeedProgram(t, "curl")
	c := ctx(t)
	user, pw := "legacy@"+harness.Domain, "Legacy-pw-2024"
	if err := s.AddUser(c, user, pw); err != nil {
		t.Fatal(err)
	}
	home := s.Maildir(user, "")
	oldTok := harness.Token()
	for _, f := range []string{"", ".Projets", ".Projets.Clients", ".Projets.Clients.Acme", ".Sent", ".Trash"} {
		for _, sub := range []string{"cur", "new", "tmp"} {
			if err := os.MkdirAll(filepath.Join(home, f, sub), 0o700); err != nil {
				t.Fatal(err)
			}
		}
	}
	old := harness.Message("client@"+harness.OutsideDomain, user, oldTok)
	if err := os.WriteFile(filepath.Join(home, ".Projets.Clients.Acme", "cur", "1700000000.M1P1.ancien:2,S"), old, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(home, "sieve"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, "sieve", "rules.sieve"), []byte(legacyRules), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("rules.sieve", filepath.Join(home, "sieve", ".dovecot.sieve")); err != nil {
		t.Fatal(err)
	}
	// Owned by vmail, as Dovecot would have made them (the domain's
	// directory too, when this test made it).
	owner := fmt.Sprintf("%d:%d", s.UID, s.GID)
	for _, args := range [][]string{{"-hR", owner, home}, {owner, filepath.Dir(home)}} {
		if out, err := exec.Command("chown", args...).CombinedOutput(); err != nil {
			t.Fatalf("chown: %v %s", err, out)
		}
	}

	// IMAP: the same folders, with the reference's separator.
	r, err := s.IMAP(c, false, user, pw, "", `LIST "" "*"`)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"." Projets` + "\r", `"." Projets.Clients` + "\r", `"." Projets.Clients.Acme` + "\r", `"." INBOX` + "\r"} {
		if r.Exit != 0 || !strings.Contains(r.Stdout, want) {
			t.Errorf("IMAP LIST lacks %q: exit %d, stderr %q:\n%s", want, r.Exit, r.Stderr, r.Stdout)
		}
	}
	if strings.Contains(r.Stdout, `"/"`) {
		t.Errorf("IMAP LIST shows the separator /:\n%s", r.Stdout)
	}
	r, err = s.IMAP(c, false, user, pw, "Projets.Clients.Acme", `SEARCH SUBJECT "`+oldTok+`"`)
	if err != nil {
		t.Fatal(err)
	}
	if m := searchRE.FindStringSubmatch(r.Stdout); r.Exit != 0 || m == nil || strings.TrimSpace(m[1]) == "" {
		t.Errorf("the old message is not found in Projets.Clients.Acme: exit %d, stdout %q, stderr %q", r.Exit, r.Stdout, r.Stderr)
	}

	// Delivery: the user's own script still runs (after the global one).
	deliver(t, s, user, user, "Projets.Clients.Acme", harness.Token(), "X-Projet: acme")
	deliver(t, s, user, user, "", harness.Token(), "X-Projet: autre")

	// ManageSieve answers, sees the script as active, and activating
	// another keeps the active script at the reference's location.
	sc, err := s.ManageSieve()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if !strings.Contains(sc.Capabilities["SIEVE"], "fileinto") || !strings.Contains(sc.Capabilities["SASL"], "PLAIN") {
		t.Errorf("ManageSieve capabilities after STARTTLS: %v", sc.Capabilities)
	}
	if err := sc.Login(user, pw); err != nil {
		t.Fatal(err)
	}
	lines, err := sc.Cmd("LISTSCRIPTS")
	if err != nil || strings.Join(lines, "\n") != `"rules" ACTIVE` {
		t.Errorf("LISTSCRIPTS = %q, %v; want the one script, active", lines, err)
	}
	lines, err = sc.Cmd(`GETSCRIPT "rules"`)
	if err != nil || len(lines) != 1 || lines[0] != legacyRules {
		t.Errorf("GETSCRIPT rules = %q, %v", lines, err)
	}
	if err := sc.PutScript("classement", strings.ReplaceAll(legacyRules, `fileinto "Projets.Clients.Acme"`, `fileinto "Projets"`)); err != nil {
		t.Fatal(err)
	}
	if _, err := sc.Cmd(`SETACTIVE "classement"`); err != nil {
		t.Fatal(err)
	}
	if link, err := os.Readlink(filepath.Join(home, "sieve", ".dovecot.sieve")); err != nil || filepath.Base(link) != "classement.sieve" {
		t.Errorf("~/sieve/.dovecot.sieve -> %q, %v; want the script activated over ManageSieve", link, err)
	}
	if _, err := os.Lstat(filepath.Join(home, ".dovecot.sieve")); err == nil {
		t.Errorf("ManageSieve made ~/.dovecot.sieve: the active script left the reference's location")
	}
	deliver(t, s, user, user, "Projets", harness.Token(), "X-Projet: acme")
}

// The reference's documentation also has administrators write a user's
// script straight to ~/sieve/.dovecot.sieve (a plain file, no ManageSieve):
// it keeps running too, and ManageSieve still answers for that user.
func TestReferencePlainActiveScript(t *testing.T) {
	s := harness.Need(t)
	c := ctx(t)
	user, pw := "plainsieve@"+harness.Domain, "Plain-pw-2024"
	if err := s.AddUser(c, user, pw); err != nil {
		t.Fatal(err)
	}
	home := s.Maildir(user, "")
	for _, f := range []string{"", ".Projets"} {
		for _, sub := range []string{"cur", "new", "tmp"} {
			if err := os.MkdirAll(filepath.Join(home, f, sub), 0o700); err != nil {
				t.Fatal(err)
			}
		}
	}
	os.MkdirAll(filepath.Join(home, "sieve"), 0o700)
	script := strings.ReplaceAll(legacyRules, `fileinto "Projets.Clients.Acme"`, `fileinto "Projets"`)
	if err := os.WriteFile(filepath.Join(home, "sieve", ".dovecot.sieve"), []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	owner := fmt.Sprintf("%d:%d", s.UID, s.GID)
	for _, args := range [][]string{{"-hR", owner, home}, {owner, filepath.Dir(home)}} {
		if out, err := exec.Command("chown", args...).CombinedOutput(); err != nil {
			t.Fatalf("chown: %v %s", err, out)
		}
	}
	deliver(t, s, user, user, "Projets", harness.Token(), "X-Projet: acme")
	deliver(t, s, user, user, "", harness.Token(), "X-Projet: autre")
	sc, err := s.ManageSieve()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if err := sc.Login(user, pw); err != nil {
		t.Fatal(err)
	}
	if _, err := sc.Cmd("LISTSCRIPTS"); err != nil {
		t.Errorf("LISTSCRIPTS: %v", err)
	}
}
