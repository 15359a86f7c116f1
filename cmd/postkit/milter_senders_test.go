package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-milter"

	"github.com/postkit/postkit/milter/miltertest"
	"github.com/postkit/postkit/sqlmaps"
	"github.com/postkit/postkit/sqlmaps/pwhash"
)

// The daemon as `postkit milter -c` assembles it signs authenticated mail
// only when the login may use the From address, reading the database that
// Postfix's sender-login map reads: a change to a row counts for the next
// message (nothing is cached), a database that cannot be read defers mail,
// and mail without a login is signed as before.
func TestMilterSenderCheck(t *testing.T) {
	ctx := context.Background()
	dir := miltertest.PublicTempDir(t)
	keyDir := filepath.Join(dir, "keys")
	_, txt := writeKey(t, keyDir, "example.test", "ed1")
	dbPath := filepath.Join(dir, "db", "postfix.sqlite")
	sock := filepath.Join(dir, "milter.sock")
	cfgPath := filepath.Join(dir, "postkit.yaml")
	writeCfg := func(unowned string) {
		y := milterYAMLBase + "database: {path: " + dbPath + "}\n" +
			"sender_logins:\n  - {sender: \"@lists.example.test\", logins: [demo@example.test]}\n" +
			"milter:\n  enabled: true\n  listen: unix:" + sock + "\n  socket_mode: \"0666\"\n" +
			"  dkim:\n    verify: false\n    unowned_from: " + unowned + "\n    key_dir: " + keyDir + "\n    keys: [{domain: example.test, selector: ed1}, {domain: lists.example.test, selector: ed1, key_file: " +
			filepath.Join(keyDir, "example.test", "ed1.private") + "}]\n"
		if err := os.WriteFile(cfgPath, []byte(y), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeCfg("reject")

	d := startDaemon(t, "milter", "-c", cfgPath)
	srv := &miltertest.Server{Network: "unix", Address: sock}
	type outcome struct {
		action milter.ActionCode
		smtp   int
		text   string
		sigs   int
	}
	send := func(t *testing.T, login, from string) outcome {
		t.Helper()
		raw := "From: <" + from + ">\r\nTo: <friend@outside.test>\r\nSubject: hi\r\n\r\nbody\r\n"
		m := &miltertest.Message{From: from, Rcpts: []string{"friend@outside.test"}, Raw: []byte(raw)}
		if login != "" {
			m.Macros = map[byte][]string{'M': {"i", "Q1", "{auth_type}", "PLAIN", "{auth_authen}", login}}
		}
		// A logged-in user connects from anywhere; without a login, only
		// the trusted network's mail is outbound.
		addr := "192.0.2.7"
		if login == "" {
			addr = "127.0.0.1"
		}
		cl, err := srv.Dial(miltertest.ConnInfo{Hostname: "laptop.outside.test", Addr: addr, Port: 40000, Helo: "laptop"})
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		res, err := cl.Send(m)
		if err != nil {
			t.Fatal(err)
		}
		out := outcome{action: res.Action.Code, smtp: res.Action.SMTPCode, text: res.Action.SMTPText}
		if res.Action.Code == milter.ActAccept || res.Action.Code == milter.ActContinue {
			out.sigs = len(verifiedSelectors(t, res.Final, map[string]string{"ed1": txt}))
		}
		return out
	}
	signed := outcome{action: milter.ActAccept, sigs: 1}

	t.Run("no database yet: deferred", func(t *testing.T) {
		got := send(t, "demo@example.test", "demo@example.test")
		if got.action != milter.ActReplyCode || got.smtp != 451 || !strings.HasPrefix(got.text, "4.3.0 ") {
			t.Errorf("%+v; want 451 4.3.0 while the database is missing", got)
		}
		if !strings.Contains(d.log.String(), "dkimsign: deferred: cannot check the From address") {
			t.Errorf("the fault is not logged:\n%s", d.log.String())
		}
	})

	// The administrator creates the database: the next message finds it.
	os.MkdirAll(filepath.Dir(dbPath), 0o755)
	store, err := sqlmaps.Open(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { store.Close() }() // reopened below
	if err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	hash, _ := pwhash.Hash("SHA512-CRYPT", "pw")
	must := func(_ sqlmaps.Result, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(store.AddDomain(ctx, "example.test", true))
	for _, u := range []string{"demo@example.test", "bob@example.test"} {
		must(store.AddUser(ctx, sqlmaps.NewUser{Address: u, PasswordHash: hash, UID: 3000, GID: 3000}))
	}

	t.Run("own address: signed", func(t *testing.T) {
		if got := send(t, "demo@example.test", "demo@example.test"); got != signed {
			t.Errorf("%+v; want accepted with one signature", got)
		}
	})
	t.Run("another user's address: refused", func(t *testing.T) {
		got := send(t, "demo@example.test", "bob@example.test")
		if got.action != milter.ActReplyCode || got.smtp != 550 || got.text != "5.7.1 <bob@example.test>: From address not owned by user demo@example.test" {
			t.Errorf("%+v; want 550 5.7.1 naming the address and the login", got)
		}
	})
	t.Run("domain grant of sender_logins: signed", func(t *testing.T) {
		if got := send(t, "demo@example.test", "news@lists.example.test"); got != signed {
			t.Errorf("%+v; want accepted with one signature", got)
		}
	})
	t.Run("no login (trusted network): signed as before", func(t *testing.T) {
		if got := send(t, "", "bob@example.test"); got != signed {
			t.Errorf("%+v; want accepted with one signature", got)
		}
	})
	t.Run("an alias added counts for the next message", func(t *testing.T) {
		if got := send(t, "demo@example.test", "billing@example.test"); got.smtp != 550 {
			t.Fatalf("%+v; want 550 before the alias exists", got)
		}
		must(store.AddVirtualAlias(ctx, "billing@example.test", "demo@example.test"))
		if got := send(t, "demo@example.test", "billing@example.test"); got != signed {
			t.Errorf("%+v; want signed once the alias delivers to demo", got)
		}
		must(store.SetActive(ctx, sqlmaps.VirtualAliases, "billing@example.test", false))
		if got := send(t, "demo@example.test", "billing@example.test"); got.smtp != 550 {
			t.Errorf("%+v; want 550 once the alias is disabled", got)
		}
	})
	t.Run("a database file replaced is read at the next message", func(t *testing.T) {
		must(store.AddVirtualAlias(ctx, "billing@example.test", "demo@example.test")) // kept disabled above: enabled again below
		must(store.SetActive(ctx, sqlmaps.VirtualAliases, "billing@example.test", true))
		if got := send(t, "demo@example.test", "billing@example.test"); got != signed {
			t.Fatalf("%+v; want signed with the alias", got)
		}
		// A restore from a backup taken before the alias: a new file
		// moved over the old one.
		backup := dbPath + ".restore"
		b, err := sqlmaps.Open(backup)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		must(b.AddDomain(ctx, "example.test", true))
		must(b.AddUser(ctx, sqlmaps.NewUser{Address: "demo@example.test", PasswordHash: hash, UID: 3000, GID: 3000}))
		b.Close()
		if err := os.Rename(backup, dbPath); err != nil {
			t.Fatal(err)
		}
		if got := send(t, "demo@example.test", "billing@example.test"); got.smtp != 550 {
			t.Errorf("%+v; want 550: the restored database has no such alias", got)
		}
		if got := send(t, "demo@example.test", "demo@example.test"); got != signed {
			t.Errorf("%+v; want the own address signed from the restored database", got)
		}
		// The test's own writer goes on with the new file.
		store.Close()
		if store, err = sqlmaps.Open(dbPath); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("unowned_from unsigned after SIGHUP", func(t *testing.T) {
		writeCfg("unsigned")
		if err := d.reload(t); err != nil {
			t.Fatalf("reload: %v", err)
		}
		if got := send(t, "demo@example.test", "bob@example.test"); got != (outcome{action: milter.ActAccept}) {
			t.Errorf("%+v; want accepted without a signature", got)
		}
		if !strings.Contains(d.log.String(), `msg="dkimsign: not signed: From not owned by the login" queue_id=Q1 sasl_username=demo@example.test from=bob@example.test`) {
			t.Errorf("the log does not say why:\n%s", d.log.String())
		}
	})
	t.Run("unreadable database: deferred, never passed unsigned", func(t *testing.T) {
		if _, err := store.DB().Exec("ALTER TABLE postfix_alias_virtuels RENAME TO gone"); err != nil {
			t.Fatal(err)
		}
		defer store.DB().Exec("ALTER TABLE gone RENAME TO postfix_alias_virtuels")
		if got := send(t, "demo@example.test", "demo@example.test"); got.action != milter.ActReplyCode || got.smtp != 451 {
			t.Errorf("%+v; want 451 while the query fails", got)
		}
	})
}
