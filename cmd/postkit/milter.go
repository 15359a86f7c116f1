package main

import (
	"net/http"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/postkit/postkit/internal/daemon"
	pmetrics "github.com/postkit/postkit/internal/metrics"
	"github.com/postkit/postkit/milter/assemble"
	"github.com/postkit/postkit/milter/milterd"
)

func init() { rootCmd.AddCommand(newMilterCommand(nil)) }

// newMilterCommand returns the command; hup, when not nil, stands for the process's
// SIGHUP (tests).
func newMilterCommand(hup <-chan os.Signal) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "milter",
		Short: "Run the milter daemon (header scrubbing, DKIM signing and verification, spam scoring) for Postfix",
		Long: `Run the milter daemon for Postfix's smtpd_milters / non_smtpd_milters
(milter_protocol = 6). One chain runs on every listener: scrub (outbound), DKIM
signing (outbound), DKIM verification (inbound, adds Authentication-Results),
forged (every message: removes X-Spam-*, Received-SPF fields our policy daemon
did not seal, Authentication-Results with our authserv-id), ownfrom (inbound:
refuses our domains in From unless SPF or our DKIM signature vouches; needs -c),
spam (inbound: scores the message with the rules and the Bayes store of
milter.spam and adds SpamAssassin's X-Spam-* fields; refuses from
reject_score on; --spam without -c).
Mail is outbound when the client authenticated, connects from a trusted
network, or arrives on a service whose milter_macro_daemon_name is listed as
originating. Authenticated mail is signed only when its From address is one
the login may use (the sender-login map of the database, as Postfix checks the
envelope sender on the submission ports); otherwise it is refused, or passed
unsigned with --unowned-from unsigned (milter.dkim.unowned_from).

With -c, everything comes from postkit.yaml (the milter section, plus
trusted_networks, dns, database and hostname). Every flag is a shorthand for
a key of postkit.yaml and overrides it, validated as the file is; --set
KEY=VALUE reaches any key (e.g. --set milter.dkim.subdomains=true). Without
-c, the flags alone configure the daemon, from built-in defaults.

The milter protocol has no authentication: whoever can connect can have mail
signed. A unix socket gets mode 0660 (milter.socket_mode) in a directory no
one else may write; an inet address other hosts can reach needs the MTAs'
networks in --allow-client (milter.allow_clients), and every other
connection is closed. The same holds for the Prometheus metrics endpoint
(--metrics, milter.metrics; --metrics-allow-client).

Logs go to stderr, or to syslog (--log-target syslog, log.target) under
facility mail, tagged postkit/milter, beside Postfix's lines in mail.log.

SIGHUP re-reads postkit.yaml and the key files (on error the running chain
stays; listen addresses and socket permissions need a restart), SIGTERM and
SIGINT stop accepting and let messages in flight finish.`,
		Args: cobra.NoArgs,
	}
	f := addDaemonFlags(cmd, "milter")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		log, stop, err := f.start(cmd.ErrOrStderr())
		if err != nil {
			return err
		}
		defer stop()
		// The metrics and their endpoint live as long as the process: a
		// reload builds new chains that count into the same Metrics.
		mm := milterd.NewMetrics()
		reg := pmetrics.NewRegistry()
		reg.MustRegister(mm)
		var metricsServer *http.Server
		return daemon.Run(cmd.Context(), daemon.Spec[*milterd.Chain]{
			Name:   "milter",
			Logger: log,
			Hangup: hup,
			Load: func() (daemon.Plan[*milterd.Chain], error) {
				var p daemon.Plan[*milterd.Chain]
				c, file, err := f.load()
				if err != nil {
					return p, err
				}
				if !file.Builtin() && !c.Milter.Enabled {
					log.Warn("milter: milter.enabled is false in postkit.yaml: Postfix is not wired to this daemon (postkit generate)", "config", file.Name)
				}
				if p.Listen, err = c.DaemonListeners("milter"); err != nil {
					return p, err
				}
				ml, ok, err := c.DaemonMetrics("milter")
				if err != nil {
					return p, err
				}
				if ok {
					if metricsServer == nil {
						metricsServer = pmetrics.NewServer(reg)
					}
					p.Extras = []daemon.Extra{{Name: "metrics", Listener: ml, Server: metricsServer, Optional: true}}
				}
				p.Restart = c.LogRestart()
				if p.Chain, err = assemble.New(c, assemble.Options{Logger: log, NoSeal: file.Builtin(), Meter: mm, Observer: mm}); err != nil {
					return p, err
				}
				p.Drain = c.Milter.Drain.D()
				p.Attrs = []any{"filters", strings.Join(assemble.Names(p.Chain), ",")}
				return p, nil
			},
			NewServer: func(h *daemon.Holder[*milterd.Chain]) (daemon.Server, error) {
				return milterd.NewServer(h), nil
			},
		})
	}
	return cmd
}
