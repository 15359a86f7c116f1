// Package spamcheck is the milter chain's spam filter: it hands each inbound
// message to a spam.Scorer (package spam, the engine) and writes the verdict
// in the X-Spam-* header fields SpamAssassin writes (its add_header
// settings, as spamass-milter passes them on), so that Sieve rules and mail
// clients that read them keep working: X-Spam-Flag: YES on spam only,
// X-Spam-Status, X-Spam-Level, X-Spam-Checker-Version, optionally
// X-Spam-Report and a rewritten Subject (SpamAssassin's rewrite_header). A
// second, higher threshold refuses the message at end of data (550 5.7.1,
// spamass-milter's -r).
//
// It is a thin adapter: what a message scores is the engine's business; this
// filter decides which messages are scored (inbound mail from clients that
// neither authenticated nor are trusted; authenticated submissions only when
// configured), bounds the work (the body is scanned up to MaxScanBytes and
// never held beyond that; scoring gets TimeBudget), turns every fault into a
// delivered message with tests=POSTKIT_TIMEOUT or POSTKIT_ERROR (or a
// temporary refusal, when configured so). Autolearn is the engine's: it
// learns while it scores, within the same budget.
//
// The engine reads the facts of this pass from the header it is given: the
// Authentication-Results field the DKIM verifier of the chain adds at end of
// message (the header is taken at End, after the filters before this one
// ended), and the Received-SPF field of our policy daemon. Filter "forged",
// earlier in the chain, removes copies of both that come from outside, and
// X-Spam-* fields; this filter removes X-Spam-* fields still in its view
// (none, when forged ran), so that it works alone too and never deletes a
// field twice: deletions refer to the current view, which no longer holds
// what forged removed.
package spamcheck

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/postkit/postkit/milter/filter"
	"github.com/postkit/postkit/spam"
)

// Defaults for Config.
const (
	// DefaultMaxScanBytes is SpamAssassin's rawbody_part_scan_size.
	DefaultMaxScanBytes = 500_000
	DefaultTimeBudget   = 10 * time.Second
	// DefaultMaxConcurrent bounds the messages scored at once; the others
	// wait, within their time budget.
	DefaultMaxConcurrent = 32
)

// OnError is what happens to a message the engine could not score.
type OnError int

const (
	// Deliver it with X-Spam-Status: No and tests=POSTKIT_TIMEOUT or
	// POSTKIT_ERROR (SpamAssassin's milter passes such mail unmarked).
	DeliverMarked OnError = iota
	// Refuse it with 451 4.7.1: the client retries later.
	Tempfail
)

// ParseOnError parses "accept" or "tempfail".
func ParseOnError(s string) (OnError, error) {
	switch s {
	case "", "accept":
		return DeliverMarked, nil
	case "tempfail":
		return Tempfail, nil
	}
	return 0, fmt.Errorf("spamcheck: on_error %q: want accept or tempfail", s)
}

// Report says which messages get an X-Spam-Report field.
type Report int

const (
	ReportNone Report = iota
	ReportSpam        // spam only (SpamAssassin's add_header spam Report)
	ReportAll         // every scored message (add_header all Report)
)

// ParseReport parses "none", "spam" or "all".
func ParseReport(s string) (Report, error) {
	switch s {
	case "", "none":
		return ReportNone, nil
	case "spam":
		return ReportSpam, nil
	case "all":
		return ReportAll, nil
	}
	return 0, fmt.Errorf("spamcheck: report %q: want none, spam or all", s)
}

// Config configures the filter.
type Config struct {
	// Scorer scores a message (the engine, spam.Engine). Required.
	Scorer spam.Scorer
	// Required is the engine's required score, written in the status of a
	// message the engine could not score.
	Required float64
	// RejectScore refuses messages scoring at least this much (550 5.7.1);
	// 0 refuses none. When set, it is above Required.
	RejectScore float64
	// RewriteSubject is put in front of the Subject of spam (SpamAssassin's
	// rewrite_header Subject); "" leaves the Subject alone.
	RewriteSubject string
	// Report selects the messages that get X-Spam-Report.
	Report Report
	// Host names this server in X-Spam-Checker-Version.
	Host string
	// CheckAuthenticated scores mail from authenticated clients too.
	CheckAuthenticated bool
	// MaxScanBytes is how much of the body is scanned (and so held in
	// memory); the rest passes unread. Default DefaultMaxScanBytes.
	MaxScanBytes int
	// TimeBudget bounds scoring one message, from end of data: the message
	// goes on by then, with or without a verdict. Default
	// DefaultTimeBudget. Give the engine a budget of its own a little
	// shorter, so that it returns what it found (spam.ErrTimeout) first.
	TimeBudget time.Duration
	// MaxConcurrent bounds the messages scored at once. Default
	// DefaultMaxConcurrent.
	MaxConcurrent int
	// OnError is what happens to a message without a full verdict.
	OnError OnError
	Logger  *slog.Logger
	// Meter counts verdicts (filter.EventSpamVerdict); nil counts none.
	Meter filter.Meter
}

