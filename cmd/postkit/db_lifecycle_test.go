package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postkit/postkit/sqlmaps"
	"github.com/postkit/postkit/sqlmaps/pwhash"
)

// seedDB makes a database with exemple.fr, test@ and two aliases naming it.
func seedDB(t *testing.T) string {
	t.Helper()
	db := filepath.Join(t.TempDir(), "postfix.sqlite")
	for _, c := range []struct {
		stdin string
		args  []string
	}{
		{"", []string{"db", "--db", db, "init", "exemple.fr"}},
		{"a-long-passphrase\n", []string{"db", "--db", db, "user", "add", "test@exemple.fr", "--password-stdin", "--name", "Test"}},
		{"a-long-passphrase\n", []string{"db", "--db", db, "user", "add", "autre@exemple.fr", "--password-stdin"}},
		{"", []string{"db", "--db", db, "valias", "add", "contact@exemple.fr", "test@exemple.fr", "autre@exemple.fr"}},
		{"", []string{"db", "--db", db, "valias", "add", "seul@exemple.fr", "Test@exemple.fr"}},
		{"", []string{"db", "--db", db, "alias", "add", "postmaster", "test@exemple.fr"}},
	} {
		if r := run(t, c.stdin, c.args...); r.err != nil {
			t.Fatalf("%v: %v", c.args, r.err)
		}
	}
	return db
}

