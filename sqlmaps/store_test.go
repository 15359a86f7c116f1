package sqlmaps

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const testHash = "{SHA512-CRYPT}$6$xWfisyC6fLawFcBr$zLm4hfRfs6Pn0RKArnyWcgliBy6lpnRUkDHfHMkvskShfLiv4pRIU6XC5ry0ysd.DeKhoAiZUfnNdmwIai2k50"

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "postfix.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	s.now = func() time.Time { return time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC) }
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// dump renders every row of every table, in id order, for comparisons.
func dump(t *testing.T, s *Store) string {
	t.Helper()
	var b strings.Builder
	for _, table := range []string{"postfix_alias", "postfix_alias_virtuels", "postfix_domaines",
		"postfix_liste_noire_destinataires", "postfix_liste_noire_expediteurs", "postfix_utilisateurs", "postkit_liste_blanche_spam", "postkit_schema_version"} {
		rows, err := s.db.Query("SELECT * FROM " + table + " ORDER BY 1")
		if isNoTable(err) {
			continue
		}
		if err != nil {
			t.Fatalf("dump %s: %v", table, err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			for i, v := range vals { // SQLite's BOOLEAN defaut is PostgreSQL's 0/1
				if x, ok := v.(bool); ok {
					vals[i] = map[bool]int64{false: 0, true: 1}[x]
				}
			}
			fmt.Fprintf(&b, "%s %v\n", table, vals)
		}
		rows.Close()
	}
	return b.String()
}

// fixture fills a store with one row of each kind.
func fixture(t *testing.T, s *Store) {
	t.Helper()
	ctx := context.Background()
	steps := []func() (Result, error){
		func() (Result, error) { return s.AddDomain(ctx, "exemple.fr", false) },
		func() (Result, error) { return s.AddDomain(ctx, "toto.fr", false) },
		func() (Result, error) {
			return s.AddUser(ctx, NewUser{Address: "test@exemple.fr", PasswordHash: testHash, Name: "Test Dupont", UID: 3000, GID: 3000, Privilege: PrivilegeAdmin})
		},
		func() (Result, error) { return s.AddAlias(ctx, "toto", "test") },
		func() (Result, error) { return s.AddVirtualAlias(ctx, "ycharbi@exemple.fr", "test@exemple.fr") },
		func() (Result, error) { return s.AddSenderBlacklist(ctx, "tata@tata.fr", 554, "Parle à ma main") },
		func() (Result, error) { return s.AddRecipientBlacklist(ctx, "root@mail.exemple.fr", "REJECT") },
	}
	for i, f := range steps {
		r, err := f()
		if err != nil || r.Change != Created {
			t.Fatalf("fixture step %d: %v, %v", i, r, err)
		}
	}
}

func TestMigrateAdoptsSeedDatabase(t *testing.T) {
	seed, err := os.ReadFile("testdata/seed_postfix.sql")
	if err != nil {
		t.Fatal(err)
	}
	for _, wal := range []bool{false, true} {
		t.Run(fmt.Sprintf("wal=%v", wal), func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "postfix.sqlite")
			s, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if _, err := s.db.Exec(string(seed)); err != nil {
				t.Fatalf("load seed: %v", err)
			}
			if wal {
				if _, err := s.db.Exec("PRAGMA journal_mode=WAL"); err != nil {
					t.Fatal(err)
				}
			}
			if v, _ := s.Version(ctx); v != 0 {
				t.Errorf("Version before Migrate = %d; want 0", v)
			}
			before := dump(t, s)
			for i := range 2 {
				if err := s.Migrate(ctx); err != nil {
					t.Fatalf("Migrate #%d: %v", i+1, err)
				}
			}
			after := dump(t, s)
			if !strings.HasPrefix(after, before) || strings.Count(after, "postkit_schema_version") != 1 {
				t.Errorf("Migrate changed seed rows or recorded the version twice:\nbefore:\n%s\nafter:\n%s", before, after)
			}
			if v, _ := s.Version(ctx); v != SchemaVersion {
				t.Errorf("Version = %d; want %d", v, SchemaVersion)
			}
			var mode string
			s.db.QueryRow("PRAGMA journal_mode").Scan(&mode)
			if mode != "delete" {
				t.Errorf("journal_mode = %q; want delete", mode)
			}
			// The seed's rows are readable through the API.
			u, err := s.GetUser(ctx, "TEST@exemple.fr")
			if err != nil || u.UID != 3000 || u.Name != "Test Dupont" || !u.Active || u.Privilege != PrivilegeAdmin {
				t.Errorf("GetUser(seed) = %+v, %v", u, err)
			}
			ds, err := s.ListDomains(ctx)
			if err != nil || len(ds) != 2 || !ds[0].Default || ds[1].Default {
				t.Errorf("ListDomains(seed) = %+v, %v", ds, err)
			}
		})
	}
}

