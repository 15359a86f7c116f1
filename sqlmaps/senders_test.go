package sqlmaps

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// senderFixture is a domain with users, aliases in every shape the
// sender-login map must judge, and grants as postkit.yaml writes them.
func senderFixture(t testing.TB, s *Store) []SenderGrant {
	t.Helper()
	ctx := context.Background()
	must := func(_ Result, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.AddDomain(ctx, "example.test", true))
	for _, u := range []string{"demo@example.test", "bob@example.test", "off@example.test", "o'k@example.test", "sales@example.test"} {
		must(s.AddUser(ctx, NewUser{Address: u, PasswordHash: testHash, UID: 3000, GID: 3000}))
	}
	must(s.SetActive(ctx, Users, "off@example.test", false))
	for _, a := range [][2]string{
		{"contact@example.test", "demo@example.test, Bob@Example.TEST"}, // mixed case, comma and space
		{"team@example.test", "contact@example.test off@example.test"},  // through another alias; off is disabled
		{"loop1@example.test", "loop2@example.test"},
		{"loop2@example.test", "loop1@example.test, demo@example.test"}, // a loop that reaches demo
		{"@example.test", "demo@example.test"},                          // catch-all: grants nothing
		{"dead@example.test", "demo@example.test"},                      // disabled below
		{"outside@example.test", "friend@outside.test"},                 // leaves the domain: no login here
		{"sales@example.test", "bob@example.test"},                      // a user's own address forwarded
		{"chain@example.test", "nobody@example.test"},                   // reaches only the catch-all
	} {
		must(s.AddVirtualAlias(ctx, a[0], a[1]))
	}
	must(s.SetActive(ctx, VirtualAliases, "dead@example.test", false))
	// A row the API would refuse: tabs and line breaks as separators.
	c := s.db.d.char
	if _, err := s.db.Exec("INSERT INTO postfix_alias_virtuels (courriel, destination, active) VALUES ('tabs@example.test', 'x@example.test' || " + c(9) + " || 'bob@example.test' || " + c(13) + " || " + c(10) + " || 'demo@example.test', 1)"); err != nil {
		t.Fatal(err)
	}
	return []SenderGrant{
		{Sender: "Billing@example.test", Logins: []string{"bob@example.test"}},
		{Sender: "@other.test", Logins: []string{"demo@example.test", "bob@example.test"}},
		{Sender: "@example.test", Logins: []string{"news@example.test"}}, // a login with every address of the domain
		{Sender: "100%@example.test", Logins: []string{"bob@example.test"}},
		{Sender: "demo+bob@example.test", Logins: []string{"bob@example.test"}},
	}
}

