package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/internal/daemon"
	"github.com/postkit/postkit/internal/dnsclient"
	"github.com/postkit/postkit/internal/seal"
	"github.com/postkit/postkit/policyd"
	"github.com/postkit/postkit/policyd/blacklist"
	"github.com/postkit/postkit/policyd/dnsbl"
	"github.com/postkit/postkit/policyd/greylist"
	"github.com/postkit/postkit/policyd/ratelimit"
	"github.com/postkit/postkit/policyd/spfcheck"
	"github.com/postkit/postkit/policyd/state"
	"github.com/postkit/postkit/sqlmaps"
)

// policyOptions is the typed configuration of `postkit policyd`: filled from
// postkit.yaml by policyOptionsFromConfig, then by the flags given
// explicitly. buildPolicyChain turns it into checks.
type policyOptions struct {
	Listen     string
	Socket     daemon.SocketOpts
	Checks     []string      // in order: blacklist, spf, dnsbl, greylist, ratelimit
	TimeBudget time.Duration // one request, all checks
	Metrics    string        // host:port of the Prometheus endpoint; "" none
	DNSServers []string      // host:port; empty: /etc/resolv.conf
	DNSTimeout time.Duration
	Trusted    []netip.Prefix // trusted_networks: never SPF-checked, DNSBL-queried or greylisted
	Hostname   string

	// AllowClients and MetricsAllowClients are the networks the inet
	// listeners serve; required for addresses other hosts can reach.
	AllowClients        []netip.Prefix
	MetricsAllowClients []netip.Prefix

	SPF spfcheck.Config // Trusted, Hostname, Logger and Timeout are set by the builder
	// BlacklistOwner "postfix" leaves the SQL blacklists to Postfix's
	// check_*_access maps: the daemon then skips its blacklist check.
	BlacklistOwner string
	Blacklist      blacklist.Config
	Database       string // SQL store with the blacklists
	DNSBLSites     []string
	DNSBL          dnsbl.Config // Sites are parsed from DNSBLSites
	Greylist       greylist.Config
	RateLimits     []string // ratelimit.ParseLimit syntax
	StatePath      string   // greylisting and rate-limit state (SQLite)
	// OwnDomains refuses outsiders using our domains (Domains and those of
	// Database) as envelope sender unless SPF passes (spfcheck.Config.OwnDomain).
	OwnDomains bool
	Domains    []string
	// SealKey is the key file (internal/seal) that marks the Received-SPF
	// fields for the milter; "" marks nothing.
	SealKey string

	Logger *slog.Logger
}

// defaultPolicyOptions is what the daemon runs without -c: the SPF check,
// with config.Defaults for everything else.
func defaultPolicyOptions() policyOptions {
	c := config.Defaults()
	c.Policy.Checks = []string{"spf"}
	c.Policy.Blacklist.Owner = "policy"
	h, _ := os.Hostname()
	c.Hostname = h
	o, err := policyOptionsFromConfig(c)
	if err != nil {
		panic("policyd: built-in defaults do not convert: " + err.Error())
	}
	// Without postkit.yaml the socket keeps the daemon's own owner and
	// group, so that it runs unprivileged, with the same mode as with it;
	// --socket-* set them.
	o.Socket.Owner, o.Socket.Group = "", ""
	// Nor does it know our domains, the database or where the milter
	// reads the seal key.
	o.OwnDomains, o.SealKey = false, ""
	return o
}

