package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/internal/dnsclient"
	"github.com/postkit/postkit/milter/dmarc/report"
	"github.com/postkit/postkit/milter/dmarc/store"
)

func init() {
	dmarcCmd := &cobra.Command{
		Use:   "dmarc",
		Short: "DMARC (RFC 7489): aggregate reports of the milter's evaluations",
	}
	dmarcCmd.AddCommand(dmarcReportCmd())
	rootCmd.AddCommand(dmarcCmd)
}

func dmarcReportCmd() *cobra.Command {
	var cfgPath, day, sendmail string
	var send, dryRun, print bool
	cmd := &cobra.Command{
		Use:   "report [--send | --dry-run | --print]",
		Short: "Build the DMARC aggregate reports of past days; print them, show them, or mail them to the rua= addresses",
		Long: `Build one RFC 7489 aggregate report (Appendix C XML) per policy domain and UTC day
from the evaluations the milter recorded in milter.dmarc.report.path (with
state.driver postgresql: in the database of state.dsn, every host's, each
report sent by one host only).

  --print    (default) a table per report, for humans
  --dry-run  the XML of each report and the addresses it would go to, after
             the external destination check of RFC 7489 section 7.1; nothing
             is sent or marked
  --send     gzip each report not sent yet, mail it through sendmail to the
             verified rua= addresses within their size limits, mark it sent,
             and forget days older than milter.dmarc.report.keep. Run it
             daily (examples/systemd/postkit-dmarc-report.timer).

Without --day, every day before today (UTC) with evaluations is taken.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			mode, n := report.Print, 0
			for _, m := range []struct {
				on bool
				m  report.Mode
			}{{print, report.Print}, {dryRun, report.DryRun}, {send, report.Send}} {
				if m.on {
					mode, n = m.m, n+1
				}
			}
			if n > 1 {
				return errors.New("dmarc report: give one of --send, --dry-run, --print")
			}
			if day != "" {
				if _, err := time.Parse(time.DateOnly, day); err != nil {
					return fmt.Errorf("dmarc report: --day %q: want a date such as 2026-01-31", day)
				}
			}
			c, _, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			rc := c.Milter.DMARC.Report
			st, err := store.OpenConfigured(cmd.Context(), c, false)
			if err != nil {
				return err
			}
			defer st.Close()
			if pg, ok := st.(*store.PG); ok {
				pctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
				err := pg.Ping(pctx)
				cancel()
				if err != nil {
					return fmt.Errorf("dmarc report: the evaluations are in PostgreSQL (state.driver postgresql) and it cannot be read: %w; is the server at state.dsn up and the role allowed in?", err)
				}
			}
			res, err := dnsclient.New(dnsclient.Config{Servers: c.DNS.Servers, Timeout: c.DNS.Timeout.D()})
			if err != nil {
				return err
			}
			defer res.Close()
			meta := report.Meta{OrgName: rc.OrgName, Email: rc.From, Host: c.Hostname}
			if meta.OrgName == "" {
				meta.OrgName = c.Hostname
			}
			if meta.Email == "" && len(c.Domains) > 0 {
				meta.Email = "postmaster@" + c.Domains[0]
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Minute)
			defer cancel()
			return report.Run(ctx, st, report.Options{
				Mode: mode, Meta: meta, Day: day, MaxBytes: rc.MaxBytes, Keep: rc.Keep.D(), Resolver: res,
				Sendmail: func(ctx context.Context, from string, to []string, msg []byte) error {
					// Postfix's sendmail(1): -C the configuration postkit
					// generated, -i a line with a dot is text, -f the
					// envelope sender.
					args := append([]string{"-C", c.Paths.PostfixConfig, "-i", "-f", from, "--"}, to...)
					sm := exec.CommandContext(ctx, sendmail, args...)
					sm.Stdin = bytes.NewReader(msg)
					out, err := sm.CombinedOutput()
					if err != nil {
						return fmt.Errorf("%s: %w: %s", sendmail, err, strings.TrimSpace(string(out)))
					}
					return nil
				},
				Out:    cmd.OutOrStdout(),
				Logger: slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelInfo})),
			})
		},
	}
	f := cmd.Flags()
	f.StringVarP(&cfgPath, "config", "c", "/etc/postkit/postkit.yaml", "postkit.yaml to read")
	f.StringVar(&day, "day", "", "report this UTC day only (YYYY-MM-DD), even today's so far")
	f.BoolVar(&send, "send", false, "mail the reports not sent yet")
	f.BoolVar(&dryRun, "dry-run", false, "show the XML and the destinations; send nothing")
	f.BoolVar(&print, "print", false, "show the reports as tables (the default)")
	f.StringVar(&sendmail, "sendmail", "/usr/sbin/sendmail", "Postfix's sendmail program")
	return cmd
}