func TestMigrateRefuses(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *testDB) {
		tests := []struct {
			name, setup, want string
		}{
			{"newer version", "INSERT INTO postkit_schema_version VALUES (99, 'x')", "newer than this postkit"},
			{"missing column", "DROP TABLE postfix_alias; CREATE TABLE postfix_alias (id INTEGER PRIMARY KEY, alias TEXT)", "has no column destination"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s := db.New(t)
				if _, err := s.db.Exec(tt.setup); err != nil {
					t.Fatal(err)
				}
				err := s.Migrate(context.Background())
				if !errors.Is(err, ErrSchema) || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("Migrate = %v; want ErrSchema containing %q", err, tt.want)
				}
			})
		}
	})
}

func TestAddIsIdempotent(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *testDB) {
		s := db.New(t)
		fixture(t, s)
		ctx := context.Background()
		before := dump(t, s)
		again := []func() (Result, error){
			func() (Result, error) { return s.AddDomain(ctx, "EXEMPLE.fr.", false) },
			func() (Result, error) {
				return s.AddUser(ctx, NewUser{Address: "Test@Exemple.fr", PasswordHash: "{SHA512-CRYPT}$6$other$x", Name: "Test Dupont", UID: 3000, GID: 3000, Privilege: "admin"})
			},
			func() (Result, error) {
				return s.AddUser(ctx, NewUser{Address: "test@exemple.fr", Name: "Test Dupont", UID: 3000, GID: 3000, Privilege: PrivilegeAdmin})
			},
			func() (Result, error) { return s.AddAlias(ctx, "TOTO", " test ") },
			func() (Result, error) { return s.AddVirtualAlias(ctx, "ycharbi@exemple.fr", "test@exemple.fr,") },
			func() (Result, error) { return s.AddSenderBlacklist(ctx, "tata@TATA.fr", 554, " Parle à ma main ") },
			func() (Result, error) { return s.AddRecipientBlacklist(ctx, "root@mail.exemple.fr", "reject") },
		}
		for i, f := range again {
			r, err := f()
			if err != nil || r.Change != Unchanged || r.Changed() {
				t.Errorf("repeat add #%d = %v, %v; want unchanged", i, r, err)
			}
		}
		if after := dump(t, s); after != before {
			t.Errorf("repeated adds changed the database:\n%s\nvs\n%s", before, after)
		}
	})
}

