package dnsclient

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postkit/postkit/internal/dnstest"
)

func startServer(t *testing.T, records ...string) *dnstest.Server {
	t.Helper()
	srv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	if err := srv.SetZone(records...); err != nil {
		t.Fatal(err)
	}
	return srv
}

func newResolver(t *testing.T, c Config) *Resolver {
	t.Helper()
	if c.Timeout == 0 {
		c.Timeout = 300 * time.Millisecond
	}
	if c.Attempts == 0 {
		c.Attempts = 1
	}
	r, err := New(c)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

var zone = []string{
	`example.com. 300 IN TXT "v=spf1 " "ip4:192.0.2.0/24 -all"`,
	`example.com. 300 IN TXT "other"`,
	`example.com. 300 IN MX 20 mx2.example.com.`,
	`example.com. 300 IN MX 10 mx1.example.com.`,
	`mx1.example.com. 300 IN A 192.0.2.1`,
	`mx1.example.com. 300 IN AAAA 2001:db8::1`,
	`v6only.example.com. 300 IN AAAA 2001:db8::2`,
	`alias.example.com. 300 IN CNAME mx1.example.com.`,
	`alias2.example.com. 300 IN CNAME alias.example.com.`,
	`loop1.example.com. 300 IN CNAME loop2.example.com.`,
	`loop2.example.com. 300 IN CNAME loop1.example.com.`,
	`1.2.0.192.in-addr.arpa. 300 IN PTR mx1.example.com.`,
	`deep.sub.example.com. 300 IN A 192.0.2.9`,
}

func TestLookups(t *testing.T) {
	srv := startServer(t, zone...)
	r := newResolver(t, Config{Servers: []string{srv.Addr()}})
	ctx := context.Background()
	join := func(ss []string) string { slices.Sort(ss); return strings.Join(ss, "|") }

	tests := []struct {
		name string
		do   func() (string, error)
		want string
	}{
		{"txt joins strings", func() (string, error) { s, err := r.LookupTXT(ctx, "example.com"); return join(s), err },
			"other|v=spf1 ip4:192.0.2.0/24 -all"},
		{"txt case-insensitive", func() (string, error) { s, err := r.LookupTXT(ctx, "EXAMPLE.com."); return join(s), err },
			"other|v=spf1 ip4:192.0.2.0/24 -all"},
		{"mx sorted", func() (string, error) {
			mx, err := r.LookupMX(ctx, "example.com")
			var s []string
			for _, m := range mx {
				s = append(s, m.Host)
			}
			return strings.Join(s, ","), err
		}, "mx1.example.com.,mx2.example.com."},
		{"ipaddr both families", func() (string, error) {
			ips, err := r.LookupHost(ctx, "mx1.example.com")
			return strings.Join(ips, ","), err
		}, "192.0.2.1,2001:db8::1"},
		{"ipaddr v6 only", func() (string, error) {
			ips, err := r.LookupHost(ctx, "v6only.example.com")
			return strings.Join(ips, ","), err
		}, "2001:db8::2"},
		{"ip4 only", func() (string, error) {
			ips, err := r.LookupIP(ctx, "ip4", "mx1.example.com")
			if len(ips) != 1 {
				return "", err
			}
			return ips[0].String(), err
		}, "192.0.2.1"},
		{"cname chain", func() (string, error) {
			ips, err := r.LookupHost(ctx, "alias2.example.com")
			return strings.Join(ips, ","), err
		}, "192.0.2.1,2001:db8::1"},
		{"ptr", func() (string, error) { s, err := r.LookupAddr(ctx, "192.0.2.1"); return join(s), err },
			"mx1.example.com."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.do()
			if err != nil || got != tt.want {
				t.Errorf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	srv := startServer(t, zone...)
	z, err := dnstest.ParseZone(zone...)
	if err != nil {
		t.Fatal(err)
	}
	z.ServFail("broken.example.com")
	z.Timeout("slow.example.com")
	srv.Set(z)
	r := newResolver(t, Config{Servers: []string{srv.Addr()}, Timeout: 150 * time.Millisecond})
	ctx := context.Background()

	tests := []struct {
		name      string
		host      string
		lookupTXT bool
		kind      error
		notFound  bool
		temporary bool
	}{
		{"nxdomain", "nothere.example.com", true, ErrNXDomain, true, false},
		{"no data", "mx1.example.com", true, ErrNoData, true, false},
		{"empty non-terminal is no data", "sub.example.com", true, ErrNoData, true, false},
		{"no address", "example.com", false, ErrNoData, true, false},
		{"servfail", "broken.example.com", true, ErrServFail, false, true},
		{"timeout", "slow.example.com", true, ErrTimeout, false, true},
		{"cname loop", "loop1.example.com", true, ErrServFail, false, true},
		{"label too long", strings.Repeat("a", 64) + ".example.com", true, ErrInvalidName, true, false},
		{"empty label", "a..example.com", true, ErrInvalidName, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.lookupTXT {
				_, err = r.LookupTXT(ctx, tt.host)
			} else {
				_, err = r.LookupIPAddr(ctx, tt.host)
			}
			var de *net.DNSError
			if !errors.As(err, &de) {
				t.Fatalf("err = %v (%T), want *net.DNSError", err, err)
			}
			// Consumers (blitiri.com.ar/go/spf) type-assert, not errors.As.
			if _, ok := err.(*net.DNSError); !ok {
				t.Errorf("err is wrapped: %T", err)
			}
			if !errors.Is(err, tt.kind) {
				t.Errorf("err = %v, want %v", err, tt.kind)
			}
			if de.IsNotFound != tt.notFound || de.Temporary() != tt.temporary {
				t.Errorf("IsNotFound=%v Temporary=%v, want %v %v", de.IsNotFound, de.Temporary(), tt.notFound, tt.temporary)
			}
			if IsNotFound(err) != tt.notFound || IsTemporary(err) != tt.temporary {
				t.Errorf("helpers disagree: %v %v", IsNotFound(err), IsTemporary(err))
			}
		})
	}
}

func TestInvalidNameSendsNoQuery(t *testing.T) {
	srv := startServer(t, zone...)
	r := newResolver(t, Config{Servers: []string{srv.Addr()}})
	_, err := r.LookupTXT(context.Background(), strings.Repeat("x", 70)+".example.com")
	if !IsNotFound(err) {
		t.Fatalf("err = %v, want not found", err)
	}
	if n := srv.Queries(); n != 0 {
		t.Errorf("server saw %d queries, want 0", n)
	}
}

func TestRawTXTOctets(t *testing.T) {
	srv := startServer(t)
	z := dnstest.NewZone()
	want := "v=spf1 a:ctrl\r\x00ptr \\ \"q\" \xef\xbb\xbf -all"
	z.AddTXT("raw.example.com", 60, want)
	srv.Set(z)
	r := newResolver(t, Config{Servers: []string{srv.Addr()}})
	got, err := r.LookupTXT(context.Background(), "raw.example.com")
	if err != nil || len(got) != 1 || got[0] != want {
		t.Errorf("got %q, %v; want [%q]", got, err, want)
	}
}

func TestTCPFallback(t *testing.T) {
	srv := startServer(t)
	z := dnstest.NewZone()
	big := strings.Repeat("0123456789", 300) // 3000 octets, > 1232 UDP size
	z.AddTXT("big.example.com", 60, big)
	srv.Set(z)
	r := newResolver(t, Config{Servers: []string{srv.Addr()}})
	got, err := r.LookupTXT(context.Background(), "big.example.com")
	if err != nil || len(got) != 1 || got[0] != big {
		t.Fatalf("got %d records (len %d), %v; want the 3000-octet record", len(got), len(strings.Join(got, "")), err)
	}
	if n := srv.Queries(); n != 2 {
		t.Errorf("server saw %d queries, want 2 (UDP truncated, then TCP)", n)
	}
}

func TestRetryNextServer(t *testing.T) {
	srv := startServer(t, zone...)
	// A bound UDP socket that never answers: the first server times out.
	dead, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	r := newResolver(t, Config{Servers: []string{dead.LocalAddr().String(), srv.Addr()}, Timeout: 100 * time.Millisecond})
	start := time.Now()
	got, err := r.LookupTXT(context.Background(), "example.com")
	if err != nil || len(got) != 2 {
		t.Fatalf("got %q, %v", got, err)
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > 2*time.Second {
		t.Errorf("took %v, want one timeout then an answer", d)
	}
}

func TestCache(t *testing.T) {
	srv := startServer(t, zone...)
	now := time.Unix(1_700_000_000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	// Two generations of two answers (internal/ttlcache).
	r := newResolver(t, Config{Servers: []string{srv.Addr()}, Now: clock, CacheSize: 4})
	ctx := context.Background()

	steps := []struct {
		name      string
		host      string
		advance   time.Duration
		wantQuery int64 // queries made by this step
	}{
		{"first", "example.com", 0, 1},
		{"cached", "example.com", 0, 0},
		{"negative first", "nothere.example.com", 0, 1},
		{"negative cached (SOA minimum 60s)", "nothere.example.com", 59 * time.Second, 0},
		{"negative expired", "nothere.example.com", 2 * time.Second, 1},
		{"positive still cached (TTL 300)", "example.com", 0, 0},
		{"positive expired", "example.com", 300 * time.Second, 1},
		{"fill 1", "mx1.example.com", 0, 1},
		{"fill 2", "alias.example.com", 0, 1},
		{"fill 3 evicts the oldest", "v6only.example.com", 0, 1},
		{"evicted one asked again", "nothere.example.com", 0, 1},
		{"recent one still cached", "mx1.example.com", 0, 0},
	}
	for _, s := range steps {
		advance(s.advance)
		before := srv.Queries()
		r.LookupTXT(ctx, s.host)
		if got := srv.Queries() - before; got != s.wantQuery {
			t.Errorf("%s: %d queries, want %d", s.name, got, s.wantQuery)
		}
	}
	if n := r.CacheLen(); n > 4 {
		t.Errorf("CacheLen = %d, want at most 4 (the bound)", n)
	}
}

func TestContextCanceled(t *testing.T) {
	srv := startServer(t)
	z := dnstest.NewZone()
	z.Timeout("slow.example.com")
	srv.Set(z)
	r := newResolver(t, Config{Servers: []string{srv.Addr()}, Timeout: 5 * time.Second, Attempts: 3})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := r.LookupTXT(ctx, "slow.example.com")
	if !IsTemporary(err) {
		t.Errorf("err = %v, want temporary", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %v, want the context's 100ms", d)
	}
}

func TestConfig(t *testing.T) {
	tests := []struct {
		servers []string
		want    string
		ok      bool
	}{
		{[]string{"127.0.0.1:5353"}, "127.0.0.1:5353", true},
		{[]string{"127.0.0.1"}, "127.0.0.1:53", true},
		{[]string{"::1"}, "[::1]:53", true},
		{[]string{"dns.example.com:53"}, "", false},
	}
	for _, tt := range tests {
		r, err := New(Config{Servers: tt.servers})
		if (err == nil) != tt.ok {
			t.Errorf("New(%q) err = %v, want ok=%v", tt.servers, err, tt.ok)
			continue
		}
		if err == nil && r.Servers()[0] != tt.want {
			t.Errorf("New(%q) servers = %q, want %q", tt.servers, r.Servers(), tt.want)
		}
	}
}

func FuzzUnescapeTXT(f *testing.F) {
	for _, s := range []string{`a\\b`, `\"q\"`, `\000\255\256`, `\`, `x\0`, "plain"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := unescapeTXT(s)
		if len(out) > len(s) {
			t.Errorf("unescapeTXT(%q) grew to %q", s, out)
		}
		if !strings.Contains(s, `\`) && out != s {
			t.Errorf("unescapeTXT(%q) = %q, want unchanged", s, out)
		}
	})
}
