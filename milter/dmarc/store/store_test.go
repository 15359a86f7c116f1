package store_test

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postkit/postkit/internal/pgtest"
	"github.com/postkit/postkit/milter/dmarc"
	"github.com/postkit/postkit/milter/dmarc/store"
)

// backend opens stores on one database: each call is another connection
// (another host, for PostgreSQL).
type backend struct {
	name string
	open func(t *testing.T) store.Store
}

// backends are SQLite and, when a server can be started, PostgreSQL.
func backends(t *testing.T) []backend {
	path := filepath.Join(t.TempDir(), "dmarc.sqlite")
	bs := []backend{{"sqlite", func(t *testing.T) store.Store {
		st, err := store.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}}}
	if testing.Short() {
		return bs
	}
	srv := pgtest.Start(t)
	dsn := srv.CreateDatabase("dmarc")
	return append(bs, backend{"postgresql", func(t *testing.T) store.Store {
		st, err := store.OpenPG(context.Background(), dsn, "")
		if err != nil {
			t.Fatal(err)
		}
		return st
	}})
}

func row(at time.Time, ip string) dmarc.Row {
	return dmarc.Row{Time: at, PolicyDomain: "example.org", SourceIP: ip, HeaderFrom: "example.org", P: "reject", Pct: 100,
		Disposition: "reject", DKIM: []dmarc.DKIMResult{{Domain: "example.org", Selector: "s", Result: "fail"}}}
}

// Rows queued by Record are written by Close and read back; sent marks,
// claims and purging work by day.
func TestRecordCloseReopen(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			st := b.open(t)
			day1 := time.Date(2026, 3, 1, 23, 59, 0, 0, time.UTC)
			day2 := day1.Add(2 * time.Minute)
			for i := 0; i < store.FlushRows+10; i++ {
				r := row(day1, "192.0.2.1")
				if i%2 == 1 {
					r.Time = day2
				}
				if err := st.Record(ctx, r); err != nil {
					t.Fatal(err)
				}
			}
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			st = b.open(t)
			defer st.Close()
			days, err := st.Days(ctx)
			if err != nil || len(days) != 2 || days[0] != "2026-03-01" || days[1] != "2026-03-02" {
				t.Fatalf("days %v, %v; want the two UTC days", days, err)
			}
			rows, err := st.Rows(ctx, "2026-03-01")
			if err != nil || len(rows) != (store.FlushRows+10)/2 {
				t.Fatalf("%d rows, %v; want %d", len(rows), err, (store.FlushRows+10)/2)
			}
			if r := rows[0]; r.DKIM[0].Selector != "s" || r.Disposition != "reject" || !r.Time.Equal(day1) || r.Pct != 100 {
				t.Errorf("row %+v read back wrong", r)
			}
			// A claim is not a send; a second claim loses; a released
			// claim can be taken again; a sent report cannot.
			if won, err := st.Claim(ctx, "example.org", "2026-03-01", day2); err != nil || !won {
				t.Fatalf("first claim: %v, %v; want won", won, err)
			}
			if sent, _ := st.Sent(ctx, "example.org", "2026-03-01"); sent {
				t.Error("claimed day taken for sent")
			}
			if won, _ := st.Claim(ctx, "example.org", "2026-03-01", day2.Add(time.Minute)); won {
				t.Error("second claim won while the first holds")
			}
			if err := st.Release(ctx, "example.org", "2026-03-01", day2); err != nil {
				t.Fatal(err)
			}
			if won, _ := st.Claim(ctx, "example.org", "2026-03-01", day2.Add(2*time.Minute)); !won {
				t.Error("claim after release lost")
			}
			if won, _ := st.Claim(ctx, "example.org", "2026-03-01", day2.Add(store.ClaimLease+time.Hour)); !won {
				t.Error("claim after the lease lapsed lost")
			}
			if err := st.MarkSent(ctx, "example.org", "2026-03-01", day2); err != nil {
				t.Fatal(err)
			}
			if sent, _ := st.Sent(ctx, "example.org", "2026-03-01"); !sent {
				t.Error("day not marked sent")
			}
			if won, _ := st.Claim(ctx, "example.org", "2026-03-01", day2.Add(48*time.Hour)); won {
				t.Error("claim of a sent report won")
			}
			if err := st.Purge(ctx, "2026-03-02"); err != nil {
				t.Fatal(err)
			}
			if days, _ := st.Days(ctx); len(days) != 1 || days[0] != "2026-03-02" {
				t.Errorf("after purge: %v; want only 2026-03-02", days)
			}
			if sent, _ := st.Sent(ctx, "example.org", "2026-03-01"); sent {
				t.Error("sent mark of a purged day kept")
			}
		})
	}
}