func TestDBUserLifecycle(t *testing.T) {
	db := seedDB(t)
	tests := []struct {
		args    []string
		wantOut string
		wantErr string
	}{
		{[]string{"user", "set", "test@exemple.fr", "--name", "Test Dupont", "--privilege", "admin"}, `user test@exemple.fr: updated (name "Test" → "Test Dupont", privilege utilisateur → administrateur)`, ""},
		{[]string{"user", "set", "test@exemple.fr", "--name", "Test Dupont", "--json"}, `{"changed":false,"object":"user","key":"test@exemple.fr","change":"unchanged","detail":"already as asked"}`, ""},
		{[]string{"user", "set", "test@exemple.fr", "--uid", "5000"}, "", "accepts only mailbox.uid:gid 3000:3000"},
		{[]string{"user", "set", "test@exemple.fr", "--gid", "0"}, "", "accepts only mailbox.uid:gid"},
		{[]string{"user", "set", "test@exemple.fr", "--uid", "3000", "--gid", "3000"}, "unchanged", ""},
		{[]string{"user", "set", "test@exemple.fr"}, "", "nothing to set"},
		{[]string{"user", "set", "test@exemple.fr", "--privilege", "root"}, "", `privilege "root"`},
		{[]string{"user", "set", "test@exemple.fr", "--name", "a\nb"}, "", "full name"},
		{[]string{"user", "set", "nobody@exemple.fr", "--name", "x"}, "", "no user nobody@exemple.fr"},
		{[]string{"user", "set", "test@exemple.fr", "--active=false"}, "updated (disabled)", ""},
		{[]string{"user", "disable", "test@exemple.fr"}, "unchanged (already disabled)", ""},
		{[]string{"user", "set", "test@exemple.fr", "--active"}, "updated (enabled)", ""},
		{[]string{"user", "set", "test@exemple.fr", "--quota", "2G"}, "quota test@exemple.fr: created (2G)", ""},
		{[]string{"user", "set", "test@exemple.fr", "--quota", "2G"}, "quota test@exemple.fr: unchanged", ""},
		{[]string{"user", "set", "test@exemple.fr", "--quota", "lots"}, "", `--quota "lots"`},
		{[]string{"quota", "show", "test@exemple.fr", "--json"}, `"bytes": 2147483648`, ""},
		{[]string{"user", "set", "test@exemple.fr", "--name", "Test D", "--quota", "500M", "--json"}, `"cascaded":[{"object":"quota","key":"test@exemple.fr","change":"updated"`, ""},
		{[]string{"user", "show", "test@exemple.fr"}, "privilege:        administrateur", ""},
		{[]string{"user", "show", "test@exemple.fr"}, "virtual alias:    contact@exemple.fr", ""},
		{[]string{"user", "show", "test@exemple.fr"}, "alias:            postmaster", ""},
		{[]string{"user", "show", "nobody@exemple.fr"}, "", "no user nobody@exemple.fr"},
		{[]string{"user", "delete", "test@exemple.fr"}, "", "destination of 3 alias(es) (contact@exemple.fr, seul@exemple.fr, postmaster): pass --cascade"},
		{[]string{"user", "delete", "test@exemple.fr", "--cascade", "--keep-aliases"}, "", "exclude each other"},
		{[]string{"user", "delete", "test@exemple.fr", "--cascade"}, "user test@exemple.fr: deleted\n  virtual alias contact@exemple.fr: updated (destination now autre@exemple.fr)\n  virtual alias seul@exemple.fr: deleted\n  alias postmaster: deleted\n", ""},
		{[]string{"user", "delete", "test@exemple.fr", "--cascade"}, "user test@exemple.fr: absent (no such row: nothing to delete)", ""},
		{[]string{"user", "disable", "test@exemple.fr", "--json"}, `{"changed":false,"object":"user","key":"test@exemple.fr","change":"absent","detail":"no such row: nothing to disable"}`, ""},
		{[]string{"user", "enable", "test@exemple.fr"}, "", "no user test@exemple.fr"},
		{[]string{"valias", "add", "x@exemple.fr", "autre@exemple.fr"}, "created", ""},
		{[]string{"user", "delete", "autre@exemple.fr", "--keep-aliases"}, "user autre@exemple.fr: deleted (2 alias(es) still point at it)", ""},
		{[]string{"valias", "delete", "nope@exemple.fr"}, "virtual alias nope@exemple.fr: absent", ""},
		{[]string{"alias", "delete", "nope"}, "alias nope: absent", ""},
		{[]string{"blacklist", "sender", "delete", "x@y.fr", "--json"}, `"change":"absent"`, ""},
		{[]string{"blacklist", "recipient", "disable", "x@y.fr"}, "absent", ""},
		{[]string{"domain", "delete", "nope.fr"}, "domain nope.fr: absent", ""},
		{[]string{"domain", "disable", "nope.fr"}, "domain nope.fr: absent", ""},
	}
	for _, tt := range tests {
		args := append([]string{"db", "--db", db}, tt.args...)
		r := run(t, "", args...)
		name := strings.Join(tt.args, " ")
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
	// user show --json: the row, the scheme, never the hash.
	r := run(t, "a-long-passphrase\n", "db", "--db", db, "user", "add", "neuf@exemple.fr", "--password-stdin")
	if r.err != nil {
		t.Fatal(r.err)
	}
	r = run(t, "", "db", "--db", db, "user", "show", "neuf@exemple.fr", "--json")
	var shown struct {
		User    string `json:"user"`
		Scheme  string `json:"password_scheme"`
		UID     int    `json:"uid"`
		Aliases []any  `json:"aliases"`
	}
	if err := json.Unmarshal([]byte(r.out), &shown); err != nil || shown.User != "neuf@exemple.fr" || shown.Scheme != "SHA512-CRYPT" || shown.UID != 3000 || shown.Aliases == nil {
		t.Errorf("user show --json = %s, %v", r.out, err)
	}
	if strings.Contains(r.out, "$6$") {
		t.Errorf("user show leaks the hash: %s", r.out)
	}
}

// A config's password policy and mailbox.uid apply to the db commands.
func TestDBConfigPolicy(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "postfix.sqlite")
	cfg := filepath.Join(dir, "postkit.yaml")
	yaml := "hostname: mail.exemple.fr\ndomains: [exemple.fr]\ndatabase:\n  path: " + db +
		"\n  password_policy:\n    min_length: 4\n    refuse_address: false\nmailbox:\n  uid: 5000\n  gid: 5000\n"
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := run(t, "", "db", "-c", cfg, "init", "--group", ""); r.err != nil {
		t.Fatal(r.err)
	}
	if r := run(t, "test\n", "db", "-c", cfg, "user", "add", "test@exemple.fr", "--password-stdin"); r.err != nil {
		t.Fatalf("4-character password equal to the local part refused with min_length 4, refuse_address false: %v", r.err)
	}
	if r := run(t, "abc\n", "db", "-c", cfg, "user", "passwd", "test@exemple.fr", "--password-stdin"); r.err == nil || !strings.Contains(r.err.Error(), "at least 4") {
		t.Errorf("3 characters with min_length 4: %v", r.err)
	}
	r := run(t, "", "db", "-c", cfg, "user", "list")
	if !strings.Contains(r.out, "5000:5000") {
		t.Errorf("user list = %q; want uid:gid 5000:5000 from mailbox.uid", r.out)
	}
	if r := run(t, "", "db", "-c", cfg, "user", "set", "test@exemple.fr", "--uid", "3000"); r.err == nil || !strings.Contains(r.err.Error(), "5000:5000") {
		t.Errorf("uid 3000 with mailbox.uid 5000: %v", r.err)
	}
}

