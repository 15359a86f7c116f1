package policyd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postkit/postkit/internal/daemon"
	"github.com/postkit/postkit/internal/ttlcache"
)

// Server answers policy requests on the connections of its listeners. Its
// fields are read when Serve starts; do not change them after.
//
// Decisions are merged into the single action Postfix accepts per reply
// (SMTPD_POLICY_README: one "action=" line):
//
//  1. Checks run in order; the first decision with a final Action ends the
//     chain. A final DUNNO counts as no opinion.
//  2. A final action other than OK/DUNNO (REJECT, DEFER…, 4xx/5xx, HOLD,
//     FILTER, …) is sent as is; pending header prepends are dropped (logged),
//     a refused recipient gets no header anyway.
//  3. Otherwise, if checks asked to prepend headers, the reply is
//     "PREPEND <header>" with the first header not yet sent for this message
//     (Postfix's "instance" attribute): later recipients of the same message
//     carry the next pending header, so one header is never added twice and,
//     with several recipients, several checks' headers all reach the
//     message. Headers that find no recipient left are logged. A final OK
//     is sent as is (an explicit permit outranks a header).
//  4. Otherwise DUNNO.
//
// A check that errors, panics or overruns CheckTimeout is logged and counts as
// no opinion: a broken check never refuses mail.
//
// With Chains, the checks change while the server runs (a configuration
// reload): each request runs entirely on the chain it acquired, and a
// replaced chain is closed once the last request using it is answered.
type Server struct {
	// Chains holds the chain requests run: each request acquires the
	// current one and releases it once decided, so that Chains.Swap (a
	// reload) leaves the requests in progress on the chain they started
	// with and closes that chain after the last of them.
	Chains *daemon.Holder[Chain]
	// Checks are the checks every request runs when Chains is nil: a fixed
	// chain with nothing to close.
	Checks []Check
	// Observer, when set, is told every check's outcome and every request's
	// final action with their durations (*Metrics implements it).
	Observer Observer
	// CheckTimeout bounds one check on one request. Default 10s (Postfix
	// waits smtpd_policy_service_timeout, 100s, for the whole reply).
	CheckTimeout time.Duration
	// RequestTimeout bounds all the checks of one request together; checks
	// still to run when it expires count as no opinion. Default: none (each
	// check has its CheckTimeout). Keep it below Postfix's
	// smtpd_policy_service_timeout.
	RequestTimeout time.Duration
	// IdleTimeout closes a connection with no request for this long. Default
	// 330s (Postfix's smtpd_policy_service_max_idle is 300s).
	IdleTimeout time.Duration
	// ReadTimeout bounds reading one request once it started. Default 30s.
	ReadTimeout time.Duration
	Limits      Limits
	Logger      *slog.Logger     // default slog.Default()
	Now         func() time.Time // default time.Now

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	closing   atomic.Bool
	wg        sync.WaitGroup
	sent      *sentHeaders
	initOnce  sync.Once
	chains    *daemon.Holder[Chain]
}

// Chain is a list of checks with the resources they hold (databases,
// resolvers): what a configuration reload replaces. Close releases the
// resources; a Server's daemon.Holder calls it once no request uses the
// chain any more.
type Chain interface {
	Checks() []Check
	io.Closer
}

// CheckList is a Chain of checks that hold nothing to release.
type CheckList []Check

// Checks implements Chain.
func (l CheckList) Checks() []Check { return l }

// Close implements Chain: there is nothing to release.
func (CheckList) Close() error { return nil }

// Observer receives measurements from the server; it must be safe for
// concurrent use. *Metrics implements it.
type Observer interface {
	// ObserveDecision is called after each check ran on a request.
	ObserveDecision(check string, d Decision, err error, dur time.Duration)
	// ObserveRequest is called with the action sent for a request.
	ObserveRequest(action string, dur time.Duration)
}

var _ Observer = (*Metrics)(nil)

type conn struct {
	c    net.Conn
	idle atomic.Bool
}

func (s *Server) init() {
	s.initOnce.Do(func() {
		if s.CheckTimeout <= 0 {
			s.CheckTimeout = 10 * time.Second
		}
		if s.IdleTimeout <= 0 {
			s.IdleTimeout = 330 * time.Second
		}
		if s.ReadTimeout <= 0 {
			s.ReadTimeout = 30 * time.Second
		}
		s.Limits = s.Limits.withDefaults()
		if s.Logger == nil {
			s.Logger = slog.Default()
		}
		if s.Now == nil {
			s.Now = time.Now
		}
		s.listeners = map[net.Listener]struct{}{}
		s.conns = map[*conn]struct{}{}
		s.sent = newSentHeaders(20000, 15*time.Minute)
		s.chains = s.Chains
		if s.chains == nil {
			s.chains = daemon.NewHolder[Chain](append(CheckList(nil), s.Checks...))
		}
	})
}

