package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/internal/pgtest"
	"github.com/postkit/postkit/internal/testlib"
	"github.com/postkit/postkit/sqlmaps"
	"github.com/postkit/postkit/sqlmaps/pwhash"
)

type runResult struct {
	out, errOut string
	err         error
	exit        int // -1 when the command did not call exit
}

// run executes a fresh command tree (no flag state shared between runs).
func run(t *testing.T, stdin string, args ...string) runResult {
	t.Helper()
	res := runResult{exit: -1}
	var root *cobra.Command
	if args[0] == "lookup" {
		root = newLookupCommand(func(code int) { res.exit = code })
	} else {
		root = newDBCommand()
	}
	var o, e bytes.Buffer
	root.SetArgs(args[1:])
	root.SetIn(strings.NewReader(stdin))
	root.SetOut(&o)
	root.SetErr(&e)
	root.SilenceUsage, root.SilenceErrors = true, true
	res.err = root.ExecuteContext(context.Background())
	res.out, res.errOut = o.String(), e.String()
	return res
}

func TestDBCommands(t *testing.T) {
	for _, driver := range []string{sqlmaps.DriverSQLite, sqlmaps.DriverPostgreSQL} {
		t.Run(driver, func(t *testing.T) { testDBCommands(t, driver) })
	}
}

// dbTarget returns the arguments naming a new, empty database of driver
// (--db FILE, or -c postkit.yaml with a PostgreSQL DSN) and its source.
func dbTarget(t *testing.T, driver string) ([]string, sqlmaps.Source) {
	dir := t.TempDir()
	if driver == sqlmaps.DriverSQLite {
		db := filepath.Join(dir, "bdd", "postfix.sqlite")
		return []string{"--db", db}, sqlmaps.Source{Driver: driver, Path: db}
	}
	dsn := pgtest.Start(t).CreateDatabase("postkit")
	yaml := filepath.Join(dir, "postkit.yaml")
	os.WriteFile(yaml, []byte("hostname: mail.exemple.fr\ndomains: [exemple.fr]\ndatabase: {driver: postgresql, dsn: \""+dsn+"\"}\n"), 0o644)
	return []string{"-c", yaml}, sqlmaps.Source{Driver: driver, DSN: dsn}
}