// policyOptionsFromConfig maps postkit.yaml (validated by config.Load) onto
// the daemon's options.
func policyOptionsFromConfig(c *config.Config) (policyOptions, error) {
	p := c.Policy
	o := policyOptions{
		Listen:         p.Listen,
		Socket:         daemon.SocketOpts{Owner: p.SocketOwner, Group: p.SocketGroup},
		Checks:         append([]string{}, p.Checks...),
		TimeBudget:     p.TimeBudget.D(),
		Metrics:        p.Metrics,
		DNSServers:     append([]string{}, c.DNS.Servers...),
		DNSTimeout:     c.DNS.Timeout.D(),
		Hostname:       c.Hostname,
		BlacklistOwner: p.Blacklist.Owner,
		Database:       c.Database.Path,
		DNSBLSites:     append([]string{}, p.DNSBL.Sites...),
		StatePath:      filepath.Join(c.Paths.PostkitRun, "policyd.sqlite"),
		OwnDomains:     p.SPF.OwnDomains == "enforce",
		Domains:        append([]string{}, c.Domains...),
		SealKey:        filepath.Join(c.Paths.PostkitRun, sealKeyFile),
	}
	if p.Listen == "" {
		return o, errors.New("policyd: policy.listen is empty in postkit.yaml: set unix:/path or inet:127.0.0.1:PORT")
	}
	if p.SocketMode != "" {
		m, err := daemon.ParseMode(p.SocketMode)
		if err != nil {
			return o, fmt.Errorf("policyd: policy.socket_mode: %w", err)
		}
		o.Socket.Mode = m
	}
	var err error
	if o.Trusted, err = policyPrefixes("trusted_networks", c.TrustedNetworks); err != nil {
		return o, err
	}
	if o.AllowClients, err = policyPrefixes("policy.allow_clients", p.AllowClients); err != nil {
		return o, err
	}
	if o.MetricsAllowClients, err = policyPrefixes("policy.metrics_allow_clients", p.MetricsAllowClients); err != nil {
		return o, err
	}
	spfAllow, err := policyPrefixes("policy.spf.allow_ips", p.SPF.AllowIPs)
	if err != nil {
		return o, err
	}
	o.SPF = spfcheck.Config{
		Mode:               spfcheck.Mode(p.SPF.Mode),
		TempErrorDefer:     p.SPF.TempError == "defer",
		PermErrorReject:    p.SPF.PermError == "reject",
		IgnoreHeloFail:     !p.SPF.HeloReject,
		AllowIPs:           spfAllow,
		AllowSenderDomains: append([]string{}, p.SPF.AllowDomains...),
	}
	o.Blacklist = blacklist.Config{
		RecipientDelimiter: c.RecipientDelim,
		// parent_domains: a row for example.org also matches
		// sub.example.org, which is Postfix's default
		// (parent_domain_matches_subdomains); without it only ".example.org"
		// rows match sub-domains.
		SubdomainsNeedDot: !p.Blacklist.ParentDomains,
	}
	o.DNSBL = dnsbl.Config{Threshold: p.DNSBL.Threshold, CheckPrivate: p.DNSBL.CheckPrivate}
	greyAllow, err := policyPrefixes("policy.greylist.allow_ips", p.Greylist.AllowIPs)
	if err != nil {
		return o, err
	}
	o.Greylist = greylist.Config{
		Delay:        p.Greylist.Delay.D(),
		RetryWindow:  p.Greylist.RetryWindow.D(),
		MaxAge:       p.Greylist.MaxAge.D(),
		AllowClients: greyAllow,
		AutoAllowClients: p.Greylist.AutoAllow,
	}
	for _, l := range p.RateLimit.Limits {
		count := l.Count
		if count == "" {
			count = "messages"
		}
		o.RateLimits = append(o.RateLimits, ratelimit.Limit{
			Key: ratelimit.Key(l.Key), Counter: ratelimit.Counter(count), Max: int64(l.Max), Window: l.Window.D(),
		}.String())
	}
	return o, nil
}

func policyPrefixes(key string, cidrs []config.CIDR) ([]netip.Prefix, error) {
	out := []netip.Prefix{}
	for _, n := range cidrs {
		p, err := config.ParseCIDR(string(n))
		if err != nil {
			return nil, fmt.Errorf("policyd: %s %q: want a CIDR such as 192.0.2.0/24 or an address", key, n)
		}
		out = append(out, p)
	}
	return out, nil
}

// sealKeyFile is the seal key's name under paths.postkit_run: the policy
// daemon creates it, the milter reads it.
const sealKeyFile = "seal.key"

// policyChain is one built set of checks with the resources they hold.
type policyChain struct {
	checks  []policyd.Check
	closers []io.Closer
}

// Checks implements policyd.Chain.
func (pc *policyChain) Checks() []policyd.Check { return pc.checks }

