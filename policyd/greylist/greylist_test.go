package greylist

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postkit/postkit/policyd"
	"github.com/postkit/postkit/policyd/state"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// yamlTimes gives c the delay, retry window and maximum age postkit.yaml
// sets by default (postgrey's).
func yamlTimes(c Config) Config {
	c.Delay, c.RetryWindow, c.MaxAge = 300*time.Second, 48*time.Hour, 35*24*time.Hour
	return c
}

func openState(t *testing.T) (*state.DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policyd.sqlite")
	db, err := state.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, path
}

// clock is a settable time source.
type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }
func newClock() *clock                   { return &clock{t: time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)} }
func rcptReq(client, sender, rcpt string) *policyd.Request {
	return &policyd.Request{Attrs: map[string]string{
		"request": "smtpd_access_policy", "protocol_state": "RCPT",
		"client_address": client, "client_name": "unknown", "sender": sender, "recipient": rcpt,
	}}
}

func TestScenario(t *testing.T) {
	db, _ := openState(t)
	clk := newClock()
	g, err := New(yamlTimes(Config{Header: true, Hostname: "mx.example", Logger: quietLogger(), Now: clk.now}), db)
	if err != nil {
		t.Fatal(err)
	}
	const (
		a = "198.51.100.7"
		s = "alice@example.org"
		r = "bob@example.net"
	)
	steps := []struct {
		name    string
		advance time.Duration
		req     *policyd.Request
		action  string // "" = no final action
		reason  string
		header  string // prefix of the expected prepend, "" for none
	}{
		{"first attempt", 0, rcptReq(a, s, r), "DEFER_IF_PERMIT 4.7.1 Greylisted, please try again in 300 seconds", "greylist=defer", ""},
		{"too early", 60 * time.Second, rcptReq(a, s, r), "DEFER_IF_PERMIT 4.7.1 Greylisted, please try again in 240 seconds", "greylist=defer", ""},
		{"other recipient is another triplet", 0, rcptReq(a, s, "carol@example.net"), "DEFER_IF_PERMIT 4.7.1 Greylisted, please try again in 300 seconds", "greylist=defer", ""},
		{"after the delay", 240 * time.Second, rcptReq(a, s, r), "", "greylist=pass", "X-Greylist: delayed 300 seconds by postkit at mx.example; "},
		{"later, no second header", 24 * time.Hour, rcptReq(a, s, r), "", "greylist=pass", ""},
		{"same /24 shares the triplet", 0, rcptReq("198.51.100.200", "ALICE@example.org", "Bob@Example.NET"), "", "greylist=pass", ""},
		{"other /24 is greylisted", 0, rcptReq("198.51.101.7", s, r), "DEFER_IF_PERMIT 4.7.1 Greylisted, please try again in 300 seconds", "greylist=defer", ""},
		{"VERP sender, first", 0, rcptReq(a, "bounce-1234@lists.example", r), "DEFER_IF_PERMIT 4.7.1 Greylisted, please try again in 300 seconds", "greylist=defer", ""},
		{"VERP sender, new number passes", 301 * time.Second, rcptReq(a, "bounce-5678@lists.example", r), "", "greylist=pass", "X-Greylist: delayed 301 seconds"},
		{"IPv6 /64", 0, rcptReq("2001:db8:1:2::10", s, r), "DEFER_IF_PERMIT 4.7.1 Greylisted, please try again in 300 seconds", "greylist=defer", ""},
		{"IPv6 same /64 retries", 300 * time.Second, rcptReq("2001:db8:1:2::99", s, r), "", "greylist=pass", "X-Greylist: delayed 300 seconds"},
		{"retry window: new triplet", 0, rcptReq(a, "late@example.org", r), "DEFER_IF_PERMIT 4.7.1 Greylisted, please try again in 300 seconds", "greylist=defer", ""},
		{"retry window: came back too late", 49 * time.Hour, rcptReq(a, "late@example.org", r), "DEFER_IF_PERMIT 4.7.1 Greylisted, please try again in 300 seconds", "greylist=defer", ""},
		{"max age: passed triplet idle 36 days", 36 * 24 * time.Hour, rcptReq(a, s, r), "DEFER_IF_PERMIT 4.7.1 Greylisted, please try again in 300 seconds", "greylist=defer", ""},
		{"not RCPT", 0, &policyd.Request{Attrs: map[string]string{"protocol_state": "END-OF-MESSAGE", "client_address": "203.0.113.1", "sender": s}}, "", "", ""},
		{"SASL", 0, &policyd.Request{Attrs: map[string]string{"protocol_state": "RCPT", "client_address": "203.0.113.1", "sender": s, "recipient": r, "sasl_username": "alice"}}, "", "", ""},
		{"no client address", 0, rcptReq("", s, r), "", "", ""},
	}
	for _, st := range steps {
		clk.advance(st.advance)
		d, err := g.Check(context.Background(), st.req)
		if err != nil {
			t.Fatalf("%s: error %v", st.name, err)
		}
		if d.Action != st.action || d.Reason != st.reason {
			t.Errorf("%s: Check = %q (%s); want %q (%s)", st.name, d.Action, d.Reason, st.action, st.reason)
		}
		switch {
		case st.header == "" && len(d.Prepend) > 0:
			t.Errorf("%s: prepend %q; want none", st.name, d.Prepend)
		case st.header != "" && (len(d.Prepend) != 1 || !strings.HasPrefix(d.Prepend[0], st.header)):
			t.Errorf("%s: prepend %q; want one starting %q", st.name, d.Prepend, st.header)
		}
	}
}