func TestSenderLogins(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.New(t)
		grants := senderFixture(t, s)
		chk, err := s.Senders(SenderRules{Grants: grants, Delimiter: "+"}, FoldASCII)
		if err != nil {
			t.Fatal(err)
		}
		// news@ may use every address of example.test by its grant, whatever
		// the database says: it is in every answer for that domain.
		tests := []struct {
			addr string
			want string // owners, sorted, comma-separated
		}{
			{"demo@example.test", "demo,news"},                  // own address
			{"DEMO@Example.Test", "demo,news"},                  // keys are folded
			{"contact@example.test", "bob,demo,news"},           // alias to both
			{"team@example.test", "bob,demo,news"},              // through contact; off is disabled
			{"loop1@example.test", "demo,news"},                 // loop ends, demo reached
			{"dead@example.test", "news"},                       // disabled alias
			{"off@example.test", "news"},                        // disabled user
			{"x@example.test", "news"},                          // only the catch-all would deliver it
			{"chain@example.test", "news"},                      // reaches demo only through the catch-all
			{"outside@example.test", "news"},                    // delivered outside
			{"sales@example.test", "bob,news,sales"},            // own address kept though forwarded
			{"tabs@example.test", "bob,demo,news"},              // every separator
			{"o'k@example.test", "news,o'k"},                    // quote in the key
			{"billing@example.test", "bob,news"},                // address grant (written with capitals)
			{"100%@example.test", "bob,news"},                   // percent sign in a grant
			{"anyone@other.test", "bob,demo"},                   // domain grant
			{"demo+tag@example.test", "demo,news"},              // extension: judged as demo@ too
			{"demo+bob@example.test", "bob,demo,news"},          // its own grant and demo@'s owners
			{"contact+x@example.test", "bob,demo,news"},         // an alias's extension
			{"+x@example.test", "news"},                         // no local part left: not stripped
			{"billing+x@example.test", "bob,news"},              // a grant's extension
			{"@example.test", ""},                               // the catch-all probe is suppressed
			{"@other.test", ""},                                 //
			{"demo", ""},                                        // bare local part
			{"someone@outside.test", ""},                        // foreign
			{"", ""},                                            //
			{"x'; DROP TABLE postfix_utilisateurs; --@a.b", ""}, // stays a key
		}
		for _, tt := range tests {
			owners, err := chk.Owners(ctx, tt.addr)
			if err != nil {
				t.Fatalf("Owners(%q): %v", tt.addr, err)
			}
			var short []string
			for _, o := range owners {
				short = append(short, strings.TrimSuffix(o, "@example.test"))
			}
			sortStrings(short)
			if got := strings.Join(short, ","); got != tt.want {
				t.Errorf("Owners(%q) = %q; want %q", tt.addr, got, tt.want)
			}
		}
		if _, err := s.GetUser(ctx, "demo@example.test"); err != nil {
			t.Errorf("users table lost: %v", err)
		}

		// Without grants and without recipient_delimiter.
		plain, err := s.Senders(SenderRules{}, FoldASCII)
		if err != nil {
			t.Fatal(err)
		}
		may := []struct {
			login, addr string
			want        bool
		}{
			{"demo@example.test", "demo@example.test", true},
			{"DEMO@example.test", "demo@example.test", true}, // logins compare without case
			{"demo@example.test", "contact@example.test", true},
			{"bob@example.test", "contact@example.test", true},
			{"bob@example.test", "demo@example.test", false},
			{"demo@example.test", "billing@example.test", false}, // no such alias
			{"demo@example.test", "x@example.test", false},       // catch-all
			{"demo@example.test", "someone@outside.test", false},
			{"demo@example.test", "demo+tag@example.test", false}, // no delimiter: no stripping
			{"demo@example.test", "anyone@other.test", false},     // grants not given
		}
		for _, tt := range may {
			got, err := plain.MayUse(ctx, tt.login, tt.addr)
			if err != nil || got != tt.want {
				t.Errorf("MayUse(%q, %q) = %v, %v; want %v", tt.login, tt.addr, got, err, tt.want)
			}
		}
	})
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

