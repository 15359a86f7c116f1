package sqlmaps

// Tests against Debian's Postfix and Dovecot. They skip when a binary is
// missing unless POSTKIT_E2E=1, which makes a missing binary a failure.

import (
	"github.com/postkit/postkit/internal/testlib"

	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postkit/postkit/sqlmaps/pwhash"
)

const (
	postmapBin = "/usr/sbin/postmap"
	dovecotBin = "/usr/sbin/dovecot"
	doveadmBin = "/usr/bin/doveadm"
	setprivBin = "/usr/bin/setpriv"
)

func needBinary(t *testing.T, paths ...string) {
	t.Helper()
	testlib.NeedBinary(t, paths...)
}

func needRoot(t *testing.T) {
	t.Helper()
	testlib.NeedRoot(t)
}

// openDir returns a temporary directory that other users may traverse
// (t.TempDir makes 0700 directories).
func openDir(t *testing.T) string {
	t.Helper()
	d := t.TempDir()
	for _, p := range []string{d, filepath.Dir(d)} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// postfixConf writes a minimal Postfix config directory.
func postfixConf(t *testing.T, dir string, smtputf8 bool) string {
	t.Helper()
	conf := filepath.Join(dir, fmt.Sprintf("postfix-utf8-%v", smtputf8))
	if err := os.MkdirAll(conf, 0o755); err != nil {
		t.Fatal(err)
	}
	yn := map[bool]string{true: "yes", false: "no"}[smtputf8]
	main := fmt.Sprintf("compatibility_level = 3.6\nsmtputf8_enable = %s\n", yn)
	if err := os.WriteFile(filepath.Join(conf, "main.cf"), []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	return conf
}

type postmapResult struct {
	out, errOut string
	code        int
}

func postmap(t *testing.T, asPostfix bool, conf, cf, key string) postmapResult {
	t.Helper()
	args := []string{postmapBin, "-c", conf, "-q", key, "sqlite:" + cf}
	if asPostfix {
		args = append([]string{setprivBin, "--reuid=postfix", "--regid=postfix", "--init-groups"}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("postmap: %v", err)
	}
	return postmapResult{o.String(), e.String(), code}
}

// writeMaps renders every map's .cf for dbpath into dir.
func writeMaps(t *testing.T, dir, dbpath string) map[string]string {
	t.Helper()
	files := map[string]string{}
	for _, m := range Maps() {
		p := filepath.Join(dir, m.File)
		if err := os.WriteFile(p, m.CF(dbpath), 0o644); err != nil {
			t.Fatal(err)
		}
		files[m.Name] = p
	}
	return files
}

// TestPostmapAgrees runs the real postmap -q on every rendered .cf and
// compares with Lookup and with the rows the store wrote.
func TestPostmapAgrees(t *testing.T) {
	needBinary(t, postmapBin)
	ctx := context.Background()
	dir := openDir(t)
	s, err := Open(filepath.Join(dir, "postfix.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	fixture(t, s)
	must := func(_ Result, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.AddUser(ctx, NewUser{Address: "strasse@exemple.fr", PasswordHash: testHash, UID: 3000, GID: 3000}))
	must(s.AddUser(ctx, NewUser{Address: "off@exemple.fr", PasswordHash: testHash, UID: 3000, GID: 3000}))
	must(s.SetActive(ctx, Users, "off@exemple.fr", false))
	must(s.AddVirtualAlias(ctx, "@toto.fr", "test@exemple.fr, ycharbi@exemple.fr"))
	must(s.AddSenderBlacklist(ctx, "o'k@tata.fr", 450, "4.7.1 l'attente"))
	must(s.AddSenderBlacklist(ctx, "spam.fr", 554, "5.7.1 go away"))
	must(s.AddRecipientBlacklist(ctx, "postmaster@", "DISCARD"))
	must(s.AddAlias(ctx, "postmaster", "root, test@exemple.fr"))
	if _, err := s.db.Exec(`INSERT INTO postfix_alias (alias, destination, active) VALUES ('empty', '', 1), ('Upper', 'x', 1), ('nullactive', 'x', NULL)`); err != nil {
		t.Fatal(err)
	}
	files := writeMaps(t, dir, s.Path())

	keys := []string{"test@exemple.fr", "TEST@EXEMPLE.FR", "exemple.fr", "Toto.fr", "toto", "TOTO", "postmaster", "postmaster@",
		"ycharbi@exemple.fr", "@exemple.fr", "@toto.fr", "x@toto.fr", "nobody@exemple.fr", "tata@tata.fr", "o'k@tata.fr", "O'K@TATA.FR",
		"spam.fr", "root@mail.exemple.fr", "", "a@", "@", "a@b@c.fr", "straße@exemple.fr", "STRASSE@exemple.fr", "ſtrasse@exemple.fr",
		"\xff@exemple.fr", "off@exemple.fr", "empty", "upper", "Upper", "nullactive", "a b@exemple.fr", "%s@exemple.fr", "x'; DROP TABLE postfix_alias; --"}
	for _, utf8 := range []bool{false, true} {
		conf := postfixConf(t, dir, utf8)
		fold := map[bool]Fold{false: FoldASCII, true: FoldUTF8}[utf8]
		for _, m := range Maps() {
			for _, key := range keys {
				if utf8 && isASCII(key) {
					continue // folds the same either way
				}
				pm := postmap(t, false, conf, files[m.Name], key)
				got, found, warns, err := s.Lookup(ctx, m, key, fold)
				if err != nil {
					t.Fatalf("Lookup(%s, %q): %v", m.Name, key, err)
				}
				ours := ""
				code := 1
				if found {
					ours, code = got+"\n", 0
				}
				if pm.out != ours || pm.code != code || strings.Contains(pm.errOut, "warning") != (len(warns) > 0) {
					t.Errorf("smtputf8=%v %s %q: postmap %q rc=%d stderr=%q; Lookup %q rc=%d warnings=%q",
						utf8, m.Name, key, pm.out, pm.code, pm.errOut, ours, code, warns)
				}
			}
		}
	}

	// What the store wrote is what Postfix reads.
	conf := postfixConf(t, dir, false)
	bs, _ := s.ListSenderBlacklist(ctx)
	for _, b := range bs {
		if pm := postmap(t, false, conf, files["liste-noire-expediteurs"], b.Key); pm.out != fmt.Sprintf("%d %s\n", b.Code, b.Message) {
			t.Errorf("postmap sender %s = %q; store has %d %q", b.Key, pm.out, b.Code, b.Message)
		}
	}
	us, _ := s.ListUsers(ctx, "")
	for _, u := range us {
		want := u.Home + "\n"
		if !u.Active {
			want = ""
		}
		if pm := postmap(t, false, conf, files["utilisateurs"], u.Address); pm.out != want {
			t.Errorf("postmap user %s = %q; want %q", u.Address, pm.out, want)
		}
	}
	if n, _ := s.ListAliases(ctx, Aliases); len(n) == 0 {
		t.Error("the injection key dropped postfix_alias")
	}
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// TestPostfixReadsWhileWriting checks the access decision documented in the
// package: with a rollback journal, the database 0640 root:postfix in a 0750
// root:postfix directory is read by postmap running as postfix, and every
// committed change is seen by the next lookup; a lookup that collides with a
// commit fails with "database is locked" (measured and logged, the cost of
// this choice); the same file in WAL mode is unreadable by postfix once the
// last writer has closed it, which is why WAL is not used.
func TestPostfixReadsWhileWriting(t *testing.T) {
	needBinary(t, postmapBin, setprivBin)
	needRoot(t)
	g, err := user.LookupGroup("postfix")
	if err != nil {
		testlib.Skip(t, "no postfix group (install postfix): %v", err)
	}
	gid, _ := strconv.Atoi(g.Gid)
	ctx := context.Background()
	dir := openDir(t)
	dbdir := filepath.Join(dir, "bdd")
	if err := os.Mkdir(dbdir, 0o750); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dbdir, "postfix.sqlite")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	fixture(t, s)
	if err := SetAccess(path, gid, true); err != nil {
		t.Fatal(err)
	}
	files := writeMaps(t, dir, path)
	conf := postfixConf(t, dir, false)

	// Every commit is visible to the next lookup by user postfix.
	for i := range 6 {
		on := i%2 == 1
		if _, err := s.SetActive(ctx, Users, "test@exemple.fr", on); err != nil {
			t.Fatal(err)
		}
		want := map[bool]string{true: "exemple.fr/test/\n", false: ""}[on]
		if pm := postmap(t, true, conf, files["utilisateurs"], "test@exemple.fr"); pm.out != want {
			t.Fatalf("after SetActive(%v), postmap as postfix = %q rc=%d %s; want %q", on, pm.out, pm.code, pm.errOut, want)
		}
	}

	// Measurement: lookups while the store commits every 25 ms (bounded:
	// 60 commits). Collisions are logged; they must be lock errors only.
	done := make(chan int)
	go func() {
		n := 0
		for ; n < 60; n++ {
			if _, err := s.SetActive(ctx, Domains, "toto.fr", n%2 == 1); err != nil {
				t.Errorf("writer: %v", err)
				break
			}
			time.Sleep(25 * time.Millisecond)
		}
		done <- n
	}()
	reads, failed, writes := 0, 0, 0
	for writes == 0 && reads < 300 {
		select {
		case writes = <-done:
			continue
		default:
		}
		pm := postmap(t, true, conf, files["utilisateurs"], "test@exemple.fr")
		reads++
		if pm.code != 0 {
			failed++
			if !strings.Contains(pm.errOut, "database is locked") {
				t.Errorf("lookup during writes failed unexpectedly: %s", pm.errOut)
			}
		}
	}
	if writes == 0 {
		writes = <-done
	}
	t.Logf("rollback journal: %d lookups as postfix during %d commits, %d collided with a commit (database is locked)", reads, writes, failed)

	// Without the group Postfix cannot read: the group is what grants access.
	if err := os.Chown(path, 0, 0); err != nil {
		t.Fatal(err)
	}
	if pm := postmap(t, true, conf, files["utilisateurs"], "test@exemple.fr"); pm.code == 0 {
		t.Errorf("postmap as postfix read a root:root 0640 database")
	}
	os.Chown(path, 0, gid)

	// The WAL alternative: once its last connection closes (as Dovecot's
	// auth-worker does when idle), SQLite deletes the -wal and -shm files
	// and a read-only reader cannot recreate them.
	wal := filepath.Join(dbdir, "wal.sqlite")
	data, _ := os.ReadFile(path)
	os.WriteFile(wal, data, 0o640)
	SetAccess(wal, gid, false)
	w, err := Open(wal)
	if err != nil {
		t.Fatal(err)
	}
	var mode string
	w.db.QueryRow("PRAGMA journal_mode=WAL").Scan(&mode)
	w.Close()
	wf := filepath.Join(dir, "wal.cf")
	m, _ := MapByName("utilisateurs")
	os.WriteFile(wf, m.CF(wal), 0o644)
	pm := postmap(t, true, conf, wf, "test@exemple.fr")
	t.Logf("WAL (%s) database read as postfix after its writer closed: rc=%d %s", mode, pm.code, strings.TrimSpace(pm.errOut))
	if mode != "wal" || pm.code == 0 {
		t.Errorf("a WAL database was readable by postfix without -shm: the rollback-journal decision in the package documentation should be revisited")
	}
}

// dovecot runs a sandboxed Dovecot with only the auth service over the
// store, using DovecotSQL's output.
type dovecot struct {
	conf, base string
	calls      int
}

func startDovecot(t *testing.T, dir, dbpath string) *dovecot {
	t.Helper()
	d := &dovecot{conf: filepath.Join(dir, "dovecot.conf"), base: filepath.Join(dir, "run")}
	sqlConf := filepath.Join(dir, "dovecot-sql.conf.ext")
	if err := os.WriteFile(sqlConf, DovecotSQL(dbpath, filepath.Join(dir, "mail"), "%d/%n", true), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`base_dir = %s
state_dir = %s/state
log_path = %s/dovecot.log
protocols =
ssl = no
auth_failure_delay = 0
first_valid_uid = 1000
passdb {
  driver = sql
  args = %s
}
userdb {
  driver = sql
  args = %s
}
`, d.base, dir, dir, sqlConf, sqlConf)
	if err := os.WriteFile(d.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "state"), 0o755)
	// The master forks into the background: its children would hold a
	// stdout pipe open, so output goes to a file.
	logf, err := os.Create(filepath.Join(dir, "dovecot.out"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(dovecotBin, "-c", d.conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	t.Cleanup(d.stop)
	if err := cmd.Run(); err != nil {
		out, _ := os.ReadFile(logf.Name())
		t.Fatalf("dovecot: %v: %s", err, out)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(d.base, "auth-client")); err == nil {
			return d
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "dovecot.log"))
			t.Fatalf("dovecot auth socket did not appear: %s", log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (d *dovecot) stop() {
	b, err := os.ReadFile(filepath.Join(d.base, "master.pid"))
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return
	}
	syscall.Kill(pid, syscall.SIGTERM)
	for range 100 {
		if syscall.Kill(pid, 0) != nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (d *dovecot) authTest(t *testing.T, login, pw string) int {
	t.Helper()
	// A distinct client address per call keeps Dovecot's failure penalty
	// (per remote IP) from slowing the next test down.
	d.calls++
	rip := fmt.Sprintf("rip=127.0.%d.%d", d.calls/250, 1+d.calls%250)
	err := exec.Command(doveadmBin, "-c", d.conf, "auth", "test", "-x", rip, login, pw).Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("doveadm auth test: %v", err)
	}
	return 0
}

// TestDovecotAuth authenticates through a real Dovecot whose passdb and
// userdb are DovecotSQL's queries, with the database 0640 root:postfix.
func TestDovecotAuth(t *testing.T) {
	needBinary(t, dovecotBin, doveadmBin)
	needRoot(t)
	ctx := context.Background()
	dir := openDir(t)
	path := filepath.Join(dir, "postfix.sqlite")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	seed, _ := os.ReadFile("testdata/seed_postfix.sql")
	if _, err := s.db.Exec(string(seed)); err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if g, err := user.LookupGroup("postfix"); err == nil {
		gid, _ := strconv.Atoi(g.Gid)
		SetAccess(path, gid, false)
	}
	passwords := map[string]string{}
	for i, scheme := range pwhash.Schemes() {
		addr := fmt.Sprintf("u%d@exemple.fr", i)
		pw := "mot de passe " + scheme + " é"
		h, err := pwhash.Hash(scheme, pw)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.AddUser(ctx, NewUser{Address: addr, PasswordHash: h, UID: 3001 + i, GID: 3001, Name: scheme}); err != nil {
			t.Fatal(err)
		}
		passwords[addr] = pw
	}
	d := startDovecot(t, dir, path)

	tests := []struct {
		login, pw string
		want      int
	}{
		{"test@exemple.fr", "toto1234567890°+", 0}, // the reference installation's row
		{"TEST@Exemple.fr", "toto1234567890°+", 0},
		{"test@exemple.fr", "wrong", 77},
		{"nobody@exemple.fr", "toto1234567890°+", 77},
	}
	for addr, pw := range passwords {
		tests = append(tests, struct {
			login, pw string
			want      int
		}{addr, pw, 0}, struct {
			login, pw string
			want      int
		}{addr, pw + "x", 77})
	}
	for _, tt := range tests {
		if got := d.authTest(t, tt.login, tt.pw); got != tt.want {
			t.Errorf("doveadm auth test %s %q = %d; want %d", tt.login, tt.pw, got, tt.want)
		}
	}

	// userdb: uid and gid come from the row, home from base_dir/layout.
	out, err := exec.Command(doveadmBin, "-c", d.conf, "user", "u1@exemple.fr").CombinedOutput()
	if err != nil {
		t.Fatalf("doveadm user: %v: %s", err, out)
	}
	for _, want := range []string{"uid\t3002", "gid\t3001", "home\t" + filepath.Join(dir, "mail", "exemple.fr", "u1"), "mail\tmaildir:" + filepath.Join(dir, "mail", "exemple.fr", "u1")} {
		if !strings.Contains(string(out), want) {
			t.Errorf("doveadm user lacks %q:\n%s", want, out)
		}
	}
	// quota_rule: the user's own row, else the domain's, else none (the
	// plugin's default applies); changes are seen at once.
	quotaRule := func(login string) string {
		t.Helper()
		out, err := exec.Command(doveadmBin, "-c", d.conf, "user", "-f", "quota_rule", login).CombinedOutput()
		if err != nil {
			t.Fatalf("doveadm user -f quota_rule %s: %v: %s", login, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if got := quotaRule("u1@exemple.fr"); got != "" {
		t.Errorf("quota_rule without a row = %q; want none", got)
	}
	if _, err := s.SetQuota(ctx, "@exemple.fr", 1<<30); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetQuota(ctx, "u2@exemple.fr", 500<<20); err != nil {
		t.Fatal(err)
	}
	for login, want := range map[string]string{"u1@exemple.fr": "*:storage=1073741824B", "U2@exemple.fr": "*:storage=524288000B"} {
		if got := quotaRule(login); got != want {
			t.Errorf("quota_rule of %s = %q; want %q", login, got, want)
		}
	}
	out, _ = exec.Command(doveadmBin, "-c", d.conf, "user", "*").CombinedOutput()
	if strings.Count(string(out), "@exemple.fr") != 1+len(passwords) {
		t.Errorf("iterate_query listed:\n%s", out)
	}

	// Changes by the store while Dovecot runs are seen at once.
	h, _ := pwhash.Hash("", "nouveau")
	if _, err := s.SetPassword(ctx, "test@exemple.fr", h); err != nil {
		t.Fatal(err)
	}
	if got := d.authTest(t, "test@exemple.fr", "nouveau"); got != 0 {
		t.Errorf("auth with the new password = %d; want 0", got)
	}
	if _, err := s.SetActive(ctx, Users, "test@exemple.fr", false); err != nil {
		t.Fatal(err)
	}
	if got := d.authTest(t, "test@exemple.fr", "nouveau"); got != 77 {
		t.Errorf("auth of a disabled user = %d; want 77", got)
	}
	// Which user reads the database: Dovecot 2.3 runs the SQL queries in
	// auth-worker, as root by default.
	if procs, _ := filepath.Glob("/proc/[0-9]*/cmdline"); len(procs) > 0 {
		for _, p := range procs {
			b, _ := os.ReadFile(p)
			if strings.HasPrefix(string(b), "dovecot/auth\x00-w") {
				if fi, err := os.Stat(filepath.Dir(p)); err == nil {
					t.Logf("auth-worker %s runs as uid %d", filepath.Dir(p), fi.Sys().(*syscall.Stat_t).Uid)
				}
			}
		}
	}
}

// TestSenderLoginPostmap runs Postfix's own postmap -q on the sender-login
// map with grants and a recipient delimiter, over aliases in every shape:
// Postfix's SQLite reads the recursive query as Lookup (and so the milter)
// does.
func TestSenderLoginPostmap(t *testing.T) {
	needBinary(t, postmapBin)
	ctx := context.Background()
	dir := openDir(t)
	s, err := Open(filepath.Join(dir, "postfix.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	grants := senderFixture(t, s)
	conf := postfixConf(t, dir, false)
	for _, rules := range []SenderRules{{}, {Delimiter: "+"}, {Grants: grants, Delimiter: "+"}, {Grants: grants, Delimiter: "-"}} {
		m, _ := MapByName(SenderLoginMap)
		m, err := m.With(rules)
		if err != nil {
			t.Fatal(err)
		}
		cf := filepath.Join(dir, m.File)
		if err := os.WriteFile(cf, m.CF(s.Path()), 0o644); err != nil {
			t.Fatal(err)
		}
		found := 0
		for _, key := range []string{"demo@example.test", "DEMO@EXAMPLE.TEST", "contact@example.test", "team@example.test", "loop1@example.test",
			"loop2@example.test", "dead@example.test", "off@example.test", "x@example.test", "chain@example.test", "tabs@example.test",
			"o'k@example.test", "billing@example.test", "100%@example.test", "anyone@other.test", "demo+tag@example.test",
			"demo+bob@example.test", "contact+x@example.test", "+x@example.test", "demo-x@example.test", "@example.test", "@other.test",
			"demo", "", "someone@outside.test", "%s@example.test", "x'; DROP TABLE postfix_utilisateurs; --"} {
			pm := postmap(t, false, conf, cf, key)
			got, ok, _, err := s.Lookup(ctx, m, key, FoldASCII)
			if err != nil {
				t.Fatalf("Lookup(%q): %v", key, err)
			}
			ours, code := "", 1
			if ok {
				ours, code = got+"\n", 0
				found++
			}
			// Row order is SQLite's in both; compare as sets all the same.
			if sortedList(pm.out) != sortedList(ours) || pm.code != code {
				t.Errorf("%+v %q: postmap %q rc=%d stderr=%q; Lookup %q", rules, key, pm.out, pm.code, pm.errOut, ours)
			}
		}
		if found < 5 {
			t.Errorf("%+v: only %d keys found: the comparison proves little", rules, found)
		}
	}
}

func sortedList(s string) string {
	f := strings.Split(strings.TrimSpace(s), ",")
	sortStrings(f)
	return strings.Join(f, ",")
}
