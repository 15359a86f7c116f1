package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/internal/dkimkey"
	"github.com/postkit/postkit/internal/dnsclient"
)

func dkimTestkeyCmd() *cobra.Command {
	var cfgPath string
	var keys, servers []string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "testkey",
		Short: "Check that each signing key's published TXT record matches its private key (like opendkim-testkey)",
		Long: `Look up SELECTOR._domainkey.DOMAIN for every key of milter.dkim.keys (or the
--key given) through postkit's resolver (dns.servers of postkit.yaml, or --dns)
and compare the published public key with the private key on disk. One line per
key: ok, mismatch, missing, revoked, bad-record, dns-error or key-error. The exit
status is 1 when any key is not ok; keys marked disabled are checked too (their
records stay published during a rotation).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			type entry struct{ domain, selector, file string }
			var list []entry
			var dnsTimeout time.Duration
			if len(keys) == 0 || cmd.Flags().Changed("config") {
				c, _, err := config.Load(cfgPath)
				if err != nil {
					return err
				}
				if !cmd.Flags().Changed("dns") {
					servers = c.DNS.Servers
				}
				dnsTimeout = c.DNS.Timeout.D()
				for _, k := range c.Milter.DKIM.Keys {
					file := k.KeyFile
					if file == "" {
						file = filepath.Join(c.Milter.DKIM.KeyDir, k.Domain, k.Selector+".private")
					}
					list = append(list, entry{k.Domain, k.Selector, file})
				}
			}
			for _, spec := range keys {
				p := strings.SplitN(spec, ":", 3)
				if len(p) != 3 || p[0] == "" || p[1] == "" || p[2] == "" {
					return fmt.Errorf("dkim testkey: --key %q: want DOMAIN:SELECTOR:KEYFILE", spec)
				}
				list = append(list, entry{p[0], p[1], p[2]})
			}
			if len(list) == 0 {
				return fmt.Errorf("dkim testkey: no key in milter.dkim.keys of %s: add keys or give --key DOMAIN:SELECTOR:KEYFILE", cfgPath)
			}
			res, err := dnsclient.New(dnsclient.Config{Servers: servers, Timeout: dnsTimeout})
			if err != nil {
				return err
			}
			defer res.Close()
			failed := 0
			out := cmd.OutOrStdout()
			for _, e := range list {
				ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
				r := dkimkey.TestKey(ctx, res, e.domain, e.selector, e.file)
				cancel()
				line := fmt.Sprintf("%s\t%s", r.Name, r.Verdict)
				if r.Testing {
					line += "\t(t=y: testing mode)"
				}
				if r.Detail != "" {
					line += "\t" + r.Detail
				}
				fmt.Fprintln(out, line)
				if r.Verdict != dkimkey.KeyOK {
					failed++
				}
			}
			if failed > 0 {
				return &exitError{code: 1, err: fmt.Errorf("dkim testkey: %d of %d keys do not match their published record", failed, len(list))}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&cfgPath, "config", "c", "/etc/postkit/postkit.yaml", "postkit.yaml whose milter.dkim.keys and dns servers to use")
	f.StringArrayVar(&keys, "key", nil, "check DOMAIN:SELECTOR:KEYFILE instead (repeatable; with -c, besides the configured keys)")
	f.StringArrayVar(&servers, "dns", nil, "DNS server HOST:PORT (repeatable; default: dns.servers, else /etc/resolv.conf)")
	f.DurationVar(&timeout, "timeout", 10*time.Second, "time budget per key")
	return cmd
}