func TestDBImport(t *testing.T) {
	hash, err := pwhash.Hash(pwhash.SHA512Crypt, "imported-passphrase")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	db := filepath.Join(dir, "postfix.sqlite")
	if r := run(t, "", "db", "--db", db, "init"); r.err != nil {
		t.Fatal(r.err)
	}
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	csvFile := write("rows.csv", `# exported from the old server
valias,contact@exemple.fr,test@exemple.fr,autre@exemple.fr
user,test@exemple.fr,`+hash+`,Test Dupont,administrateur
domain,exemple.fr,default
domain,toto.fr
alias,postmaster,test@exemple.fr
`)
	r := run(t, "", "db", "--db", db, "import", csvFile)
	if r.err != nil {
		t.Fatalf("import csv: %v", r.err)
	}
	for _, want := range []string{"domain exemple.fr: created (default domain)", "user test@exemple.fr: created", "virtual alias contact@exemple.fr: created", "alias postmaster: created"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("import output %q lacks %q", r.out, want)
		}
	}
	s, err := sqlmaps.OpenReadOnly(db)
	if err != nil {
		t.Fatal(err)
	}
	u, err := s.GetUser(context.Background(), "test@exemple.fr")
	s.Close()
	if err != nil || u.PasswordHash != hash || u.Privilege != "administrateur" || u.Name != "Test Dupont" || u.UID != 3000 {
		t.Errorf("imported user = %+v, %v", u, err)
	}
	// Again: every row unchanged.
	r = run(t, "", "db", "--db", db, "import", csvFile, "--json")
	if r.err != nil || !strings.HasPrefix(r.out, `{"changed":false,`) {
		t.Errorf("second import = %q, %v; want changed false", r.out, r.err)
	}

	before, _ := os.ReadFile(db)
	// All or nothing: a good row, then several bad ones, each reported at
	// its line; nothing is added.
	bad := write("bad.csv", `domain,neuf.fr
user,x@neuf.fr,plaintext
valias,contact@exemple.fr,quelquun@exemple.fr
user,y@absent.fr,`+hash+`
frobnicate,z
`)
	r = run(t, "", "db", "--db", db, "import", bad)
	if r.err == nil {
		t.Fatalf("bad import succeeded: %s", r.out)
	}
	for _, want := range []string{bad + ":5: first field \"frobnicate\""} {
		if !strings.Contains(r.err.Error(), want) {
			t.Errorf("error %v lacks %q", r.err, want)
		}
	}
	bad = write("bad2.csv", `domain,neuf.fr
user,x@neuf.fr,plaintext
valias,contact@exemple.fr,quelquun@exemple.fr
user,y@absent.fr,`+hash+`
`)
	r = run(t, "", "db", "--db", db, "import", bad)
	if r.err == nil {
		t.Fatalf("bad import succeeded: %s", r.out)
	}
	for _, want := range []string{bad + `:2: password hash must be "{SCHEME}hash"`, bad + ":3: virtual alias contact@exemple.fr already exists", bad + ":4: domain absent.fr of user y@absent.fr is not in the database"} {
		if !strings.Contains(r.err.Error(), want) {
			t.Errorf("error %v lacks %q", r.err, want)
		}
	}
	if after, _ := os.ReadFile(db); !bytes.Equal(before, after) {
		t.Error("a refused import changed the database file")
	}
	if r := run(t, "", "db", "--db", db, "domain", "list"); strings.Contains(r.out, "neuf.fr") {
		t.Errorf("neuf.fr added by a refused import: %s", r.out)
	}

	// JSON, from stdin, with plaintext passwords only when allowed and
	// only when the policy accepts them.
	jsonDoc := `{
  "domains": [{"domain": "neuf.fr"}],
  "users": [
    {"user": "a@neuf.fr", "password": "a-long-passphrase", "name": "A", "active": false},
    {"user": "b@neuf.fr", "password_hash": "` + hash + `"}
  ],
  "valiases": [{"source": "@neuf.fr", "destination": "a@neuf.fr"}]
}`
	r = run(t, jsonDoc, "db", "--db", db, "import", "-", "--format", "json")
	if r.err == nil || !strings.Contains(r.err.Error(), "stdin:4: user a@neuf.fr has a plaintext password: pass --allow-plaintext") {
		t.Errorf("plaintext without --allow-plaintext: %v", r.err)
	}
	short := strings.Replace(jsonDoc, "a-long-passphrase", "court", 1)
	r = run(t, short, "db", "--db", db, "import", "-", "--format", "json", "--allow-plaintext")
	if r.err == nil || !strings.Contains(r.err.Error(), "stdin:4: the password has 5 characters") || strings.Contains(r.err.Error(), "court") {
		t.Errorf("short plaintext: %v", r.err)
	}
	r = run(t, jsonDoc, "db", "--db", db, "import", "-", "--format", "json", "--allow-plaintext")
	if r.err != nil {
		t.Fatalf("json import: %v", r.err)
	}
	r = run(t, "", "db", "--db", db, "user", "list", "--domain", "neuf.fr")
	if !strings.Contains(r.out, "a@neuf.fr  A     3000:3000  utilisateur  no") || !strings.Contains(r.out, "b@neuf.fr") {
		t.Errorf("users after json import:\n%s", r.out)
	}
	// Unknown fields and wrong types are refused at their line.
	r = run(t, "{\"users\": [\n {\"user\": \"c@neuf.fr\", \"pasword\": \"x\"}],\n \"domains\": [{\"domain\": 3, \"default\": \"yes\"}]}", "db", "--db", db, "import", "-", "--format", "json")
	for _, want := range []string{`stdin:2: unknown field "pasword" in users`, "stdin:3: domain: want a string", "stdin:3: default: want true or false"} {
		if r.err == nil || !strings.Contains(r.err.Error(), want) {
			t.Errorf("bad json: %v; want %q", r.err, want)
		}
	}
	if r := run(t, "", "db", "--db", db, "import", filepath.Join(dir, "rows.txt")); r.err == nil || !strings.Contains(r.err.Error(), "--format") {
		t.Errorf("unknown extension: %v", r.err)
	}
}
