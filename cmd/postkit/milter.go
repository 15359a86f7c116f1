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
	"path/filepath"
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
	"github.com/postkit/postkit/internal/dnsclient"
	"github.com/postkit/postkit/milter/dkimsign"
	"github.com/postkit/postkit/milter/dkimverify"
	"github.com/postkit/postkit/milter/filter"
	"github.com/postkit/postkit/milter/milterd"
	"github.com/postkit/postkit/milter/scrub"
	"github.com/postkit/postkit/sqlmaps"
)

// milterOptions is the typed configuration of `postkit milter`, filled from
// postkit.yaml (milterOptionsFromConfig) and/or the flags.
type milterOptions struct {
	Listen      []string // Postfix-syntax addresses; every listener runs the default chain
	Trusted     []string // CIDRs whose mail is outbound; nil = 127.0.0.0/8 and ::1
	Originating []string // {daemon_name} values whose mail is outbound; nil = ORIGINATING
	Socket      daemon.SocketOpts
	OnError     string // tempfail, accept or reject

	// AllowClients are the networks an inet listener serves; required when
	// a listen address is reachable from other hosts (daemon.ListenClients).
	AllowClients []netip.Prefix

	// Scrubbing (outbound). NoScrub leaves it out of the chain.
	NoScrub    bool
	ScrubRules []scrub.Rule // nil = scrub.DefaultRules()

	// Signing (outbound): Keys plus the DOMAIN:SELECTOR:KEYFILE specs of
	// --dkim-key. NoSign leaves the signer out even with keys.
	NoSign           bool
	Keys             []dkimsign.Key
	DKIMKeys         []string
	Canonicalization string // "" = dkimsign.DefaultCanonicalization
	Subdomains       bool

	// Whose mail is signed: authenticated mail only when the login may use
	// its From address, by the sender-login map over Database ("" = not
	// checked); UnownedFrom says what happens otherwise.
	Database    string
	SenderRules sqlmaps.SenderRules
	Fold        sqlmaps.Fold
	UnownedFrom string // reject or unsigned
	// Stores keeps the database open across reloads; nil opens its own.
	Stores *milterStores

	// Verification (inbound), with postkit's resolver.
	Verify     bool
	AuthservID string   // "" = the host name
	DNSServers []string // host:port; empty = /etc/resolv.conf
	DNSTimeout time.Duration

	Inbound inboundOptions // forged and ownfrom (milter_inbound.go)

	Drain  time.Duration
	Logger *slog.Logger
}

// milterOptionsFromConfig maps postkit.yaml (already validated by
// config.Load) onto the daemon's options.
func milterOptionsFromConfig(c *config.Config) (milterOptions, error) {
	m := c.Milter
	o := milterOptions{
		Listen:           []string{m.Listen},
		Originating:      append([]string{}, m.Originating...),
		Socket:           daemon.SocketOpts{Owner: m.SocketOwner, Group: m.SocketGroup},
		OnError:          m.OnError,
		NoScrub:          !m.Scrub.Enabled,
		NoSign:           !m.DKIM.Sign,
		Canonicalization: m.DKIM.Canonicalization,
		Subdomains:       m.DKIM.Subdomains,
		Verify:           m.DKIM.Verify,
		AuthservID:       m.DKIM.AuthservID,
		DNSServers:       c.DNS.Servers,
		DNSTimeout:       c.DNS.Timeout.D(),
		Database:         c.Database.Path,
		SenderRules:      senderRules(c),
		UnownedFrom:      m.DKIM.UnownedFrom,
		Inbound:          inboundOptionsFromConfig(c),
	}
	if c.SMTPUTF8 {
		o.Fold = sqlmaps.FoldUTF8
	}
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
	o.Trusted = []string{}
	for _, n := range c.TrustedNetworks {
		o.Trusted = append(o.Trusted, string(n))
	}
	if len(m.Scrub.Rules) > 0 {
		for _, r := range m.Scrub.Rules {
			o.ScrubRules = append(o.ScrubRules, scrub.Rule{Header: r.Header, Match: r.Match, Action: r.Action, Replace: r.With})
		}
	}
	for _, k := range m.DKIM.Keys {
		dom := strings.ToLower(strings.TrimSuffix(k.Domain, "."))
		file := k.KeyFile
		if file == "" {
			// The layout of `postkit dkim keygen` and Debian's /etc/dkimkeys.
			file = filepath.Join(m.DKIM.KeyDir, dom, k.Selector+".private")
		}
		o.Keys = append(o.Keys, dkimsign.Key{Domain: dom, Selector: k.Selector, KeyFile: file, Disabled: k.Disabled})
	}
	return o, nil
}