// Serve accepts connections on ln until Shutdown, and returns
// daemon.ErrServerClosed then.
func (s *Server) Serve(ln net.Listener) error {
	s.init()
	if s.closing.Load() {
		return daemon.ErrServerClosed
	}
	s.mu.Lock()
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	for {
		c, err := daemon.Accept(ln, "policyd", s.closing.Load, s.Logger)
		if err != nil {
			return err
		}
		cc := &conn{c: c}
		cc.idle.Store(true)
		s.mu.Lock()
		if s.closing.Load() {
			s.mu.Unlock()
			c.Close()
			return daemon.ErrServerClosed
		}
		s.conns[cc] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(cc)
	}
}

// Shutdown stops accepting, closes idle connections, lets requests in
// progress get their answer, and waits for them (or for ctx).
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.closing.Store(true)
	s.mu.Lock()
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.conns {
		if c.idle.Load() {
			// Unblocks the read; the connection goroutine sees closing.
			c.c.SetReadDeadline(time.Unix(1, 0))
		}
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	// Connections that were busy become idle after their answer; poke them
	// until all are gone.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			s.mu.Lock()
			for c := range s.conns {
				c.c.Close()
			}
			s.mu.Unlock()
			return ctx.Err()
		case <-tick.C:
			s.mu.Lock()
			for c := range s.conns {
				if c.idle.Load() {
					c.c.SetReadDeadline(time.Unix(1, 0))
				}
			}
			s.mu.Unlock()
		}
	}
}

func (s *Server) serveConn(cc *conn) {
	defer func() {
		if p := recover(); p != nil {
			s.Logger.Error("policyd: connection handler panicked; connection closed", "panic", p)
		}
		cc.c.Close()
		s.mu.Lock()
		delete(s.conns, cc)
		s.mu.Unlock()
		s.wg.Done()
	}()
	br := bufio.NewReaderSize(cc.c, 4096)
	bw := bufio.NewWriterSize(cc.c, 1024)
	for {
		cc.idle.Store(true)
		if s.closing.Load() {
			return
		}
		cc.c.SetReadDeadline(s.Now().Add(s.IdleTimeout))
		if _, err := br.Peek(1); err != nil {
			return // closed, idle timeout or shutdown
		}
		cc.idle.Store(false)
		cc.c.SetReadDeadline(s.Now().Add(s.ReadTimeout))
		req, err := ReadRequest(br, s.Limits)
		var action string
		switch {
		case errors.Is(err, ErrBadRequest):
			s.Logger.Warn("policyd: malformed request; answering DUNNO", "err", err,
				"client", cc.c.RemoteAddr().String())
			action = "DUNNO"
		case err != nil:
			if err != io.EOF {
				s.Logger.Warn("policyd: reading request; closing connection", "err", err)
			}
			return
		default:
			action = s.handle(req)
		}
		cc.c.SetWriteDeadline(s.Now().Add(s.ReadTimeout))
		bw.Write(FormatReply(action, s.Limits.MaxActionLn))
		if err := bw.Flush(); err != nil {
			s.Logger.Warn("policyd: writing reply; closing connection", "err", err)
			return
		}
	}
}

// handle evaluates one well-formed request and logs one line.
func (s *Server) handle(r *Request) string {
	start := s.Now()
	if req := r.Get("request"); req != "smtpd_access_policy" {
		s.Logger.Warn("policyd: unknown request type; answering DUNNO", "request", req)
		return "DUNNO"
	}
	ctx := context.Background()
	if s.RequestTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.RequestTimeout)
		defer cancel()
	}
	action, reasons := s.Decide(ctx, r)
	if s.Observer != nil {
		s.Observer.ObserveRequest(action, s.Now().Sub(start))
	}
	s.Logger.Info("policy",
		"queue_id", r.Get("queue_id"),
		"stage", r.Stage(),
		"client", r.Get("client_address"),
		"helo", r.Helo(),
		"sender", r.Sender(),
		"recipient", r.Recipient(),
		"action", action,
		"reasons", strings.Join(reasons, ","),
		"elapsed", s.Now().Sub(start).Round(time.Microsecond))
	return action
}