func TestAutoAllow(t *testing.T) {
	db, _ := openState(t)
	clk := newClock()
	g, err := New(yamlTimes(Config{AutoAllowClients: 3, Logger: quietLogger(), Now: clk.now}), db)
	if err != nil {
		t.Fatal(err)
	}
	const client = "192.0.2.33"
	pass := func(rcpt string) {
		t.Helper()
		if d, _ := g.Check(context.Background(), rcptReq(client, "s@example.org", rcpt)); d.Reason != "greylist=defer" {
			t.Fatalf("first attempt for %s: %+v; want defer", rcpt, d)
		}
		clk.advance(6 * time.Minute)
		if d, _ := g.Check(context.Background(), rcptReq(client, "s@example.org", rcpt)); d.Reason != "greylist=pass" {
			t.Fatalf("retry for %s: %+v; want pass", rcpt, d)
		}
		// A second recipient passing in the same hour does not count again.
		clk.advance(time.Minute)
		g.Check(context.Background(), rcptReq(client, "s@example.org", rcpt))
		clk.advance(time.Hour)
	}
	for i, rcpt := range []string{"a@example.net", "b@example.net"} {
		pass(rcpt)
		if c, _, _ := db.Client(context.Background(), "192.0.2.0/24"); c.Count != i+1 {
			t.Fatalf("after %d passes the client count is %d", i+1, c.Count)
		}
	}
	// Not yet allowed: a new triplet is greylisted.
	if d, _ := g.Check(context.Background(), rcptReq(client, "x@example.org", "new@example.net")); d.Reason != "greylist=defer" {
		t.Fatalf("before auto-allow: %+v; want defer", d)
	}
	pass("c@example.net")
	for _, rcpt := range []string{"d@example.net", "e@example.net"} {
		if d, _ := g.Check(context.Background(), rcptReq("192.0.2.200", "y@example.org", rcpt)); d.Final() || d.Reason != "greylist=autoallowed" {
			t.Errorf("after 3 passes, %s: %+v; want auto-allowed", rcpt, d)
		}
	}
	// The allowance lapses after MaxAge without traffic.
	clk.advance(36 * 24 * time.Hour)
	if d, _ := g.Check(context.Background(), rcptReq(client, "z@example.org", "f@example.net")); d.Reason != "greylist=defer" {
		t.Errorf("after 36 idle days: %+v; want defer", d)
	}
}

type fakeAllow bool

func (f fakeAllow) AllowListed(context.Context, *policyd.Request) bool { return bool(f) }

