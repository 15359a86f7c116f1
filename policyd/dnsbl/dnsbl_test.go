package dnsbl

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postkit/postkit/internal/dnsclient"
	"github.com/postkit/postkit/internal/dnstest"
	"github.com/postkit/postkit/policyd"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestParseSite(t *testing.T) {
	tests := []struct {
		in      string
		domain  string
		weight  int
		match   []string // answers the filter must accept
		nomatch []string // answers it must refuse
		wantErr bool
	}{
		{in: "zen.spamhaus.org", domain: "zen.spamhaus.org", weight: 1, match: []string{"127.0.0.2", "10.0.0.1"}},
		{in: "Zen.Spamhaus.org.=127.0.0.[2..11]*3", domain: "zen.spamhaus.org", weight: 3,
			match: []string{"127.0.0.2", "127.0.0.11", "127.0.0.4"}, nomatch: []string{"127.0.0.1", "127.0.0.12", "127.0.1.2"}},
		{in: "list.dnswl.org=127.0.[0..255].[1..3]*-2", domain: "list.dnswl.org", weight: -2,
			match: []string{"127.0.5.1", "127.0.255.3"}, nomatch: []string{"127.0.5.0", "127.0.5.255", "127.1.5.1"}},
		{in: "b.barracudacentral.org=127.0.0.2*2", domain: "b.barracudacentral.org", weight: 2,
			match: []string{"127.0.0.2"}, nomatch: []string{"127.0.0.3"}},
		{in: "bl.example=127.0.0.[1;3;5..7]", domain: "bl.example", weight: 1,
			match: []string{"127.0.0.1", "127.0.0.3", "127.0.0.6"}, nomatch: []string{"127.0.0.2", "127.0.0.4", "127.0.0.8"}},
		{in: "", wantErr: true},
		{in: "zen.spamhaus.org*", wantErr: true},
		{in: "zen.spamhaus.org*0", wantErr: true},
		{in: "zen.spamhaus.org*x", wantErr: true},
		{in: "zen.spamhaus.org=", wantErr: true},
		{in: "zen.spamhaus.org=127.0.0", wantErr: true},
		{in: "zen.spamhaus.org=127.0.0.256", wantErr: true},
		{in: "zen.spamhaus.org=127.0.0.[11..2]", wantErr: true},
		{in: "zen.spamhaus.org=127.0.0.[2..", wantErr: true},
		{in: "zen..spamhaus.org", wantErr: true},
		{in: "zen spamhaus", wantErr: true},
		{in: "=127.0.0.2", wantErr: true},
	}
	for _, tt := range tests {
		s, err := ParseSite(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseSite(%q) error = %v; want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if err != nil {
			continue
		}
		if s.Domain != tt.domain || s.Weight != tt.weight {
			t.Errorf("ParseSite(%q) = %s weight %d; want %s weight %d", tt.in, s.Domain, s.Weight, tt.domain, tt.weight)
		}
		for _, a := range tt.match {
			if !s.Filter.Match(netip.MustParseAddr(a)) {
				t.Errorf("ParseSite(%q) filter refuses %s", tt.in, a)
			}
		}
		for _, a := range tt.nomatch {
			if s.Filter.Match(netip.MustParseAddr(a)) {
				t.Errorf("ParseSite(%q) filter accepts %s", tt.in, a)
			}
		}
		// The rendering parses back to the same site.
		s2, err := ParseSite(s.String())
		if err != nil || s2.String() != s.String() {
			t.Errorf("ParseSite(%q).String() = %q does not round-trip: %v", tt.in, s.String(), err)
		}
	}
}

func TestParseSites(t *testing.T) {
	sites, err := ParseSites("zen.spamhaus.org=127.0.0.[2..11]*3,\n  list.dnswl.org=127.0.[0..255].[1..3]*-2 bl.example")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range sites {
		got = append(got, s.String())
	}
	want := []string{"zen.spamhaus.org=127.0.0.[2..11]*3", "list.dnswl.org=127.0.[0..255].[1..3]*-2", "bl.example"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseSites = %q; want %q", got, want)
	}
	if _, err := ParseSites("ok.example, bad..example"); err == nil {
		t.Error("ParseSites with a bad entry = nil error")
	}
}

func TestReverseName(t *testing.T) {
	tests := []struct{ ip, want string }{
		{"192.0.2.99", "99.2.0.192"},
		{"::ffff:192.0.2.1", "1.2.0.192"},
		{"2001:db8:1:2::abcd", "d.c.b.a.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2"},
	}
	for _, tt := range tests {
		if got := ReverseName(netip.MustParseAddr(tt.ip)); got != tt.want {
			t.Errorf("ReverseName(%s) = %s; want %s", tt.ip, got, tt.want)
		}
	}
}

// fakeDNS answers A queries from a map; absent names are NXDOMAIN.
type fakeDNS struct {
	mu      sync.Mutex
	answers map[string][]string
	errs    map[string]error
	delay   map[string]time.Duration
	queries []string
	// expires, when set, is noted as every answer's expiry
	// (dnsclient.NoteExpiry), as postkit's resolver does from the TTLs.
	expires time.Time
}

func (f *fakeDNS) LookupIP(ctx context.Context, network, host string) ([]net.IP, error) {
	f.mu.Lock()
	f.queries = append(f.queries, host)
	ans, ok := f.answers[host]
	err := f.errs[host]
	delay := f.delay[host]
	f.mu.Unlock()
	if network != "ip4" {
		return nil, errors.New("fake: want ip4")
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, &net.DNSError{Err: "timeout", Name: host, IsTimeout: true}
		}
	}
	if err != nil {
		return nil, err
	}
	if !f.expires.IsZero() {
		dnsclient.NoteExpiry(ctx, f.expires)
	}
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	var out []net.IP
	for _, a := range ans {
		out = append(out, net.ParseIP(a))
	}
	return out, nil
}