func init() {
	var o milterOptions
	var mode, level, cfgPath string
	var allowClients []string
	var noScrub bool
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
			lv, err := parseLevel(level)
			if err != nil {
				return err
			}
			logw := newBatchWriter(os.Stderr, logBatchDelay, logBatchBytes)
			defer logw.Flush()
			o.Logger = slog.New(flushingHandler{slog.NewTextHandler(logw, &slog.HandlerOptions{Level: lv}), logw})
			if cmd.Flags().Changed("socket-mode") || cfgPath == "" {
				if o.Socket.Mode, err = daemon.ParseMode(mode); err != nil {
					return err
				}
			}
			o.AllowClients = nil
			for _, s := range allowClients {
				p, err := config.ParseCIDR(s)
				if err != nil {
					return fmt.Errorf("milter: --allow-client %q: want a CIDR such as 192.0.2.25/32 (%v)", s, err)
				}
				o.AllowClients = append(o.AllowClients, p)
			}
			o.NoScrub = noScrub
			stopProfile, err := startProfiles(os.Getenv("POSTKIT_CPUPROFILE"), os.Getenv("POSTKIT_MEMPROFILE"))
			if err != nil {
				return err
			}
			defer stopProfile()
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			stores := &milterStores{}
			defer stores.Close()
			o.Stores = stores
			if cfgPath == "" {
				o.SenderRules = senderRules(nil)
				return runMilter(ctx, o, func() (milterd.Config, error) { return buildMilterConfig(o) })
			}
			flags := o
			changed := cmd.Flags().Changed
			load := func() (milterOptions, error) {
				c, _, err := config.Load(cfgPath)
				if err != nil {
					return milterOptions{}, err
				}
				if !c.Milter.Enabled {
					o.Logger.Warn("milter: milter.enabled is false in postkit.yaml: Postfix is not wired to this daemon (postkit generate)", "config", cfgPath)
				}
				yo, err := milterOptionsFromConfig(c)
				if err != nil {
					return yo, err
				}
				overrideMilterOptions(&yo, flags, changed)
				yo.Stores = stores
				return yo, nil
			}
			first, err := load()
			if err != nil {
				return err
			}
			return runMilter(ctx, first, func() (milterd.Config, error) {
				yo, err := load()
				if err != nil {
					return milterd.Config{}, err
				}
				if !slices.Equal(yo.Listen, first.Listen) || yo.Socket != first.Socket || !slices.Equal(yo.AllowClients, first.AllowClients) {
					o.Logger.Warn("milter: listen address, socket permissions or allowed clients changed in postkit.yaml: restart the daemon to apply them")
				}
				return buildMilterConfig(yo)
			})
		},
	}
	f := cmd.Flags()
	f.StringVarP(&cfgPath, "config", "c", "", "postkit.yaml to read (its milter section); without it the flags configure the daemon")
	f.StringArrayVar(&o.Listen, "listen", []string{def.Listen}, "listen address, unix:PATH or inet:127.0.0.1:PORT (repeatable)")
	f.StringArrayVar(&allowClients, "allow-client", nil, "client network that may connect to an inet listener, CIDR (repeatable); required for an address other hosts can reach (milter.allow_clients)")
	f.StringArrayVar(&o.DKIMKeys, "dkim-key", nil, "DKIM signing key DOMAIN:SELECTOR:KEYFILE (repeatable; with -c, added to milter.dkim.keys)")
	f.StringArrayVar(&o.Trusted, "trusted", nil, "client network whose mail is outbound, CIDR (repeatable; default 127.0.0.0/8 and ::1)")
	f.StringArrayVar(&o.Originating, "originating", nil, "milter_macro_daemon_name whose mail is outbound (repeatable; default ORIGINATING)")
	f.StringVar(&o.Socket.Owner, "socket-owner", "", "owner of unix sockets (user name or uid)")
	f.StringVar(&o.Socket.Group, "socket-group", "", "group of unix sockets, e.g. postfix")
	f.StringVar(&mode, "socket-mode", def.SocketMode, "mode of unix sockets (octal); with --socket-group postfix, only Postfix may connect")
	f.StringVar(&o.OnError, "on-error", def.OnError, "verdict when a filter fails: tempfail, accept or reject")
	f.BoolVar(&noScrub, "no-scrub", false, "do not scrub outbound headers")
	f.StringVar(&o.Canonicalization, "canonicalization", "", "DKIM header/body canonicalization (default relaxed/simple)")
	f.StringVar(&o.Database, "db", "", "SQLite database whose sender-login map says which From addresses an authenticated login may use (with -c: database.path)")
	f.StringVar(&o.UnownedFrom, "unowned-from", config.Defaults().Milter.DKIM.UnownedFrom, "authenticated mail whose From the login may not use: reject or unsigned")
	f.BoolVar(&o.Verify, "verify", false, "verify inbound DKIM signatures and add Authentication-Results")
	f.StringVar(&o.AuthservID, "authserv-id", "", "authserv-id in Authentication-Results (default: the host name)")
	f.StringArrayVar(&o.DNSServers, "dns-server", nil, "DNS server HOST:PORT for DKIM key lookups (repeatable; default /etc/resolv.conf)")
	f.DurationVar(&o.Drain, "drain", 30*time.Second, "how long SIGTERM waits for messages in flight")
	f.StringVar(&level, "log-level", "info", "log level: debug, info, warn or error")
	rootCmd.AddCommand(cmd)
}