// Filter is the "spam" filter of the milter chain. It is safe for
// concurrent use.
type Filter struct {
	cfg   Config
	slots chan struct{} // scoring slots (MaxConcurrent)
	log   *slog.Logger
}

// New checks cfg and returns the filter.
func New(cfg Config) (*Filter, error) {
	if cfg.Scorer == nil {
		return nil, errors.New("spamcheck: no scorer configured")
	}
	if cfg.MaxScanBytes <= 0 {
		cfg.MaxScanBytes = DefaultMaxScanBytes
	}
	if cfg.TimeBudget <= 0 {
		cfg.TimeBudget = DefaultTimeBudget
	}
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = DefaultMaxConcurrent
	}
	if cfg.RejectScore != 0 && cfg.RejectScore <= cfg.Required {
		return nil, fmt.Errorf("spamcheck: reject score %.1f must be above the required score %.1f (or 0: never refuse)", cfg.RejectScore, cfg.Required)
	}
	if strings.ContainsAny(cfg.RewriteSubject, "\r\n") {
		return nil, errors.New("spamcheck: the subject prefix must be one line")
	}
	f := &Filter{cfg: cfg, slots: make(chan struct{}, cfg.MaxConcurrent), log: cfg.Logger}
	if f.log == nil {
		f.log = slog.Default()
	}
	return f, nil
}

// Name implements filter.Filter.
func (f *Filter) Name() string { return "spam" }

// Needs declares what the engine's Input holds: the HELO name and the
// recipients; the client address comes with CONNECT, the login macros are
// the daemon's own.
func (f *Filter) Needs() filter.Needs {
	return filter.Needs{Helo: true, Rcpts: true, Macros: []string{"{auth_type}", "{auth_authen}"}}
}

// authenticated reports a SASL login.
func authenticated(m *filter.Message) bool {
	return m.Macro("{auth_authen}") != "" || m.Macro("{auth_type}") != ""
}

// Headers implements filter.Filter: it decides whether the message is
// scored and, if it is, removes the X-Spam-* fields still in the view and
// collects the body.
func (f *Filter) Headers(m *filter.Message, c *filter.Changes) (filter.Body, error) {
	auth := authenticated(m)
	if m.Outbound && !(auth && f.cfg.CheckAuthenticated) {
		return nil, nil // trusted networks, local submission, our users
	}
	// Every X-Spam-* field goes, in view order: when one is reached, the
	// earlier fields of its name are gone, so it is occurrence 1.
	seen := 0
	for i := 0; i < len(m.Headers); {
		if name := m.Headers[i].Name; isSpamField(name) {
			if !c.DeleteHeader(name, 1) {
				return nil, errors.New("spamcheck: header view out of step with its occurrence index")
			}
			seen++
			continue
		}
		i++
	}
	if seen > 0 {
		f.log.Info("spam: removed X-Spam-* fields that came with the message", "queue_id", m.QueueID, "count", seen)
	}
	return &body{f: f, auth: auth, buf: getBuf()}, nil
}

func isSpamField(name string) bool {
	name = strings.TrimSpace(name)
	return len(name) >= 7 && strings.EqualFold(name[:7], "X-Spam-")
}

// body collects the first MaxScanBytes of the body.
type body struct {
	f         *Filter
	auth      bool
	buf       *bytes.Buffer
	truncated bool
}

// Write keeps what fits in the scan size and drops the rest.
func (b *body) Write(chunk []byte) error {
	if b.truncated {
		return nil
	}
	room := b.f.cfg.MaxScanBytes - b.buf.Len()
	if len(chunk) > room {
		chunk = chunk[:room]
		b.truncated = true
	}
	b.buf.Write(chunk)
	return nil
}