func TestAllowLists(t *testing.T) {
	db, _ := openState(t)
	clk := newClock()
	cfg := yamlTimes(Config{
		AllowClients:     []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24"), netip.MustParsePrefix("2001:db8:ff::/48")},
		AllowClientNames: []string{"Google.com", "mx.example.org."},
		AllowRecipients:  []string{"postmaster@example.net", "open.example", ".sub.example"},
		Logger:           quietLogger(),
		Now:              clk.now,
	})
	g, err := New(cfg, db)
	if err != nil {
		t.Fatal(err)
	}
	named := func(name string) *policyd.Request {
		r := rcptReq("198.51.100.1", "s@example.org", "u@example.net")
		r.Attrs["client_name"] = name
		return r
	}
	tests := []struct {
		name  string
		req   *policyd.Request
		allow bool
	}{
		{"client network", rcptReq("203.0.113.9", "s@example.org", "u@example.net"), true},
		{"client IPv6 network", rcptReq("2001:db8:ff:1::1", "s@example.org", "u@example.net"), true},
		{"client name suffix", named("mail-a.google.com"), true},
		{"client name exact", named("MX.example.org"), true},
		{"client name lookalike", named("notgoogle.com"), false},
		{"unknown client name", named("unknown"), false},
		{"recipient address", rcptReq("198.51.100.1", "s@example.org", "postmaster+x@Example.net"), true},
		{"recipient domain", rcptReq("198.51.100.1", "s@example.org", "any@open.example"), true},
		{"recipient subdomain of open.example not listed", rcptReq("198.51.100.1", "s@example.org", "any@x.open.example"), false},
		{"recipient subdomain", rcptReq("198.51.100.1", "s@example.org", "any@a.sub.example"), true},
		{"recipient parent of .sub.example", rcptReq("198.51.100.1", "s@example.org", "any@sub.example"), false},
	}
	for _, tt := range tests {
		d, _ := g.Check(context.Background(), tt.req)
		if got := d.Reason == "greylist=allowlisted"; got != tt.allow || (tt.allow && d.Final()) {
			t.Errorf("%s: Check = %+v; want allowed %v", tt.name, d, tt.allow)
		}
		if !tt.allow && !d.Final() {
			t.Errorf("%s: Check = %+v; want a deferral", tt.name, d)
		}
	}
	// The caller's slices are not modified.
	if cfg.AllowClientNames[0] != "Google.com" {
		t.Errorf("New modified the config: %q", cfg.AllowClientNames)
	}

	for _, listed := range []bool{true, false} {
		cfg.Allowlist = fakeAllow(listed)
		g, _ := New(cfg, db)
		d, _ := g.Check(context.Background(), rcptReq("192.0.2.1", "s@example.org", "dnswl@example.net"))
		if d.Final() == listed {
			t.Errorf("DNSWL-listed=%v: Check = %+v", listed, d)
		}
	}
}

// failingStore fails every call.
type failingStore struct{}

var errDisk = errors.New("disk I/O error")

func (failingStore) Triplet(context.Context, string) (state.Triplet, bool, error) {
	return state.Triplet{}, false, errDisk
}
func (failingStore) PutTriplet(context.Context, string, state.Triplet) error { return errDisk }
func (failingStore) Client(context.Context, string) (state.Client, bool, error) {
	return state.Client{}, false, errDisk
}
func (failingStore) PutClient(context.Context, string, state.Client) error { return errDisk }
func (failingStore) ExpireGreylist(context.Context, time.Time, time.Time) (int64, error) {
	return 0, errDisk
}

func TestStoreErrorFailsOpen(t *testing.T) {
	g, err := New(yamlTimes(Config{Logger: quietLogger()}), failingStore{})
	if err != nil {
		t.Fatal(err)
	}
	d, err := g.Check(context.Background(), rcptReq("192.0.2.1", "s@example.org", "r@example.net"))
	if err != nil || d.Final() || d.Reason != "greylist=error" {
		t.Errorf("Check with a failing store = %+v, %v; want no opinion, reason greylist=error", d, err)
	}
}

func TestSurvivesRestart(t *testing.T) {
	db, path := openState(t)
	clk := newClock()
	cfg := yamlTimes(Config{Logger: quietLogger(), Now: clk.now})
	g, _ := New(cfg, db)
	req := rcptReq("192.0.2.1", "s@example.org", "r@example.net")
	if d, _ := g.Check(context.Background(), req); !d.Final() {
		t.Fatalf("first attempt = %+v; want defer", d)
	}
	db.Close()
	clk.advance(10 * time.Minute)
	db2, err := state.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	g2, _ := New(cfg, db2)
	if d, _ := g2.Check(context.Background(), req); d.Final() || d.Reason != "greylist=pass" {
		t.Errorf("retry after restart = %+v; want pass", d)
	}
}

