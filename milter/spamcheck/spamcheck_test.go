package spamcheck_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postkit/postkit/internal/testlib"
	"github.com/postkit/postkit/milter/filter"
	"github.com/postkit/postkit/milter/forged"
	"github.com/postkit/postkit/milter/milterd"
	"github.com/postkit/postkit/milter/miltertest"
	"github.com/postkit/postkit/milter/spamcheck"
	"github.com/postkit/postkit/spam"
)

// scorer is a fake engine: it records what it was given and answers with
// score, or runs fn when set.
type scorer struct {
	mu    sync.Mutex
	score float64
	fn    func(ctx context.Context, in spam.Input) (spam.Result, error)
	got   []spam.Input
}

func (s *scorer) Score(ctx context.Context, in spam.Input) (spam.Result, error) {
	s.mu.Lock()
	s.got = append(s.got, in)
	s.mu.Unlock()
	if s.fn != nil {
		return s.fn(ctx, in)
	}
	return spam.Result{Score: s.score, Required: 5, Hits: []spam.Hit{{Name: "FAKE", Score: s.score}}, Bayes: -1, Autolearn: "no"}, nil
}

func (s *scorer) inputs() []spam.Input {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]spam.Input(nil), s.got...)
}

// fields is a stand-in for the engine's header functions: enough to see
// what the filter passed.
func fields(r spam.Result, report bool) []filter.Header {
	var names []string
	for _, h := range r.Hits {
		names = append(names, h.Name)
	}
	yes := "No"
	var out []filter.Header
	if r.Spam() {
		yes = "Yes"
		out = append(out, filter.Header{Name: "X-Spam-Flag", Value: "YES"})
	}
	out = append(out, filter.Header{Name: "X-Spam-Status", Value: fmt.Sprintf("%s, score=%.1f required=%.1f tests=%s autolearn=%s", yes, r.Score, r.Required, strings.Join(names, ","), r.Autolearn)})
	if report {
		out = append(out, filter.Header{Name: "X-Spam-Report", Value: "report"})
	}
	return out
}

