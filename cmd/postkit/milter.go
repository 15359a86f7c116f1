package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/postkit/postkit/internal/daemon"
	"github.com/postkit/postkit/milter/dkimsign"
	"github.com/postkit/postkit/milter/filter"
	"github.com/postkit/postkit/milter/milterd"
	"github.com/postkit/postkit/milter/scrub"
)

// milterOptions is the typed configuration of `postkit milter`. The flags
// fill it today; the YAML wiring fills the same struct.
type milterOptions struct {
	Listen      []string // Postfix-syntax addresses; every listener runs the default chain
	DKIMKeys    []string // DOMAIN:SELECTOR:KEYFILE
	Trusted     []string // CIDRs whose mail is outbound; nil = 127.0.0.0/8 and ::1
	Originating []string // {daemon_name} values whose mail is outbound; nil = ORIGINATING
	Socket      daemon.SocketOpts
	OnError     string       // tempfail, accept or reject
	ScrubRules  []scrub.Rule // nil = scrub.DefaultRules()
	Drain       time.Duration
	Logger      *slog.Logger
}

func init() {
	var o milterOptions
	var mode, level string
	cmd := &cobra.Command{
		Use:   "milter",
		Short: "Run the milter daemon (header scrubbing and DKIM signing) for Postfix",
		Long: `Run the milter daemon for Postfix's smtpd_milters / non_smtpd_milters
(milter_protocol = 6). Without a configuration file the default chain runs on
every listener: scrub (the reference header_checks rules, on outbound mail)
then DKIM signing with the --dkim-key keys. Mail is outbound when the client
authenticated, connects from a --trusted network, or arrives on a service whose
milter_macro_daemon_name is listed in --originating.

SIGHUP reloads (key files are read again; on error the running chain stays),
SIGTERM and SIGINT stop accepting and let messages in flight finish.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			lv, err := parseLevel(level)
			if err != nil {
				return err
			}
			o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))
			if mode != "" {
				m, err := strconv.ParseUint(mode, 8, 32)
				if err != nil || m > 0o777 {
					return fmt.Errorf("milter: --socket-mode %q: want an octal mode such as 0660", mode)
				}
				o.Socket.Mode = os.FileMode(m)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return runMilter(ctx, o, func() (milterd.Config, error) { return buildMilterConfig(o) })
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&o.Listen, "listen", []string{"unix:/var/spool/postfix/postkit/milter.sock"}, "listen address, unix:PATH or inet:127.0.0.1:PORT (repeatable)")
	f.StringArrayVar(&o.DKIMKeys, "dkim-key", nil, "DKIM signing key DOMAIN:SELECTOR:KEYFILE (repeatable)")
	f.StringArrayVar(&o.Trusted, "trusted", nil, "client network whose mail is outbound, CIDR (repeatable; default 127.0.0.0/8 and ::1)")
	f.StringArrayVar(&o.Originating, "originating", nil, "milter_macro_daemon_name whose mail is outbound (repeatable; default ORIGINATING)")
	f.StringVar(&o.Socket.Owner, "socket-owner", "", "owner of unix sockets (user name or uid)")
	f.StringVar(&o.Socket.Group, "socket-group", "", "group of unix sockets, e.g. postfix")
	f.StringVar(&mode, "socket-mode", "0666", "mode of unix sockets (octal); restrict with the socket's directory or --socket-group and 0660")
	f.StringVar(&o.OnError, "on-error", "tempfail", "verdict when a filter fails: tempfail, accept or reject")
	f.DurationVar(&o.Drain, "drain", 30*time.Second, "how long SIGTERM waits for messages in flight")
	f.StringVar(&level, "log-level", "info", "log level: debug, info, warn or error")
	rootCmd.AddCommand(cmd)
}

func parseLevel(s string) (slog.Level, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("milter: --log-level %q: want debug, info, warn or error", s)
	}
	return lv, nil
}

// buildMilterConfig turns options into the daemon's configuration, loading
// key files. It is called at start and again on every reload.
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
			p, err := netip.ParsePrefix(s)
			if err != nil {
				a, aerr := netip.ParseAddr(s)
				if aerr != nil {
					return cfg, fmt.Errorf("milter: trusted network %q: want a CIDR such as 192.0.2.0/24", s)
				}
				p = netip.PrefixFrom(a, a.BitLen())
			}
			cfg.Trusted = append(cfg.Trusted, p)
		}
	}
	sc, err := scrub.New(scrub.Config{Rules: o.ScrubRules})
	if err != nil {
		return cfg, err
	}
	chain := []filter.Filter{sc}
	dk, err := buildDKIMFilters(o.DKIMKeys, log)
	if err != nil {
		return cfg, err
	}
	if len(dk) == 0 {
		log.Warn("milter: no --dkim-key given: outbound mail is not DKIM-signed")
	}
	chain = append(chain, dk...)
	cfg.Chains = map[string][]filter.Filter{milterd.DefaultChain: chain}
	return cfg, nil
}

// buildDKIMFilters parses DOMAIN:SELECTOR:KEYFILE specs and builds the
// signer (milter/dkimsign). Scrubbing runs before it so the signature covers
// the final header.
func buildDKIMFilters(keys []string, log *slog.Logger) ([]filter.Filter, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	var ks []dkimsign.Key
	for _, spec := range keys {
		parts := strings.SplitN(spec, ":", 3)
		if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
			return nil, fmt.Errorf("milter: --dkim-key %q: want DOMAIN:SELECTOR:KEYFILE, e.g. example.org:mail:/etc/postkit/dkim/example.org.mail.key", spec)
		}
		ks = append(ks, dkimsign.Key{Domain: strings.ToLower(parts[0]), Selector: parts[1], KeyFile: parts[2]})
	}
	s, err := dkimsign.New(dkimsign.Config{Keys: ks, Logger: log})
	if err != nil {
		return nil, err
	}
	return []filter.Filter{s}, nil
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
		ln, err := daemon.Listen(addr, o.Socket)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return fmt.Errorf("milter: listen %s: %w", a, err)
		}
		lns = append(lns, ln)
		log.Info("milter listening", "addr", addr.String())
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
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
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