func TestCleanup(t *testing.T) {
	db, _ := openState(t)
	clk := newClock()
	g, _ := New(yamlTimes(Config{Logger: quietLogger(), Now: clk.now}), db)
	g.Check(context.Background(), rcptReq("192.0.2.1", "s@example.org", "gone@example.net"))
	key := "192.0.2.0/24 s@example.org gone@example.net"
	if _, found, _ := db.Triplet(context.Background(), key); !found {
		t.Fatalf("triplet %q not stored", key)
	}
	clk.advance(49 * time.Hour)
	// A request past the cleanup interval starts the expiry job, which
	// runs beside the request (once the job the first request started has
	// finished).
	deadline := time.Now().Add(5 * time.Second)
	for {
		g.Check(context.Background(), rcptReq("192.0.2.9", "other@example.org", "x@example.net"))
		_, found, _ := db.Triplet(context.Background(), key)
		if !found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("triplet %q still stored 5s after its retry window ended", key)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSenderKey(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "<>"},
		{"Alice@Example.ORG", "alice@example.org"},
		{"alice+tag@example.org", "alice@example.org"},
		{"bounce-1234-5678@lists.example", "bounce-#-#@lists.example"},
		{"user123@example.org", "user123@example.org"},
		{"prvs=1234abcdef=alice@example.org", "alice@example.org"},
		{"msprvs1=17abcdefgh=bob@example.org", "bob@example.org"},
		{"SRS0=HHH=TT=orig.example=alice@forwarder.example", "srs0=#=#=orig.example=alice@forwarder.example"},
		{"no-at-sign", "no-at-sign"},
	}
	for _, tt := range tests {
		if got := SenderKey(tt.in); got != tt.want {
			t.Errorf("SenderKey(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

func TestNewErrors(t *testing.T) {
	db, _ := openState(t)
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no delay", Config{RetryWindow: 48 * time.Hour, MaxAge: 840 * time.Hour}},
		{"no retry window", Config{Delay: 5 * time.Minute, MaxAge: 840 * time.Hour}},
		{"no max age", Config{Delay: 5 * time.Minute, RetryWindow: 48 * time.Hour}},
		{"negative delay", Config{Delay: -time.Minute, RetryWindow: 48 * time.Hour, MaxAge: 840 * time.Hour}},
		{"retry window shorter than delay", Config{Delay: time.Hour, RetryWindow: time.Minute, MaxAge: 840 * time.Hour}},
		{"max age shorter than retry window", Config{Delay: 5 * time.Minute, RetryWindow: 48 * time.Hour, MaxAge: time.Hour}},
		{"negative auto-allow", yamlTimes(Config{AutoAllowClients: -1})},
		{"bad prefix", yamlTimes(Config{IPv4Prefix: 33})},
		{"bad action", yamlTimes(Config{Action: "greylisted"})},
	}
	for _, tt := range tests {
		if _, err := New(tt.cfg, db); err == nil {
			t.Errorf("New(%s) = nil error", tt.name)
		}
	}
	if _, err := New(yamlTimes(Config{}), nil); err == nil {
		t.Error("New(nil store) = nil error")
	}
}

// BenchmarkCheck measures one RCPT request against a real SQLite
// state file: a mix of new triplets (defer) and passing retries.
func BenchmarkCheck(b *testing.B) {
	db, err := state.Open(filepath.Join(b.TempDir(), "bench.sqlite"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	clk := newClock()
	g, _ := New(yamlTimes(Config{Logger: quietLogger(), Now: clk.now}), db)
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		clk.advance(time.Second)
		g.Check(ctx, rcptReq("192.0.2.1", "s@example.org", "r"+strconv.Itoa(i%1000)+"@example.net"))
	}
}

// With an on-store-error answer configured, an unreachable store defers
// (never refuses); a permanent answer is refused at New.
func TestStoreErrorDefers(t *testing.T) {
	g, err := New(yamlTimes(Config{Logger: quietLogger(), OnStoreError: "DEFER_IF_PERMIT 4.3.0 try later"}), failingStore{})
	if err != nil {
		t.Fatal(err)
	}
	d, err := g.Check(context.Background(), rcptReq("192.0.2.1", "s@example.org", "r@example.net"))
	if err != nil || d.Action != "DEFER_IF_PERMIT 4.3.0 try later" || d.Reason != "greylist=error" {
		t.Errorf("Check with a failing store = %+v, %v; want the configured deferral", d, err)
	}
	if _, err := New(yamlTimes(Config{OnStoreError: "REJECT down"}), failingStore{}); err == nil {
		t.Error("New accepted a permanent answer for store errors")
	}
}