func (f *fakeDNS) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.queries)
}

func mustSites(t testing.TB, s string) []Site {
	t.Helper()
	sites, err := ParseSites(s)
	if err != nil {
		t.Fatal(err)
	}
	return sites
}

const testSites = "zen.spamhaus.org=127.0.0.[2..11]*3 b.barracudacentral.org=127.0.0.2*2 weak.example list.dnswl.org=127.0.[0..255].[1..3]*-2"

func TestCheck(t *testing.T) {
	dns := &fakeDNS{
		answers: map[string][]string{
			"2.0.0.127.zen.spamhaus.org":       {"127.0.0.2", "127.0.0.10"},
			"2.0.0.127.b.barracudacentral.org": {"127.0.0.2"},
			"10.2.0.192.zen.spamhaus.org":      {"127.0.0.4"},
			"11.2.0.192.weak.example":          {"127.0.0.2"},
			"12.2.0.192.list.dnswl.org":        {"127.0.10.2"},
			"13.2.0.192.list.dnswl.org":        {"127.0.10.2"},
			"13.2.0.192.zen.spamhaus.org":      {"127.0.0.2"},
			"14.2.0.192.zen.spamhaus.org":      {"127.255.255.254"},
			"15.2.0.192.zen.spamhaus.org":      {"198.51.100.7"}, // wildcarding resolver
			"16.2.0.192.zen.spamhaus.org":      {"127.0.0.1"},    // outside the filter
			"17.2.0.192.list.dnswl.org":        {"127.0.0.255"},  // dnswl "over limit": outside the filter
			"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.zen.spamhaus.org": {"127.0.0.3"},
		},
		errs: map[string]error{
			"20.2.0.192.zen.spamhaus.org": &net.DNSError{Err: "server misbehaving", Name: "x", IsTemporary: true},
		},
	}
	d, err := New(Config{Threshold: 1, Sites: mustSites(t, testSites), Logger: quietLogger(), CheckPrivate: true}, dns)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		client, sasl string
		want         policyd.Decision
		allowListed  bool
	}{
		{"127.0.0.2", "", policyd.Decision{Action: "554 5.7.1 Service unavailable; client [127.0.0.2] blocked using zen.spamhaus.org, b.barracudacentral.org", Reason: "dnsbl=listed"}, false},
		{"192.0.2.10", "", policyd.Decision{Action: "554 5.7.1 Service unavailable; client [192.0.2.10] blocked using zen.spamhaus.org", Reason: "dnsbl=listed"}, false},
		{"192.0.2.11", "", policyd.Decision{Action: "554 5.7.1 Service unavailable; client [192.0.2.11] blocked using weak.example", Reason: "dnsbl=listed"}, false},
		{"192.0.2.12", "", policyd.Decision{Reason: "dnsbl=allowlisted"}, true},
		{"192.0.2.13", "", policyd.Decision{Action: "554 5.7.1 Service unavailable; client [192.0.2.13] blocked using zen.spamhaus.org", Reason: "dnsbl=listed"}, false}, // 3-2 = 1
		{"192.0.2.14", "", policyd.Decision{Reason: "dnsbl=error"}, false},
		{"192.0.2.15", "", policyd.Decision{}, false},
		{"192.0.2.16", "", policyd.Decision{}, false},
		{"192.0.2.17", "", policyd.Decision{}, false},
		{"192.0.2.20", "", policyd.Decision{Reason: "dnsbl=error"}, false},
		{"192.0.2.99", "", policyd.Decision{}, false},
		{"2001:db8::1", "", policyd.Decision{Action: "554 5.7.1 Service unavailable; client [2001:db8::1] blocked using zen.spamhaus.org", Reason: "dnsbl=listed"}, false},
		{"127.0.0.2", "alice", policyd.Decision{}, false}, // authenticated: not checked
		{"", "", policyd.Decision{}, false},
		{"garbage", "", policyd.Decision{}, false},
	}
	for _, tt := range tests {
		r := &policyd.Request{Attrs: map[string]string{"client_address": tt.client, "sasl_username": tt.sasl}}
		got, err := d.Check(context.Background(), r)
		if err != nil {
			t.Errorf("Check(%s) error %v", tt.client, err)
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Check(%s) = %+v; want %+v", tt.client, got, tt.want)
		}
		if got := d.AllowListed(context.Background(), r); got != tt.allowListed {
			t.Errorf("AllowListed(%s) = %v; want %v", tt.client, got, tt.allowListed)
		}
	}
}

