// Package milterd implements the milter side of the Sendmail milter protocol,
// version 6, as Postfix speaks it (MILTER_README; milter-protocol.txt and its
// version 6 extensions): it runs a chain of filters over each message in one
// pass and sends their changes back to the MTA.
//
// Compared with a generic milter library, the daemon keeps the connection's
// facts across messages (ABORT resets the message, not the connection), merges
// the macros of every stage of a message, asks Postfix for the macros it needs
// per stage (SETSYMLIST) and to skip the events no filter reads (SMFIP_NOHELO,
// SMFIP_NORCPT, from filter.Needs), skips replies it does not need
// (SMFIP_NR_*, end of headers included), and translates the header changes
// recorded against each filter's view into the indexes Postfix applies.
package milterd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/postkit/postkit/internal/daemon"
	"github.com/postkit/postkit/milter/filter"
)

// DefaultChain is the chain used by Serve.
const DefaultChain = "default"

// Config is the daemon's typed configuration. The zero value of each field
// selects the documented default.
type Config struct {
	// Chains maps a chain name to its filters, run in order. A listener
	// serves one chain (ServeChain); Serve uses DefaultChain.
	Chains map[string][]filter.Filter
	// Trusted lists client networks whose mail is outbound.
	// Default (nil): 127.0.0.0/8 and ::1/128. An empty non-nil slice trusts none.
	Trusted []netip.Prefix
	// Originating lists {daemon_name} values whose mail is outbound, e.g. the
	// submission services' milter_macro_daemon_name. Default (nil): ORIGINATING.
	Originating []string
	// OnError is the verdict when a filter fails or panics: filter.Tempfail
	// (the default, like OpenDKIM's On-InternalError), filter.Accept (deliver
	// with the changes of the filters that completed) or filter.Reject.
	// Set OnErrorSet to use filter.Accept, whose value is the zero value.
	OnError    filter.Verdict
	OnErrorSet bool
	// WithReplies makes the daemon answer every event instead of asking
	// Postfix to skip replies it does not need (SMFIP_NR_CONN, _HELO, _MAIL,
	// _RCPT, _HDR, _EOH, _BODY). Default false: fewer round trips. With
	// replies, a message whose headers already decided it (refused, or no
	// filter wants its body) is answered at end of headers and Postfix
	// does not send its body; without, the answer comes at end of message.
	WithReplies bool
	// Macros overrides the macro list requested for a stage ("connect",
	// "helo", "mail", "rcpt", "data", "eoh", "eom"), space-separated.
	Macros map[string]string
	// MaxPacket bounds one packet from the MTA. Default DefaultMaxPacket.
	MaxPacket int
	// IdleTimeout closes a connection silent for that long. Default 1 hour.
	IdleTimeout time.Duration
	// WriteTimeout bounds one reply. Default 1 minute.
	WriteTimeout time.Duration
	Logger       *slog.Logger
	// Observer, when not nil, receives each message's verdict and each
	// filter's outcome for the daemon's metrics.
	Observer Observer
	Now      func() time.Time
	// Closer releases what the filters of Chains hold beyond a message
	// (databases, resolvers): the Chain built from this Config closes it
	// once, when it is closed (see Chain). Nil: nothing to release.
	Closer io.Closer
}

// ParseFaultAction parses "tempfail", "accept" or "reject".
func ParseFaultAction(s string) (filter.Verdict, error) {
	switch strings.ToLower(s) {
	case "", "tempfail":
		return filter.Tempfail, nil
	case "accept":
		return filter.Accept, nil
	case "reject":
		return filter.Reject, nil
	}
	return 0, fmt.Errorf("milterd: fault action %q: want tempfail, accept or reject", s)
}

// DefaultMacros are the macros requested per stage with SETSYMLIST.
// The outbound decision needs {daemon_name} (connect) and {auth_authen},
// {auth_type} (mail); logs need i (queue id), which Postfix knows from MAIL on.
var DefaultMacros = map[string]string{
	"connect": "j _ {daemon_name} {daemon_addr} {client_addr} {client_name} {client_ptr}",
	"helo":    "{tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer}",
	"mail":    "i {auth_type} {auth_authen} {auth_author} {auth_ssf} {mail_addr} {mail_host} {mail_mailer}",
	"rcpt":    "i {rcpt_addr} {rcpt_host} {rcpt_mailer}",
	"data":    "i",
	"eoh":     "i",
	"eom":     "i {msg_id}",
}

