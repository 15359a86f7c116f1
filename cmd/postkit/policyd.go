package main

import (
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/postkit/postkit/internal/daemon"
	pmetrics "github.com/postkit/postkit/internal/metrics"
	"github.com/postkit/postkit/policyd"
	"github.com/postkit/postkit/policyd/assemble"
)

func init() { rootCmd.AddCommand(newPolicydCommand(nil)) }

// newPolicydCommand returns the command; hup, when not nil, stands for the process's
// SIGHUP (tests).
func newPolicydCommand(hup <-chan os.Signal) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policyd",
		Short: "Run the Postfix policy server (SPF, blacklists, DNSBL, greylisting, rate limits)",
		Long: `Run the Postfix SMTP access policy server (SMTPD_POLICY_README). The
generated main.cf calls it with check_policy_service at RCPT (inbound mail)
and at end of data (every message, for rate limits).

With -c, everything comes from postkit.yaml (the policy section, plus
trusted_networks, hostname, dns, database.path and paths.postkit_run). Every
flag is a shorthand for a key of postkit.yaml and overrides it, validated as
the file is (a malformed --ratelimit or --dnsbl-site fails at start even when
its check is not listed); --set KEY=VALUE reaches any key (e.g. --set
policy.greylist.retry_window=24h). Without -c, the flags alone configure the
daemon, from built-in defaults: only the SPF check runs unless --checks says
otherwise.

The policy protocol has no authentication. A unix socket gets mode 0660
(policy.socket_mode) in a directory no one else may write; an inet address
other hosts can reach needs the MTAs' networks in --allow-client
(policy.allow_clients), and a metrics address other hosts can reach needs
--metrics-allow-client (policy.metrics_allow_clients); every other
connection is closed.

Logs go to stderr, or to syslog (--log-target syslog, log.target) under
facility mail, tagged postkit/policyd, beside Postfix's lines in mail.log.

SIGHUP re-reads postkit.yaml and rebuilds the checks (on error the running
ones stay; the listen address, socket permissions, metrics address and time
budget need a restart). SIGTERM or SIGINT stops it after the requests in
progress are answered.`,
		Args: cobra.NoArgs,
	}
	f := addDaemonFlags(cmd, "policyd")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		log, stop, err := f.start(cmd.ErrOrStderr())
		if err != nil {
			return err
		}
		defer stop()
		// The metrics and the time budget live as long as the process: a
		// reload rebuilds the checks only.
		metrics := policyd.NewMetrics()
		reg := pmetrics.NewRegistry()
		reg.MustRegister(metrics)
		var metricsServer *http.Server
		var budget time.Duration
		return daemon.Run(cmd.Context(), daemon.Spec[policyd.Chain]{
			Name:   "policyd",
			Logger: log,
			Hangup: hup,
			Load: func() (daemon.Plan[policyd.Chain], error) {
				var p daemon.Plan[policyd.Chain]
				c, file, err := f.load()
				if err != nil {
					return p, err
				}
				if !file.Builtin() && !c.Policy.Enabled {
					log.Warn("policyd: policy.enabled is false in postkit.yaml: Postfix is not wired to this daemon (postkit generate)", "config", file.Name)
				}
				if p.Listen, err = c.DaemonListeners("policyd"); err != nil {
					return p, err
				}
				ml, ok, err := c.MetricsListener()
				if err != nil {
					return p, err
				}
				if ok {
					if metricsServer == nil {
						metricsServer = pmetrics.NewServer(reg)
					}
					p.Extras = []daemon.Extra{{Name: "metrics", Listener: ml, Server: metricsServer, Optional: true}}
				}
				tb := c.Policy.TimeBudget.D()
				if budget == 0 {
					budget = tb
				}
				p.Restart = c.LogRestart()
				p.Restart["policy.time_budget"] = tb.String()
				// Requests in progress finish within the time budget.
				p.Drain = tb + 5*time.Second
				chain, err := assemble.New(c, assemble.Options{Logger: log, NoSeal: file.Builtin()})
				if err != nil {
					return p, err
				}
				p.Chain = chain
				p.Attrs = []any{"checks", strings.Join(chain.Names(), ",")}
				return p, nil
			},
			NewServer: func(h *daemon.Holder[policyd.Chain]) (daemon.Server, error) {
				return &policyd.Server{
					Chains:         h,
					CheckTimeout:   budget,
					RequestTimeout: budget,
					Observer:       metrics,
					Logger:         log,
				}, nil
			},
		})
	}
	return cmd
}
