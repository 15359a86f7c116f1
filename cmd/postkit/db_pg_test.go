package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postkit/postkit/internal/pgtest"
	"github.com/postkit/postkit/internal/testlib"
	"github.com/postkit/postkit/sqlmaps"
)

// A SQLite database copied into PostgreSQL with `db migrate --from`, then
// read by `postkit lookup` and by Postfix's own pgsql client (postmap -q on
// the pgsql_table(5) files postkit generates): the same answers as on
// SQLite. Copying again changes nothing.
func TestDBMigrateAndPgsqlLookups(t *testing.T) {
	postmap := testlib.NeedBinary(t, "/usr/sbin/postmap")[0]
	dir := t.TempDir()
	lite := filepath.Join(dir, "postfix.sqlite")
	for _, args := range [][]string{
		{"db", "--db", lite, "init", "exemple.fr"},
		{"db", "--db", lite, "blacklist", "sender", "add", "tata@tata.fr", "--message", "Parle à ma main"},
		{"db", "--db", lite, "valias", "add", "@exemple.fr", "a@exemple.fr,b@exemple.fr"},
		{"db", "--db", lite, "valias", "add", "contact@exemple.fr", "test@exemple.fr, other@exemple.fr"},
		{"db", "--db", lite, "valias", "add", "equipe@exemple.fr", "contact@exemple.fr"},
		{"db", "--db", lite, "alias", "add", "postmaster", "test@exemple.fr"},
	} {
		if r := run(t, "", args...); r.err != nil {
			t.Fatalf("%v: %v", args, r.err)
		}
	}
	if r := run(t, "a-long-passphrase\n", "db", "--db", lite, "user", "add", "test@exemple.fr", "--password-stdin"); r.err != nil {
		t.Fatal(r.err)
	}
	target, src := dbTarget(t, sqlmaps.DriverPostgreSQL)
	cfg := target[1]
	if r := run(t, "", "db", "-c", cfg, "migrate"); r.err == nil || !strings.Contains(r.err.Error(), "--from") {
		t.Errorf("migrate without --from: %v", r.err)
	}
	r := run(t, "", "db", "-c", cfg, "migrate", "--from", lite)
	if r.err != nil || !strings.Contains(r.out, "table postfix_utilisateurs: created (1 rows: 1 added") {
		t.Fatalf("migrate: %q, %v", r.out, r.err)
	}
	r = run(t, "", "db", "-c", cfg, "migrate", "--from", lite, "--json")
	if r.err != nil || !strings.Contains(r.out, `"changed":false`) {
		t.Errorf("second migrate: %q, %v; want nothing changed", r.out, r.err)
	}
	if r := run(t, "", "db", "--db", lite, "migrate", "--from", lite); r.err == nil {
		t.Error("migrate into SQLite: no error")
	}

	p, err := src.Params()
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "main.cf"), []byte("compatibility_level = 3.6\nsmtputf8_enable = no\n"), 0o644)
	for _, m := range sqlmaps.Maps() {
		m, _ = m.With(senderRules(nil))
		os.WriteFile(filepath.Join(dir, m.PGFile()), m.PGCF(p), 0o644)
	}
	for _, tt := range []struct{ m, key, want string }{
		{"liste-noire-expediteurs", "TATA@tata.fr", "554 Parle à ma main\n"},
		{"utilisateurs", "Test@Exemple.fr", "exemple.fr/test/\n"},
		{"utilisateurs", "nobody@exemple.fr", ""},
		{"domaines", "exemple.fr", "exemple.fr\n"},
		{"alias-virtuels", "@exemple.fr", "a@exemple.fr, b@exemple.fr\n"},
		{"alias", "postmaster", "test@exemple.fr\n"},
		{"sender-login", "test@exemple.fr", "test@exemple.fr\n"},
		{"sender-login", "Test+Tag@exemple.fr", "test@exemple.fr\n"},
		{"sender-login", "equipe@exemple.fr", "test@exemple.fr\n"},
		{"sender-login", "billing@exemple.fr", ""},
		{"sender-login", "@exemple.fr", ""},
	} {
		r := run(t, "", "lookup", "-c", cfg, tt.m, tt.key)
		if r.err != nil || r.out != tt.want {
			t.Errorf("lookup -c (postgresql) %s %q = %q, %v; want %q", tt.m, tt.key, r.out, r.err, tt.want)
		}
		m, _ := sqlmaps.MapByName(tt.m)
		cmd := exec.Command(postmap, "-c", dir, "-q", tt.key, "pgsql:"+filepath.Join(dir, m.PGFile()))
		out, err := cmd.Output()
		want := tt.want
		if strings.Contains(want, "à") {
			// Postfix 3.7's pgsql client sets client_encoding LATIN1
			// (Postfix 3.8 adds the encoding parameter): text beyond ASCII
			// reaches Postfix in Latin-1, and text Latin-1 cannot hold
			// fails the lookup.
			want = strings.ReplaceAll(want, "à", "\xe0")
		}
		if string(out) != want {
			t.Errorf("postmap -q %q pgsql:%s = %q (%v); want %q", tt.key, m.PGFile(), out, err, want)
		}
	}
}

