package sqlmaps

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
)

func TestMaps(t *testing.T) {
	want := map[string]string{
		"alias":                     "sqlite-alias.cf",
		"alias-virtuels":            "sqlite-alias-virtuels.cf",
		"domaines":                  "sqlite-domaines.cf",
		"liste-noire-destinataires": "sqlite-liste-noire-destinataires.cf",
		"liste-noire-expediteurs":   "sqlite-liste-noire-expediteurs.cf",
		"utilisateurs":              "sqlite-utilisateurs.cf",
		"sender-login":              "sqlite-sender-login.cf",
	}
	ms := Maps()
	if len(ms) != len(want) {
		t.Fatalf("Maps() has %d maps; want %d", len(ms), len(want))
	}
	for _, m := range ms {
		if want[m.Name] != m.File {
			t.Errorf("map %s file %q; want %q", m.Name, m.File, want[m.Name])
		}
		cf := string(m.CF("/etc/postfix/bdd/postfix.sqlite"))
		lines := strings.Split(strings.TrimSuffix(cf, "\n"), "\n")
		if lines[0] != Header {
			t.Errorf("%s: first line %q; want the generated-by header", m.File, lines[0])
		}
		var keys []string
		for _, l := range lines {
			if !strings.HasPrefix(l, "#") {
				k, _, _ := strings.Cut(l, " = ")
				keys = append(keys, k)
			}
		}
		if strings.Join(keys, ",") != "dbpath,query" || !strings.Contains(cf, "\ndbpath = /etc/postfix/bdd/postfix.sqlite\n") ||
			!strings.Contains(cf, "\nquery = "+m.Query+"\n") {
			t.Errorf("%s:\n%s\nwant exactly dbpath and query settings", m.File, cf)
		}
		for _, name := range []string{m.Name, m.File, "/etc/postfix/" + m.File, "sqlite:/etc/postfix/" + m.File} {
			if got, ok := MapByName(name); !ok || got.Name != m.Name {
				t.Errorf("MapByName(%q) = %v, %v", name, got.Name, ok)
			}
		}
	}
	if m, ok := MapByName("sqlite-alias-vituels.cf"); !ok || m.File != "sqlite-alias-virtuels.cf" {
		t.Errorf("MapByName(reference misspelling) = %v, %v", m, ok)
	}
	if _, ok := MapByName("nope"); ok {
		t.Error("MapByName(nope) found a map")
	}
}

// TestMapQueriesMatchSchema runs every map query against a fresh database:
// a renamed column would fail here, not in Postfix.
func TestMapQueriesMatchSchema(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *testDB) {
		s := db.New(t)
		fixture(t, s)
		for _, m := range Maps() {
			if _, _, _, err := s.Lookup(context.Background(), m, "x@y.fr", FoldASCII); err != nil {
				t.Errorf("%s: %v", m.Name, err)
			}
		}
	})
}

func TestDovecotSQL(t *testing.T) {
	got := string(DovecotSQL("/etc/postfix/bdd/postfix.sqlite", "/var/mail/utilisateurs/", "%d/%n", false))
	for _, want := range []string{
		Header + "\n",
		"\ndriver = sqlite\n",
		"\nconnect = /etc/postfix/bdd/postfix.sqlite\n",
		"\ndefault_pass_scheme = SHA512-CRYPT\n",
		"\npassword_query = SELECT utilisateur AS user, mot_de_passe AS password, '/var/mail/utilisateurs/%d/%n' AS userdb_home, 'maildir:/var/mail/utilisateurs/%d/%n' AS userdb_mail, uid AS userdb_uid, gid AS userdb_gid FROM postfix_utilisateurs WHERE utilisateur = '%u' AND active = '1'\n",
		"\nuser_query = SELECT '/var/mail/utilisateurs/%d/%n' AS home, 'maildir:/var/mail/utilisateurs/%d/%n' AS mail, uid, gid FROM postfix_utilisateurs WHERE utilisateur = '%u' AND active = '1'\n",
		"\niterate_query = SELECT utilisateur AS user FROM postfix_utilisateurs WHERE active = '1'\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("DovecotSQL lacks %q:\n%s", want, got)
		}
	}
	// Quotes and percent signs in the base directory are escaped for SQL
	// and for Dovecot's % expansion.
	odd := string(DovecotSQL("/db", "/srv/o'mail/100%", "%d/%n", false))
	if !strings.Contains(odd, "'/srv/o''mail/100%%/%d/%n' AS home") {
		t.Errorf("odd base dir not escaped:\n%s", odd)
	}
}

