package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/internal/daemon"
	"github.com/postkit/postkit/internal/seal"
	"github.com/postkit/postkit/policyd"
	"github.com/postkit/postkit/policyd/assemble"
	"github.com/postkit/postkit/policyd/ratelimit"
)

// policyOptions is what `postkit policyd` runs: postkit.yaml (without -c,
// the built-in defaults) with the flags given applied, and what the checks
// take beyond it. policyd/assemble builds the checks from it.
type policyOptions struct {
	Config   *config.Config
	Assemble assemble.Options
}

// defaultPolicyOptions is what the daemon runs without -c: the SPF check,
// with config.Defaults for everything else.
func defaultPolicyOptions() policyOptions {
	c := config.Defaults()
	c.Policy.Checks = []string{"spf"}
	c.Policy.Blacklist.Owner = "policy"
	h, _ := os.Hostname()
	c.Hostname = h
	// Without postkit.yaml the socket keeps the daemon's own owner and
	// group, so that it runs unprivileged, with the same mode as with it;
	// --socket-* set them.
	c.Policy.SocketOwner, c.Policy.SocketGroup = "", ""
	// Nor does it know our domains, the database or where the milter
	// reads the seal key.
	c.Policy.SPF.OwnDomains = "off"
	return policyOptions{Config: c, Assemble: assemble.Options{NoSeal: true}}
}

// policyServing is how the daemon serves: what a reload cannot change.
type policyServing struct {
	Listen     string
	Socket     daemon.SocketOpts
	TimeBudget time.Duration // one request, all checks
	Metrics    string        // host:port of the Prometheus endpoint; "" none
	// AllowClients and MetricsAllowClients are the networks the inet
	// listeners serve; required for addresses other hosts can reach.
	AllowClients        []netip.Prefix
	MetricsAllowClients []netip.Prefix
}

func (a policyServing) equal(b policyServing) bool {
	return a.Listen == b.Listen && a.Socket == b.Socket && a.TimeBudget == b.TimeBudget && a.Metrics == b.Metrics &&
		slices.Equal(a.AllowClients, b.AllowClients) && slices.Equal(a.MetricsAllowClients, b.MetricsAllowClients)
}