// overrideMilterOptions copies into o the flags the user gave explicitly.
func overrideMilterOptions(o *milterOptions, flags milterOptions, changed func(string) bool) {
	if changed("listen") {
		o.Listen = flags.Listen
	}
	if changed("allow-client") {
		o.AllowClients = flags.AllowClients
	}
	if changed("dkim-key") {
		o.DKIMKeys = flags.DKIMKeys
	}
	if changed("trusted") {
		o.Trusted = flags.Trusted
	}
	if changed("originating") {
		o.Originating = flags.Originating
	}
	if changed("socket-owner") {
		o.Socket.Owner = flags.Socket.Owner
	}
	if changed("socket-group") {
		o.Socket.Group = flags.Socket.Group
	}
	if changed("socket-mode") {
		o.Socket.Mode = flags.Socket.Mode
	}
	if changed("on-error") {
		o.OnError = flags.OnError
	}
	if changed("no-scrub") {
		o.NoScrub = flags.NoScrub
	}
	if changed("canonicalization") {
		o.Canonicalization = flags.Canonicalization
	}
	if changed("verify") {
		o.Verify = flags.Verify
	}
	if changed("authserv-id") {
		o.AuthservID = flags.AuthservID
	}
	if changed("dns-server") {
		o.DNSServers = flags.DNSServers
	}
	if changed("db") {
		o.Database = flags.Database
	}
	if changed("unowned-from") {
		o.UnownedFrom = flags.UnownedFrom
	}
	o.Drain, o.Logger = flags.Drain, flags.Logger
}

func parseLevel(s string) (slog.Level, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("milter: --log-level %q: want debug, info, warn or error", s)
	}
	return lv, nil
}

// buildMilterConfig turns options into the daemon's configuration, loading
// key files. It is called at start and again on every reload. The chain is
// scrub → dkimsign → dkimverify → forged → ownfrom: scrubbing runs before
// signing so that the signature covers the final header; scrub and dkimsign
// act on outbound mail only and dkimverify on inbound mail only, so one
// chain serves both. forged removes at end of headers, before any filter
// signs at end of message, and after dkimverify took the header as
// received; ownfrom reads dkimverify's result at end of message.
func buildMilterConfig(o milterOptions) (milterd.Config, error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	cfg := milterd.Config{Logger: log, Originating: o.Originating}
	var err error
	if cfg.OnError, err = milterd.ParseFaultAction(o.OnError); err != nil {
		return cfg, err
	}
	cfg.OnErrorSet = true
	if o.Trusted != nil {
		cfg.Trusted = []netip.Prefix{}
		for _, s := range o.Trusted {
			p, err := config.ParseCIDR(s)
			if err != nil {
				return cfg, fmt.Errorf("milter: trusted network %q: want a CIDR such as 192.0.2.0/24 (%v)", s, err)
			}
			cfg.Trusted = append(cfg.Trusted, p)
		}
	}
	var chain []filter.Filter
	if !o.NoScrub {
		sc, err := scrub.New(scrub.Config{Rules: o.ScrubRules})
		if err != nil {
			return cfg, fmt.Errorf("milter: %w", err)
		}
		chain = append(chain, sc)
	}
	if !o.NoSign {
		dk, err := buildSigner(o, log)
		if err != nil {
			return cfg, err
		}
		if dk != nil {
			chain = append(chain, dk)
		}
	}
	if o.Verify {
		res, err := dnsclient.New(dnsclient.Config{Servers: o.DNSServers, Timeout: o.DNSTimeout})
		if err != nil {
			return cfg, fmt.Errorf("milter: DKIM verification resolver: %w", err)
		}
		v, err := dkimverify.New(dkimverify.Config{Resolver: res, AuthservID: o.AuthservID, Logger: log})
		if err != nil {
			return cfg, err
		}
		chain = append(chain, v)
	}
	in, err := buildInbound(o, log)
	if err != nil {
		return cfg, err
	}
	chain = append(chain, in...)
	cfg.Chains = map[string][]filter.Filter{milterd.DefaultChain: chain}
	return cfg, nil
}

