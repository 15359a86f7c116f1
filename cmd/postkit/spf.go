package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"time"

	"github.com/spf13/cobra"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/internal/dnsclient"
	"github.com/postkit/postkit/policyd/spfcheck"
)

func init() {
	spfCmd := &cobra.Command{Use: "spf", Short: "Sender Policy Framework (RFC 7208) tools"}
	var (
		ip, helo, sender, hostname string
		cfgPath                    string
		dnsServers                 []string
		timeout                    time.Duration
	)
	check := &cobra.Command{
		Use:   "check --ip IP --helo NAME --sender ADDR",
		Short: "Evaluate SPF for a client the way the policy server does, and print the result",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			addr, err := netip.ParseAddr(ip)
			if err != nil {
				return fmt.Errorf("--ip %q: want an IPv4 or IPv6 address", ip)
			}
			servers, dnsTimeout := dnsServers, time.Duration(0)
			if cfgPath != "" {
				// The policy daemon's resolver and receiver name.
				c, _, err := config.Load(cfgPath)
				if err != nil {
					return err
				}
				if !cmd.Flags().Changed("dns") {
					servers = c.DNS.Servers
				}
				if !cmd.Flags().Changed("hostname") {
					hostname = c.Hostname
				}
				dnsTimeout = c.DNS.Timeout.D()
			}
			res, err := dnsclient.New(dnsclient.Config{Servers: servers, Timeout: dnsTimeout})
			if err != nil {
				return err
			}
			chk, err := spfcheck.New(spfcheck.Config{
				Mode: spfcheck.Header, Hostname: hostname, Timeout: timeout,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			}, res)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			v := chk.Evaluate(ctx, addr, helo, sender)
			w := cmd.OutOrStdout()
			if v.Helo.Result != "" && v.MailFrom.Identity == "mailfrom" {
				spfPrint(w, v.Helo)
			}
			spfPrint(w, v.MailFrom)
			return nil
		},
	}
	f := check.Flags()
	f.StringVarP(&cfgPath, "config", "c", "", "postkit.yaml whose dns servers and hostname to use")
	f.StringVar(&ip, "ip", "", "SMTP client address")
	f.StringVar(&helo, "helo", "", "HELO/EHLO name")
	f.StringVar(&sender, "sender", "", "envelope sender (empty: null sender, postmaster@HELO is checked)")
	f.StringArrayVar(&dnsServers, "dns", nil, "DNS server HOST:PORT (repeatable; default: /etc/resolv.conf)")
	f.StringVar(&hostname, "hostname", "", "receiver name in Received-SPF (default: the host name)")
	f.DurationVar(&timeout, "timeout", 20*time.Second, "time budget of the whole check")
	check.MarkFlagRequired("ip")
	check.MarkFlagRequired("helo")
	spfCmd.AddCommand(check)
	rootCmd.AddCommand(spfCmd)
}

func spfPrint(w io.Writer, o spfcheck.Outcome) {
	fmt.Fprintf(w, "identity:    %s (%s)\n", o.Identity, o.Domain)
	fmt.Fprintf(w, "result:      %s\n", o.Result)
	if o.Explanation != "" {
		fmt.Fprintf(w, "explanation: %s\n", o.Explanation)
	}
	if o.Problem != "" {
		fmt.Fprintf(w, "problem:     %s\n", o.Problem)
	}
	fmt.Fprintf(w, "%s\n\n", o.Header)
}
