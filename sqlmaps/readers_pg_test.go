package sqlmaps

import (
	"context"
	"testing"

	"github.com/postkit/postkit/internal/pgtest"
)

// The daemons' readers over PostgreSQL: created while the server is down
// (a daemon starting during an outage), they answer with an error, never
// "not ours" or "not allowed"; once PostgreSQL runs they answer from the
// rows, and after a restart they reconnect by themselves.
func TestDaemonReadersPostgres(t *testing.T) {
	ctx := context.Background()
	pg := pgtest.Start(t)
	src := Source{Driver: DriverPostgreSQL, DSN: pg.CreateDatabase("readers")}
	pg.Stop()

	set := NewDomainSet(src, nil)
	defer set.Close()
	lists := NewSpamAllowLists(src)
	defer lists.Close()
	bl, err := src.OpenForDaemon()
	if err != nil {
		t.Fatalf("OpenForDaemon with PostgreSQL down: %v; want it to connect later", err)
	}
	defer bl.Close()
	if _, err := set.Contains(ctx, "exemple.fr"); err == nil {
		t.Error("DomainSet with PostgreSQL down: no error")
	}
	if _, _, _, err := bl.LookupSenderBlacklist(ctx, "tata@tata.fr"); err == nil {
		t.Error("blacklist lookup with PostgreSQL down: no error")
	}

	pg.Restart()
	s, err := src.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	s.AddDomain(ctx, "exemple.fr", true)
	s.AddSpamAllow(ctx, "exemple.fr", "partner.fr")
	s.AddSenderBlacklist(ctx, "tata@tata.fr", 554, "non")
	check := func(when string) {
		t.Helper()
		if ok, err := set.Contains(ctx, "EXEMPLE.fr"); !ok || err != nil {
			t.Errorf("%s: Contains = %v, %v", when, ok, err)
		}
		if ok, err := lists.Allowed(ctx, []string{"u@exemple.fr"}, "mail.partner.fr"); !ok || err != nil {
			t.Errorf("%s: Allowed = %v, %v", when, ok, err)
		}
		if _, _, found, err := bl.LookupSenderBlacklist(ctx, "tata@tata.fr"); !found || err != nil {
			t.Errorf("%s: blacklist = %v, %v", when, found, err)
		}
	}
	check("after start")
	pg.Stop()
	if _, err := set.Contains(ctx, "other.fr"); err == nil {
		t.Error("DomainSet during an outage: no error")
	}
	pg.Restart()
	check("after restart")
}