// PostgreSQL down: every command exits with an error saying so (no hang,
// no empty answer), Postfix's pgsql client fails the lookup (a temporary
// failure for smtpd), and all of them work again once it is back.
func TestDBPostgresDown(t *testing.T) {
	postmap := testlib.NeedBinary(t, "/usr/sbin/postmap")[0]
	pg := pgtest.Start(t)
	dir := t.TempDir()
	dsn := pg.CreateDatabase("postkit")
	cfg := filepath.Join(dir, "postkit.yaml")
	os.WriteFile(cfg, []byte("hostname: mail.exemple.fr\ndomains: [exemple.fr]\ndatabase: {driver: postgresql, dsn: \""+dsn+"\"}\n"), 0o644)
	if r := run(t, "", "db", "-c", cfg, "init"); r.err != nil {
		t.Fatal(r.err)
	}
	p, err := sqlmaps.Source{Driver: sqlmaps.DriverPostgreSQL, DSN: dsn}.Params()
	if err != nil {
		t.Fatal(err)
	}
	m, _ := sqlmaps.MapByName("domaines")
	os.WriteFile(filepath.Join(dir, "main.cf"), []byte("compatibility_level = 3.6\n"), 0o644)
	os.WriteFile(filepath.Join(dir, m.PGFile()), m.PGCF(p), 0o644)
	postmapQ := func() (string, int) {
		cmd := exec.Command(postmap, "-c", dir, "-q", "exemple.fr", "pgsql:"+filepath.Join(dir, m.PGFile()))
		out, _ := cmd.CombinedOutput()
		return string(out), cmd.ProcessState.ExitCode()
	}
	if out, code := postmapQ(); out != "exemple.fr\n" || code != 0 {
		t.Fatalf("postmap before the outage: %q exit %d", out, code)
	}

	pg.Stop()
	for _, args := range [][]string{
		{"db", "-c", cfg, "domain", "list"},
		{"db", "-c", cfg, "domain", "add", "autre.fr"},
		{"db", "-c", cfg, "init"},
		{"lookup", "-c", cfg, "domaines", "exemple.fr"},
	} {
		r := run(t, "", args...)
		if r.err == nil || !strings.Contains(r.err.Error(), "cannot reach the PostgreSQL database postkit") {
			t.Errorf("%v with PostgreSQL down: out %q, err %v; want an error naming the database", args, r.out, r.err)
		}
	}
	// postmap exits non-zero with a fatal error: in smtpd the same failure
	// is a temporary one (451 4.3.0), never a "not found".
	if out, code := postmapQ(); code == 0 || !strings.Contains(out, "pgsql") {
		t.Errorf("postmap with PostgreSQL down: %q exit %d; want a failure", out, code)
	}

	pg.Restart()
	if r := run(t, "", "db", "-c", cfg, "domain", "list"); r.err != nil || !strings.Contains(r.out, "exemple.fr") {
		t.Errorf("domain list after restart: %q, %v", r.out, r.err)
	}
	if out, code := postmapQ(); out != "exemple.fr\n" || code != 0 {
		t.Errorf("postmap after restart: %q exit %d", out, code)
	}
}