func TestSkipsPrivateAndListed(t *testing.T) {
	dns := &fakeDNS{answers: map[string][]string{
		"1.0.0.10.zen.spamhaus.org":     {"127.0.0.2"},
		"1.0.0.127.zen.spamhaus.org":    {"127.0.0.2"},
		"5.2.0.192.zen.spamhaus.org":    {"127.0.0.2"},
		"5.100.51.198.zen.spamhaus.org": {"127.0.0.2"},
	}}
	d, err := New(Config{
		Threshold:   1,
		Sites:       mustSites(t, "zen.spamhaus.org"),
		SkipClients: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")},
		Logger:      quietLogger(),
	}, dns)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"10.0.0.1", "127.0.0.1", "192.0.2.5"} {
		got, _ := d.Check(context.Background(), &policyd.Request{Attrs: map[string]string{"client_address": c}})
		if got.Final() {
			t.Errorf("Check(%s) = %+v; want skipped", c, got)
		}
	}
	if n := dns.count(); n != 0 {
		t.Errorf("skipped clients caused %d queries", n)
	}
	if got, _ := d.Check(context.Background(), &policyd.Request{Attrs: map[string]string{"client_address": "198.51.100.5"}}); !got.Final() {
		t.Errorf("Check(198.51.100.5) = %+v; want a refusal", got)
	}
}

