package state_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/postkit/postkit/internal/pgtest"
	"github.com/postkit/postkit/policyd"
	"github.com/postkit/postkit/policyd/greylist"
	"github.com/postkit/postkit/policyd/ratelimit"
	"github.com/postkit/postkit/policyd/state"
)

var t0 = time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)

// backend opens "hosts" stores on one shared state: SQLite handles on one
// file, or PostgreSQL pools on one database.
type backend struct {
	name string
	open func(t *testing.T) func() state.Store
}

// backends lists SQLite and, unless -short, a real PostgreSQL 15 cluster
// started for the test (one per test function, one database per call).
func backends(t *testing.T) []backend {
	bs := []backend{{"sqlite", func(t *testing.T) func() state.Store {
		path := filepath.Join(t.TempDir(), "state.sqlite")
		return func() state.Store {
			db, err := state.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return db
		}
	}}}
	if testing.Short() {
		return bs
	}
	srv := pgtest.Start(t)
	n := 0
	return append(bs, backend{"postgresql", func(t *testing.T) func() state.Store {
		n++
		dsn := srv.CreateDatabase(fmt.Sprintf("state%d", n))
		return func() state.Store {
			pg, err := state.OpenPG(context.Background(), dsn, state.PGOptions{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { pg.Close() })
			return pg
		}
	}})
}

func TestStoreRoundTrip(t *testing.T) {
	ctx := context.Background()
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			s := b.open(t)()
			if _, found, err := s.Triplet(ctx, "none"); err != nil || found {
				t.Fatalf("Triplet(none) = found %v, %v; want not found", found, err)
			}
			tr := state.Triplet{First: t0, Last: t0.Add(time.Minute), Attempts: 2}
			if err := s.PutTriplet(ctx, "k", tr); err != nil {
				t.Fatal(err)
			}
			got, found, err := s.Triplet(ctx, "k")
			if err != nil || !found || !got.First.Equal(tr.First) || !got.Last.Equal(tr.Last) || !got.Passed.IsZero() || got.Attempts != 2 {
				t.Fatalf("Triplet(k) = %+v %v %v; want %+v", got, found, err, tr)
			}
			if err := s.PutClient(ctx, "192.0.2.0/24", state.Client{Count: 3, Last: t0}); err != nil {
				t.Fatal(err)
			}
			c, found, err := s.Client(ctx, "192.0.2.0/24")
			if err != nil || !found || c.Count != 3 || !c.Last.Equal(t0) {
				t.Fatalf("Client = %+v %v %v; want count 3", c, found, err)
			}
			for i, start := range []time.Time{t0, t0.Add(5 * time.Second), t0} {
				if err := s.RateAdd(ctx, "r", start, int64(i+1), start.Add(time.Hour)); err != nil {
					t.Fatal(err)
				}
			}
			bs, err := s.RateBuckets(ctx, "r", t0)
			if err != nil || len(bs) != 2 || bs[0].Count != 4 || bs[1].Count != 2 || !bs[1].Start.Equal(t0.Add(5*time.Second)) {
				t.Fatalf("RateBuckets = %+v, %v; want [4 at t0, 2 at t0+5s]", bs, err)
			}
			if bs, _ := s.RateBuckets(ctx, "r", t0.Add(time.Second)); len(bs) != 1 {
				t.Errorf("RateBuckets since t0+1s = %+v; want the one later bucket", bs)
			}
			if n, err := s.ExpireRates(ctx, t0.Add(time.Hour+2*time.Second)); err != nil || n != 1 {
				t.Errorf("ExpireRates = %d, %v; want 1 (the bucket expiring at t0+1h)", n, err)
			}
			if n, err := s.ExpireGreylist(ctx, t0.Add(time.Second), t0.Add(-time.Hour)); err != nil || n != 1 {
				t.Errorf("ExpireGreylist = %d, %v; want 1 (the unpassed triplet)", n, err)
			}
		})
	}
}