// Two hosts on one database: what each records appears once in the day's
// rows, and of hosts claiming a domain's day at once exactly one wins.
func TestTwoHosts(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			a, c := b.open(t), b.open(t)
			defer c.Close()
			day := time.Date(2026, 3, 5, 10, 0, 0, 0, time.UTC)
			const n = 50
			for i := 0; i < n; i++ {
				if err := a.Record(ctx, row(day, fmt.Sprintf("192.0.2.%d", i))); err != nil {
					t.Fatal(err)
				}
				if err := c.Record(ctx, row(day, fmt.Sprintf("198.51.100.%d", i))); err != nil {
					t.Fatal(err)
				}
			}
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			rows, err := c.Rows(ctx, "2026-03-05")
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]int{}
			for _, r := range rows {
				seen[r.SourceIP]++
			}
			if len(rows) != 2*n || len(seen) != 2*n {
				t.Fatalf("%d rows, %d sources; want %d once each", len(rows), len(seen), 2*n)
			}
			// Claims race from several stores (hosts) and goroutines.
			stores := []store.Store{c}
			for i := 0; i < 3; i++ {
				s := b.open(t)
				defer s.Close()
				stores = append(stores, s)
			}
			for d := 0; d < 10; d++ {
				dom := fmt.Sprintf("d%d.example", d)
				var wins atomic.Int32
				var wg sync.WaitGroup
				for i, s := range stores {
					for g := 0; g < 2; g++ {
						wg.Add(1)
						go func() {
							defer wg.Done()
							won, err := s.Claim(ctx, dom, "2026-03-05", day.Add(time.Duration(i*2+g)*time.Second))
							if err != nil {
								t.Error(err)
							}
							if won {
								wins.Add(1)
							}
						}()
					}
				}
				wg.Wait()
				if w := wins.Load(); w != 1 {
					t.Errorf("%s: %d hosts won the claim; want exactly one", dom, w)
				}
			}
		})
	}
}

// While PostgreSQL is down Record keeps the rows and says so; once it is
// back they are written, none lost.
func TestPGDown(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.CreateDatabase("dmarc")
	ctx := context.Background()
	st, err := store.OpenPG(ctx, dsn, "")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	day := time.Date(2026, 3, 7, 10, 0, 0, 0, time.UTC)
	if err := st.Record(ctx, row(day, "192.0.2.1")); err != nil {
		t.Fatal(err)
	}
	if err := st.Flush(); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	if err := st.Record(ctx, row(day, "192.0.2.2")); err != nil {
		t.Fatal(err) // queued: the writer has not failed yet
	}
	if err := st.Flush(); err == nil {
		t.Fatal("flush with the server down: no error")
	}
	if err := st.Record(ctx, row(day, "192.0.2.3")); err == nil {
		t.Error("Record with the server down: no error to log")
	}
	if _, err := st.Days(ctx); err == nil {
		t.Error("Days with the server down: no error")
	}
	srv.Restart()
	time.Sleep(1100 * time.Millisecond) // the breaker's pause
	if err := st.Flush(); err != nil {
		t.Fatalf("flush after restart: %v", err)
	}
	rows, err := st.Rows(ctx, "2026-03-07")
	if err != nil || len(rows) != 3 {
		t.Fatalf("%d rows, %v after the outage; want 3", len(rows), err)
	}
}