// policyServingFromConfig reads the listen settings of the policy section.
func policyServingFromConfig(c *config.Config) (policyServing, error) {
	p := c.Policy
	o := policyServing{
		Listen:     p.Listen,
		Socket:     daemon.SocketOpts{Owner: p.SocketOwner, Group: p.SocketGroup},
		TimeBudget: p.TimeBudget.D(),
		Metrics:    p.Metrics,
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
	if o.AllowClients, err = policyPrefixes("policy.allow_clients", p.AllowClients); err != nil {
		return o, err
	}
	if o.MetricsAllowClients, err = policyPrefixes("policy.metrics_allow_clients", p.MetricsAllowClients); err != nil {
		return o, err
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
const sealKeyFile = seal.KeyFile

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

// apply overrides o with the flags changed on the command line: each sets
// the postkit.yaml key it stands for.
func (f *policyFlags) apply(o *policyOptions, changed func(string) bool) error {
	c := o.Config
	if changed("listen") {
		c.Policy.Listen = f.listen
	}
	for _, l := range []struct {
		flag string
		vals []string
		dst  *[]config.CIDR
	}{{"allow-client", f.allowClients, &c.Policy.AllowClients}, {"metrics-allow-client", f.metricsAllowClients, &c.Policy.MetricsAllowClients}} {
		if !changed(l.flag) {
			continue
		}
		*l.dst = []config.CIDR{}
		for _, s := range l.vals {
			if _, err := config.ParseCIDR(s); err != nil {
				return fmt.Errorf("policyd: --%s %q: want a CIDR such as 192.0.2.25/32 or an address", l.flag, s)
			}
			*l.dst = append(*l.dst, config.CIDR(s))
		}
	}
	if changed("socket-owner") {
		c.Policy.SocketOwner = f.owner
	}
	if changed("socket-group") {
		c.Policy.SocketGroup = f.group
	}
	if changed("socket-mode") {
		if _, err := daemon.ParseMode(f.mode); err != nil {
			return fmt.Errorf("policyd: --socket-mode: %w", err)
		}
		c.Policy.SocketMode = f.mode
	}
	if changed("checks") {
		c.Policy.Checks = nil
		for _, cs := range f.checks {
			for _, name := range strings.Split(cs, ",") {
				if name = strings.TrimSpace(name); name != "" {
					c.Policy.Checks = append(c.Policy.Checks, name)
				}
			}
		}
	}
	if f.noSPF {
		c.Policy.Checks = slices.DeleteFunc(slices.Clone(c.Policy.Checks), func(s string) bool { return s == "spf" })
	}
	if changed("dns") {
		c.DNS.Servers = f.dnsServers
	}
	if changed("dns-timeout") {
		c.DNS.Timeout = config.Duration(f.dnsTimeout)
	}
	if changed("time-budget") {
		c.Policy.TimeBudget = config.Duration(f.timeBudget)
	}
	if changed("metrics") {
		c.Policy.Metrics = f.metrics
	}
	if changed("hostname") {
		c.Hostname = f.hostname
	}
	if changed("trusted") {
		c.TrustedNetworks = []config.CIDR{}
		for _, s := range f.trusted {
			if _, err := config.ParseCIDR(s); err != nil {
				return fmt.Errorf("policyd: --trusted %q: want a CIDR such as 192.0.2.0/24 or an address", s)
			}
			c.TrustedNetworks = append(c.TrustedNetworks, config.CIDR(s))
		}
	}
	if changed("spf-mode") {
		c.Policy.SPF.Mode = f.spfMode
	}
	if changed("spf-temperror-defer") {
		c.Policy.SPF.TempError = "accept"
		if f.tempDefer {
			c.Policy.SPF.TempError = "defer"
		}
	}
	if changed("spf-permerror-reject") {
		c.Policy.SPF.PermError = "accept"
		if f.permReject {
			c.Policy.SPF.PermError = "reject"
		}
	}
	if changed("db") {
		c.Database.Path = f.db
	}
	if changed("state") {
		o.Assemble.StatePath = f.statePath
	}
	if changed("dnsbl-site") {
		c.Policy.DNSBL.Sites = f.dnsblSites
	}
	if changed("dnsbl-threshold") {
		c.Policy.DNSBL.Threshold = f.dnsblThreshold
	}
	if changed("greylist-delay") {
		c.Policy.Greylist.Delay = config.Duration(f.greylistDelay)
	}
	if changed("ratelimit") {
		c.Policy.RateLimit.Limits = []config.Limit{}
		for _, s := range f.rateLimits {
			l, err := ratelimit.ParseLimit(s)
			if err != nil {
				return fmt.Errorf("policyd: --ratelimit: %w", err)
			}
			c.Policy.RateLimit.Limits = append(c.Policy.RateLimit.Limits, config.Limit{
				Key: yamlRateKey[l.Key], Count: string(l.Counter), Max: int(l.Max), Window: config.Duration(l.Window),
			})
		}
	}
	if c.Policy.TimeBudget <= 0 {
		return fmt.Errorf("policyd: time budget %v: want a positive duration such as 10s", c.Policy.TimeBudget.D())
	}
	return nil
}

// yamlRateKey spells a rate limit's key as policy.ratelimit.limits does.
var yamlRateKey = map[ratelimit.Key]string{
	ratelimit.BySASLUser: "sasl_user",
	ratelimit.BySender:   "sender",
	ratelimit.ByClient:   "client_ip",
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
					o = policyOptions{Config: c}
				}
				if err := f.apply(&o, changed); err != nil {
					return o, err
				}
				o.Assemble.Logger = logger
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
	log := o.Assemble.Logger
	if log == nil {
		log = slog.Default()
	}
	sv, err := policyServingFromConfig(o.Config)
	if err != nil {
		return err
	}
	addr, err := daemon.ParseAddr(sv.Listen)
	if err != nil {
		return err
	}
	chain, err := assemble.New(o.Config, o.Assemble)
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
		case <-time.After(sv.TimeBudget + 2*time.Second):
			log.Warn("policyd: requests still running on the checks at exit; their databases are left to the exit")
		}
	}()
	metrics := policyd.NewMetrics()
	srv := &policyd.Server{
		Chains:         chains,
		CheckTimeout:   sv.TimeBudget,
		RequestTimeout: sv.TimeBudget,
		Observer:       metrics,
		Logger:         log,
	}
	ln, err := daemon.ListenClients(addr, sv.Socket, sv.AllowClients, log)
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
	if sv.Metrics != "" {
		if hs, err = serveMetrics(sv.Metrics, sv.MetricsAllowClients, metrics, errc, log); err != nil {
			srv.Shutdown(context.Background())
			return err
		}
		log.Info("policyd: metrics", "addr", "http://"+hs.Addr+"/metrics")
	}
	log.Info("policyd: listening", "addr", addr.String(), "checks", strings.Join(chain.Names(), ","))
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
			var nsv policyServing
			var next *assemble.Chain
			if err == nil {
				nsv, err = policyServingFromConfig(no.Config)
			}
			if err == nil {
				next, err = assemble.New(no.Config, no.Assemble)
			}
			if err != nil {
				log.Error("policyd: reload failed; the running checks stay", "err", err)
				continue
			}
			if !nsv.equal(sv) {
				log.Warn("policyd: listen address, socket permissions, allowed clients, metrics address or time budget changed: restart the daemon to apply them")
			}
			closed := chains.Swap(next)
			go func() {
				if err := <-closed; err != nil {
					log.Warn("policyd: closing the previous checks' databases", "err", err)
				}
			}()
			log.Info("policyd: reloaded", "checks", strings.Join(next.Names(), ","))
		}
	}
	log.Info("policyd: shutting down; answering requests in progress")
	sctx, cancel := context.WithTimeout(context.Background(), sv.TimeBudget+5*time.Second)
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