// ownMacros are the macros the daemon reads itself: the outbound decision
// ({daemon_name} at connect, {auth_type} and {auth_authen} at MAIL) and the
// queue id for the logs and filters (i). Postfix knows i only once the
// queue file exists, from the first accepted RCPT with its default
// smtpd_delay_open_until_valid_rcpt, so it is asked at DATA (whose macros
// Postfix sends even when SMFIP_NODATA skips the event) and at end of
// headers for non_smtpd_milters, where cleanup has no DATA stage (Postfix
// sends that list before every header; parseMacros makes a repeated value
// cheap). When every filter of a chain declares its filter.Needs, the
// daemon requests these plus the declared ones instead of DefaultMacros.
var ownMacros = map[string]string{
	"connect": "{daemon_name}",
	"mail":    "{auth_type} {auth_authen}",
	"data":    "i",
	"eoh":     "i",
	"eom":     "i",
}

// noMacro stands for an empty list in SETSYMLIST. Postfix sends every
// stage's macros before each of its events, skipped events included
// (milter8.c, milter8_event); an empty list there means "Postfix's own
// default list" (milter_*_macros), not "none". A name Postfix has no value
// for makes it send an empty macro packet instead: no lookups, nothing for
// the daemon to parse.
const noMacro = "{postkit_none}"

var stageNames = [numStages]string{
	stageConnect: "connect", stageHelo: "helo", stageMail: "mail", stageRcpt: "rcpt",
	stageEOM: "eom", stageEOH: "eoh", stageData: "data",
}

// chainProto is what the daemon negotiates for the connections of one
// chain, derived from what its filters declare (filter.Needs).
type chainProto struct {
	skip   uint32            // SMFIP_NOHELO, SMFIP_NORCPT: events no filter reads
	macros [numStages]string // SMFIR_SETSYMLIST lists
	// send marks the lists sent; an unsent one leaves the MTA's default
	// (Postfix's milter_*_macros).
	send [numStages]bool
}

// newChainProto derives a chain's negotiation. A filter that declares
// nothing needs everything: HELO, RCPT and DefaultMacros, the daemon's
// behaviour before filters could declare. override holds Config.Macros.
func newChainProto(fs []filter.Filter, override [numStages]*string) chainProto {
	var cp chainProto
	declared := true
	var helo, rcpt bool
	var extra []string
	for _, f := range fs {
		n, ok := filter.NeedsOf(f)
		if !ok {
			declared = false
			break
		}
		helo = helo || n.Helo
		rcpt = rcpt || n.Rcpts
		extra = append(extra, n.Macros...)
	}
	if !declared {
		for i, name := range stageNames {
			cp.macros[i] = DefaultMacros[name]
		}
		helo, rcpt = true, true
	} else {
		var lists [numStages][]string
		for i, name := range stageNames {
			lists[i] = strings.Fields(ownMacros[name])
		}
		for _, m := range extra {
			m = normMacro(m)
			st := macroStage(m)
			if !slices.Contains(lists[st], m) {
				lists[st] = append(lists[st], m)
			}
		}
		for i := range lists {
			cp.macros[i] = strings.Join(lists[i], " ")
			if cp.macros[i] == "" {
				cp.macros[i] = noMacro
			}
			cp.send[i] = true
		}
	}
	for i, o := range override {
		if o != nil {
			cp.macros[i] = *o
			cp.send[i] = *o != "" // configured empty: the MTA's default, as before
		}
	}
	if !declared {
		for i := range cp.send {
			cp.send[i] = cp.macros[i] != ""
		}
	}
	// A filter reading a HELO or RCPT macro takes the event too.
	if !helo && (cp.macros[stageHelo] == "" || cp.macros[stageHelo] == noMacro) {
		cp.skip |= optNoHelo
	}
	if !rcpt && (cp.macros[stageRcpt] == "" || cp.macros[stageRcpt] == noMacro) {
		cp.skip |= optNoRcpt
	}
	return cp
}

// macroStage is the stage at which a macro is requested: the first whose
// DefaultMacros list names it, else end of message, when the MTA knows
// everything about the message (Config.Macros can ask it elsewhere).
func macroStage(name string) int {
	for i, stage := range stageNames {
		for _, m := range strings.Fields(DefaultMacros[stage]) {
			if normMacro(m) == name {
				return i
			}
		}
	}
	return stageEOM
}