func TestDefaultDomain(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		type step struct {
			domain      string
			makeDefault bool
			want        Change
		}
		tests := []struct {
			name        string
			steps       []step
			wantDefault string
		}{
			{"first is default", []step{{"a.fr", false, Created}, {"b.fr", false, Created}}, "a.fr"},
			{"--default on new", []step{{"a.fr", false, Created}, {"b.fr", true, Created}}, "b.fr"},
			{"--default moves", []step{{"a.fr", false, Created}, {"b.fr", false, Created}, {"b.fr", true, Updated}}, "b.fr"},
			{"--default on default", []step{{"a.fr", true, Created}, {"a.fr", true, Unchanged}}, "a.fr"},
			{"add existing keeps default", []step{{"a.fr", false, Created}, {"b.fr", true, Created}, {"a.fr", false, Unchanged}}, "b.fr"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s := db.New(t)
				for _, st := range tt.steps {
					r, err := s.AddDomain(ctx, st.domain, st.makeDefault)
					if err != nil || r.Change != st.want {
						t.Fatalf("AddDomain(%s, %v) = %v, %v; want %s", st.domain, st.makeDefault, r, err, st.want)
					}
				}
				ds, _ := s.ListDomains(ctx)
				var defaults []string
				for _, d := range ds {
					if d.Default {
						defaults = append(defaults, d.Name)
					}
				}
				if len(defaults) != 1 || defaults[0] != tt.wantDefault {
					t.Errorf("defaults = %v; want [%s]", defaults, tt.wantDefault)
				}
			})
		}
		// A seed database with two defaults is repaired by --default.
		s := db.New(t)
		s.db.Exec("INSERT INTO postfix_domaines (domaine, defaut, active) VALUES ('a.fr', 1, 1), ('b.fr', 1, 1)")
		if r, err := s.AddDomain(ctx, "a.fr", true); err != nil || r.Change != Updated {
			t.Errorf("AddDomain(--default) with two defaults = %v, %v; want updated", r, err)
		}
		var n int
		s.db.QueryRow("SELECT count(*) FROM postfix_domaines WHERE defaut = 1").Scan(&n)
		if n != 1 {
			t.Errorf("%d default domains after repair; want 1", n)
		}
	})
}