// Abort implements filter.Aborter: the buffer goes back to the pool.
func (b *body) Abort() {
	if b.buf != nil {
		putBuf(b.buf)
		b.buf = nil
	}
}

// End scores the message within the time budget and records the verdict.
func (b *body) End(m *filter.Message, c *filter.Changes) error {
	f := b.f
	start := time.Now()
	in := spam.Input{
		Raw:           b.raw(m),
		Truncated:     b.truncated,
		MailFrom:      m.MailFrom,
		Rcpts:         m.Rcpts,
		Authenticated: b.auth,
		Received:      start,
	}
	if m.Conn != nil {
		in.Client, in.Helo = m.Conn.Addr, m.Conn.Helo
	}
	putBuf(b.buf)
	b.buf = nil

	res, fault, partial := f.score(in)
	elapsed := time.Since(start)
	if fault != "" {
		if f.cfg.OnError == Tempfail {
			filter.Count(f.cfg.Meter, filter.EventSpamVerdict, "error")
			f.log.Warn("spam: no verdict; deferring", "queue_id", m.QueueID, "why", fault, "elapsed", elapsed.Round(time.Millisecond))
			// RFC 3463 section 3.8: X.7.1; the client retries later.
			c.Refuse(filter.Tempfail, "451", "4.7.1", "Cannot check this message for spam now; try again later")
			return nil
		}
		f.log.Warn("spam: no full verdict; delivering it marked", "queue_id", m.QueueID, "why", fault, "partial", partial,
			"elapsed", elapsed.Round(time.Millisecond))
	}
	isSpam := res.Spam()
	// A partial verdict marks, never refuses: what was not looked at
	// might have spoken for the message.
	if fault == "" && f.cfg.RejectScore > 0 && res.Score >= f.cfg.RejectScore {
		filter.Count(f.cfg.Meter, filter.EventSpamVerdict, "reject")
		f.log.Info("spam: refused", "queue_id", m.QueueID, "score", fmt.Sprintf("%.1f", res.Score), "reject", f.cfg.RejectScore,
			"tests", testNames(res), "client", in.Client, "sender", m.MailFrom, "elapsed", elapsed.Round(time.Millisecond))
		// RFC 3463 section 3.8: X.7.1, delivery not authorized.
		c.Refuse(filter.Reject, "550", "5.7.1", fmt.Sprintf("Message refused as spam (score %.1f, limit %.1f)", res.Score, f.cfg.RejectScore))
		return nil
	}
	report := f.cfg.Report == ReportAll || (f.cfg.Report == ReportSpam && isSpam)
	for _, fl := range spam.Fields(res, spam.HeaderOptions{Report: report, Host: f.cfg.Host}) {
		// The engine folds with a bare LF, the filter contract with CRLF.
		c.AddHeader(fl.Name, crlf(fl.Value))
	}
	if isSpam && f.cfg.RewriteSubject != "" {
		rewriteSubject(m, c, f.cfg.RewriteSubject)
	}
	switch {
	case fault != "":
		filter.Count(f.cfg.Meter, filter.EventSpamVerdict, "error")
	case isSpam:
		filter.Count(f.cfg.Meter, filter.EventSpamVerdict, "spam")
	default:
		filter.Count(f.cfg.Meter, filter.EventSpamVerdict, "ham")
	}
	f.log.Info("spam: scored", "queue_id", m.QueueID, "spam", isSpam, "score", fmt.Sprintf("%.1f", res.Score),
		"required", res.Required, "tests", testNames(res), "bayes", fmt.Sprintf("%.3f", res.Bayes), "autolearn", res.Autolearn,
		"truncated", in.Truncated, "elapsed", elapsed.Round(time.Millisecond))
	return nil
}

// crlf turns bare LF line breaks into CRLF.
func crlf(s string) string {
	if !strings.Contains(s, "\n") {
		return s
	}
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\n", "\r\n")
}