func newFilter(t *testing.T, cfg spamcheck.Config) *spamcheck.Filter {
	t.Helper()
	if cfg.Fields == nil {
		cfg.Fields = fields
	}
	if cfg.Required == 0 {
		cfg.Required = 5
	}
	cfg.Logger = miltertest.Logger(t)
	f, err := spamcheck.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

const inboundHeader = "From: <a@outside.test>\r\nTo: <u@example.test>\r\nSubject: hello there\r\nMessage-ID: <1@outside.test>\r\n"

func inbound(header string) *filter.Message {
	return &filter.Message{
		Conn:     &filter.Conn{Addr: netip.MustParseAddr("192.0.2.7"), Helo: "client.outside.test", Macros: map[string]string{}},
		MailFrom: "a@outside.test", Rcpts: []string{"u@example.test"}, QueueID: "Q1",
		Macros:  map[string]string{},
		Headers: miltertest.Headers([]byte(header + "\r\n")),
	}
}

func value(m *filter.Message, name string) []string {
	var out []string
	for _, h := range m.Headers {
		if strings.EqualFold(h.Name, name) {
			out = append(out, h.Value)
		}
	}
	return out
}

// The engine gets the message as it stands at end of data (header with
// the fields earlier filters added then, body) and the transaction; the
// verdict comes back as X-Spam-* fields.
func TestScoresInbound(t *testing.T) {
	for _, tc := range []struct {
		name        string
		score       float64
		rewrite     string
		report      spamcheck.Report
		wantStatus  string
		wantFlag    bool
		wantSubject string
		wantReport  bool
	}{
		{name: "ham", score: 1.5, wantStatus: "No, score=1.5 required=5.0 tests=FAKE autolearn=no", wantSubject: "hello there"},
		{name: "spam", score: 7, wantStatus: "Yes, score=7.0 required=5.0 tests=FAKE autolearn=no", wantFlag: true, wantSubject: "hello there"},
		{name: "spam rewritten", score: 7, rewrite: "*****SPAM*****", report: spamcheck.ReportSpam, wantFlag: true,
			wantStatus: "Yes, score=7.0 required=5.0 tests=FAKE autolearn=no", wantSubject: "*****SPAM***** hello there", wantReport: true},
		{name: "ham not rewritten", score: 2, rewrite: "*****SPAM*****", report: spamcheck.ReportSpam,
			wantStatus: "No, score=2.0 required=5.0 tests=FAKE autolearn=no", wantSubject: "hello there"},
		{name: "report on all", score: 2, report: spamcheck.ReportAll, wantStatus: "No, score=2.0 required=5.0 tests=FAKE autolearn=no", wantSubject: "hello there", wantReport: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc := &scorer{score: tc.score}
			f := newFilter(t, spamcheck.Config{Scorer: sc, RewriteSubject: tc.rewrite, Report: tc.report})
			m := inbound(inboundHeader)
			body := "Hello,\r\nthis is the body.\r\n"
			miltertest.Run(t, m, body, 7, endInserter{}, f)
			if got := value(m, "X-Spam-Status"); len(got) != 1 || got[0] != tc.wantStatus {
				t.Errorf("X-Spam-Status %q, want %q", got, tc.wantStatus)
			}
			if got := value(m, "X-Spam-Flag"); (len(got) == 1) != tc.wantFlag {
				t.Errorf("X-Spam-Flag %q, want present %v", got, tc.wantFlag)
			}
			if got := value(m, "X-Spam-Report"); (len(got) == 1) != tc.wantReport {
				t.Errorf("X-Spam-Report %q, want present %v", got, tc.wantReport)
			}
			if got := value(m, "Subject"); len(got) != 1 || got[0] != tc.wantSubject {
				t.Errorf("Subject %q, want %q", got, tc.wantSubject)
			}
			ins := sc.inputs()
			if len(ins) != 1 {
				t.Fatalf("scored %d times, want 1", len(ins))
			}
			in := ins[0]
			wantRaw := "Authentication-Results: mx.example.test; dkim=none\r\n" + inboundHeader + "\r\n" + body
			if string(in.Raw) != wantRaw {
				t.Errorf("engine read\n%q\nwant\n%q", in.Raw, wantRaw)
			}
			if in.Truncated || in.Authenticated || in.Client != netip.MustParseAddr("192.0.2.7") || in.Helo != "client.outside.test" ||
				in.MailFrom != "a@outside.test" || len(in.Rcpts) != 1 || in.Rcpts[0] != "u@example.test" {
				t.Errorf("input %+v", in)
			}
		})
	}
}

// endInserter adds a field at end of message, as dkimverify does before
// the spam filter's End.
type endInserter struct{}

func (endInserter) Name() string { return "inserter" }
func (endInserter) Headers(*filter.Message, *filter.Changes) (filter.Body, error) {
	return endInserter{}, nil
}
func (endInserter) Write([]byte) error { return nil }
func (endInserter) End(m *filter.Message, c *filter.Changes) error {
	c.InsertHeader(0, "Authentication-Results", "mx.example.test; dkim=none")
	return nil
}

// Mail from our own users and hosts is not scored, unless authenticated
// mail is asked for.
func TestWhichMail(t *testing.T) {
	for _, tc := range []struct {
		name      string
		outbound  bool
		auth      bool
		checkAuth bool
		scored    bool
	}{
		{"inbound", false, false, false, true},
		{"trusted network", true, false, false, false},
		{"trusted network, check_authenticated", true, false, true, false},
		{"authenticated", true, true, false, false},
		{"authenticated, check_authenticated", true, true, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc := &scorer{score: 1}
			f := newFilter(t, spamcheck.Config{Scorer: sc, CheckAuthenticated: tc.checkAuth})
			m := inbound(inboundHeader + "X-Spam-Flag: YES\r\n")
			m.Outbound = tc.outbound
			if tc.auth {
				m.Macros["{auth_authen}"] = "u@example.test"
			}
			c := miltertest.Run(t, m, "body\r\n", 0, f)
			if got := len(sc.inputs()) == 1; got != tc.scored {
				t.Fatalf("scored %v, want %v", got, tc.scored)
			}
			if !tc.scored {
				if len(c.Ops) != 0 {
					t.Errorf("changes %+v for a message not scored", c.Ops)
				}
				return
			}
			if got := sc.inputs()[0].Authenticated; got != tc.auth {
				t.Errorf("Input.Authenticated %v, want %v", got, tc.auth)
			}
			if got := value(m, "X-Spam-Flag"); len(got) != 0 {
				t.Errorf("the client's X-Spam-Flag is still there: %q", got)
			}
		})
	}
}