// TestBadInputsLeaveDatabaseUnchanged checks each refused change: the error
// kind, its message, and that the file is byte-for-byte what it was.
func TestBadInputsLeaveDatabaseUnchanged(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		user := func(addr string) NewUser {
			return NewUser{Address: addr, PasswordHash: testHash, Name: "X", UID: 3000, GID: 3000}
		}
		tests := []struct {
			name    string
			op      func(s *Store) (Result, error)
			kind    error
			message string
		}{
			{"bad domain", func(s *Store) (Result, error) { return s.AddDomain(ctx, "exemple", false) }, ErrInvalid, `"exemple" is not a domain name`},
			{"bad domain chars", func(s *Store) (Result, error) { return s.AddDomain(ctx, "ex'ample.fr", false) }, ErrInvalid, "not a domain name"},
			{"bad address", func(s *Store) (Result, error) { return s.AddUser(ctx, user("test.exemple.fr")) }, ErrInvalid, "not a mail address"},
			{"unknown domain", func(s *Store) (Result, error) { return s.AddUser(ctx, user("a@inconnu.fr")) }, ErrNotFound, "domain inconnu.fr of user a@inconnu.fr is not in the database"},
			{"duplicate user", func(s *Store) (Result, error) { return s.AddUser(ctx, user("test@exemple.fr")) }, ErrConflict, `user test@exemple.fr already exists with name "Test Dupont" (asked "X")`},
			{"new user without password", func(s *Store) (Result, error) {
				return s.AddUser(ctx, NewUser{Address: "n@exemple.fr", UID: 3000, GID: 3000})
			}, ErrInvalid, "no password"},
			{"root uid", func(s *Store) (Result, error) {
				u := user("r@exemple.fr")
				u.UID = 0
				return s.AddUser(ctx, u)
			}, ErrInvalid, "must not belong to root"},
			{"bad hash", func(s *Store) (Result, error) {
				u := user("h@exemple.fr")
				u.PasswordHash = "plaintext"
				return s.AddUser(ctx, u)
			}, ErrInvalid, "{SCHEME}hash"},
			{"bad privilege", func(s *Store) (Result, error) {
				u := user("p@exemple.fr")
				u.Privilege = "root"
				return s.AddUser(ctx, u)
			}, ErrInvalid, `privilege "root"`},
			{"duplicate alias", func(s *Store) (Result, error) { return s.AddAlias(ctx, "toto", "other") }, ErrConflict, `alias toto already exists with destination "test" (asked "other")`},
			{"alias to a command", func(s *Store) (Result, error) { return s.AddAlias(ctx, "x", "|/bin/sh") }, ErrInvalid, "commands, files and :include:"},
			{"alias name with domain", func(s *Store) (Result, error) { return s.AddAlias(ctx, "x@exemple.fr", "test") }, ErrInvalid, "not a local name"},
			{"valias bad destination", func(s *Store) (Result, error) { return s.AddVirtualAlias(ctx, "v@exemple.fr", "a@b.fr, nope") }, ErrInvalid, `destination "nope" is not a mail address`},
			{"valias duplicate", func(s *Store) (Result, error) { return s.AddVirtualAlias(ctx, "ycharbi@exemple.fr", "x@exemple.fr") }, ErrConflict, "virtual alias ycharbi@exemple.fr already exists"},
			{"bad code", func(s *Store) (Result, error) { return s.AddSenderBlacklist(ctx, "x@y.fr", 250, "ok") }, ErrInvalid, "reply code 250"},
			{"bad code 4 digits", func(s *Store) (Result, error) { return s.AddSenderBlacklist(ctx, "x@y.fr", 5540, "no") }, ErrInvalid, "reply code 5540"},
			{"empty message", func(s *Store) (Result, error) { return s.AddSenderBlacklist(ctx, "x@y.fr", 554, " ") }, ErrInvalid, "empty message"},
			{"message with newline", func(s *Store) (Result, error) { return s.AddSenderBlacklist(ctx, "x@y.fr", 554, "a\nb") }, ErrInvalid, "line break"},
			{"sender duplicate", func(s *Store) (Result, error) {
				return s.AddSenderBlacklist(ctx, "tata@tata.fr", 450, "Parle à ma main")
			}, ErrConflict, `code "554" (asked "450")`},
			{"bad action", func(s *Store) (Result, error) { return s.AddRecipientBlacklist(ctx, "x@y.fr", "BOUNCE") }, ErrInvalid, `action "BOUNCE"`},
			{"bad numeric action", func(s *Store) (Result, error) { return s.AddRecipientBlacklist(ctx, "x@y.fr", "250 fine") }, ErrInvalid, "4NN or 5NN"},
			{"redirect without address", func(s *Store) (Result, error) { return s.AddRecipientBlacklist(ctx, "x@y.fr", "REDIRECT nowhere") }, ErrInvalid, "needs a mail address"},
			{"bad access key", func(s *Store) (Result, error) { return s.AddRecipientBlacklist(ctx, "@@", "REJECT") }, ErrInvalid, "not an access(5) key"},
			{"recipient duplicate", func(s *Store) (Result, error) { return s.AddRecipientBlacklist(ctx, "root@mail.exemple.fr", "DISCARD") }, ErrConflict, `action "REJECT" (asked "DISCARD")`},
			{"delete default domain", func(s *Store) (Result, error) { return s.DeleteDomain(ctx, "exemple.fr", true) }, ErrInUse, "exemple.fr is the default domain"},
			{"delete domain with users", func(s *Store) (Result, error) {
				if _, err := s.AddUser(ctx, user("u@toto.fr")); err != nil {
					t.Fatal(err)
				}
				if _, err := s.AddVirtualAlias(ctx, "@toto.fr", "u@toto.fr"); err != nil {
					t.Fatal(err)
				}
				return s.DeleteDomain(ctx, "toto.fr", false)
			}, ErrInUse, "domain toto.fr still has 1 user(s) (u@toto.fr) and 1 virtual alias(es) (@toto.fr)"},
			{"enable unknown user", func(s *Store) (Result, error) { return s.SetActive(ctx, Users, "nope@exemple.fr", true) }, ErrNotFound, "no user nope@exemple.fr"},
			{"delete user still aliased", func(s *Store) (Result, error) { return s.Delete(ctx, Users, "test@exemple.fr") }, ErrInUse, "destination of 1 alias(es) (ycharbi@exemple.fr)"},
			{"passwd unknown user", func(s *Store) (Result, error) { return s.SetPassword(ctx, "nope@exemple.fr", testHash) }, ErrNotFound, "no user nope@exemple.fr"},
			{"passwd bad hash", func(s *Store) (Result, error) { return s.SetPassword(ctx, "test@exemple.fr", "") }, ErrInvalid, "{SCHEME}hash"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				s := db.New(t)
				fixture(t, s)
				// Rows added by the op's own setup are part of "before".
				var setupDone bool
				op := tt.op
				if strings.Contains(tt.name, "with users") {
					op = func(s *Store) (Result, error) { return s.DeleteDomain(ctx, "toto.fr", false) }
					tt.op(s) // runs the setup and the refused delete once
					setupDone = true
				}
				rows := dump(t, s)
				sqlite := s.Driver() == DriverSQLite
				var file []byte
				if sqlite {
					var err error
					if file, err = os.ReadFile(s.Path()); err != nil {
						t.Fatal(err)
					}
				}
				r, err := op(s)
				if err == nil {
					t.Fatalf("op succeeded with %v; want an error", r)
				}
				if !errors.Is(err, tt.kind) {
					t.Errorf("error %v is not %v", err, tt.kind)
				}
				if !strings.Contains(err.Error(), tt.message) || !strings.HasPrefix(err.Error(), "sqlmaps: ") {
					t.Errorf("error %q; want it to contain %q", err, tt.message)
				}
				if after := dump(t, s); after != rows {
					t.Errorf("rows changed (setup %v):\nbefore:\n%s\nafter:\n%s", setupDone, rows, after)
				}
				if !sqlite {
					return
				}
				if after, _ := os.ReadFile(s.Path()); !bytes.Equal(after, file) {
					t.Errorf("database file changed (%d → %d bytes)", len(file), len(after))
				}
				if _, err := os.Stat(s.Path() + "-journal"); err == nil {
					t.Errorf("a rollback journal was left behind")
				}
			})
		}
	})
}