// raw is the message as the engine reads it: the header as it stands now
// (with the fields the filters before this one added at end of message),
// then the scanned body.
func (b *body) raw(m *filter.Message) []byte {
	n := 2 + b.buf.Len()
	for _, h := range m.Headers {
		n += len(h.Name) + len(h.Value) + 4
	}
	out := make([]byte, 0, n)
	for _, h := range m.Headers {
		out = append(out, h.Name...)
		out = append(out, ": "...)
		out = append(out, h.Value...)
		out = append(out, "\r\n"...)
	}
	out = append(out, "\r\n"...)
	return append(out, b.buf.Bytes()...)
}

// rcptsKey carries a message's recipients in the context Score gets.
type rcptsKey struct{}

// Recipients returns the envelope recipients of the message being scored
// with ctx: the engine's callbacks (its per-domain allow list) read them.
func Recipients(ctx context.Context) []string {
	r, _ := ctx.Value(rcptsKey{}).([]string)
	return r
}

// score runs the engine within the time budget. On a fault it returns the
// result to write and why: the engine's partial result when it stopped at
// its own budget (partial), else a result naming the fault as its only
// test (POSTKIT_TIMEOUT when the budget ran out, POSTKIT_ERROR when the
// engine failed or panicked).
func (f *Filter) score(in spam.Input) (res spam.Result, fault string, partial bool) {
	ctx, cancel := context.WithTimeout(context.WithValue(context.Background(), rcptsKey{}, in.Rcpts), f.cfg.TimeBudget)
	defer cancel()
	select {
	case f.slots <- struct{}{}:
	case <-ctx.Done():
		return f.faultResult(spam.HitTimeout), "no scoring slot free within the time budget", false
	}
	type outcome struct {
		res spam.Result
		err error
	}
	done := make(chan outcome, 1) // buffered: a late engine never blocks
	go func() {
		defer func() { <-f.slots }()
		defer func() {
			if r := recover(); r != nil {
				f.log.Error("spam: the engine panicked", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				done <- outcome{err: fmt.Errorf("engine panic: %v", r)}
			}
		}()
		res, err := f.cfg.Scorer.Score(ctx, in)
		done <- outcome{res, err}
	}()
	select {
	case o := <-done:
		switch {
		case o.err == nil:
			return o.res, "", false
		case errors.Is(o.err, spam.ErrTimeout) && hasHit(o.res, spam.HitTimeout):
			return o.res, o.err.Error(), true
		case ctx.Err() != nil:
			return f.faultResult(spam.HitTimeout), "time budget spent: " + o.err.Error(), false
		}
		return f.faultResult(spam.HitError), o.err.Error(), false
	case <-ctx.Done():
		return f.faultResult(spam.HitTimeout), fmt.Sprintf("no verdict within the time budget (%v)", f.cfg.TimeBudget), false
	}
}

func hasHit(r spam.Result, name string) bool {
	for _, h := range r.Hits {
		if h.Name == name {
			return true
		}
	}
	return false
}

// faultResult is the verdict written when the engine gave none: not spam,
// score 0, the fault as the only test.
func (f *Filter) faultResult(test string) spam.Result {
	return spam.Result{Required: f.cfg.Required, Hits: []spam.Hit{{Name: test, Description: "no spam verdict: see the milter's log"}},
		Bayes: -1, BayesNote: "not scored", Autolearn: "no"}
}

// rewriteSubject puts prefix in front of the first Subject, or adds one.
func rewriteSubject(m *filter.Message, c *filter.Changes, prefix string) {
	for _, h := range m.Headers {
		if strings.EqualFold(h.Name, "Subject") {
			v := strings.TrimLeft(h.Value, " \t")
			if nv := spam.RewriteSubject(v, prefix); nv != v {
				c.ChangeHeader("Subject", 1, nv)
			}
			return
		}
	}
	c.AddHeader("Subject", prefix)
}

func testNames(r spam.Result) string {
	names := make([]string, len(r.Hits))
	for i, h := range r.Hits {
		names[i] = h.Name
	}
	return strings.Join(names, ",")
}

// Body buffers are reused: one per message in flight, at most MaxScanBytes.
var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func getBuf() *bytes.Buffer { return bufPool.Get().(*bytes.Buffer) }

func putBuf(b *bytes.Buffer) {
	if b == nil || b.Cap() > 4<<20 {
		return
	}
	b.Reset()
	bufPool.Put(b)
}

var (
	_ filter.Declarer = (*Filter)(nil)
	_ filter.Aborter  = (*body)(nil)
)