func testDBCommands(t *testing.T, driver string) {
	target, src := dbTarget(t, driver)
	a := func(rest ...string) []string { return append(append([]string{"db"}, target...), rest...) }
	tests := []struct {
		stdin   string
		args    []string
		wantOut string // substring of stdout
		wantErr string // substring of the error; "" means success
	}{
		{"", a("domain", "list"), "", "postkit db init"},
		{"", a("init", "exemple.fr"), "domain exemple.fr: created (default domain)", ""},
		{"", a("init", "exemple.fr"), "domain exemple.fr: unchanged", ""},
		{"", a("domain", "add", "toto.fr", "--json"), `{"changed":true,"object":"domain","key":"toto.fr","change":"created"}`, ""},
		{"", a("domain", "add", "toto.fr", "--json"), `{"changed":false,`, ""},
		{"", a("domain", "add", "toto.fr", "--default"), "domain toto.fr: updated (now the default domain)", ""},
		{"", a("domain", "add", "exemple.fr", "--default"), "updated", ""},
		{"toto1234567890°+\n", a("user", "add", "test@exemple.fr", "--uid", "5000", "--password-stdin"), "", "accepts only mailbox.uid:gid 3000:3000"},
		{"toto1234567890°+\n", a("user", "add", "test@exemple.fr", "--name", "Test Dupont", "--password-stdin", "--privilege", "administrateur"), "user test@exemple.fr: created", ""},
		{"", a("user", "add", "test@exemple.fr", "--name", "Test Dupont", "--privilege", "administrateur", "--json"), `"changed":false`, ""},
		{"", a("user", "add", "test@exemple.fr", "--name", "Autre"), "", `name "Test Dupont" (asked "Autre")`},
		{"a-long-passphrase\n", a("user", "add", "x@inconnu.fr", "--password-stdin"), "", "domain inconnu.fr of user x@inconnu.fr is not in the database"},
		{"", a("user", "add", "y@exemple.fr"), "", "--password-stdin"},
		{"\n", a("user", "add", "y@exemple.fr", "--password-stdin"), "", "empty password"},
		{"s3cret\n", a("user", "passwd", "test@exemple.fr", "--password-stdin"), "", "min_length asks for at least 12"},
		{"Test2024!\n", a("user", "passwd", "test@exemple.fr", "--password-stdin"), "", "at least 12"},
		{"exemple.fr2024!!\n", a("user", "passwd", "test@exemple.fr", "--password-stdin"), "", "the user's own address"},
		{"Test@Exemple.fr\n", a("user", "passwd", "test@exemple.fr", "--password-stdin"), "", "the user's own address"},
		{"s3cret-passphrase\n", a("user", "passwd", "test@exemple.fr", "--password-stdin", "--scheme", "BLF-CRYPT"), "password changed", ""},
		{"", a("blacklist", "sender", "add", "tata@tata.fr", "--code", "554", "--message", "Parle à ma main"), "created", ""},
		{"", a("blacklist", "sender", "add", "tata@tata.fr", "--code", "554", "--message", "Parle à ma main"), "unchanged", ""},
		{"", a("blacklist", "sender", "add", "x@tata.fr", "--code", "250", "--message", "m"), "", "reply code 250"},
		{"", a("blacklist", "recipient", "add", "root@mail.exemple.fr"), "created", ""},
		{"", a("blacklist", "recipient", "add", "x@exemple.fr", "--action", "BOUNCE"), "", `action "BOUNCE"`},
		{"", a("alias", "add", "toto", "test"), "alias toto: created", ""},
		{"", a("valias", "add", "ycharbi@exemple.fr", "test@exemple.fr", "other@exemple.fr"), "created", ""},
		{"", a("valias", "list"), "ycharbi@exemple.fr  test@exemple.fr, other@exemple.fr  yes", ""},
		{"", a("domain", "delete", "toto.fr"), "domain toto.fr: deleted", ""},
		{"", a("domain", "delete", "exemple.fr"), "", "still has 1 user(s)"},
		{"", a("user", "disable", "test@exemple.fr", "--json"), `"detail":"disabled"`, ""},
		{"", a("user", "enable", "test@exemple.fr"), "enabled", ""},
		{"", a("user", "list"), "test@exemple.fr  Test Dupont  3000:3000  administrateur  yes", ""},
		{"", a("spam-allow", "add", "exemple.fr", "Partner.fr"), "spam allow list entry exemple.fr partner.fr: created", ""},
		{"", a("spam-allow", "add", "exemple.fr", "*@partner.fr", "--json"), `"changed":false`, ""},
		{"", a("spam-allow", "add", "exemple.fr", "boss@partner.fr"), "", "holds sender domains"},
		{"", a("spam-allow", "list"), "exemple.fr  partner.fr     yes", ""},
		{"", a("spam-allow", "delete", "exemple.fr", "partner.fr"), "deleted", ""},
		{"", a("spam-allow", "delete", "exemple.fr", "partner.fr"), "spam allow list entry exemple.fr partner.fr: absent", ""},
	}
	for _, tt := range tests {
		r := run(t, tt.stdin, tt.args...)
		name := strings.Join(tt.args[3:], " ")
		if tt.wantErr != "" {
			if r.err == nil || !strings.Contains(r.err.Error(), tt.wantErr) {
				t.Errorf("%s: error %v; want one containing %q", name, r.err, tt.wantErr)
			}
			continue
		}
		if r.err != nil || !strings.Contains(r.out, tt.wantOut) {
			t.Errorf("%s: out %q, err %v; want %q", name, r.out, r.err, tt.wantOut)
		}
	}
	// JSON lists parse and never carry password hashes.
	r := run(t, "", a("user", "list", "--json")...)
	var users []map[string]any
	if err := json.Unmarshal([]byte(r.out), &users); err != nil || len(users) != 1 || users[0]["user"] != "test@exemple.fr" {
		t.Errorf("user list --json = %q, %v", r.out, err)
	}
	if strings.Contains(r.out, "$2b$") || strings.Contains(r.out, "CRYPT") {
		t.Errorf("user list leaks the hash: %s", r.out)
	}
	s, err := src.OpenReadOnly()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	u, err := s.GetUser(context.Background(), "test@exemple.fr")
	if err != nil || pwhash.Verify(u.PasswordHash, "s3cret-passphrase") != nil || !strings.HasPrefix(u.PasswordHash, "{BLF-CRYPT}$2b$") {
		t.Errorf("stored hash %q does not verify s3cret: %v", u.PasswordHash, err)
	}
	if driver != sqlmaps.DriverSQLite {
		return
	}
	if info, err := os.Stat(src.Path); err != nil || info.Mode().Perm() != 0o640 {
		t.Errorf("database mode %v, %v; want 0640", info.Mode(), err)
	}
}

