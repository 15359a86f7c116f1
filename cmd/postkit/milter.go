package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/internal/daemon"
	"github.com/postkit/postkit/milter/assemble"
	"github.com/postkit/postkit/milter/milterd"
)

// milterServing is how `postkit milter` serves: what a reload cannot
// change. milter/assemble builds the chain from the rest of postkit.yaml.
type milterServing struct {
	Listen []string // Postfix-syntax addresses; every listener runs the chain
	Socket daemon.SocketOpts
	// AllowClients are the networks an inet listener serves; required when
	// a listen address is reachable from other hosts (daemon.ListenClients).
	AllowClients []netip.Prefix
}

func (a milterServing) equal(b milterServing) bool {
	return slices.Equal(a.Listen, b.Listen) && a.Socket == b.Socket && slices.Equal(a.AllowClients, b.AllowClients)
}

// milterServingFromConfig reads the listen settings of the milter section.
func milterServingFromConfig(c *config.Config) (milterServing, error) {
	m := c.Milter
	o := milterServing{Listen: []string{m.Listen}, Socket: daemon.SocketOpts{Owner: m.SocketOwner, Group: m.SocketGroup}}
	if m.Listen == "" {
		return o, errors.New("milter: milter.listen is empty in postkit.yaml: set unix:/path or inet:127.0.0.1:PORT")
	}
	for _, n := range m.AllowClients {
		p, err := config.ParseCIDR(string(n))
		if err != nil {
			return o, fmt.Errorf("milter: milter.allow_clients %q: want a CIDR such as 192.0.2.25/32 (%v)", n, err)
		}
		o.AllowClients = append(o.AllowClients, p)
	}
	if m.SocketMode != "" {
		mode, err := daemon.ParseMode(m.SocketMode)
		if err != nil {
			return o, fmt.Errorf("milter: milter.socket_mode %q: want an octal mode such as 0660", m.SocketMode)
		}
		o.Socket.Mode = mode
	}
	return o, nil
}

// defaultMilterConfig is what the daemon runs without -c: config.Defaults
// as far as the flags go, but no database, no DKIM verification and no
// From check of our domains (it knows none), and sockets keep the daemon's
// own owner and group.
func defaultMilterConfig() *config.Config {
	c := config.Defaults()
	c.Milter.SocketOwner, c.Milter.SocketGroup = "", ""
	c.Milter.DKIM.Verify = false
	c.Milter.OwnFrom = "off"
	c.Database.Path = ""
	return c
}

// milterFlags are the flag values; each overrides postkit.yaml (or the
// defaults without -c) only when given.
type milterFlags struct {
	cfgPath, socketOwner, socketGroup, socketMode, level string
	listen, allowClients, dkimKeys, trusted, originating []string
	onError, canonicalization, db, unownedFrom, authserv string
	dnsServers                                           []string
	noScrub, verify                                      bool
	drain                                                time.Duration
}

// apply sets the postkit.yaml key each flag changed on the command line
// stands for, and the listen addresses (several, which postkit.yaml cannot
// say) in sv.
func (f *milterFlags) apply(c *config.Config, sv *milterServing, changed func(string) bool) error {
	if changed("listen") {
		sv.Listen = f.listen
	}
	if changed("allow-client") {
		sv.AllowClients = nil
		for _, s := range f.allowClients {
			p, err := config.ParseCIDR(s)
			if err != nil {
				return fmt.Errorf("milter: --allow-client %q: want a CIDR such as 192.0.2.25/32 (%v)", s, err)
			}
			sv.AllowClients = append(sv.AllowClients, p)
		}
	}
	if changed("socket-owner") {
		sv.Socket.Owner = f.socketOwner
	}
	if changed("socket-group") {
		sv.Socket.Group = f.socketGroup
	}
	if changed("socket-mode") {
		mode, err := daemon.ParseMode(f.socketMode)
		if err != nil {
			return err
		}
		sv.Socket.Mode = mode
	}
	if changed("dkim-key") {
		for _, spec := range f.dkimKeys {
			parts := strings.SplitN(spec, ":", 3)
			if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
				return fmt.Errorf("milter: --dkim-key %q: want DOMAIN:SELECTOR:KEYFILE, e.g. example.org:mail:/etc/dkimkeys/example.org/mail.private", spec)
			}
			c.Milter.DKIM.Keys = append(c.Milter.DKIM.Keys, config.DKIMKey{Domain: strings.ToLower(parts[0]), Selector: parts[1], KeyFile: parts[2]})
		}
	}
	if changed("trusted") {
		c.TrustedNetworks = nil
		for _, s := range f.trusted {
			c.TrustedNetworks = append(c.TrustedNetworks, config.CIDR(s))
		}
	}
	if changed("originating") {
		c.Milter.Originating = f.originating
	}
	if changed("on-error") {
		c.Milter.OnError = f.onError
	}
	if changed("no-scrub") {
		c.Milter.Scrub.Enabled = !f.noScrub
	}
	if changed("canonicalization") {
		c.Milter.DKIM.Canonicalization = f.canonicalization
	}
	if changed("db") {
		c.Database.Path = f.db
	}
	if changed("unowned-from") {
		c.Milter.DKIM.UnownedFrom = f.unownedFrom
	}
	if changed("verify") {
		c.Milter.DKIM.Verify = f.verify
	}
	if changed("authserv-id") {
		c.Milter.DKIM.AuthservID = f.authserv
	}
	if changed("dns-server") {
		c.DNS.Servers = f.dnsServers
	}
	return nil
}