// Decide runs the checks of the current chain over r and merges their
// decisions into one action (see Server). reasons lists the Reason of every
// decision that had one.
func (s *Server) Decide(ctx context.Context, r *Request) (action string, reasons []string) {
	s.init()
	chain, release := s.chains.Acquire()
	defer release()
	var prepends []string
	final := ""
	for _, c := range chain.Checks() {
		if ctx.Err() != nil {
			s.Logger.Warn("policyd: request time budget exhausted; remaining checks skipped",
				"check", c.Name(), "queue_id", r.Get("queue_id"))
			reasons = append(reasons, "budget=exhausted")
			break
		}
		t0 := s.Now()
		d, err := s.runCheck(ctx, c, r)
		if s.Observer != nil {
			s.Observer.ObserveDecision(c.Name(), d, err, s.Now().Sub(t0))
		}
		if err != nil {
			s.Logger.Warn("policyd: check failed; treated as no opinion",
				"check", c.Name(), "queue_id", r.Get("queue_id"), "err", err)
			reasons = append(reasons, c.Name()+"=error")
			continue
		}
		if d.Reason != "" {
			reasons = append(reasons, d.Reason)
		}
		prepends = append(prepends, d.Prepend...)
		if d.Final() && !strings.EqualFold(strings.TrimSpace(d.Action), "DUNNO") {
			final = strings.TrimSpace(d.Action)
			break
		}
	}
	if final != "" && !strings.EqualFold(final, "OK") {
		if len(prepends) > 0 {
			s.Logger.Info("policyd: headers dropped by a refusing action",
				"queue_id", r.Get("queue_id"), "action", final, "headers", len(prepends))
		}
		return final, reasons
	}
	if final != "" {
		return final, reasons
	}
	if len(prepends) == 0 {
		return "DUNNO", reasons
	}
	inst := r.Get("instance")
	if inst == "" {
		// No message identity: nothing to deduplicate against.
		if len(prepends) > 1 {
			s.Logger.Info("policyd: one header per reply; extra headers dropped",
				"queue_id", r.Get("queue_id"), "dropped", len(prepends)-1)
		}
		return "PREPEND " + prepends[0], reasons
	}
	h, pending := s.sent.next(inst+"/"+r.Get("client_address"), prepends, s.Now())
	if pending > 0 && r.Stage() == "END-OF-MESSAGE" {
		s.Logger.Info("policyd: more headers than recipients; extra headers dropped",
			"queue_id", r.Get("queue_id"), "dropped", pending)
	}
	if h == "" {
		return "DUNNO", reasons
	}
	return "PREPEND " + h, reasons
}

// runCheck runs one check under CheckTimeout, turning a panic or an overrun
// into an error.
func (s *Server) runCheck(ctx context.Context, c Check, r *Request) (d Decision, err error) {
	ctx, cancel := context.WithTimeout(ctx, s.CheckTimeout)
	defer cancel()
	type out struct {
		d   Decision
		err error
	}
	ch := make(chan out, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				ch <- out{err: fmt.Errorf("policyd: check %s panicked: %v", c.Name(), p)}
			}
		}()
		d, err := c.Check(ctx, r)
		ch <- out{d, err}
	}()
	select {
	case o := <-ch:
		return o.d, o.err
	case <-ctx.Done():
		return Decision{}, fmt.Errorf("policyd: check %s: no answer within %v: %w", c.Name(), s.CheckTimeout, ctx.Err())
	}
}

// sentHeaders remembers, per message, which headers were already sent, so
// that each goes once (Postfix asks once per recipient and prepends each
// answer's header to the same message). It keeps a 64-bit hash of each
// header, not the header: with 20000 messages, the header texts (a
// Received-SPF line is about 300 bytes) were most of the daemon's memory.
// Two different headers of one message sharing a hash (odds about 2^-64)
// would cost the second its recipient.
type sentHeaders struct {
	mu    sync.Mutex // one next at a time per server: read, then update
	ttl   time.Duration
	seed  maphash.Seed
	items *ttlcache.Cache[string, []uint64] // message -> hashes of the headers sent
}

func newSentHeaders(max int, ttl time.Duration) *sentHeaders {
	return &sentHeaders{ttl: ttl, seed: maphash.MakeSeed(), items: ttlcache.New[string, []uint64](max)}
}

// next returns the first of want not yet sent for key (and marks it sent),
// and how many remain pending after it. A message's entry lives ttl after
// its last request.
func (h *sentHeaders) next(key string, want []string, now time.Time) (string, int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	sent, _, _ := h.items.Get(key, now)
	out, pending := "", 0
	for _, w := range want {
		hw := maphash.String(h.seed, w)
		if slices.Contains(sent, hw) {
			continue
		}
		if out == "" {
			out = w
			sent = append(slices.Clip(sent), hw)
			continue
		}
		pending++
	}
	h.items.Put(key, sent, now.Add(h.ttl), now)
	return out, pending
}