// buildSigner builds the DKIM signer (milter/dkimsign) from the typed keys
// and the DOMAIN:SELECTOR:KEYFILE specs; nil when there is no key.
func buildSigner(o milterOptions, log *slog.Logger) (filter.Filter, error) {
	ks := append([]dkimsign.Key(nil), o.Keys...)
	for _, spec := range o.DKIMKeys {
		parts := strings.SplitN(spec, ":", 3)
		if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
			return nil, fmt.Errorf("milter: --dkim-key %q: want DOMAIN:SELECTOR:KEYFILE, e.g. example.org:mail:/etc/dkimkeys/example.org/mail.private", spec)
		}
		ks = append(ks, dkimsign.Key{Domain: strings.ToLower(parts[0]), Selector: parts[1], KeyFile: parts[2]})
	}
	if len(ks) == 0 {
		log.Warn("milter: no DKIM key configured (milter.dkim.keys or --dkim-key): outbound mail is not DKIM-signed")
		return nil, nil
	}
	cfg := dkimsign.Config{Keys: ks, Canonicalization: o.Canonicalization, Subdomains: o.Subdomains, Logger: log}
	var err error
	if cfg.Unowned, err = dkimsign.ParseUnowned(o.UnownedFrom); err != nil {
		return nil, fmt.Errorf("milter: %w", err)
	}
	if o.Database == "" {
		log.Warn("milter: no database (--db or -c): authenticated mail is signed whatever its From says")
	} else {
		// The map is built now so that a bad grant stops the (re)load
		// rather than a message.
		m, _ := sqlmaps.MapByName(sqlmaps.SenderLoginMap)
		if _, err := m.With(o.SenderRules); err != nil {
			return nil, fmt.Errorf("milter: sender_logins: %w", err)
		}
		stores := o.Stores
		if stores == nil {
			stores = &milterStores{}
		}
		cfg.Senders = &senderCheck{stores: stores, path: o.Database, rules: o.SenderRules, fold: o.Fold}
	}
	s, err := dkimsign.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("milter: %w", err)
	}
	return s, nil
}

// runMilter builds the daemon, listens on every address and serves until ctx
// ends (then drains). load is called at start and on SIGHUP.
func runMilter(ctx context.Context, o milterOptions, load func() (milterd.Config, error)) error {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	if len(o.Listen) == 0 {
		return errors.New("milter: no --listen address given")
	}
	// Catch SIGHUP before anything listens: a reload sent as soon as the
	// socket answers must not kill the daemon.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	cfg, err := load()
	if err != nil {
		return err
	}
	srv, err := milterd.New(cfg)
	if err != nil {
		return err
	}
	var lns []net.Listener
	for _, a := range o.Listen {
		addr, err := daemon.ParseAddr(a)
		if err != nil {
			return err
		}
		ln, err := daemon.ListenClients(addr, o.Socket, o.AllowClients, log)
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
		log.Info("milter listening", "addr", addr.String(), "filters", chainNames(cfg))
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
			cfg, err := load()
			if err == nil {
				err = srv.Reload(cfg)
			}
			if err != nil {
				log.Error("milter reload failed; the running configuration stays", "err", err)
			} else {
				log.Info("milter reloaded", "filters", chainNames(cfg))
			}
		}
	}
	drain := o.Drain
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

// chainNames lists the default chain's filters for the logs.
func chainNames(cfg milterd.Config) string {
	var names []string
	for _, f := range cfg.Chains[milterd.DefaultChain] {
		names = append(names, f.Name())
	}
	return strings.Join(names, ",")
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
