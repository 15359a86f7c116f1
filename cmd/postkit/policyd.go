package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/postkit/postkit/internal/daemon"
	"github.com/postkit/postkit/internal/dnsclient"
	"github.com/postkit/postkit/policyd"
	"github.com/postkit/postkit/policyd/spfcheck"
)

// PolicyServerConfig is everything the policy server is built from; the
// flags of `postkit policyd` fill it today, postkit.yaml will later.
type PolicyServerConfig struct {
	// DNS servers (HOST:PORT); empty: /etc/resolv.conf.
	DNSServers []string
	DNSTimeout time.Duration // per query; 0: dnsclient's default (2s)
	// SPF check; SPF.Logger is set by BuildPolicyServer.
	SPFEnabled bool
	SPF        spfcheck.Config
	// CheckTimeout bounds each check per request; 0: policyd's default.
	CheckTimeout time.Duration
	Logger       *slog.Logger
}

// BuildPolicyServer builds the policy server: the SPF check first (when
// enabled), then extra checks in the given order (blacklists, DNSBL,
// greylisting, rate limits). It also returns the resolver, so that other
// checks can share its cache.
func BuildPolicyServer(cfg PolicyServerConfig, extra ...policyd.Check) (*policyd.Server, *dnsclient.Resolver, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	res, err := dnsclient.New(dnsclient.Config{Servers: cfg.DNSServers, Timeout: cfg.DNSTimeout})
	if err != nil {
		return nil, nil, err
	}
	var checks []policyd.Check
	if cfg.SPFEnabled {
		sc := cfg.SPF
		sc.Logger = cfg.Logger
		chk, err := spfcheck.New(sc, res)
		if err != nil {
			return nil, nil, err
		}
		checks = append(checks, chk)
	}
	checks = append(checks, extra...)
	return &policyd.Server{Checks: checks, CheckTimeout: cfg.CheckTimeout, Logger: cfg.Logger}, res, nil
}

func init() {
	var (
		listen, spfMode, hostname    string
		owner, group, mode, logLevel string
		dnsServers, trusted          []string
		noSPF, tempDefer, permReject bool
		dnsTimeout, checkTimeout     time.Duration
	)
	cmd := &cobra.Command{
		Use:   "policyd",
		Short: "Run the Postfix policy server (SPF; SMTPD_POLICY_README protocol)",
		Long: `Run the Postfix SMTP access policy server. Point Postfix at it with
  smtpd_recipient_restrictions = ..., check_policy_service unix:private/postkit-policy
SIGTERM or SIGINT stops it after the requests in progress are answered.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: want debug, info, warn or error", logLevel)
			}
			logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			addr, err := daemon.ParseAddr(listen)
			if err != nil {
				return err
			}
			sopts := daemon.SocketOpts{Owner: owner, Group: group}
			if mode != "" {
				m, err := strconv.ParseUint(mode, 8, 32)
				if err != nil || m > 0o777 {
					return fmt.Errorf("--socket-mode %q: want an octal mode such as 0660", mode)
				}
				sopts.Mode = os.FileMode(m)
			}
			cfg := PolicyServerConfig{
				DNSServers:   dnsServers,
				DNSTimeout:   dnsTimeout,
				SPFEnabled:   !noSPF,
				CheckTimeout: checkTimeout,
				Logger:       logger,
				SPF: spfcheck.Config{
					Mode:            spfcheck.Mode(spfMode),
					Hostname:        hostname,
					TempErrorDefer:  tempDefer,
					PermErrorReject: permReject,
				},
			}
			if cmd.Flags().Changed("trusted") {
				cfg.SPF.Trusted = []netip.Prefix{}
				for _, s := range trusted {
					p, err := parsePrefixOrAddr(s)
					if err != nil {
						return fmt.Errorf("--trusted %q: want a CIDR such as 192.0.2.0/24 or an address", s)
					}
					cfg.SPF.Trusted = append(cfg.SPF.Trusted, p)
				}
			}
			srv, _, err := BuildPolicyServer(cfg)
			if err != nil {
				return err
			}
			ln, err := daemon.Listen(addr, sopts)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			errc := make(chan error, 1)
			go func() { errc <- srv.Serve(ln) }()
			logger.Info("policyd: listening", "addr", addr.String(), "spf", !noSPF, "spf_mode", spfMode)
			select {
			case err := <-errc:
				return err
			case <-ctx.Done():
			}
			logger.Info("policyd: shutting down")
			sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			if err := srv.Shutdown(sctx); err != nil {
				return fmt.Errorf("policyd: shutdown: %w", err)
			}
			if err := <-errc; err != nil && !errors.Is(err, daemon.ErrServerClosed) {
				return err
			}
			if addr.Network == "unix" {
				os.Remove(addr.Address)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "unix:/var/spool/postfix/private/postkit-policy", "listen address: unix:/path or inet:host:port")
	f.StringArrayVar(&dnsServers, "dns", nil, "DNS server HOST:PORT (repeatable; default: /etc/resolv.conf)")
	f.DurationVar(&dnsTimeout, "dns-timeout", 2*time.Second, "timeout of one DNS query to one server")
	f.StringVar(&spfMode, "spf-mode", "enforce", "SPF mode: enforce (reject fail) or header (only add Received-SPF)")
	f.BoolVar(&noSPF, "no-spf", false, "disable the SPF check")
	f.BoolVar(&tempDefer, "spf-temperror-defer", false, "answer SPF temperror with DEFER_IF_PERMIT 4.7.24 (enforce mode)")
	f.BoolVar(&permReject, "spf-permerror-reject", false, "answer SPF permerror with 550 5.7.24 (enforce mode)")
	f.StringVar(&hostname, "hostname", "", "receiver name in Received-SPF (default: the host name)")
	f.StringArrayVar(&trusted, "trusted", nil, "client network never SPF-checked, CIDR (repeatable; default 127.0.0.0/8 and ::1)")
	f.DurationVar(&checkTimeout, "check-timeout", 10*time.Second, "time limit of one check on one request")
	f.StringVar(&owner, "socket-owner", "", "unix socket owner (user name or uid)")
	f.StringVar(&group, "socket-group", "", "unix socket group (group name or gid)")
	f.StringVar(&mode, "socket-mode", "", "unix socket mode, octal (e.g. 0660)")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	rootCmd.AddCommand(cmd)
}

// parsePrefixOrAddr accepts "192.0.2.0/24" or a bare address (a /32 or /128).
func parsePrefixOrAddr(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}