// X-Spam-* fields from outside go before ours are added. With forged
// before it in the chain (as the daemon runs them), each is deleted once,
// at the index Postfix applies, and neighbours of the same name stay.
func TestForgedAndSpamTogether(t *testing.T) {
	fg, err := forged.New(forged.Config{AuthservID: "mx.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	raw := "X-Spam-Flag: YES\r\n" +
		"Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n" +
		"X-Spam-Status: Yes, score=99.0 required=5.0 tests=FORGED\r\n" +
		"X-Spammy: kept\r\n" +
		"x-spam-level: *****\r\n" +
		inboundHeader + "\r\nbody\r\n"
	want := "Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n" +
		"X-Spammy: kept\r\n" +
		inboundHeader +
		"X-Spam-Status: No, score=1.0 required=5.0 tests=FAKE autolearn=no\r\n" +
		"\r\nbody\r\n"
	for _, tc := range []struct {
		name    string
		filters func(f *spamcheck.Filter) []filter.Filter
	}{
		{"forged then spam", func(f *spamcheck.Filter) []filter.Filter { return []filter.Filter{fg, f} }},
		{"spam alone", func(f *spamcheck.Filter) []filter.Filter { return []filter.Filter{f} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc := &scorer{score: 1}
			f := newFilter(t, spamcheck.Config{Scorer: sc})
			srv := miltertest.Start(t, "unix", milterd.Config{Trusted: []netip.Prefix{}}, tc.filters(f)...)
			c, err := srv.Dial(miltertest.ConnInfo{Hostname: "client.outside.test", Addr: "192.0.2.7", Port: 40001, Helo: "client.outside.test"})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			res, err := c.Send(&miltertest.Message{From: "a@outside.test", Rcpts: []string{"u@example.test"}, Raw: []byte(raw)})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(res.Final, []byte(want)) {
				t.Errorf("delivered\n%s\nwant\n%s", res.Final, want)
			}
			if in := sc.inputs(); len(in) != 1 || bytes.Contains(bytes.ToLower(in[0].Raw), []byte("x-spam-")) {
				t.Errorf("the engine read an X-Spam-* field from outside: %+v", in)
			}
		})
	}
}

// The body is held up to MaxScanBytes, whatever its size; the engine is
// told the rest was cut.
func TestScanBound(t *testing.T) {
	sc := &scorer{score: 0}
	f := newFilter(t, spamcheck.Config{Scorer: sc, MaxScanBytes: 1000})
	body := strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyz\r\n", 1000) // 38 KB
	m := inbound(inboundHeader)
	miltertest.Run(t, m, body, 333, f)
	in := sc.inputs()[0]
	_, scanned, _ := bytes.Cut(in.Raw, []byte("\r\n\r\n"))
	if len(scanned) != 1000 || !in.Truncated || string(scanned) != body[:1000] {
		t.Errorf("scanned %d bytes (truncated %v), want the first 1000 and truncated", len(scanned), in.Truncated)
	}
	sc2 := &scorer{score: 0}
	f2 := newFilter(t, spamcheck.Config{Scorer: sc2, MaxScanBytes: len(body)})
	miltertest.Run(t, inbound(inboundHeader), body, 0, f2)
	if in := sc2.inputs()[0]; in.Truncated || !bytes.HasSuffix(in.Raw, []byte(body)) {
		t.Errorf("a body of exactly MaxScanBytes was cut (truncated %v)", in.Truncated)
	}
}

// An engine that is slow, fails or panics costs the message its verdict,
// never the message: it is delivered marked, within the budget, or
// deferred when configured so.
func TestFaults(t *testing.T) {
	const budget = 200 * time.Millisecond
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	for _, tc := range []struct {
		name    string
		fn      func(ctx context.Context, in spam.Input) (spam.Result, error)
		onError spamcheck.OnError
		status  string
		verdict filter.Verdict
	}{
		{name: "ignores its context", fn: func(ctx context.Context, in spam.Input) (spam.Result, error) {
			<-release
			return spam.Result{Score: 100, Required: 5}, nil
		}, status: "No, score=0.0 required=5.0 tests=POSTKIT_TIMEOUT autolearn=no"},
		{name: "stops with its context", fn: func(ctx context.Context, in spam.Input) (spam.Result, error) {
			<-ctx.Done()
			return spam.Result{}, ctx.Err()
		}, status: "No, score=0.0 required=5.0 tests=POSTKIT_TIMEOUT autolearn=no"},
		{name: "fails", fn: func(ctx context.Context, in spam.Input) (spam.Result, error) {
			return spam.Result{}, errors.New("rules store unreadable")
		}, status: "No, score=0.0 required=5.0 tests=POSTKIT_ERROR autolearn=no"},
		{name: "panics", fn: func(ctx context.Context, in spam.Input) (spam.Result, error) {
			var m map[string]int
			m["boom"]++
			return spam.Result{}, nil
		}, status: "No, score=0.0 required=5.0 tests=POSTKIT_ERROR autolearn=no"},
		{name: "fails, tempfail", onError: spamcheck.Tempfail, verdict: filter.Tempfail, fn: func(ctx context.Context, in spam.Input) (spam.Result, error) {
			return spam.Result{}, errors.New("rules store unreadable")
		}},
		{name: "slow, tempfail", onError: spamcheck.Tempfail, verdict: filter.Tempfail, fn: func(ctx context.Context, in spam.Input) (spam.Result, error) {
			<-release
			return spam.Result{}, nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFilter(t, spamcheck.Config{Scorer: &scorer{fn: tc.fn}, TimeBudget: budget, OnError: tc.onError})
			m := inbound(inboundHeader)
			t0 := time.Now()
			c := miltertest.Run(t, m, "body\r\n", 0, f)
			if d := time.Since(t0); d > budget+time.Second {
				t.Errorf("the message was held %v, budget %v", d, budget)
			}
			if c.Verdict != tc.verdict {
				t.Fatalf("verdict %v (%s %s %s), want %v", c.Verdict, c.Code, c.Ext, c.Text, tc.verdict)
			}
			if tc.verdict == filter.Tempfail {
				if c.Code != "451" || c.Ext != "4.7.1" || len(value(m, "X-Spam-Status")) != 0 {
					t.Errorf("deferred with %s %s %q, headers %v", c.Code, c.Ext, c.Text, m.Headers)
				}
				return
			}
			if got := value(m, "X-Spam-Status"); len(got) != 1 || got[0] != tc.status {
				t.Errorf("X-Spam-Status %q, want %q", got, tc.status)
			}
		})
	}
}

// With every scoring slot taken by a stuck engine, a message waits at
// most its budget, and is delivered marked.
func TestSlots(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	sc := &scorer{fn: func(ctx context.Context, in spam.Input) (spam.Result, error) {
		<-release
		return spam.Result{}, nil
	}}
	f := newFilter(t, spamcheck.Config{Scorer: sc, TimeBudget: 100 * time.Millisecond, MaxConcurrent: 1})
	for i := 0; i < 3; i++ {
		m := inbound(inboundHeader)
		t0 := time.Now()
		miltertest.Run(t, m, "body\r\n", 0, f)
		if d := time.Since(t0); d > time.Second {
			t.Errorf("message %d held %v", i, d)
		}
		if got := value(m, "X-Spam-Status"); len(got) != 1 || !strings.Contains(got[0], "tests=POSTKIT_TIMEOUT") {
			t.Errorf("message %d: X-Spam-Status %q", i, got)
		}
	}
	if n := len(sc.inputs()); n != 1 {
		t.Errorf("the engine was called %d times with one slot held, want 1", n)
	}
}

// From reject_score on, the message is refused at end of data.
func TestReject(t *testing.T) {
	for _, tc := range []struct {
		score  float64
		refuse bool
	}{{4, false}, {12, false}, {15, true}, {1000, true}} {
		sc := &scorer{score: tc.score}
		f := newFilter(t, spamcheck.Config{Scorer: sc, RejectScore: 15})
		m := inbound(inboundHeader)
		c := miltertest.Run(t, m, "body\r\n", 0, f)
		if got := c.Verdict == filter.Reject; got != tc.refuse {
			t.Errorf("score %v: refused %v, want %v", tc.score, got, tc.refuse)
			continue
		}
		if tc.refuse && (c.Code != "550" || c.Ext != "5.7.1" || !strings.Contains(c.Text, "spam")) {
			t.Errorf("score %v: refused with %s %s %q, want 550 5.7.1", tc.score, c.Code, c.Ext, c.Text)
		}
		if !tc.refuse && len(value(m, "X-Spam-Status")) != 1 {
			t.Errorf("score %v: no X-Spam-Status", tc.score)
		}
	}
}

type learner struct {
	mu   sync.Mutex
	got  []bool
	raws [][]byte
}

func (l *learner) Learn(ctx context.Context, raw []byte, isSpam bool) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.got = append(l.got, isSpam)
	l.raws = append(l.raws, raw)
	return true, nil
}
func (l *learner) Forget(context.Context, []byte) (bool, error) { return false, nil }

func (l *learner) learned() []bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]bool(nil), l.got...)
}