// Chain is what a Server runs: the filter chains of one configuration
// (Config.Chains, by name) with the settings they run under and the
// resources their filters hold. It does not change once built. A Server
// takes it from a daemon.Holder for each message, from MAIL to the end of
// the message, so that a reload (Holder.Swap) lets the messages in flight
// finish with the chain they started with, and the chain a reload replaced
// is closed once the last of them is done.
type Chain struct {
	chains      map[string][]filter.Filter
	protos      map[string]chainProto
	trusted     []netip.Prefix
	originating map[string]bool
	onError     filter.Verdict
	replies     bool
	maxPacket   int
	idle        time.Duration
	writeTO     time.Duration
	log         *slog.Logger
	now         func() time.Time
	observer    Observer

	closer    io.Closer
	closeOnce sync.Once
	closeErr  error
}

// Close releases the resources of the chain's filters (Config.Closer). The
// daemon calls it through its Holder once no message uses the chain; later
// calls return the first call's result.
func (st *Chain) Close() error {
	st.closeOnce.Do(func() {
		if st.closer != nil {
			st.closeErr = st.closer.Close()
		}
	})
	return st.closeErr
}

// Filters returns the filters of the named chain, in order (for logs and
// tests).
func (st *Chain) Filters(name string) []filter.Filter {
	return append([]filter.Filter(nil), st.chains[name]...)
}

// NewChain checks cfg and builds the chain a Server runs. It does not take
// cfg.Closer when it fails: the caller closes it then.
func NewChain(cfg Config) (*Chain, error) {
	st := &Chain{
		closer:      cfg.Closer,
		chains:      map[string][]filter.Filter{},
		protos:      map[string]chainProto{},
		originating: map[string]bool{},
		onError:     filter.Tempfail,
		replies:     cfg.WithReplies,
		maxPacket:   cfg.MaxPacket,
		idle:        cfg.IdleTimeout,
		writeTO:     cfg.WriteTimeout,
		log:         cfg.Logger,
		now:         cfg.Now,
		observer:    cfg.Observer,
	}
	for name, fs := range cfg.Chains {
		for i, f := range fs {
			if f == nil {
				return nil, fmt.Errorf("milterd: chain %q: filter %d is nil", name, i)
			}
		}
		st.chains[name] = append([]filter.Filter(nil), fs...)
	}
	if cfg.OnErrorSet || cfg.OnError != filter.Accept {
		switch cfg.OnError {
		case filter.Accept, filter.Tempfail, filter.Reject:
			st.onError = cfg.OnError
		default:
			return nil, fmt.Errorf("milterd: fault action %d: want accept, reject or tempfail", cfg.OnError)
		}
	}
	if cfg.Trusted == nil {
		st.trusted = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	} else {
		for _, p := range cfg.Trusted {
			if !p.IsValid() {
				return nil, errors.New("milterd: invalid trusted network; write CIDRs like 192.0.2.0/24")
			}
			st.trusted = append(st.trusted, p.Masked())
		}
	}
	orig := cfg.Originating
	if orig == nil {
		orig = []string{"ORIGINATING"}
	}
	for _, d := range orig {
		st.originating[d] = true
	}
	var override [numStages]*string
	for k, v := range cfg.Macros {
		i := -1
		for j, name := range stageNames {
			if name == k {
				i = j
			}
		}
		if i < 0 {
			return nil, fmt.Errorf("milterd: macro stage %q: want connect, helo, mail, rcpt, data, eoh or eom", k)
		}
		list := strings.Join(strings.Fields(v), " ")
		override[i] = &list
	}
	for name, fs := range st.chains {
		st.protos[name] = newChainProto(fs, override)
	}
	if st.maxPacket <= 0 {
		st.maxPacket = DefaultMaxPacket
	}
	if st.maxPacket < 65536+1 {
		return nil, fmt.Errorf("milterd: MaxPacket %d is below one body chunk (65536 bytes)", st.maxPacket)
	}
	if st.idle <= 0 {
		st.idle = time.Hour
	}
	if st.writeTO <= 0 {
		st.writeTO = time.Minute
	}
	if st.log == nil {
		st.log = slog.Default()
	}
	if st.now == nil {
		st.now = time.Now
	}
	return st, nil
}

// outbound reports whether a message is our users' submission: SASL
// authenticated, from a trusted network, a local submission (no IP address,
// e.g. Postfix's non_smtpd_milters), or received by a daemon listed as
// originating.
func (st *Chain) outbound(m *filter.Message) bool {
	if m.Macro("{auth_authen}") != "" || m.Macro("{auth_type}") != "" {
		return true
	}
	if d := m.Macro("{daemon_name}"); d != "" && st.originating[d] {
		return true
	}
	if m.Conn == nil {
		return false
	}
	if !m.Conn.Addr.IsValid() {
		return true
	}
	for _, p := range st.trusted {
		if p.Contains(m.Conn.Addr) {
			return true
		}
	}
	return false
}