func TestMapWith(t *testing.T) {
	m, _ := MapByName(SenderLoginMap)
	if got, err := m.With(SenderRules{}); err != nil || got.Query != m.Query {
		t.Errorf("With(no rules) changed the query: %v", err)
	}
	other, _ := MapByName("utilisateurs")
	if got, err := other.With(SenderRules{Grants: []SenderGrant{{Sender: "a@b.fr", Logins: []string{"c@b.fr"}}}, Delimiter: "+"}); err != nil || got.Query != other.Query {
		t.Errorf("With on utilisateurs changed its query: %v", err)
	}
	g, err := m.With(SenderRules{Grants: []SenderGrant{{Sender: "o'k%@b.fr", Logins: []string{"C@b.fr"}}}, Delimiter: "'"})
	if err != nil || !strings.HasSuffix(g.Query, "(VALUES ('o''k%%@b.fr', 'c@b.fr')) WHERE column1 IN (SELECT addr FROM k UNION ALL SELECT '@%d')") ||
		!strings.Contains(g.Query, "instr('%u', '''') > 1") {
		t.Errorf("With query %q, %v", g.Query, err)
	}
	if _, err := m.With(SenderRules{Delimiter: "+-"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("With(two-character delimiter) = %v; want ErrInvalid", err)
	}
	for _, bad := range []SenderGrant{
		{Sender: "example.org", Logins: []string{"a@b.fr"}},
		{Sender: "a@b.fr\nquery = x", Logins: []string{"a@b.fr"}},
		{Sender: "a@b.fr", Logins: nil},
		{Sender: "a@b.fr", Logins: []string{"a@b.fr'); DROP TABLE x; --"}},
		{Sender: "a@b.fr", Logins: []string{"@b.fr"}},
	} {
		if _, err := m.With(SenderRules{Grants: []SenderGrant{bad}}); !errors.Is(err, ErrInvalid) {
			t.Errorf("With(%q) = %v; want ErrInvalid", bad, err)
		}
	}
}

// TestSenderLoginPlan keeps the premise of the map's documented cost: every
// step of the query is an index search, none scans a table.
func TestSenderLoginPlan(t *testing.T) {
	s := newStore(t)
	m, _ := MapByName(SenderLoginMap)
	m, _ = m.With(SenderRules{Grants: []SenderGrant{{Sender: "@b.fr", Logins: []string{"a@b.fr"}}}, Delimiter: "+"})
	q, args, _, err := expandQuery(m.Query, "a+x@b.fr")
	if err != nil {
		t.Fatal(err)
	}
	rows, err := s.db.Query("EXPLAIN QUERY PLAN "+q, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
		if strings.HasPrefix(detail, "SCAN postfix_") || strings.HasPrefix(detail, "SCAN a") {
			t.Errorf("query plan scans a table: %q", detail)
		}
	}
	if !strings.Contains(strings.Join(plan, "\n"), "SEARCH postfix_utilisateurs USING INDEX") {
		t.Errorf("plan does not use the utilisateur index:\n%s", strings.Join(plan, "\n"))
	}
}

// BenchmarkSenderMayUse is the cost the milter pays per authenticated
// message (one lookup), on a database of 10,000 users and 10,000
// aliases. Run: go test -run '^$' -bench SenderMayUse ./sqlmaps/
func BenchmarkSenderMayUse(b *testing.B) {
	ctx := context.Background()
	path := filepath.Join(b.TempDir(), "postfix.sqlite")
	w, err := Open(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := w.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	senderFixture(b, w)
	tx, err := w.db.Begin()
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 10000; i++ {
		u := fmt.Sprintf("user%d@example.test", i)
		tx.Exec("INSERT INTO postfix_utilisateurs (utilisateur, mot_de_passe, rep_perso, uid, gid, privilege, active) VALUES (?, 'x', 'x', 3000, 3000, 'utilisateur', 1)", u)
		tx.Exec("INSERT INTO postfix_alias_virtuels (courriel, destination, active) VALUES (?, ?, 1)", fmt.Sprintf("alias%d@example.test", i), u+", demo@example.test")
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	w.Close()
	s, err := OpenReadOnly(path)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	chk, err := s.Senders(SenderRules{Grants: []SenderGrant{{Sender: "@other.test", Logins: []string{"demo@example.test"}}}, Delimiter: "+"}, FoldASCII)
	if err != nil {
		b.Fatal(err)
	}
	cases := []struct{ name, login, addr string }{
		{"own", "user5000@example.test", "user5000@example.test"},
		{"alias", "user5000@example.test", "alias5000@example.test"},
		{"chain", "demo@example.test", "team@example.test"},
		{"refused+ext", "user5000@example.test", "billing+x@example.test"},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			// CPU time as well as wall time: on a shared machine the
			// wall time also counts waiting for a core.
			cpu0 := cpuTime()
			for i := 0; i < b.N; i++ {
				if _, err := chk.MayUse(ctx, c.login, c.addr); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}
