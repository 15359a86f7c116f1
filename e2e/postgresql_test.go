package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postkit/postkit/e2e/harness"
	"github.com/postkit/postkit/internal/pgtest"
)

// The store in PostgreSQL, as several MX hosts share it: a role with a
// password that libpq makes them send (scram-sha-256 over TCP), given to
// postkit, Postfix and Dovecot only through database.password_file. A user
// added once with `postkit db` receives mail through Postfix's pgsql maps
// and logs in through Dovecot's pgsql driver, on this host and on a second
// one started on the same database; an unknown address is refused
// (550) by the same maps; with PostgreSQL stopped the maps fail and smtpd
// answers 4xx, never 5xx, and once it runs again mail flows without a
// restart of anything.
func TestPostgresStore(t *testing.T) {
	harness.NeedProgram(t, "curl")
	pg := pgtest.Start(t)
	pg.CreateDatabase("mail")
	const password = `S3cr et,%x'y\z`
	pg.Psql("postgres", "CREATE ROLE postkit LOGIN PASSWORD '"+strings.ReplaceAll(password, "'", "''")+"'")
	pg.Psql("postgres", "ALTER DATABASE mail OWNER TO postkit")
	// Passwords required over TCP; psql keeps the unix socket.
	hba := "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
	if err := os.WriteFile(filepath.Join(pg.Dir, "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		t.Fatal(err)
	}
	pg.Stop()
	pg.Restart()
	pwFile := filepath.Join(t.TempDir(), "pg-password")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dsn := strings.Replace(pg.DSN("mail"), "postgres@", "postkit@", 1)

	s := harness.StartT(t, harness.Options{PostgresDSN: dsn, PostgresPasswordFile: pwFile})
	user, userPW := "pat@"+harness.Domain, "pat-Secret-1"
	if err := s.AddUser(ctx(t), user, userPW); err != nil {
		t.Fatal(err)
	}
	// The rows are in PostgreSQL, nowhere else.
	if got := pg.Psql("mail", "SELECT utilisateur FROM postfix_utilisateurs"); got != user {
		t.Fatalf("postfix_utilisateurs in PostgreSQL = %q; want %s", got, user)
	}
	if _, err := os.Stat(s.Paths.Database); err == nil {
		t.Errorf("a SQLite file %s was made", s.Paths.Database)
	}

	tok := harness.Token()
	deliver(t, s, user, user, "", tok)
	r, err := s.IMAP(ctx(t), true, user, userPW, "INBOX", `SEARCH SUBJECT "`+tok+`"`)
	if err != nil {
		t.Fatal(err)
	}
	if m := searchRE.FindStringSubmatch(r.Stdout); r.Exit != 0 || m == nil || strings.TrimSpace(m[1]) == "" {
		t.Fatalf("IMAP SEARCH as %s: exit %d, stdout %q, stderr %q", user, r.Exit, r.Stdout, r.Stderr)
	}
	if r, _ := s.IMAPFrom(ctx(t), "127.0.0.5", true, user, "wrong", "INBOX", ""); r.Exit == 0 {
		t.Errorf("IMAP login with a wrong password succeeded")
	}

	// A second MX on the same database (its own Postfix, Dovecot and
	// `postkit db init`, which finds the tables there): the user added once
	// is known there too.
	s2 := harness.StartT(t, harness.Options{PostgresDSN: dsn, PostgresPasswordFile: pwFile})
	tok2 := harness.Token()
	deliver(t, s2, user, user, "", tok2)
	r, err = s2.IMAP(ctx(t), true, user, userPW, "INBOX", `SEARCH SUBJECT "`+tok2+`"`)
	if m := searchRE.FindStringSubmatch(r.Stdout); err != nil || r.Exit != 0 || m == nil || strings.TrimSpace(m[1]) == "" {
		t.Errorf("IMAP SEARCH as %s on the second host: %v, exit %d, stdout %q, stderr %q", user, err, r.Exit, r.Stdout, r.Stderr)
	}
	if got := pg.Psql("mail", "SELECT count(*) FROM postkit_schema_version"); got != "1" {
		t.Errorf("schema version rows after two db init: %s; want 1", got)
	}

	c, err := s.SMTP(harness.OutsideIP)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Mail(stranger, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("nobody@"+harness.Domain, nil); harness.Code(err) != 550 {
		t.Errorf("RCPT to an unknown user: %v; want 550 from the pgsql maps", err)
	}
	c.Close()

	// Outage: smtpd's table lookups fail, a temporary error.
	pg.Stop()
	c, err = s.SMTP(harness.OutsideIP)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Mail(stranger, nil)
	if err == nil {
		err = c.Rcpt(user, nil)
	}
	if code := harness.Code(err); code < 400 || code > 499 {
		t.Errorf("MAIL/RCPT with PostgreSQL down: %v; want a 4xx answer", err)
	} else {
		t.Logf("with PostgreSQL down, smtpd answered: %v", err)
	}
	c.Close()
	if out, err := s.DB(ctx(t), "", "user", "list"); err == nil || !strings.Contains(out+err.Error(), "cannot reach") {
		t.Errorf("postkit db user list with PostgreSQL down: %q, %v; want an error saying it cannot reach the database", out, err)
	}

	// Back: Postfix 3.7's pgsql client stays away from a failed server for
	// 60 s (a fixed retry interval), then reconnects by itself; new smtpd
	// processes connect at once. Mail deferred meanwhile was answered 4xx,
	// so the client retries.
	pg.Restart()
	back := time.Now()
	tok = harness.Token()
	for {
		c, err := s.SMTP(harness.OutsideIP)
		if err != nil {
			t.Fatal(err)
		}
		err = harness.Send(c, stranger, []string{user}, harness.Message(stranger, user, tok))
		c.Close()
		if err == nil {
			break
		}
		if code := harness.Code(err); code < 400 || code > 499 {
			t.Fatalf("after the restart: %v; want 250 or, while Postfix waits to reconnect, 4xx", err)
		}
		if time.Since(back) > 90*time.Second {
			t.Fatalf("still refused %s after PostgreSQL came back: %v", time.Since(back).Round(time.Second), err)
		}
		time.Sleep(2 * time.Second)
	}
	t.Logf("accepted again %s after PostgreSQL came back", time.Since(back).Round(time.Second))
	if _, err := s.WaitMail(ctx(t), user, "", tok); err != nil {
		t.Fatal(err)
	}
	if out, err := s.DB(ctx(t), "", "user", "list"); err != nil || !strings.Contains(out, user) {
		t.Errorf("postkit db user list after the restart: %q, %v", out, err)
	}
}