// Close releases the chain's databases.
func (pc *policyChain) Close() error {
	var errs []error
	for _, c := range pc.closers {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// buildPolicyChain builds the checks of o in o.Checks order. One resolver
// serves SPF and the DNSBL (and the greylisting's DNSWL allow list); one
// state database serves greylisting and rate limits. On error nothing stays
// open.
func buildPolicyChain(o policyOptions) (_ *policyChain, err error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	pc := &policyChain{}
	defer func() {
		if err != nil {
			pc.Close()
		}
	}()
	seen := map[string]bool{}
	for _, name := range o.Checks {
		if seen[name] {
			return nil, fmt.Errorf("policyd: check %q listed twice; list each once", name)
		}
		seen[name] = true
	}
	var res *dnsclient.Resolver
	resolver := func() (*dnsclient.Resolver, error) {
		if res != nil {
			return res, nil
		}
		r, err := dnsclient.New(dnsclient.Config{Servers: o.DNSServers, Timeout: o.DNSTimeout})
		if err != nil {
			return nil, err
		}
		res = r
		return res, nil
	}
	var st *state.DB
	stateDB := func() (*state.DB, error) {
		if st != nil {
			return st, nil
		}
		if err := os.MkdirAll(filepath.Dir(o.StatePath), 0o750); err != nil {
			return nil, fmt.Errorf("policyd: state directory: %w; set paths.postkit_run or --state", err)
		}
		db, err := state.Open(o.StatePath)
		if err != nil {
			return nil, err
		}
		st = db
		pc.closers = append(pc.closers, st)
		return st, nil
	}
	// The DNSBL is built first when listed, so that greylisting can use its
	// allow-list scores whatever the order.
	var dnsblCheck *dnsbl.Check
	if seen["dnsbl"] {
		r, err := resolver()
		if err != nil {
			return nil, err
		}
		cfg := o.DNSBL
		if cfg.Sites, err = dnsbl.ParseSites(strings.Join(o.DNSBLSites, " ")); err != nil {
			return nil, err
		}
		cfg.SkipClients = append(append([]netip.Prefix{}, cfg.SkipClients...), o.Trusted...)
		if cfg.Timeout <= 0 || cfg.Timeout > o.TimeBudget {
			cfg.Timeout = min(5*time.Second, o.TimeBudget)
		}
		cfg.Logger = log
		if dnsblCheck, err = dnsbl.New(cfg, r); err != nil {
			return nil, err
		}
	}
	for _, name := range o.Checks {
		var chk policyd.Check
		switch name {
		case "blacklist":
			if o.BlacklistOwner == "postfix" {
				log.Info("policyd: blacklist check skipped: policy.blacklist.owner is postfix (Postfix's check_*_access maps apply the SQL blacklists)")
				continue
			}
			store, err := sqlmaps.OpenReadOnly(o.Database)
			if err != nil {
				return nil, err
			}
			pc.closers = append(pc.closers, store)
			cfg := o.Blacklist
			cfg.Logger = log
			if chk, err = blacklist.New(cfg, store); err != nil {
				return nil, err
			}
		case "spf":
			r, err := resolver()
			if err != nil {
				return nil, err
			}
			cfg := o.SPF
			cfg.Trusted = append([]netip.Prefix{}, o.Trusted...)
			cfg.Hostname = o.Hostname
			cfg.Logger = log
			// The SPF budget leaves room for the checks after it.
			cfg.Timeout = min(8*time.Second, o.TimeBudget*4/5)
			if o.OwnDomains {
				set := sqlmaps.NewDomainSet(o.Database, o.Domains)
				pc.closers = append(pc.closers, set)
				cfg.OwnDomain = set.Contains
			}
			if o.SealKey != "" {
				key, err := seal.LoadOrCreate(o.SealKey)
				if err != nil {
					return nil, fmt.Errorf("policyd: %w", err)
				}
				cfg.Seal = func(r *policyd.Request, line string) string {
					port, _ := strconv.Atoi(r.Get("client_port"))
					return key.Seal(seal.Tx{Addr: r.ClientAddr(), Port: port, Helo: r.Helo(), Sender: r.Sender()}, line)
				}
			}
			if chk, err = spfcheck.New(cfg, r); err != nil {
				return nil, err
			}
		case "dnsbl":
			chk = dnsblCheck
		case "greylist":
			db, err := stateDB()
			if err != nil {
				return nil, err
			}
			cfg := o.Greylist
			cfg.AllowClients = append(append([]netip.Prefix{}, cfg.AllowClients...), o.Trusted...)
			cfg.Hostname = o.Hostname
			cfg.Logger = log
			if dnsblCheck != nil {
				cfg.Allowlist = dnsblCheck
			}
			if chk, err = greylist.New(cfg, db); err != nil {
				return nil, err
			}
		case "ratelimit":
			db, err := stateDB()
			if err != nil {
				return nil, err
			}
			cfg := ratelimit.Config{
				// The generated main.cf asks the daemon at RCPT only about
				// inbound mail (permit_sasl_authenticated and
				// permit_mynetworks come first) and at END-OF-MESSAGE about
				// every message: both counters count there, so that
				// authenticated users, who are what limits are mostly
				// about, are counted at all.
				MessageStage:   "END-OF-MESSAGE",
				RecipientStage: "END-OF-MESSAGE",
				Logger:         log,
			}
			for _, s := range o.RateLimits {
				l, err := ratelimit.ParseLimit(s)
				if err != nil {
					return nil, err
				}
				cfg.Limits = append(cfg.Limits, l)
			}
			if chk, err = ratelimit.New(cfg, db); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("policyd: unknown check %q: want blacklist, spf, dnsbl, greylist or ratelimit", name)
		}
		pc.checks = append(pc.checks, chk)
	}
	return pc, nil
}

// policyFlags are the flag values; each overrides the YAML only when given.
type policyFlags struct {
	cfgPath, listen, owner, group, mode, logLevel string
	dnsServers, trusted, checks, dnsblSites       []string
	allowClients, metricsAllowClients             []string
	rateLimits                                    []string
	dnsTimeout, timeBudget, greylistDelay         time.Duration
	spfMode, hostname, metrics, db, statePath     string
	noSPF, tempDefer, permReject                  bool
	dnsblThreshold                                int
}

// apply overrides o with the flags changed on the command line.
func (f *policyFlags) apply(o *policyOptions, changed func(string) bool) error {
	if changed("listen") {
		o.Listen = f.listen
	}
	for _, l := range []struct {
		flag string
		vals []string
		dst  *[]netip.Prefix
	}{{"allow-client", f.allowClients, &o.AllowClients}, {"metrics-allow-client", f.metricsAllowClients, &o.MetricsAllowClients}} {
		if !changed(l.flag) {
			continue
		}
		*l.dst = []netip.Prefix{}
		for _, s := range l.vals {
			p, err := config.ParseCIDR(s)
			if err != nil {
				return fmt.Errorf("policyd: --%s %q: want a CIDR such as 192.0.2.25/32 or an address", l.flag, s)
			}
			*l.dst = append(*l.dst, p)
		}
	}
	if changed("socket-owner") {
		o.Socket.Owner = f.owner
	}
	if changed("socket-group") {
		o.Socket.Group = f.group
	}
	if changed("socket-mode") {
		m, err := daemon.ParseMode(f.mode)
		if err != nil {
			return fmt.Errorf("policyd: --socket-mode: %w", err)
		}
		o.Socket.Mode = m
	}
	if changed("checks") {
		o.Checks = nil
		for _, c := range f.checks {
			for _, name := range strings.Split(c, ",") {
				if name = strings.TrimSpace(name); name != "" {
					o.Checks = append(o.Checks, name)
				}
			}
		}
	}
	if f.noSPF {
		o.Checks = slices.DeleteFunc(o.Checks, func(s string) bool { return s == "spf" })
	}
	if changed("dns") {
		o.DNSServers = f.dnsServers
	}
	if changed("dns-timeout") {
		o.DNSTimeout = f.dnsTimeout
	}
	if changed("time-budget") {
		o.TimeBudget = f.timeBudget
	}
	if changed("metrics") {
		o.Metrics = f.metrics
	}
	if changed("hostname") {
		o.Hostname = f.hostname
	}
	if changed("trusted") {
		o.Trusted = []netip.Prefix{}
		for _, s := range f.trusted {
			p, err := config.ParseCIDR(s)
			if err != nil {
				return fmt.Errorf("policyd: --trusted %q: want a CIDR such as 192.0.2.0/24 or an address", s)
			}
			o.Trusted = append(o.Trusted, p)
		}
	}
	if changed("spf-mode") {
		o.SPF.Mode = spfcheck.Mode(f.spfMode)
	}
	if changed("spf-temperror-defer") {
		o.SPF.TempErrorDefer = f.tempDefer
	}
	if changed("spf-permerror-reject") {
		o.SPF.PermErrorReject = f.permReject
	}
	if changed("db") {
		o.Database = f.db
	}
	if changed("state") {
		o.StatePath = f.statePath
	}
	if changed("dnsbl-site") {
		o.DNSBLSites = f.dnsblSites
	}
	if changed("dnsbl-threshold") {
		o.DNSBL.Threshold = f.dnsblThreshold
	}
	if changed("greylist-delay") {
		o.Greylist.Delay = f.greylistDelay
	}
	if changed("ratelimit") {
		o.RateLimits = f.rateLimits
	}
	if o.TimeBudget <= 0 {
		return fmt.Errorf("policyd: time budget %v: want a positive duration such as 10s", o.TimeBudget)
	}
	return nil
}

func init() {
	var f policyFlags
	def := config.Defaults().Policy
	dns := config.Defaults().DNS
	cmd := &cobra.Command{
		Use:   "policyd",
		Short: "Run the Postfix policy server (SPF, blacklists, DNSBL, greylisting, rate limits)",
		Long: `Run the Postfix SMTP access policy server (SMTPD_POLICY_README). The
generated main.cf calls it with check_policy_service at RCPT (inbound mail)
and at end of data (every message, for rate limits).

With -c, everything comes from the policy section of postkit.yaml (plus
trusted_networks, hostname, dns, database.path and paths.postkit_run); flags
given explicitly override it. Without -c, the flags alone configure the
daemon and only the SPF check runs unless --checks says otherwise.

The policy protocol has no authentication. A unix socket gets mode 0660
(policy.socket_mode) in a directory no one else may write; an inet address
other hosts can reach needs the MTAs' networks in --allow-client
(policy.allow_clients), and a metrics address other hosts can reach needs
--metrics-allow-client (policy.metrics_allow_clients); every other
connection is closed.

SIGHUP re-reads postkit.yaml and rebuilds the checks (on error the running
ones stay; the listen address, socket permissions and metrics address need a
restart). SIGTERM or SIGINT stops it after the requests in progress are
answered.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
				return fmt.Errorf("policyd: --log-level %q: want debug, info, warn or error", f.logLevel)
			}
			logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			changed := cmd.Flags().Changed
			load := func() (policyOptions, error) {
				o := defaultPolicyOptions()
				if f.cfgPath != "" {
					c, _, err := config.Load(f.cfgPath)
					if err != nil {
						return o, err
					}
					if !c.Policy.Enabled {
						logger.Warn("policyd: policy.enabled is false in postkit.yaml: Postfix is not wired to this daemon (postkit generate)", "config", f.cfgPath)
					}
					if o, err = policyOptionsFromConfig(c); err != nil {
						return o, err
					}
				}
				if err := f.apply(&o, changed); err != nil {
					return o, err
				}
				o.Logger = logger
				return o, nil
			}
			o, err := load()
			if err != nil {
				return err
			}
			stopProfile, err := startProfiles(os.Getenv("POSTKIT_CPUPROFILE"), os.Getenv("POSTKIT_MEMPROFILE"))
			if err != nil {
				return err
			}
			defer stopProfile()
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			return runPolicyd(ctx, o, load, hup)
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.cfgPath, "config", "c", "", "postkit.yaml to read (its policy section); without it the flags configure the daemon")
	fl.StringVar(&f.listen, "listen", def.Listen, "listen address: unix:/path or inet:host:port")
	fl.StringArrayVar(&f.allowClients, "allow-client", nil, "client network that may connect to an inet listener, CIDR (repeatable); required for an address other hosts can reach (policy.allow_clients)")
	fl.StringArrayVar(&f.metricsAllowClients, "metrics-allow-client", nil, "network that may fetch the metrics, CIDR (repeatable); required for a metrics address other hosts can reach (policy.metrics_allow_clients)")
	fl.StringArrayVar(&f.checks, "checks", nil, "checks in order, comma-separated: blacklist,spf,dnsbl,greylist,ratelimit (default: spf, or policy.checks)")
	fl.StringArrayVar(&f.dnsServers, "dns", nil, "DNS server HOST:PORT (repeatable; default: dns.servers, else /etc/resolv.conf)")
	fl.DurationVar(&f.dnsTimeout, "dns-timeout", dns.Timeout.D(), "timeout of one DNS query to one server")
	fl.DurationVar(&f.timeBudget, "time-budget", def.TimeBudget.D(), "longest one request may take, all checks together")
	fl.StringVar(&f.spfMode, "spf-mode", def.SPF.Mode, "SPF mode: enforce (reject fail) or header (only add Received-SPF)")
	fl.BoolVar(&f.noSPF, "no-spf", false, "disable the SPF check")
	fl.BoolVar(&f.tempDefer, "spf-temperror-defer", false, "answer SPF temperror with DEFER_IF_PERMIT 4.7.24 in enforce mode (default: policy.spf.temperror, defer)")
	fl.BoolVar(&f.permReject, "spf-permerror-reject", false, "answer SPF permerror with 550 5.7.24 in enforce mode (default: policy.spf.permerror, accept)")
	fl.StringVar(&f.hostname, "hostname", "", "receiver name in Received-SPF and X-Greylist (default: hostname, else the host name)")
	fl.StringArrayVar(&f.trusted, "trusted", nil, "trusted client network, CIDR (repeatable; default trusted_networks, else 127.0.0.0/8 and ::1)")
	fl.StringVar(&f.db, "db", "", "SQLite store with the blacklists (default: database.path)")
	fl.StringVar(&f.statePath, "state", "", "greylisting and rate-limit state file (default: paths.postkit_run/policyd.sqlite)")
	fl.StringArrayVar(&f.dnsblSites, "dnsbl-site", nil, "DNSBL site, e.g. zen.spamhaus.org=127.0.0.[2..11]*3 (repeatable)")
	fl.IntVar(&f.dnsblThreshold, "dnsbl-threshold", def.DNSBL.Threshold, "refuse clients whose summed DNSBL weight reaches this")
	fl.DurationVar(&f.greylistDelay, "greylist-delay", def.Greylist.Delay.D(), "how long greylisting defers a new triplet")
	fl.StringArrayVar(&f.rateLimits, "ratelimit", nil, "rate limit KEY:COUNTER=MAX/WINDOW, e.g. sasl_username:recipients=500/1h (repeatable)")
	fl.StringVar(&f.metrics, "metrics", "", "HOST:PORT serving Prometheus metrics on /metrics (default: policy.metrics; empty: none)")
	fl.StringVar(&f.owner, "socket-owner", "", "unix socket owner (user name or uid)")
	fl.StringVar(&f.group, "socket-group", "", "unix socket group (group name or gid)")
	fl.StringVar(&f.mode, "socket-mode", def.SocketMode, "unix socket mode, octal")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	rootCmd.AddCommand(cmd)
}

// runPolicyd serves o until ctx ends. On each value from hup it calls load
// and swaps in the rebuilt checks; the old ones are closed once the last
// request that uses them is answered.
func runPolicyd(ctx context.Context, o policyOptions, load func() (policyOptions, error), hup <-chan os.Signal) error {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	addr, err := daemon.ParseAddr(o.Listen)
	if err != nil {
		return err
	}
	chain, err := buildPolicyChain(o)
	if err != nil {
		return err
	}
	// Every request takes the chain it runs on from chains; a reload swaps
	// in the next one, and the old one is closed after its last request.
	chains := daemon.NewHolder[policyd.Chain](chain)
	defer func() {
		// After Shutdown no request holds the chain, unless one overran
		// the shutdown's deadline: it gives the chain back within its
		// time budget.
		select {
		case err := <-chains.Close():
			if err != nil {
				log.Warn("policyd: closing the checks' databases", "err", err)
			}
		case <-time.After(o.TimeBudget + 2*time.Second):
			log.Warn("policyd: requests still running on the checks at exit; their databases are left to the exit")
		}
	}()
	metrics := policyd.NewMetrics()
	srv := &policyd.Server{
		Chains:         chains,
		CheckTimeout:   o.TimeBudget,
		RequestTimeout: o.TimeBudget,
		Observer:       metrics,
		Logger:         log,
	}
	ln, err := daemon.ListenClients(addr, o.Socket, o.AllowClients, log)
	if errors.Is(err, daemon.ErrExposed) {
		return fmt.Errorf("policyd: listen %s: %w (policy.allow_clients in postkit.yaml, --allow-client)", addr, err)
	}
	if err != nil {
		return fmt.Errorf("policyd: listen %s: %w", addr, err)
	}
	if addr.Network == "unix" {
		defer os.Remove(addr.Address)
	}
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	var hs *http.Server
	if o.Metrics != "" {
		if hs, err = serveMetrics(o.Metrics, o.MetricsAllowClients, metrics, errc, log); err != nil {
			srv.Shutdown(context.Background())
			return err
		}
		log.Info("policyd: metrics", "addr", "http://"+hs.Addr+"/metrics")
	}
	log.Info("policyd: listening", "addr", addr.String(), "checks", strings.Join(checkNames(chain.checks), ","))
	var serveErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-errc:
			if !errors.Is(err, daemon.ErrServerClosed) {
				serveErr = err
			}
			break loop
		case <-hup:
			no, err := load()
			var next *policyChain
			if err == nil {
				next, err = buildPolicyChain(no)
			}
			if err != nil {
				log.Error("policyd: reload failed; the running checks stay", "err", err)
				continue
			}
			if no.Listen != o.Listen || no.Socket != o.Socket || no.Metrics != o.Metrics || no.TimeBudget != o.TimeBudget ||
				!slices.Equal(no.AllowClients, o.AllowClients) || !slices.Equal(no.MetricsAllowClients, o.MetricsAllowClients) {
				log.Warn("policyd: listen address, socket permissions, allowed clients, metrics address or time budget changed: restart the daemon to apply them")
			}
			closed := chains.Swap(next)
			go func() {
				if err := <-closed; err != nil {
					log.Warn("policyd: closing the previous checks' databases", "err", err)
				}
			}()
			log.Info("policyd: reloaded", "checks", strings.Join(checkNames(next.checks), ","))
		}
	}
	log.Info("policyd: shutting down; answering requests in progress")
	sctx, cancel := context.WithTimeout(context.Background(), o.TimeBudget+5*time.Second)
	defer cancel()
	if hs != nil {
		hs.Shutdown(sctx)
	}
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("policyd: shutdown: %w", err)
	}
	return serveErr
}

// serveMetrics serves the Prometheus endpoint on addr (a bare port listens
// on 127.0.0.1 only) to the networks in allow, which an address other hosts
// can reach needs (daemon.ListenClients); a serving error goes to errc.
func serveMetrics(addr string, allow []netip.Prefix, m *policyd.Metrics, errc chan<- error, log *slog.Logger) (*http.Server, error) {
	host, port, err := config.SplitListen(addr)
	if err != nil {
		return nil, fmt.Errorf("policyd: metrics address %q: %w; write host:port such as 127.0.0.1:9187", addr, err)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	hostport := net.JoinHostPort(host, strconv.Itoa(port))
	ln, err := daemon.ListenClients(daemon.Addr{Network: "tcp", Address: hostport}, daemon.SocketOpts{}, allow, log)
	if errors.Is(err, daemon.ErrExposed) {
		return nil, fmt.Errorf("policyd: metrics: %w (policy.metrics_allow_clients in postkit.yaml, --metrics-allow-client)", err)
	}
	if err != nil {
		return nil, fmt.Errorf("policyd: metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	hs := &http.Server{Addr: ln.Addr().String(), Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("policyd: metrics: %w", err)
		}
	}()
	return hs, nil
}

func checkNames(cs []policyd.Check) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Name()
	}
	return out
}