// Server is the milter daemon. It runs the Chain of a daemon.Holder: each
// message takes the current chain from the holder at MAIL and gives it back
// at its end.
type Server struct {
	h     *daemon.Holder[*Chain]
	owned bool // New made h: Shutdown closes its chain

	mu        sync.Mutex
	listeners map[net.Listener]string // listener → chain name
	sessions  map[*session]struct{}
	closing   bool
	closed    atomic.Bool // closing, read without mu by every session between messages
	wg        sync.WaitGroup
}

// NewServer returns a server running the chain h holds. Whoever owns h
// swaps it on reload (Holder.Swap) and closes it after Shutdown
// (Holder.Close), as daemon.Run does.
func NewServer(h *daemon.Holder[*Chain]) *Server {
	return &Server{h: h, listeners: map[net.Listener]string{}, sessions: map[*session]struct{}{}}
}

// New builds a server from cfg with a Holder of its own: Reload swaps its
// chain and Shutdown closes it. It does not take cfg.Closer when it fails.
func New(cfg Config) (*Server, error) {
	ch, err := NewChain(cfg)
	if err != nil {
		return nil, err
	}
	s := NewServer(daemon.NewHolder(ch))
	s.owned = true
	return s, nil
}

// Reload builds a chain from cfg and swaps it in: connections and messages
// that start afterwards use it, messages in flight finish with the old one,
// which is closed once the last of them is done (its Close error is
// logged). On error the running chain stays, and cfg.Closer is the
// caller's to close.
func (s *Server) Reload(cfg Config) error {
	st, err := NewChain(cfg)
	if err != nil {
		return err
	}
	s.mu.Lock()
	var missing []string
	for _, name := range s.listeners {
		if _, ok := st.chains[name]; !ok {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		s.mu.Unlock()
		sort.Strings(missing)
		return fmt.Errorf("milterd: reload: chain(s) %s are served by a listener but missing from the new configuration; keeping the old one", strings.Join(missing, ", "))
	}
	done := s.h.Swap(st)
	s.mu.Unlock()
	st.log.Info("milter configuration reloaded", "chains", len(st.chains))
	go func() {
		if err := <-done; err != nil {
			st.log.Warn("milter: closing the previous chain failed", "err", err)
		}
	}()
	return nil
}

// Serve accepts MTA connections on ln and runs DefaultChain for them.
func (s *Server) Serve(ln net.Listener) error { return s.ServeChain(ln, DefaultChain) }

// ServeChain accepts MTA connections on ln and runs the named chain for them.
// It returns daemon.ErrServerClosed after Shutdown.
func (s *Server) ServeChain(ln net.Listener, chain string) error {
	s.mu.Lock()
	if _, ok := s.h.Current().chains[chain]; !ok {
		s.mu.Unlock()
		return fmt.Errorf("milterd: chain %q is not configured; add it to Config.Chains", chain)
	}
	if s.closing {
		s.mu.Unlock()
		return daemon.ErrServerClosed
	}
	s.listeners[ln] = chain
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	closed := func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.closing
	}
	for {
		c, err := daemon.Accept(ln, "milterd", closed, s.h.Current().log)
		if err != nil {
			return err
		}
		sess := newSession(s, c, chain)
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			c.Close()
			return daemon.ErrServerClosed
		}
		s.sessions[sess] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			sess.serve()
			s.mu.Lock()
			delete(s.sessions, sess)
			s.mu.Unlock()
		}()
	}
}

// Shutdown stops accepting, closes idle MTA connections and waits for the
// messages in flight to finish, or for ctx to end (then it closes the rest:
// Postfix applies milter_default_action to those messages). A server made
// by New then closes its chain (a failure to is logged).
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.shutdown(ctx)
	if s.owned {
		if cerr := <-s.h.Close(); cerr != nil {
			s.h.Current().log.Warn("milter: closing the chain failed", "err", cerr)
		}
	}
	return err
}

func (s *Server) shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	s.closed.Store(true)
	for ln := range s.listeners {
		ln.Close()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		s.mu.Lock()
		for sess := range s.sessions {
			sess.pokeIfIdle()
		}
		s.mu.Unlock()
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			s.mu.Lock()
			for sess := range s.sessions {
				sess.conn.Close()
			}
			s.mu.Unlock()
			<-done
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// Close closes listeners and connections at once.
func (s *Server) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

func (s *Server) isClosing() bool { return s.closed.Load() }