// TestCache: a client's score is kept until the first DNS answer it
// was built from expires (its TTL, or the negative TTL of a list that does
// not list it), through postkit's resolver and the loopback DNS server.
func TestCache(t *testing.T) {
	srv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	zone := func(listed bool) *dnstest.Zone {
		recs := []string{"1.2.0.192.zen.example. 30 IN A 127.0.0.2", "1.2.0.192.slow.example. 300 IN A 127.0.0.2"}
		if listed {
			recs = append(recs, "2.2.0.192.zen.example. 300 IN A 127.0.0.2")
		}
		z, err := dnstest.ParseZone(recs...)
		if err != nil {
			t.Fatal(err)
		}
		z.NegativeTTL = 20
		return z
	}
	t0 := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0
	clock := func() time.Time { return now }
	res, err := dnsclient.New(dnsclient.Config{Servers: []string{srv.Addr()}, Timeout: time.Second, Attempts: 1, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(Config{Threshold: 1, Sites: mustSites(t, "zen.example slow.example"), Logger: quietLogger(), Now: clock}, res)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name    string
		at      time.Duration
		zone    *dnstest.Zone // nil: unchanged
		client  string
		listed  bool
		queried bool
	}{
		{"first", 0, zone(false), "192.0.2.1", true, true},
		{"cached", 29 * time.Second, nil, "192.0.2.1", true, false},
		{"smallest TTL (30s) over", 30 * time.Second, nil, "192.0.2.1", true, true},
		{"not listed", 30 * time.Second, nil, "192.0.2.2", false, true},
		{"listed since: negative answer cached", 49 * time.Second, zone(true), "192.0.2.2", false, false},
		{"negative TTL (20s) over", 50 * time.Second, nil, "192.0.2.2", true, true},
	}
	for _, s := range steps {
		if s.zone != nil {
			srv.Set(s.zone)
		}
		now = t0.Add(s.at)
		before := srv.Queries()
		got := d.Lookup(context.Background(), netip.MustParseAddr(s.client))
		if (got.Score > 0) != s.listed || (srv.Queries() > before) != s.queried {
			t.Errorf("%s: Lookup(%s) = %+v after %d queries; want listed=%v queried=%v", s.name, s.client, got, srv.Queries()-before, s.listed, s.queried)
		}
	}
}

// TestParallelTimeout checks that a slow list does not delay the answer
// beyond the timeout, and that the lists that answered still count.
func TestParallelTimeout(t *testing.T) {
	dns := &fakeDNS{
		answers: map[string][]string{"1.2.0.192.fast.example": {"127.0.0.2"}, "1.2.0.192.slow.example": {"127.0.0.2"}},
		delay:   map[string]time.Duration{"1.2.0.192.slow.example": 10 * time.Second},
	}
	d, err := New(Config{Threshold: 1, Sites: mustSites(t, "fast.example slow.example"), Timeout: 100 * time.Millisecond, Logger: quietLogger()}, dns)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	res := d.Lookup(context.Background(), netip.MustParseAddr("192.0.2.1"))
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("Lookup took %v; want about the 100ms timeout", el)
	}
	if res.Score != 1 || res.Errors != 1 || !reflect.DeepEqual(res.Listed, []string{"fast.example"}) {
		t.Errorf("Lookup = %+v; want score 1 from fast.example, 1 error", res)
	}
}

func TestNewErrors(t *testing.T) {
	sites := mustSites(t, "zen.spamhaus.org")
	tests := []struct {
		name string
		cfg  Config
		res  Resolver
	}{
		{"no resolver", Config{Sites: sites, Threshold: 1}, nil},
		{"no sites", Config{Threshold: 1}, &fakeDNS{}},
		{"no threshold", Config{Sites: sites}, &fakeDNS{}},
		{"negative threshold", Config{Sites: sites, Threshold: -1}, &fakeDNS{}},
		{"positive allow threshold", Config{Sites: sites, Threshold: 1, AllowThreshold: 2}, &fakeDNS{}},
		{"bad reject code", Config{Sites: sites, Threshold: 1, RejectCode: "250 ok"}, &fakeDNS{}},
		{"negative timeout", Config{Sites: sites, Threshold: 1, Timeout: -time.Second}, &fakeDNS{}},
	}
	for _, tt := range tests {
		if _, err := New(tt.cfg, tt.res); err == nil {
			t.Errorf("New(%s) = nil error", tt.name)
		}
	}
}

func FuzzParseSite(f *testing.F) {
	for _, s := range []string{
		"zen.spamhaus.org=127.0.0.[2..11]*3", "list.dnswl.org=127.0.[0..255].[1..3]*-2",
		"a.example=127.0.0.[1;3;5..7]", "x*", "=", "a=[..].[;].[.].[", "a.b=1.2.3.4*-1000",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		site, err := ParseSite(s)
		if err != nil {
			return
		}
		if site.Domain == "" || site.Weight == 0 || strings.ContainsAny(site.Domain, " *=") {
			t.Fatalf("ParseSite(%q) = %+v", s, site)
		}
		again, err := ParseSite(site.String())
		if err != nil || again.String() != site.String() {
			t.Fatalf("ParseSite(%q).String() = %q does not round-trip (%v)", s, site.String(), err)
		}
		site.Filter.Match(netip.MustParseAddr("127.0.0.2"))
	})
}

// BenchmarkCached measures a check answered from the score cache (the
// second and later recipients of a message).
func BenchmarkCached(b *testing.B) {
	dns := &fakeDNS{answers: map[string][]string{"1.2.0.192.zen.spamhaus.org": {"127.0.0.2"}}, expires: time.Now().Add(time.Hour)}
	d, _ := New(Config{Threshold: 1, Sites: mustSites(b, testSites), Logger: quietLogger()}, dns)
	r := &policyd.Request{Attrs: map[string]string{"client_address": "192.0.2.1"}}
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		d.Check(ctx, r)
	}
}
