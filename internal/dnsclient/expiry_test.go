package dnsclient

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/postkit/postkit/internal/dnstest"
)

// Every answer notes its own expiry, from the server or from the cache:
// the smallest TTL of the records used (a CNAME chain included), the
// RFC 2308 negative TTL, or "now" for what may not be cached.
func TestExpiryFollowsTTL(t *testing.T) {
	srv := startServer(t)
	z, err := dnstest.ParseZone(
		`long.example. 7200 IN TXT "v=spf1 -all"`,
		`short.example. 30 IN TXT "v=spf1 -all"`,
		`zero.example. 0 IN TXT "v=spf1 -all"`,
		`mixed.example. 300 IN A 192.0.2.1`,
		`mixed.example. 40 IN A 192.0.2.2`,
		`alias.example. 20 IN CNAME long.example.`,
		`v4.example. 300 IN A 192.0.2.3`,
		`v4.example. 300 IN AAAA 2001:db8::3`,
		`broken.example. 300 IN A 192.0.2.4`,
	)
	if err != nil {
		t.Fatal(err)
	}
	z.NegativeTTL = 45
	z.ServFail("broken.example")
	srv.Set(z)

	t0 := time.Unix(1_700_000_000, 0)
	now := t0
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	r := newResolver(t, Config{Servers: []string{srv.Addr()}, Now: clock, MaxTTL: time.Hour})

	tests := []struct {
		name    string
		advance time.Duration
		lookup  func(ctx context.Context) error
		want    time.Duration // from t0
		queries int64
	}{
		{"positive: the record's TTL", 0, txt(r, "short.example"), 30 * time.Second, 1},
		{"cached: the same expiry, not a new one", 10 * time.Second, txt(r, "short.example"), 30 * time.Second, 0},
		{"MaxTTL caps", 0, txt(r, "long.example"), 10*time.Second + time.Hour, 1},
		{"smallest TTL of the set", 0, ip(r, "ip4", "mixed.example"), 50 * time.Second, 1},
		{"CNAME chain: its TTL counts", 0, txt(r, "alias.example"), 30 * time.Second, 1},
		{"NXDOMAIN: SOA minimum", 0, txt(r, "nothere.example"), 55 * time.Second, 1},
		{"no data: SOA minimum", 0, txt(r, "v4.example"), 55 * time.Second, 1},
		{"negative, cached", 40 * time.Second, txt(r, "nothere.example"), 55 * time.Second, 0},
		{"negative, expired: asked again", 15 * time.Second, txt(r, "nothere.example"), 110 * time.Second, 1},
		{"TTL 0: now, not cached", 0, txt(r, "zero.example"), 65 * time.Second, 1},
		{"TTL 0 again: asked again", 0, txt(r, "zero.example"), 65 * time.Second, 1},
		{"SERVFAIL: now", 0, ip(r, "ip4", "broken.example"), 65 * time.Second, 1},
		// A (expired: asked again, 40 s) and AAAA (no data: 45 s).
		{"A and AAAA: the earlier", 0, ip(r, "ip", "mixed.example"), 105 * time.Second, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			now = now.Add(tt.advance)
			mu.Unlock()
			ctx, exp := WithExpiry(context.Background())
			q := srv.Queries()
			tt.lookup(ctx)
			got, ok := exp.Earliest()
			if !ok {
				t.Fatal("nothing noted")
			}
			if want := t0.Add(tt.want); !got.Equal(want) {
				t.Errorf("expiry t0+%v, want t0+%v", got.Sub(t0), tt.want)
			}
			if n := srv.Queries() - q; n != tt.queries {
				t.Errorf("%d queries, want %d", n, tt.queries)
			}
		})
	}
}

func txt(r *Resolver, name string) func(context.Context) error {
	return func(ctx context.Context) error { _, err := r.LookupTXT(ctx, name); return err }
}

func ip(r *Resolver, network, name string) func(context.Context) error {
	return func(ctx context.Context) error { _, err := r.LookupIP(ctx, network, name); return err }
}

// A nested Expiry notes into its parents; siblings do not see each other.
func TestExpiryNests(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	outer, top := WithExpiry(context.Background())
	a, ea := WithExpiry(outer)
	b, eb := WithExpiry(outer)
	NoteExpiry(a, t0.Add(30*time.Second))
	NoteExpiry(b, t0.Add(10*time.Second))
	NoteExpiry(a, t0.Add(60*time.Second)) // later: changes nothing
	for _, c := range []struct {
		name string
		e    *Expiry
		want time.Duration
	}{{"a", ea, 30 * time.Second}, {"b", eb, 10 * time.Second}, {"outer", top, 10 * time.Second}} {
		if got, ok := c.e.Earliest(); !ok || !got.Equal(t0.Add(c.want)) {
			t.Errorf("%s: %v %v, want t0+%v", c.name, got.Sub(t0), ok, c.want)
		}
	}
	_, empty := WithExpiry(context.Background())
	if _, ok := empty.Earliest(); ok {
		t.Error("an Expiry nothing was noted in reports one")
	}
	NoteExpiry(context.Background(), t0) // no Expiry: nothing happens
}

// Questions shared in flight note the expiry of the one exchange.
func TestExpiryInFlight(t *testing.T) {
	srv := startServer(t, `shared.example. 25 IN TXT "x"`)
	t0 := time.Unix(1_700_000_000, 0)
	r := newResolver(t, Config{Servers: []string{srv.Addr()}, Now: func() time.Time { return t0 }, CacheSize: -1})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, exp := WithExpiry(context.Background())
			if _, err := r.LookupTXT(ctx, "shared.example"); err != nil {
				t.Error(err)
				return
			}
			if got, ok := exp.Earliest(); !ok || !got.Equal(t0.Add(25*time.Second)) {
				t.Errorf("expiry %v %v, want t0+25s", got.Sub(t0), ok)
			}
		}()
	}
	wg.Wait()
}