// Within one greylisting round a triplet that passed stays passed, whatever
// order two hosts' writes land in; a new round starts afresh.
func TestPutTripletKeepsPassed(t *testing.T) {
	ctx := context.Background()
	for _, b := range backends(t) {
		if b.name == "sqlite" {
			continue // one host: the last write is the truth
		}
		t.Run(b.name, func(t *testing.T) {
			open := b.open(t)
			h1, h2 := open(), open()
			passed := state.Triplet{First: t0, Last: t0.Add(6 * time.Minute), Passed: t0.Add(6 * time.Minute), Attempts: 1}
			stale := state.Triplet{First: t0, Last: t0.Add(5 * time.Minute), Attempts: 2}
			if err := h1.PutTriplet(ctx, "k", passed); err != nil {
				t.Fatal(err)
			}
			if err := h2.PutTriplet(ctx, "k", stale); err != nil {
				t.Fatal(err)
			}
			got, _, _ := h2.Triplet(ctx, "k")
			if !got.Passed.Equal(passed.Passed) || !got.Last.Equal(passed.Last) {
				t.Errorf("after a stale deferral from host 2: %+v; want passed at %v kept", got, passed.Passed)
			}
			fresh := state.Triplet{First: t0.Add(72 * time.Hour), Last: t0.Add(72 * time.Hour), Attempts: 1}
			if err := h2.PutTriplet(ctx, "k", fresh); err != nil {
				t.Fatal(err)
			}
			if got, _, _ := h1.Triplet(ctx, "k"); !got.Passed.IsZero() || !got.First.Equal(fresh.First) {
				t.Errorf("new round = %+v; want %+v", got, fresh)
			}
		})
	}
}

// N goroutines on each of two hosts (two pools, or two handles on one
// file) add to one counter: the total is exact.
func TestRateAddConcurrentHosts(t *testing.T) {
	const workers, adds = 8, 50
	ctx := context.Background()
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			open := b.open(t)
			hosts := []state.Store{open(), open()}
			var wg sync.WaitGroup
			errs := make(chan error, 2*workers)
			for _, h := range hosts {
				for range workers {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for range adds {
							if err := h.RateAdd(ctx, "sender:messages:3600:a@example.org", t0, 1, t0.Add(2*time.Hour)); err != nil {
								errs <- err
								return
							}
						}
					}()
				}
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			bs, err := hosts[1].RateBuckets(ctx, "sender:messages:3600:a@example.org", t0)
			if err != nil || len(bs) != 1 || bs[0].Count != 2*workers*adds {
				t.Fatalf("after %d adds from 2 hosts: %+v, %v; want one bucket of %d", 2*workers*adds, bs, err, 2*workers*adds)
			}
		})
	}
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func rcpt(client, sender, to string) *policyd.Request {
	return &policyd.Request{Attrs: map[string]string{"request": "smtpd_access_policy", "protocol_state": "RCPT",
		"client_address": client, "client_name": "unknown", "sender": sender, "recipient": to}}
}

func eom(sender string) *policyd.Request {
	return &policyd.Request{Attrs: map[string]string{"request": "smtpd_access_policy", "protocol_state": "END-OF-MESSAGE",
		"client_address": "198.51.100.7", "sender": sender, "recipient_count": "1"}}
}

// Two hosts' checks over one store agree: a triplet deferred by the first
// passes on the second after the delay (through the second's cache too),
// and a sender's messages count against one limit whichever host they
// went through.
func TestChecksShareState(t *testing.T) {
	ctx := context.Background()
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			open := b.open(t)
			clk := &clock{t: t0}
			var grey []*greylist.Check
			var rl []*ratelimit.Check
			for range 2 {
				s := state.NewCached(open(), 30*time.Second, 1000, clk.now)
				g, err := greylist.New(greylist.Config{Delay: 5 * time.Minute, RetryWindow: 48 * time.Hour, MaxAge: 35 * 24 * time.Hour,
					Logger: quiet(), Now: clk.now}, s)
				if err != nil {
					t.Fatal(err)
				}
				r, err := ratelimit.New(ratelimit.Config{Limits: []ratelimit.Limit{{Key: ratelimit.BySender, Counter: ratelimit.Messages, Max: 10, Window: time.Hour}},
					Logger: quiet(), Now: clk.now}, s)
				if err != nil {
					t.Fatal(err)
				}
				grey, rl = append(grey, g), append(rl, r)
			}
			req := rcpt("192.0.2.10", "a@example.org", "b@example.net")
			if d, _ := grey[0].Check(ctx, req); d.Reason != "greylist=defer" {
				t.Fatalf("first attempt on host 1 = %+v; want defer", d)
			}
			clk.advance(time.Minute)
			if d, _ := grey[1].Check(ctx, req); d.Reason != "greylist=defer" {
				t.Fatalf("retry on host 2 before the delay = %+v; want defer", d)
			}
			clk.advance(5 * time.Minute)
			if d, _ := grey[1].Check(ctx, req); d.Reason != "greylist=pass" {
				t.Fatalf("retry on host 2 after the delay = %+v; want pass", d)
			}
			if d, _ := grey[0].Check(ctx, req); d.Reason != "greylist=pass" {
				t.Fatalf("next message on host 1 = %+v; want pass", d)
			}
			for i := range 10 {
				if d, _ := rl[i%2].Check(ctx, eom("bulk@example.org")); d.Final() {
					t.Fatalf("message %d of 10 = %+v; want counted, not refused", i+1, d)
				}
			}
			for h := range 2 {
				if d, _ := rl[h].Check(ctx, eom("bulk@example.org")); d.Reason != "ratelimit=exceeded" || d.Action[0] != '4' {
					t.Errorf("11th message on host %d = %+v; want a 4xx refusal (10 counted on both hosts)", h+1, d)
				}
			}
		})
	}
}