// TestLookupCommand compares `postkit lookup` with the store and, when
// Postfix is installed, with postmap -q on the rendered .cf files.
func TestLookupCommand(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "postfix.sqlite")
	for _, args := range [][]string{
		{"db", "--db", db, "init", "exemple.fr"},
		{"db", "--db", db, "blacklist", "sender", "add", "tata@tata.fr", "--message", "Parle à ma main"},
		{"db", "--db", db, "valias", "add", "@exemple.fr", "a@exemple.fr,b@exemple.fr"},
		{"db", "--db", db, "valias", "add", "contact@exemple.fr", "test@exemple.fr, other@exemple.fr"},
		{"db", "--db", db, "valias", "add", "equipe@exemple.fr", "contact@exemple.fr"},
	} {
		if r := run(t, "", args...); r.err != nil {
			t.Fatalf("%v: %v", args, r.err)
		}
	}
	if r := run(t, "a-long-passphrase\n", "db", "--db", db, "user", "add", "test@exemple.fr", "--password-stdin"); r.err != nil {
		t.Fatal(r.err)
	}
	// Each answer is compared with Postfix's own postmap -q, except with
	// -short or where Postfix is missing (a failure under POSTKIT_E2E=1).
	comparePostmap := !testing.Short() && testlib.Have("/usr/sbin/postmap")
	if !comparePostmap && !testing.Short() && testlib.Required() {
		t.Fatal("/usr/sbin/postmap is missing and POSTKIT_E2E=1: run scripts/install-deps.sh")
	}
	if comparePostmap {
		os.WriteFile(filepath.Join(dir, "main.cf"), []byte("compatibility_level = 3.6\nsmtputf8_enable = no\n"), 0o644)
		for _, m := range sqlmaps.Maps() {
			m, _ = m.With(senderRules(nil)) // as `lookup --db` reads it
			os.WriteFile(filepath.Join(dir, m.File), m.CF(db), 0o644)
		}
	} else if os.Getenv("POSTKIT_E2E") == "1" {
		t.Fatal("/usr/sbin/postmap missing")
	}
	tests := []struct{ m, key, want string }{
		{"liste-noire-expediteurs", "TATA@tata.fr", "554 Parle à ma main\n"},
		{"sqlite-liste-noire-expediteurs.cf", "tata@tata.fr", "554 Parle à ma main\n"},
		{"utilisateurs", "Test@Exemple.fr", "exemple.fr/test/\n"},
		{"utilisateurs", "nobody@exemple.fr", ""},
		{"domaines", "exemple.fr", "exemple.fr\n"},
		{"alias-virtuels", "@exemple.fr", "a@exemple.fr, b@exemple.fr\n"},
		{"alias", "toto", ""},
		{"domaines", "", ""},
		// smtpd_sender_login_maps: own address, aliases delivering to the
		// user (also through another alias), extensions; the catch-all
		// gives nothing.
		{"sender-login", "test@exemple.fr", "test@exemple.fr\n"},
		{"sqlite-sender-login.cf", "Test+Tag@exemple.fr", "test@exemple.fr\n"},
		{"sender-login", "contact@exemple.fr", "test@exemple.fr\n"},
		{"sender-login", "equipe@exemple.fr", "test@exemple.fr\n"},
		{"sender-login", "billing@exemple.fr", ""},
		{"sender-login", "@exemple.fr", ""},
		{"sender-login", "someone@outside.test", ""},
	}
	for _, tt := range tests {
		r := run(t, "", "lookup", "--db", db, tt.m, tt.key)
		exit := 0
		if r.exit >= 0 {
			exit = r.exit
		}
		wantExit := map[bool]int{true: 1, false: 0}[tt.want == ""]
		if r.err != nil || r.out != tt.want || exit != wantExit {
			t.Errorf("lookup %s %q = %q exit %d err %v; want %q exit %d", tt.m, tt.key, r.out, exit, r.err, tt.want, wantExit)
		}
		if !comparePostmap {
			continue
		}
		m, _ := sqlmaps.MapByName(tt.m)
		cmd := exec.Command("/usr/sbin/postmap", "-c", dir, "-q", tt.key, "sqlite:"+filepath.Join(dir, m.File))
		out, _ := cmd.Output()
		if string(out) != r.out || cmd.ProcessState.ExitCode() != exit {
			t.Errorf("postmap -q %q sqlite:%s = %q exit %d; postkit lookup %q exit %d", tt.key, m.File, out, cmd.ProcessState.ExitCode(), r.out, exit)
		}
	}
	if r := run(t, "", "lookup", "--db", db, "nope", "x"); r.err == nil || !strings.Contains(r.err.Error(), "unknown map") {
		t.Errorf("lookup of an unknown map: %v", r.err)
	}

	// With -c, the sender-login map carries sender_logins and
	// recipient_delimiter as `postkit generate` writes it.
	yaml := filepath.Join(dir, "postkit.yaml")
	os.WriteFile(yaml, []byte("hostname: mail.exemple.fr\ndomains: [exemple.fr]\nrecipient_delimiter: \"-\"\ndatabase: {path: "+db+"}\n"+
		"sender_logins:\n  - {sender: billing@exemple.fr, logins: [test@exemple.fr]}\n  - {sender: \"@autre.fr\", logins: [test@exemple.fr, x@exemple.fr]}\n"), 0o644)
	cfg, _, err := config.Load(yaml)
	if err != nil {
		t.Fatal(err)
	}
	m, _ := sqlmaps.MapByName(sqlmaps.SenderLoginMap)
	m, err = m.With(senderRules(cfg))
	if err != nil {
		t.Fatal(err)
	}
	cf := filepath.Join(dir, "with-grants.cf")
	os.WriteFile(cf, m.CF(db), 0o644)
	for _, tt := range []struct{ key, want string }{
		{"billing@exemple.fr", "test@exemple.fr\n"},
		{"billing-x@exemple.fr", "test@exemple.fr\n"},
		{"test-x@exemple.fr", "test@exemple.fr\n"},
		{"test+x@exemple.fr", ""},
		{"quelqu.un@autre.fr", "test@exemple.fr,x@exemple.fr\n"},
		{"billing@exemple.org", ""},
	} {
		r := run(t, "", "lookup", "-c", yaml, "sender-login", tt.key)
		exit := 0
		if r.exit >= 0 {
			exit = r.exit
		}
		if r.err != nil || sortedOwners(r.out) != sortedOwners(tt.want) || (exit == 0) != (tt.want != "") {
			t.Errorf("lookup -c sender-login %q = %q exit %d err %v; want %q", tt.key, r.out, exit, r.err, tt.want)
		}
		if !comparePostmap {
			continue
		}
		cmd := exec.Command("/usr/sbin/postmap", "-c", dir, "-q", tt.key, "sqlite:"+cf)
		out, _ := cmd.Output()
		if sortedOwners(string(out)) != sortedOwners(r.out) || cmd.ProcessState.ExitCode() != exit {
			t.Errorf("postmap -q %q (with grants) = %q exit %d; postkit lookup -c %q exit %d", tt.key, out, cmd.ProcessState.ExitCode(), r.out, exit)
		}
	}
}