// Autolearn hands what it picks to the Learner, in the background; Close
// waits for the queue.
func TestAutolearn(t *testing.T) {
	l := &learner{}
	sc := &scorer{}
	f, err := spamcheck.New(spamcheck.Config{Scorer: sc, Fields: fields, Required: 5, Learner: l, RejectScore: 20,
		Autolearn: func(r spam.Result) (bool, bool) {
			switch {
			case r.Score >= 12:
				return true, true
			case r.Score <= 0.1:
				return true, false
			}
			return false, false
		}, Logger: testlib.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []float64{0, 3, 13, 25} {
		sc.score = s
		miltertest.Run(t, inbound(inboundHeader), "body\r\n", 0, f)
	}
	f.Close()
	got := l.learned()
	if len(got) != 3 || got[0] || !got[1] || !got[2] {
		t.Errorf("learned %v, want [ham spam spam] (the refused message too)", got)
	}
	if len(l.raws) > 0 && !bytes.HasSuffix(l.raws[0], []byte("\r\n\r\nbody\r\n")) {
		t.Errorf("learned %q, want the message", l.raws[0])
	}
}

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		cfg  spamcheck.Config
		want string
	}{
		{spamcheck.Config{Fields: fields}, "no scorer"},
		{spamcheck.Config{Scorer: &scorer{}, Fields: fields, Required: 5, RejectScore: 5}, "must be above"},
		{spamcheck.Config{Scorer: &scorer{}, Fields: fields, Required: 5, RewriteSubject: "a\r\nBcc: x"}, "one line"},
	} {
		if _, err := spamcheck.New(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
	for _, s := range []string{"accept", "tempfail", ""} {
		if _, err := spamcheck.ParseOnError(s); err != nil {
			t.Errorf("ParseOnError(%q): %v", s, err)
		}
	}
	if _, err := spamcheck.ParseOnError("reject"); err == nil {
		t.Error("ParseOnError(reject) accepted")
	}
}
