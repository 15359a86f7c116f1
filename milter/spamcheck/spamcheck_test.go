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

// status is X-Spam-Status as the engine writes it, unfolded.
func status(yes string, score float64, tests, autolearn string) string {
	return fmt.Sprintf("%s, score=%.1f required=5.0 tests=%s autolearn=%s version=%s", yes, score, tests, autolearn, strings.ReplaceAll(spam.Version, " ", "-"))
}

// unfold undoes the folding of a header value.
func unfold(v string) string {
	return strings.ReplaceAll(strings.ReplaceAll(v, "\r\n\t", " "), "\r\n ", " ")
}

func newFilter(t *testing.T, cfg spamcheck.Config) *spamcheck.Filter {
	t.Helper()
	if cfg.Required == 0 {
		cfg.Required = 5
	}
	cfg.Logger = miltertest.Logger(t)
	f, err := spamcheck.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
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
			out = append(out, unfold(h.Value))
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
		{name: "ham", score: 1.5, wantStatus: status("No", 1.5, "FAKE", "no"), wantSubject: "hello there"},
		{name: "spam", score: 7, wantStatus: status("Yes", 7, "FAKE", "no"), wantFlag: true, wantSubject: "hello there"},
		{name: "spam rewritten", score: 7, rewrite: "*****SPAM*****", report: spamcheck.ReportSpam, wantFlag: true,
			wantStatus: status("Yes", 7, "FAKE", "no"), wantSubject: "*****SPAM***** hello there", wantReport: true},
		{name: "ham not rewritten", score: 2, rewrite: "*****SPAM*****", report: spamcheck.ReportSpam,
			wantStatus: status("No", 2, "FAKE", "no"), wantSubject: "hello there"},
		{name: "report on all", score: 2, report: spamcheck.ReportAll, wantStatus: status("No", 2, "FAKE", "no"), wantSubject: "hello there", wantReport: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc := &scorer{score: tc.score}
			f := newFilter(t, spamcheck.Config{Scorer: sc, RewriteSubject: tc.rewrite, Report: tc.report, Host: "mx.example.test"})
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
			if got := value(m, "X-Spam-Checker-Version"); len(got) != 1 || got[0] != spam.Version+" on mx.example.test" {
				t.Errorf("X-Spam-Checker-Version %q", got)
			}
			for _, h := range m.Headers {
				if strings.Contains(strings.ReplaceAll(h.Value, "\r\n", ""), "\n") {
					t.Errorf("%s: a bare LF in %q (the filter contract folds with CRLF)", h.Name, h.Value)
				}
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
		"X-Spam-Checker-Version: " + spam.Version + "\r\n" +
		"X-Spam-Level: *\r\n" +
		"X-Spam-Status: " + strings.ReplaceAll(spam.Status(spam.Result{Score: 1, Required: 5, Hits: []spam.Hit{{Name: "FAKE"}}, Autolearn: "no"}), "\n", "\r\n") + "\r\n" +
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
		}, status: status("No", 0, "POSTKIT_TIMEOUT", "no")},
		{name: "stops with its context", fn: func(ctx context.Context, in spam.Input) (spam.Result, error) {
			<-ctx.Done()
			return spam.Result{}, ctx.Err()
		}, status: status("No", 0, "POSTKIT_TIMEOUT", "no")},
		{name: "returns what it found at its own budget", fn: func(ctx context.Context, in spam.Input) (spam.Result, error) {
			// Above the reject score: a partial verdict marks, never refuses.
			return spam.Result{Score: 20, Required: 5, Autolearn: "no", Hits: []spam.Hit{{Name: "BIG", Score: 20}, {Name: spam.HitTimeout}}},
				fmt.Errorf("%w after 1s", spam.ErrTimeout)
		}, status: status("Yes", 20, "BIG,POSTKIT_TIMEOUT", "no")},
		{name: "fails", fn: func(ctx context.Context, in spam.Input) (spam.Result, error) {
			return spam.Result{}, errors.New("rules store unreadable")
		}, status: status("No", 0, "POSTKIT_ERROR", "no")},
		{name: "panics", fn: func(ctx context.Context, in spam.Input) (spam.Result, error) {
			var m map[string]int
			m["boom"]++
			return spam.Result{}, nil
		}, status: status("No", 0, "POSTKIT_ERROR", "no")},
		{name: "fails, tempfail", onError: spamcheck.Tempfail, verdict: filter.Tempfail, fn: func(ctx context.Context, in spam.Input) (spam.Result, error) {
			return spam.Result{}, errors.New("rules store unreadable")
		}},
		{name: "slow, tempfail", onError: spamcheck.Tempfail, verdict: filter.Tempfail, fn: func(ctx context.Context, in spam.Input) (spam.Result, error) {
			<-release
			return spam.Result{}, nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFilter(t, spamcheck.Config{Scorer: &scorer{fn: tc.fn}, TimeBudget: budget, OnError: tc.onError, RejectScore: 15})
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

func TestNew(t *testing.T) {
	for _, tc := range []struct {
		cfg  spamcheck.Config
		want string
	}{
		{spamcheck.Config{}, "no scorer"},
		{spamcheck.Config{Scorer: &scorer{}, Required: 5, RejectScore: 5}, "must be above"},
		{spamcheck.Config{Scorer: &scorer{}, Required: 5, RewriteSubject: "a\r\nBcc: x"}, "one line"},
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