func TestDeleteDomainCascade(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.New(t)
		fixture(t, s)
		for _, u := range []string{"a@toto.fr", "b@toto.fr"} {
			if _, err := s.AddUser(ctx, NewUser{Address: u, PasswordHash: testHash, UID: 3000, GID: 3000}); err != nil {
				t.Fatal(err)
			}
		}
		s.AddVirtualAlias(ctx, "@toto.fr", "a@toto.fr")
		s.AddVirtualAlias(ctx, "x@toto.fr", "a@toto.fr")
		s.AddVirtualAlias(ctx, "y@sub.toto.fr", "a@toto.fr, test@exemple.fr") // another domain: kept, without a@toto.fr
		r, err := s.DeleteDomain(ctx, "toto.fr", true)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, c := range r.Cascaded {
			got = append(got, c.Object+" "+c.Key)
		}
		want := "user a@toto.fr,user b@toto.fr,virtual alias @toto.fr,virtual alias x@toto.fr,virtual alias y@sub.toto.fr"
		if strings.Join(got, ",") != want {
			t.Errorf("cascaded = %v; want %s", got, want)
		}
		us, _ := s.ListUsers(ctx, "")
		vs, _ := s.ListAliases(ctx, VirtualAliases)
		ds, _ := s.ListDomains(ctx)
		if len(vs) == 2 && vs[1].Destination != "test@exemple.fr" {
			t.Errorf("y@sub.toto.fr delivers to %q; want test@exemple.fr alone", vs[1].Destination)
		}
		if len(us) != 1 || len(vs) != 2 || len(ds) != 1 {
			t.Errorf("after cascade: %d users, %d valiases, %d domains; want 1, 2, 1", len(us), len(vs), len(ds))
		}
		// The last domain may go even though it is the default.
		if _, err := s.DeleteDomain(ctx, "exemple.fr", true); err != nil {
			t.Errorf("delete last (default) domain: %v", err)
		}
	})
}