// A passed triplet is served from the cache for at most its TTL, and its
// last_seen is written at most once per TTL; a deferred one never is.
func TestCachedBoundsStaleness(t *testing.T) {
	ctx := context.Background()
	clk := &clock{t: t0}
	under, err := state.Open(filepath.Join(t.TempDir(), "state.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	defer under.Close()
	c := state.NewCached(under, 30*time.Second, 100, clk.now)
	deferred := state.Triplet{First: t0, Last: t0, Attempts: 1}
	c.PutTriplet(ctx, "d", deferred)
	under.PutTriplet(ctx, "d", state.Triplet{First: t0, Last: t0, Passed: t0, Attempts: 1})
	if got, _, _ := c.Triplet(ctx, "d"); got.Passed.IsZero() {
		t.Errorf("deferred triplet answered from the cache: %+v", got)
	}
	passed := state.Triplet{First: t0, Last: t0, Passed: t0.Add(time.Minute)}
	c.PutTriplet(ctx, "p", passed)
	under.PutTriplet(ctx, "p", state.Triplet{First: t0.Add(time.Hour), Last: t0.Add(time.Hour)}) // another host started a new round
	clk.advance(10 * time.Second)
	if got, _, _ := c.Triplet(ctx, "p"); got.Passed.IsZero() {
		t.Errorf("within the TTL the passed triplet should come from the cache; got %+v", got)
	}
	clk.advance(25 * time.Second)
	if got, _, _ := c.Triplet(ctx, "p"); !got.Passed.IsZero() {
		t.Errorf("past the TTL the cache answered %+v; want the store's new round", got)
	}
	// Write-behind of last_seen: skipped within the TTL, done after it.
	c.PutTriplet(ctx, "w", passed)
	clk.advance(10 * time.Second)
	c.PutTriplet(ctx, "w", state.Triplet{First: t0, Last: clk.now(), Passed: passed.Passed})
	if got, _, _ := under.Triplet(ctx, "w"); !got.Last.Equal(t0) {
		t.Errorf("last_seen written within the TTL: %+v", got)
	}
	clk.advance(25 * time.Second)
	c.PutTriplet(ctx, "w", state.Triplet{First: t0, Last: clk.now(), Passed: passed.Passed})
	if got, _, _ := under.Triplet(ctx, "w"); !got.Last.Equal(clk.now()) {
		t.Errorf("last_seen not written after the TTL: %+v; want %v", got, clk.now())
	}
}

// PostgreSQL stopped: every call fails within the connect timeout (the
// checks then fail open); started again: the same pool works without being
// reopened.
func TestPGDownAndBack(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.CreateDatabase("fault")
	pg, err := state.OpenPG(context.Background(), dsn, state.PGOptions{ConnectTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	ctx := context.Background()
	if err := pg.RateAdd(ctx, "k", t0, 1, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	start := time.Now()
	if err := pg.RateAdd(ctx, "k", t0, 1, t0.Add(time.Hour)); err == nil {
		t.Fatal("RateAdd with the server stopped = nil error")
	}
	if _, _, err := pg.Triplet(ctx, "x"); err == nil {
		t.Fatal("Triplet with the server stopped = nil error")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("two calls with the server down took %v; want each within the 1s connect timeout", d)
	}
	g, err := greylist.New(greylist.Config{Delay: 5 * time.Minute, RetryWindow: 48 * time.Hour, MaxAge: 840 * time.Hour, Logger: quiet()}, pg)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := g.Check(ctx, rcpt("192.0.2.1", "a@example.org", "b@example.net")); err != nil || d.Final() || d.Reason != "greylist=error" {
		t.Errorf("greylisting with the server down = %+v, %v; want no opinion (fail open)", d, err)
	}
	srv.Restart()
	var lastErr error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if lastErr = pg.RateAdd(ctx, "k", t0, 1, t0.Add(time.Hour)); lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("10s after the restart the pool still fails: %v", lastErr)
	}
	if bs, err := pg.RateBuckets(ctx, "k", t0); err != nil || len(bs) != 1 || bs[0].Count != 2 {
		t.Errorf("after the restart: %+v, %v; want the count of 2 kept", bs, err)
	}
}