func init() {
	var f milterFlags
	def := config.Defaults().Milter
	cmd := &cobra.Command{
		Use:   "milter",
		Short: "Run the milter daemon (header scrubbing, DKIM signing and verification) for Postfix",
		Long: `Run the milter daemon for Postfix's smtpd_milters / non_smtpd_milters
(milter_protocol = 6). One chain runs on every listener: scrub (outbound), DKIM
signing (outbound), DKIM verification (inbound, adds Authentication-Results),
forged (every message: removes X-Spam-*, Received-SPF fields our policy daemon
did not seal, Authentication-Results with our authserv-id), ownfrom (inbound:
refuses our domains in From unless SPF or our DKIM signature vouches; needs -c).
Mail is outbound when the client authenticated, connects from a trusted
network, or arrives on a service whose milter_macro_daemon_name is listed as
originating. Authenticated mail is signed only when its From address is one
the login may use (the sender-login map of the database, as Postfix checks the
envelope sender on the submission ports); otherwise it is refused, or passed
unsigned with --unowned-from unsigned (milter.dkim.unowned_from).

With -c, everything comes from the milter section of postkit.yaml (plus
trusted_networks, dns and hostname); flags given explicitly override it.
Without -c, the flags alone configure the daemon.

The milter protocol has no authentication: whoever can connect can have mail
signed. A unix socket gets mode 0660 (milter.socket_mode) in a directory no
one else may write; an inet address other hosts can reach needs the MTAs'
networks in --allow-client (milter.allow_clients), and every other
connection is closed.

SIGHUP re-reads postkit.yaml and the key files (on error the running chain
stays; listen addresses and socket permissions need a restart), SIGTERM and
SIGINT stop accepting and let messages in flight finish.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			lv, err := parseLevel(f.level)
			if err != nil {
				return err
			}
			logw := newBatchWriter(os.Stderr, logBatchDelay, logBatchBytes)
			defer logw.Flush()
			log := slog.New(flushingHandler{slog.NewTextHandler(logw, &slog.HandlerOptions{Level: lv}), logw})
			stopProfile, err := startProfiles(os.Getenv("POSTKIT_CPUPROFILE"), os.Getenv("POSTKIT_MEMPROFILE"))
			if err != nil {
				return err
			}
			defer stopProfile()
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			changed := cmd.Flags().Changed
			opts := assemble.Options{Logger: log, NoSeal: f.cfgPath == ""}
			// load reads postkit.yaml (or the defaults without -c) with
			// the flags applied: at start and on every SIGHUP.
			load := func() (*config.Config, milterServing, error) {
				c := defaultMilterConfig()
				if f.cfgPath != "" {
					var err error
					if c, _, err = config.Load(f.cfgPath); err != nil {
						return nil, milterServing{}, err
					}
					if !c.Milter.Enabled {
						log.Warn("milter: milter.enabled is false in postkit.yaml: Postfix is not wired to this daemon (postkit generate)", "config", f.cfgPath)
					}
				}
				sv, err := milterServingFromConfig(c)
				if err != nil {
					return nil, sv, err
				}
				return c, sv, f.apply(c, &sv, changed)
			}
			_, first, err := load()
			if err != nil {
				return err
			}
			return runMilter(ctx, first, f.drain, log, func() (*milterd.Chain, error) {
				c, sv, err := load()
				if err != nil {
					return nil, err
				}
				if !sv.equal(first) {
					log.Warn("milter: listen address, socket permissions or allowed clients changed in postkit.yaml: restart the daemon to apply them")
				}
				return assemble.New(c, opts)
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.cfgPath, "config", "c", "", "postkit.yaml to read (its milter section); without it the flags configure the daemon")
	fl.StringArrayVar(&f.listen, "listen", []string{def.Listen}, "listen address, unix:PATH or inet:127.0.0.1:PORT (repeatable)")
	fl.StringArrayVar(&f.allowClients, "allow-client", nil, "client network that may connect to an inet listener, CIDR (repeatable); required for an address other hosts can reach (milter.allow_clients)")
	fl.StringArrayVar(&f.dkimKeys, "dkim-key", nil, "DKIM signing key DOMAIN:SELECTOR:KEYFILE (repeatable; with -c, added to milter.dkim.keys)")
	fl.StringArrayVar(&f.trusted, "trusted", nil, "client network whose mail is outbound, CIDR (repeatable; default 127.0.0.0/8 and ::1)")
	fl.StringArrayVar(&f.originating, "originating", nil, "milter_macro_daemon_name whose mail is outbound (repeatable; default ORIGINATING)")
	fl.StringVar(&f.socketOwner, "socket-owner", "", "owner of unix sockets (user name or uid)")
	fl.StringVar(&f.socketGroup, "socket-group", "", "group of unix sockets, e.g. postfix")
	fl.StringVar(&f.socketMode, "socket-mode", def.SocketMode, "mode of unix sockets (octal); with --socket-group postfix, only Postfix may connect")
	fl.StringVar(&f.onError, "on-error", def.OnError, "verdict when a filter fails: tempfail, accept or reject")
	fl.BoolVar(&f.noScrub, "no-scrub", false, "do not scrub outbound headers")
	fl.StringVar(&f.canonicalization, "canonicalization", "", "DKIM header/body canonicalization (default relaxed/simple)")
	fl.StringVar(&f.db, "db", "", "SQLite database whose sender-login map says which From addresses an authenticated login may use (with -c: database.path)")
	fl.StringVar(&f.unownedFrom, "unowned-from", def.DKIM.UnownedFrom, "authenticated mail whose From the login may not use: reject or unsigned")
	fl.BoolVar(&f.verify, "verify", false, "verify inbound DKIM signatures and add Authentication-Results")
	fl.StringVar(&f.authserv, "authserv-id", "", "authserv-id in Authentication-Results (default: the host name)")
	fl.StringArrayVar(&f.dnsServers, "dns-server", nil, "DNS server HOST:PORT for DKIM key lookups (repeatable; default /etc/resolv.conf)")
	fl.DurationVar(&f.drain, "drain", 30*time.Second, "how long SIGTERM waits for messages in flight")
	fl.StringVar(&f.level, "log-level", "info", "log level: debug, info, warn or error")
	rootCmd.AddCommand(cmd)
}

func parseLevel(s string) (slog.Level, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("milter: --log-level %q: want debug, info, warn or error", s)
	}
	return lv, nil
}

// runMilter serves the chains load builds (at start and on SIGHUP) on
// every address of sv until ctx ends, then drains for at most drain.
func runMilter(ctx context.Context, sv milterServing, drain time.Duration, log *slog.Logger, load func() (*milterd.Chain, error)) error {
	if log == nil {
		log = slog.Default()
	}
	if len(sv.Listen) == 0 {
		return errors.New("milter: no --listen address given")
	}
	// Catch SIGHUP before anything listens: a reload sent as soon as the
	// socket answers must not kill the daemon.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	first, err := load()
	if err != nil {
		return err
	}
	// Each message takes the current chain from the holder; a reload swaps
	// it, and the chain it replaced is closed once its last message ends.
	chains := daemon.NewHolder(first)
	defer func() {
		if err := <-chains.Close(); err != nil {
			log.Warn("milter: closing the chain failed", "err", err)
		}
	}()
	srv := milterd.NewServer(chains)
	filters := strings.Join(assemble.Names(first), ",")
	var lns []net.Listener
	for _, a := range sv.Listen {
		addr, err := daemon.ParseAddr(a)
		if err != nil {
			return err
		}
		ln, err := daemon.ListenClients(addr, sv.Socket, sv.AllowClients, log)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			if errors.Is(err, daemon.ErrExposed) {
				return fmt.Errorf("milter: listen %s: %w (milter.allow_clients in postkit.yaml, --allow-client)", a, err)
			}
			return fmt.Errorf("milter: listen %s: %w", a, err)
		}
		lns = append(lns, ln)
		log.Info("milter listening", "addr", addr.String(), "filters", filters)
	}
	errc := make(chan error, len(lns))
	var wg sync.WaitGroup
	for _, ln := range lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, daemon.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	var serveErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case serveErr = <-errc:
			break loop
		case <-hup:
			next, err := load()
			if err != nil {
				log.Error("milter reload failed; the running configuration stays", "err", err)
				continue
			}
			done := chains.Swap(next)
			go func() {
				if err := <-done; err != nil {
					log.Warn("milter: closing the previous chain failed", "err", err)
				}
			}()
			log.Info("milter reloaded", "filters", strings.Join(assemble.Names(next), ","))
		}
	}
	if drain <= 0 {
		drain = 30 * time.Second
	}
	sctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	log.Info("milter shutting down; finishing messages in flight", "max_wait", drain)
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("milter shutdown cut messages in flight; Postfix applies milter_default_action to them", "err", err)
	}
	wg.Wait()
	return serveErr
}

// startProfiles writes a CPU profile of the daemon to cpuPath, and its
// allocations to memPath, until the returned function runs (at shutdown,
// after SIGTERM or SIGINT). They are debugging aids set by the environment
// (POSTKIT_CPUPROFILE, POSTKIT_MEMPROFILE), not flags: "%p" in a path
// becomes the process id, so that several daemons started with the same
// environment write distinct files. Read them with `go tool pprof BINARY
// FILE` (-sample_index=alloc_space for allocations). Empty paths profile
// nothing.
func startProfiles(cpuPath, memPath string) (func(), error) {
	expand := func(p string) string { return strings.ReplaceAll(p, "%p", strconv.Itoa(os.Getpid())) }
	stopCPU := func() {}
	if cpuPath != "" {
		f, err := os.Create(expand(cpuPath))
		if err != nil {
			return nil, fmt.Errorf("postkit: POSTKIT_CPUPROFILE: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return nil, fmt.Errorf("postkit: POSTKIT_CPUPROFILE: %w", err)
		}
		stopCPU = func() {
			pprof.StopCPUProfile()
			f.Close()
		}
	}
	if memPath == "" {
		return stopCPU, nil
	}
	memPath = expand(memPath)
	return func() {
		stopCPU()
		f, err := os.Create(memPath)
		if err != nil {
			slog.Error("postkit: POSTKIT_MEMPROFILE", "err", err)
			return
		}
		defer f.Close()
		if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
			slog.Error("postkit: POSTKIT_MEMPROFILE", "err", err)
		}
	}, nil
}

// The daemon's log lines (one per message at info) are written to stderr in
// batches: each write(2) on stderr is a system call that, when the daemon
// was idle between packets, also wakes the Go runtime's monitor thread, and
// at info level those two lines per message cost half as much CPU again as
// the milter's own work (BENCHMARKS.md). A line waits at most logBatchDelay;
// warnings and errors are written at once, with everything before them.
const (
	logBatchDelay = 50 * time.Millisecond
	logBatchBytes = 32 << 10
)

// batchWriter collects writes and passes them on to w in one write when
// delay has passed since the first pending one, when max bytes are pending,
// or on Flush.
type batchWriter struct {
	w     io.Writer
	delay time.Duration
	max   int

	mu    sync.Mutex
	buf   []byte
	timer *time.Timer // armed while buf holds lines
}

func newBatchWriter(w io.Writer, delay time.Duration, max int) *batchWriter {
	return &batchWriter{w: w, delay: delay, max: max}
}

// Write implements io.Writer; it copies p and never fails (a failing
// stderr has nowhere to report to).
func (b *batchWriter) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	switch {
	case len(b.buf) >= b.max:
		b.flushLocked()
	case b.timer == nil:
		b.timer = time.AfterFunc(b.delay, b.Flush)
	}
	return len(p), nil
}

// Flush writes what is pending.
func (b *batchWriter) Flush() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.flushLocked()
}

func (b *batchWriter) flushLocked() {
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	if len(b.buf) == 0 {
		return
	}
	b.w.Write(b.buf)
	if cap(b.buf) > 4*b.max {
		b.buf = nil // one huge line: do not keep its buffer
	} else {
		b.buf = b.buf[:0]
	}
}

// flushingHandler writes warnings and errors out at once: only info and
// debug lines wait in the batch.
type flushingHandler struct {
	slog.Handler
	w *batchWriter
}

func (h flushingHandler) Handle(ctx context.Context, r slog.Record) error {
	err := h.Handler.Handle(ctx, r)
	if r.Level >= slog.LevelWarn {
		h.w.Flush()
	}
	return err
}

func (h flushingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return flushingHandler{h.Handler.WithAttrs(as), h.w}
}

func (h flushingHandler) WithGroup(name string) slog.Handler {
	return flushingHandler{h.Handler.WithGroup(name), h.w}
}
