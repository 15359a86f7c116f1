package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postkit/postkit/policyd"
	"github.com/postkit/postkit/policyd/state"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

var errDisk = errors.New("disk I/O error")

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

func mustKey(t testing.TB, s string) Key {
	t.Helper()
	k, err := ParseKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustLimits(t testing.TB, specs ...string) []Limit {
	t.Helper()
	var out []Limit
	// KEY:COUNTER=MAX/WINDOW, as the --ratelimit flag writes them; the
	// window is a Go duration or a number of days.
	for _, s := range specs {
		var key, counter, window string
		var max int64
		if _, err := fmt.Sscanf(strings.NewReplacer(":", " ", "=", " ", "/", " ").Replace(s), "%s %s %d %s", &key, &counter, &max, &window); err != nil {
			t.Fatalf("limit %q: %v", s, err)
		}
		w, err := time.ParseDuration(window)
		if days, ok := strings.CutSuffix(window, "d"); ok {
			var n int
			_, err = fmt.Sscanf(days, "%d", &n)
			w = time.Duration(n) * 24 * time.Hour
		}
		c, cerr := ParseCounter(counter)
		if err != nil || cerr != nil {
			t.Fatalf("limit %q: %v %v", s, err, cerr)
		}
		out = append(out, Limit{Key: mustKey(t, key), Counter: c, Max: max, Window: w})
	}
	return out
}

func submitReq(stage, sasl, sender, client string) *policyd.Request {
	return &policyd.Request{Attrs: map[string]string{
		"request": "smtpd_access_policy", "protocol_state": stage, "client_address": client,
		"sasl_username": sasl, "sender": sender, "recipient": "r@example.net",
	}}
}

func TestSlidingWindow(t *testing.T) {
	db, _ := openState(t)
	clk := newClock() // 10:00:00, aligned on the 5 s buckets of a 1 min window
	rl, err := New(Config{Limits: mustLimits(t, "sasl:recipients=10/1m"), Logger: quietLogger(), Now: clk.now}, db)
	if err != nil {
		t.Fatal(err)
	}
	req := submitReq("RCPT", "alice", "alice@example.org", "192.0.2.1")
	send := func(n int) (accepted int) {
		for i := 0; i < n; i++ {
			d, err := rl.Check(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			if !d.Final() {
				accepted++
			} else if !strings.HasPrefix(d.Action, "450 4.7.1 Rate limit reached: user alice may send 10 recipients per minute") {
				t.Fatalf("refusal %q", d.Action)
			}
		}
		return accepted
	}
	if got := send(12); got != 10 {
		t.Fatalf("10:00:00: accepted %d of 12; want 10", got)
	}
	clk.advance(58 * time.Second) // 10:00:58
	if got := send(3); got != 0 {
		t.Fatalf("10:00:58: accepted %d; want 0", got)
	}
	clk.advance(4 * time.Second) // 10:01:02: bucket [10:00:00, 10:00:05) is 3/5 inside: 6 counted
	if got := send(5); got != 4 {
		t.Fatalf("10:01:02: accepted %d of 5; want 4", got)
	}
	clk.advance(3 * time.Second) // 10:01:05: first bucket gone; 4 counted
	if got := send(8); got != 6 {
		t.Fatalf("10:01:05: accepted %d of 8; want 6", got)
	}
	clk.advance(time.Hour)
	if got := send(10); got != 10 {
		t.Fatalf("an hour later: accepted %d of 10; want 10", got)
	}
}

// TestEstimateBound checks the documented error bound of the
// bucketed sliding window against an exact sliding log, over random traffic.
func TestEstimateBound(t *testing.T) {
	db, _ := openState(t)
	clk := newClock()
	const window = time.Hour
	rl, err := New(Config{Limits: mustLimits(t, "client:recipients=1000000/1h"), Logger: quietLogger(), Now: clk.now}, db)
	if err != nil {
		t.Fatal(err)
	}
	width := rl.bucketWidth(window)
	rng := rand.New(rand.NewPCG(1, 2))
	var log []time.Time
	perBucket := map[time.Time]int{}
	req := submitReq("RCPT", "", "s@example.org", "192.0.2.1")
	for i := 0; i < 400; i++ {
		clk.advance(time.Duration(rng.IntN(60)) * time.Second)
		if d, _ := rl.Check(context.Background(), req); d.Final() {
			t.Fatalf("refused under a huge limit: %+v", d)
		}
		log = append(log, clk.t)
		perBucket[clk.t.Truncate(width)]++
		if i%20 != 19 {
			continue
		}
		exact := 0
		for _, e := range log {
			if e.After(clk.t.Add(-window)) {
				exact++
			}
		}
		key := "client_address:recipients:3600:192.0.2.1"
		est, err := rl.count(context.Background(), key, window, clk.t)
		if err != nil {
			t.Fatal(err)
		}
		edge := perBucket[clk.t.Add(-window).Truncate(width)]
		if math.Abs(est-float64(exact)) > float64(edge)+1e-9 {
			t.Fatalf("at %v estimate %.2f, exact %d: off by more than the edge bucket's %d", clk.t, est, exact, edge)
		}
	}
}

func TestStagesAndKeys(t *testing.T) {
	tests := []struct {
		name   string
		cfg    Config
		reqs   []*policyd.Request
		accept []bool
	}{
		{
			name: "messages at END-OF-MESSAGE",
			cfg:  Config{Limits: mustLimits(t, "sasl:messages=2/1h")},
			reqs: []*policyd.Request{
				submitReq("RCPT", "bob", "bob@example.org", "192.0.2.1"), // recipients are not counted by a message limit
				submitReq("END-OF-MESSAGE", "bob", "bob@example.org", "192.0.2.1"),
				submitReq("END-OF-MESSAGE", "BOB", "bob@example.org", "192.0.2.1"),
				submitReq("END-OF-MESSAGE", "bob", "bob@example.org", "192.0.2.1"),
				submitReq("END-OF-MESSAGE", "carol", "carol@example.org", "192.0.2.1"),
				submitReq("END-OF-MESSAGE", "", "bob@example.org", "192.0.2.1"), // no SASL user: no limit applies
			},
			accept: []bool{true, true, true, false, true, true},
		},
		{
			name: "recipients from recipient_count",
			cfg:  Config{Limits: mustLimits(t, "client:recipients=5/1h"), RecipientStage: "END-OF-MESSAGE"},
			reqs: []*policyd.Request{
				withAttr(submitReq("END-OF-MESSAGE", "", "a@example.org", "192.0.2.7"), "recipient_count", "3"),
				withAttr(submitReq("END-OF-MESSAGE", "", "a@example.org", "192.0.2.7"), "recipient_count", "3"),
				withAttr(submitReq("END-OF-MESSAGE", "", "a@example.org", "192.0.2.7"), "recipient_count", "2"),
				submitReq("RCPT", "", "a@example.org", "192.0.2.7"), // not counted at RCPT here
			},
			accept: []bool{true, false, true, true},
		},
		{
			name: "messages at RCPT, once per instance",
			cfg:  Config{Limits: mustLimits(t, "sender:messages=2/1h"), MessageStage: "RCPT"},
			reqs: []*policyd.Request{
				withAttr(submitReq("RCPT", "", "List@Example.org", "192.0.2.1"), "instance", "m1"),
				withAttr(submitReq("RCPT", "", "list@example.org", "192.0.2.1"), "instance", "m1"),
				withAttr(submitReq("RCPT", "", "list@example.org", "192.0.2.1"), "instance", "m1"),
				withAttr(submitReq("RCPT", "", "list@example.org", "192.0.2.1"), "instance", "m2"),
				withAttr(submitReq("RCPT", "", "list@example.org", "192.0.2.1"), "instance", "m3"),
				withAttr(submitReq("RCPT", "", "list@example.org", "192.0.2.1"), "instance", "m3"),
				withAttr(submitReq("RCPT", "", "", "192.0.2.1"), "instance", "m4"), // null sender: not limited
			},
			accept: []bool{true, true, true, true, false, false, true},
		},
		{
			name: "key aliases from the YAML model",
			cfg:  Config{Limits: []Limit{{Key: mustKey(t, "sasl_user"), Counter: Recipients, Max: 1, Window: time.Hour}}},
			reqs: []*policyd.Request{
				submitReq("RCPT", "gina", "g@example.org", "192.0.2.1"),
				submitReq("RCPT", "gina", "g@example.org", "192.0.2.1"),
			},
			accept: []bool{true, false},
		},
		{
			name: "IPv6 clients share their /64",
			cfg:  Config{Limits: mustLimits(t, "client:recipients=2/1h")},
			reqs: []*policyd.Request{
				submitReq("RCPT", "", "a@example.org", "2001:db8:1:1::1"),
				submitReq("RCPT", "", "a@example.org", "2001:db8:1:1::2"),
				submitReq("RCPT", "", "a@example.org", "2001:db8:1:1::3"),
				submitReq("RCPT", "", "a@example.org", "2001:db8:1:2::1"),
			},
			accept: []bool{true, true, false, true},
		},
		{
			name: "a refused event counts in no limit",
			cfg:  Config{Limits: mustLimits(t, "client:recipients=100/1h", "sasl:recipients=1/1h")},
			reqs: []*policyd.Request{
				submitReq("RCPT", "dave", "d@example.org", "192.0.2.50"),
				submitReq("RCPT", "dave", "d@example.org", "192.0.2.50"),
				submitReq("RCPT", "dave", "d@example.org", "192.0.2.50"),
				submitReq("RCPT", "erin", "e@example.org", "192.0.2.50"),
			},
			accept: []bool{true, false, false, true},
		},
		{
			name: "exemptions",
			cfg: Config{
				Limits:          mustLimits(t, "client:recipients=1/1h"),
				ExemptClients:   []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
				ExemptSASLUsers: []string{"Relay"},
				ExemptSenders:   []string{"lists.example", "noreply@example.org"},
			},
			reqs: []*policyd.Request{
				submitReq("RCPT", "", "x@example.org", "10.1.2.3"),
				submitReq("RCPT", "", "x@example.org", "10.1.2.3"),
				submitReq("RCPT", "relay", "x@example.org", "192.0.2.9"),
				submitReq("RCPT", "relay", "x@example.org", "192.0.2.9"),
				submitReq("RCPT", "", "news@lists.example", "192.0.2.9"),
				submitReq("RCPT", "", "noreply+x@example.org", "192.0.2.9"),
				submitReq("RCPT", "", "x@example.org", "192.0.2.9"),
				submitReq("RCPT", "", "x@example.org", "192.0.2.9"),
			},
			accept: []bool{true, true, true, true, true, true, true, false},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, _ := openState(t)
			clk := newClock()
			tt.cfg.Logger, tt.cfg.Now = quietLogger(), clk.now
			rl, err := New(tt.cfg, db)
			if err != nil {
				t.Fatal(err)
			}
			for i, r := range tt.reqs {
				clk.advance(time.Second)
				d, err := rl.Check(context.Background(), r)
				if err != nil {
					t.Fatal(err)
				}
				if d.Final() == tt.accept[i] {
					t.Errorf("request %d (%s %v): %+v; want accepted %v", i, r.Stage(), r.Attrs, d, tt.accept[i])
				}
				if d.Final() && !strings.HasPrefix(d.Action, "450 4.7.1 ") {
					t.Errorf("request %d: action %q; want a 450 4.7.1", i, d.Action)
				}
			}
		})
	}
}

func withAttr(r *policyd.Request, k, v string) *policyd.Request {
	r.Attrs[k] = v
	return r
}

func TestSurvivesRestart(t *testing.T) {
	db, path := openState(t)
	clk := newClock()
	cfg := Config{Limits: mustLimits(t, "sasl:messages=3/1d"), Logger: quietLogger(), Now: clk.now}
	rl, _ := New(cfg, db)
	req := submitReq("END-OF-MESSAGE", "frank", "f@example.org", "192.0.2.1")
	for i := 0; i < 3; i++ {
		if d, _ := rl.Check(context.Background(), req); d.Final() {
			t.Fatalf("message %d refused: %+v", i, d)
		}
		clk.advance(time.Hour)
	}
	db.Close()
	db2, err := state.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	rl2, _ := New(cfg, db2)
	d, _ := rl2.Check(context.Background(), req)
	if !d.Final() || !strings.Contains(d.Action, "user frank may send 3 messages per day") {
		t.Errorf("4th message after restart = %+v; want refused naming the limit", d)
	}
	clk.advance(22 * time.Hour) // 25 h after the first: it left the window (2h buckets)
	if d, _ := rl2.Check(context.Background(), req); d.Final() {
		t.Errorf("a day later: %+v; want accepted", d)
	}
}

// brokenRates fails every call.
type brokenRates struct{}

func (brokenRates) RateBuckets(context.Context, string, time.Time) ([]state.Bucket, error) {
	return nil, errDisk
}
func (brokenRates) RateAdd(context.Context, string, time.Time, int64, time.Time) error {
	return errDisk
}
func (brokenRates) ExpireRates(context.Context, time.Time) (int64, error) { return 0, errDisk }

func TestStoreErrorFailsOpen(t *testing.T) {
	rl, err := New(Config{Limits: mustLimits(t, "client:recipients=1/1h"), Logger: quietLogger()}, brokenRates{})
	if err != nil {
		t.Fatal(err)
	}
	d, err := rl.Check(context.Background(), submitReq("RCPT", "", "a@example.org", "192.0.2.1"))
	if err != nil || d.Final() || d.Reason != "ratelimit=error" {
		t.Errorf("Check with a failing store = %+v, %v; want no opinion", d, err)
	}
}

func TestNewErrors(t *testing.T) {
	db, _ := openState(t)
	l := mustLimits(t, "client:recipients=1/1h")
	tests := []Config{
		{},
		{Limits: l, MessageStage: "DATA"},
		{Limits: l, Code: "250 ok"},
		{Limits: []Limit{{Key: "helo", Counter: Messages, Max: 1, Window: time.Hour}}},
		{Limits: []Limit{{Key: ByClient, Counter: Messages, Max: 0, Window: time.Hour}}},
		// Aliases are for ParseKey; a Limit holds the constants.
		{Limits: []Limit{{Key: "sasl_user", Counter: Messages, Max: 1, Window: time.Hour}}},
		{Limits: []Limit{{Key: ByClient, Counter: "bytes", Max: 1, Window: time.Hour}}},
		{Limits: []Limit{{Key: ByClient, Counter: Messages, Max: 1}}},
		{Limits: []Limit{{Key: ByClient, Counter: Messages, Max: 1, Window: 1500 * time.Millisecond}}},
		{Limits: []Limit{{Key: ByClient, Counter: Messages, Max: 1, Window: 400 * 24 * time.Hour}}},
	}
	for i, cfg := range tests {
		if _, err := New(cfg, db); err == nil {
			t.Errorf("New(case %d) = nil error", i)
		}
	}
}

func TestDescribeWindow(t *testing.T) {
	for in, want := range map[time.Duration]string{
		time.Minute: "minute", time.Hour: "hour", 24 * time.Hour: "day", 10 * time.Minute: "10 minutes",
		90 * time.Second: "90 seconds", 48 * time.Hour: "2 days",
	} {
		if got := describeWindow(in); got != want {
			t.Errorf("describeWindow(%v) = %q; want %q", in, got, want)
		}
	}
}

// BenchmarkCheck measures one RCPT request under two limits
// against a real SQLite state file.
func BenchmarkCheck(b *testing.B) {
	db, err := state.Open(filepath.Join(b.TempDir(), "bench.sqlite"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	clk := newClock()
	rl, _ := New(Config{Limits: mustLimits(b, "sasl:recipients=1000000000/1h", "client:recipients=1000000000/1d"), Logger: quietLogger(), Now: clk.now}, db)
	ctx := context.Background()
	req := submitReq("RCPT", "alice", "alice@example.org", "192.0.2.1")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		clk.advance(100 * time.Millisecond)
		if d, _ := rl.Check(ctx, req); d.Final() {
			b.Fatal(d)
		}
	}
}

// The YAML model and the flags spell keys differently; both name the same.
func TestParseKeyAndCounter(t *testing.T) {
	for in, want := range map[string]Key{
		"sasl_username": BySASLUser, "sasl_user": BySASLUser, "SASL": BySASLUser,
		"sender": BySender, "client_address": ByClient, "client_ip": ByClient, "Client": ByClient,
	} {
		if got, err := ParseKey(in); err != nil || got != want {
			t.Errorf("ParseKey(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "helo", "sasl_"} {
		if got, err := ParseKey(bad); err == nil {
			t.Errorf("ParseKey(%q) = %q; want an error", bad, got)
		}
	}
	for in, want := range map[string]Counter{"messages": Messages, "Recipients": Recipients} {
		if got, err := ParseCounter(in); err != nil || got != want {
			t.Errorf("ParseCounter(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if got, err := ParseCounter("bytes"); err == nil {
		t.Errorf("ParseCounter(bytes) = %q; want an error", got)
	}
}

func TestStoreErrorDefers(t *testing.T) {
	rl, err := New(Config{Limits: mustLimits(t, "client:recipients=1/1h"), Logger: quietLogger(), OnStoreError: "450 4.3.0 try later"}, brokenRates{})
	if err != nil {
		t.Fatal(err)
	}
	d, err := rl.Check(context.Background(), submitReq("RCPT", "", "a@example.org", "192.0.2.1"))
	if err != nil || d.Action != "450 4.3.0 try later" || d.Reason != "ratelimit=error" {
		t.Errorf("Check with a failing store = %+v, %v; want the configured deferral", d, err)
	}
	if _, err := New(Config{Limits: mustLimits(t, "client:recipients=1/1h"), OnStoreError: "554 5.3.0 down"}, brokenRates{}); err == nil {
		t.Error("New accepted a permanent answer for store errors")
	}
}