func TestExpandQuery(t *testing.T) {
	tests := []struct {
		q, key string
		ok     bool
		sql    string
		args   string
	}{
		{"SELECT v FROM t WHERE k='%s'", "a@b.fr", true, "SELECT v FROM t WHERE k=?", "[a@b.fr]"},
		{"SELECT v FROM t WHERE k='%s'", "o'k@b.fr", true, "SELECT v FROM t WHERE k=?", "[o'k@b.fr]"},
		{"SELECT v FROM t WHERE k='%u@%d'", "a@b.fr", true, "SELECT v FROM t WHERE k=?", "[a@b.fr]"},
		{"SELECT v FROM t WHERE k='%u@%d'", "a@b@c.fr", true, "SELECT v FROM t WHERE k=?", "[a@b@c.fr]"},
		{"SELECT v FROM t WHERE k='%u@%d'", "@b.fr", false, "", "[]"},
		{"SELECT v FROM t WHERE k='%u@%d'", "a", false, "", "[]"},
		{"SELECT v FROM t WHERE k='%u@%d'", "a@", false, "", "[]"},
		{"SELECT v FROM t WHERE k='%u'", "a", true, "SELECT v FROM t WHERE k=?", "[a]"},
		{"SELECT a || ' ' || b FROM t WHERE k='%s' AND x='1'", "k", true, "SELECT a || ' ' || b FROM t WHERE k=? AND x='1'", "[k]"},
		{"SELECT v FROM t WHERE k='100%%%s'", "x", true, "SELECT v FROM t WHERE k=?", "[100%x]"},
		{"SELECT v FROM t WHERE k='it''s %s'", "x", true, "SELECT v FROM t WHERE k=?", "[it's x]"},
	}
	for _, tt := range tests {
		q, args, ok, err := expandQuery(tt.q, tt.key)
		if err != nil || ok != tt.ok || (ok && (q != tt.sql || fmt.Sprint(args) != tt.args)) {
			t.Errorf("expandQuery(%q, %q) = %q, %v, %v, %v; want %q, %s, %v", tt.q, tt.key, q, args, ok, err, tt.sql, tt.args, tt.ok)
		}
	}
	for _, bad := range []string{"SELECT v WHERE k=%s", "SELECT v WHERE k='%x'", "SELECT v WHERE k='%", "SELECT 'open"} {
		if _, _, _, err := expandQuery(bad, "k"); err == nil {
			t.Errorf("expandQuery(%q) succeeded; want an error", bad)
		}
	}
}

func FuzzExpandQuery(f *testing.F) {
	for _, m := range Maps() {
		f.Add(m.Query, "test@exemple.fr")
	}
	f.Add("SELECT 'it''s' || '%s'", "o'k")
	f.Fuzz(func(t *testing.T, q, key string) {
		sql, args, ok, err := expandQuery(q, key)
		if err != nil || !ok {
			return
		}
		if strings.Count(sql, "?") < len(args) {
			t.Errorf("expandQuery(%q) = %q with %d args", q, sql, len(args))
		}
	})
}

func TestLookupRules(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.New(t)
		fixture(t, s)
		// Rows the API would refuse but a hand-edited or seed database may hold.
		if _, err := s.db.Exec(`INSERT INTO postfix_alias (alias, destination, active) VALUES ('empty', '', 1), ('Upper', 'x', 1), ('off', 'x', 0), ('null', 'x', NULL);
			INSERT INTO postfix_utilisateurs (utilisateur, mot_de_passe, rep_perso, uid, gid, privilege, active) VALUES ('strasse@exemple.fr', 'x', 'exemple.fr/strasse/', 3000, 3000, 'utilisateur', 1)`); err != nil {
			t.Fatal(err)
		}
		m := func(n string) Map { mm, _ := MapByName(n); return mm }
		tests := []struct {
			m     Map
			key   string
			fold  Fold
			want  string
			found bool
			warn  bool
		}{
			{m("alias"), "toto", FoldASCII, "test", true, false},
			{m("alias"), "TOTO", FoldASCII, "test", true, false},
			{m("alias"), "upper", FoldASCII, "", false, false},
			{m("alias"), "Upper", FoldASCII, "", false, false}, // folded to "upper": the stored key never matches
			{m("alias"), "empty", FoldASCII, "", false, true},
			{m("alias"), "off", FoldASCII, "", false, false},
			{m("alias"), "null", FoldASCII, "", false, false},
			{m("alias"), "", FoldASCII, "", false, true},
			{m("utilisateurs"), "Test@Exemple.FR", FoldASCII, "exemple.fr/test/", true, false},
			{m("utilisateurs"), "@exemple.fr", FoldASCII, "", false, false},
			{m("utilisateurs"), "STRAßE@exemple.fr", FoldASCII, "", false, false},
			{m("utilisateurs"), "STRAßE@exemple.fr", FoldUTF8, "exemple.fr/strasse/", true, false},
			{m("utilisateurs"), "\xff@exemple.fr", FoldUTF8, "", false, true},
			{m("liste-noire-expediteurs"), "tata@tata.fr", FoldASCII, "554 Parle à ma main", true, false},
			{m("domaines"), "EXEMPLE.FR", FoldASCII, "exemple.fr", true, false},
		}
		for _, tt := range tests {
			got, found, warns, err := s.Lookup(ctx, tt.m, tt.key, tt.fold)
			if err != nil || got != tt.want || found != tt.found || (len(warns) > 0) != tt.warn {
				t.Errorf("Lookup(%s, %q, %v) = %q, %v, %v, %v; want %q, %v, warning %v", tt.m.Name, tt.key, tt.fold, got, found, warns, err, tt.want, tt.found, tt.warn)
			}
		}
	})
}

func ExampleMap_CF() {
	m, _ := MapByName("domaines")
	os.Stdout.Write(bytes.SplitAfterN(m.CF("/etc/postfix/bdd/postfix.sqlite"), []byte("\n"), 4)[3])
	// Output:
	// dbpath = /etc/postfix/bdd/postfix.sqlite
	// query = SELECT domaine FROM postfix_domaines WHERE domaine='%s' AND active='1'
}