// sortedOwners puts a map answer's owners in order: SQLite may return
// the rows of a UNION in any order.
func sortedOwners(s string) string {
	f := strings.Split(strings.TrimSpace(s), ",")
	sort.Strings(f)
	return strings.Join(f, ",")
}

// db init adopts an existing empty file (as touch or a provisioning tool
// leaves it, 0644) and makes it 0640 before writing password hashes, also
// when it leaves ownership alone (--group "").
func TestDBInitFileMode(t *testing.T) {
	db := filepath.Join(t.TempDir(), "postfix.sqlite")
	if err := os.WriteFile(db, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chmod(db, 0o644)
	if r := run(t, "", "db", "--db", db, "init", "--group", "", "exemple.fr"); r.err != nil {
		t.Fatal(r.err)
	}
	if st, err := os.Stat(db); err != nil || st.Mode().Perm() != 0o640 {
		t.Fatalf("database mode after db init = %v, %v; want 0640", st.Mode(), err)
	}
	// A later write command puts it back to 0640 too.
	os.Chmod(db, 0o666)
	if r := run(t, "a-long-passphrase\n", "db", "--db", db, "user", "add", "a@exemple.fr", "--password-stdin"); r.err != nil {
		t.Fatal(r.err)
	}
	if st, err := os.Stat(db); err != nil || st.Mode().Perm() != 0o640 {
		t.Errorf("database mode after user add = %v, %v; want 0640", st.Mode(), err)
	}
}