func TestToggleAndDelete(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.New(t)
		fixture(t, s)
		keys := map[Kind]string{Domains: "toto.fr", Users: "test@exemple.fr", Aliases: "toto", VirtualAliases: "ycharbi@exemple.fr",
			SenderBlacklist: "tata@tata.fr", RecipientBlacklist: "root@mail.exemple.fr"}
		for k, key := range keys {
			for _, step := range []struct {
				on   bool
				want Change
			}{{false, Updated}, {false, Unchanged}, {true, Updated}, {true, Unchanged}} {
				r, err := s.SetActive(ctx, k, strings.ToUpper(key), step.on)
				if err != nil || r.Change != step.want {
					t.Errorf("SetActive(%s %s, %v) = %v, %v; want %s", k, key, step.on, r, err, step.want)
				}
			}
			var act int
			s.db.QueryRow("SELECT active FROM "+k.Table()+" WHERE "+tables[k].key+" = ?", key).Scan(&act)
			if act != 1 {
				t.Errorf("%s %s active = %d; want 1", k, key, act)
			}
		}
		// Delete and disable are idempotent: a second delete, or disabling
		// what is gone, reports Absent and changes nothing.
		for _, k := range []Kind{VirtualAliases, Users, Aliases, SenderBlacklist, RecipientBlacklist, Domains} {
			if r, err := s.Delete(ctx, k, keys[k]); err != nil || r.Change != Deleted || !r.Changed() {
				t.Errorf("Delete(%s) = %v, %v; want deleted", k, r, err)
			}
			if ok, _ := exists(ctx, s.db, k, keys[k]); ok {
				t.Errorf("%s %s still there after Delete", k, keys[k])
			}
			before := dump(t, s)
			if r, err := s.Delete(ctx, k, keys[k]); err != nil || r.Change != Absent || r.Changed() {
				t.Errorf("second Delete(%s) = %v, %v; want absent", k, r, err)
			}
			if r, err := s.SetActive(ctx, k, keys[k], false); err != nil || r.Change != Absent {
				t.Errorf("disable deleted %s = %v, %v; want absent", k, r, err)
			}
			if _, err := s.SetActive(ctx, k, keys[k], true); !errors.Is(err, ErrNotFound) {
				t.Errorf("enable deleted %s: %v; want ErrNotFound", k, err)
			}
			if after := dump(t, s); after != before {
				t.Errorf("absent delete/disable of %s changed the database:\n%s\n---\n%s", k, before, after)
			}
		}
	})
}

func TestSetPassword(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.New(t)
		fixture(t, s)
		h := "{BLF-CRYPT}$2b$10$abcdefghijklmnopqrstuuQ0r1a1t7s7r0vCw4I2cW0jJ8X2w0K3y"
		if r, err := s.SetPassword(ctx, "Test@exemple.fr", h); err != nil || r.Change != Updated {
			t.Fatalf("SetPassword = %v, %v", r, err)
		}
		u, _ := s.GetUser(ctx, "test@exemple.fr")
		if u.PasswordHash != h {
			t.Errorf("stored hash %q; want %q", u.PasswordHash, h)
		}
	})
}

func TestBlacklistLookups(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.New(t)
		fixture(t, s)
		s.AddRecipientBlacklist(ctx, "exemple.fr", "DEFER try later")
		s.AddSenderBlacklist(ctx, "spam@", 550, "5.7.1 no")
		s.SetActive(ctx, SenderBlacklist, "spam@", false)
		tests := []struct {
			sender bool
			key    string
			found  bool
			want   string
		}{
			{true, "tata@tata.fr", true, "554 Parle à ma main"},
			{true, "TATA@Tata.FR", true, "554 Parle à ma main"},
			{true, "tata.fr", false, ""},
			{true, "spam@", false, ""}, // disabled
			{false, "root@mail.exemple.fr", true, "REJECT"},
			{false, "exemple.fr", true, "DEFER try later"},
			{false, "x@exemple.fr", false, ""}, // one exact key: no domain fallback here
		}
		for _, tt := range tests {
			var got string
			var found bool
			var err error
			if tt.sender {
				var code int
				var msg string
				code, msg, found, err = s.LookupSenderBlacklist(ctx, tt.key)
				if found {
					got = fmt.Sprintf("%d %s", code, msg)
				}
			} else {
				got, found, err = s.LookupRecipientBlacklist(ctx, tt.key)
			}
			if err != nil || found != tt.found || got != tt.want {
				t.Errorf("lookup(sender=%v, %q) = %q, %v, %v; want %q, %v", tt.sender, tt.key, got, found, err, tt.want, tt.found)
			}
		}
	})
}

func TestReadOnly(t *testing.T) {
	ctx := context.Background()
	eachDriver(t, func(t *testing.T, db *testDB) {
		s := db.New(t)
		fixture(t, s)
		ro := db.ReadOnly(t)
		if _, _, found, err := ro.LookupSenderBlacklist(ctx, "tata@tata.fr"); !found || err != nil {
			t.Errorf("read-only lookup = %v, %v", found, err)
		}
		if _, err := ro.AddDomain(ctx, "new.fr", false); err == nil {
			t.Error("AddDomain on a read-only store succeeded")
		}
		// Even past the API, the connection refuses to write.
		if _, err := ro.DB().Exec("DELETE FROM postfix_domaines"); err == nil {
			t.Error("a read-only store deleted rows")
		}
	})
	if _, err := OpenReadOnly(filepath.Join(t.TempDir(), "missing.sqlite")); err == nil || !strings.Contains(err.Error(), "postkit db init") {
		t.Errorf("OpenReadOnly(missing) = %v; want a hint to run db init", err)
	}
}

func TestListUsersByDomain(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.New(t)
		fixture(t, s)
		s.AddUser(ctx, NewUser{Address: "a@toto.fr", PasswordHash: testHash, UID: 3000, GID: 3000})
		for domain, want := range map[string]int{"": 2, "toto.fr": 1, "exemple.fr": 1, "o.fr": 0} {
			us, err := s.ListUsers(ctx, domain)
			if err != nil || len(us) != want {
				t.Errorf("ListUsers(%q) = %d users, %v; want %d", domain, len(us), err, want)
			}
		}
		u := (func() User { us, _ := s.ListUsers(ctx, "toto.fr"); return us[0] })()
		if u.Home != "toto.fr/a/" || u.Privilege != PrivilegeUser || u.Prefix != "" || !u.Active {
			t.Errorf("new user row = %+v; want rep_perso toto.fr/a/, privilege utilisateur, empty prefixe, active", u)
		}
	})
}

// The database holds password hashes: a write open leaves it 0640 whatever
// mode the file had (an empty file made by touch is 0644) or the umask gives
// a new one, and a read-only open changes nothing.
func TestOpenFileMode(t *testing.T) {
	dir := t.TempDir()
	for _, pre := range []os.FileMode{0, 0o644, 0o666, 0o600, 0o604} {
		path := filepath.Join(dir, fmt.Sprintf("db-%04o.sqlite", pre))
		if pre != 0 {
			if err := os.WriteFile(path, nil, pre); err != nil {
				t.Fatal(err)
			}
			os.Chmod(path, pre) // past the umask
		}
		s, err := Open(path)
		if err != nil {
			t.Fatalf("Open over a %04o file: %v", pre, err)
		}
		if err := s.Migrate(context.Background()); err != nil {
			t.Fatal(err)
		}
		s.Close()
		if st, err := os.Stat(path); err != nil || st.Mode().Perm() != FileMode {
			t.Errorf("after Open over a %04o file (0: none): mode %v, %v; want %04o", pre, st.Mode(), err, FileMode)
		}
		os.Chmod(path, 0o644)
		ro, err := OpenReadOnly(path)
		if err != nil {
			t.Fatal(err)
		}
		ro.Close()
		if st, _ := os.Stat(path); st.Mode().Perm() != 0o644 {
			t.Errorf("OpenReadOnly changed the mode to %v", st.Mode())
		}
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(fifo); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("Open(a FIFO) = %v; want 'not a regular file'", err)
	}
}
