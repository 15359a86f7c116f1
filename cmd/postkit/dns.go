package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/internal/dkimkey"
	"github.com/postkit/postkit/internal/dnsclient"
	"github.com/postkit/postkit/internal/dnsrecords"
)

func init() {
	dnsCmd := &cobra.Command{
		Use:   "dns",
		Short: "DNS records for the mail domains: print them, check what is published",
	}
	dnsCmd.AddCommand(dnsRecordsCmd(), dnsCheckCmd())
	rootCmd.AddCommand(dnsCmd)
}

// dnsFlags are the flags `dns records` and `dns check` share: what the
// records say comes from postkit.yaml (-c) and these flags, the same way
// for both, so that check expects exactly what records prints.
type dnsFlags struct {
	cfgPath      string
	domain, host string
	ips, ipv6    []string
	keys         []string
	spf          string
	dmarcPolicy  string
	dmarcRUA     string
	mtasts       bool
	tlsrpt       string
}

func (d *dnsFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVarP(&d.cfgPath, "config", "c", "", "postkit.yaml: its domains, hostname, dns.host_addresses, DKIM keys (milter.dkim) and resolver")
	f.StringVar(&d.domain, "domain", "", "mail domain (default: every domain of postkit.yaml)")
	f.StringVar(&d.host, "host", "", "mail host name, the MX target (default: hostname of postkit.yaml; without -c, mail.DOMAIN)")
	f.StringArrayVar(&d.ips, "ip", nil, "IPv4 or IPv6 address of the mail host (repeatable; default: dns.host_addresses)")
	f.StringArrayVar(&d.ipv6, "ipv6", nil, "IPv6 address of the mail host (repeatable; same as --ip)")
	f.StringArrayVar(&d.keys, "dkim-key", nil, "DKIM key SELECTOR:KEYFILE (repeatable; added to the keys of milter.dkim.keys)")
	f.StringVar(&d.spf, "spf", "", "SPF record (default \"v=spf1 mx -all\")")
	f.StringVar(&d.dmarcPolicy, "dmarc-policy", dnsrecords.DefaultDMARCPolicy, "DMARC policy: none, quarantine or reject")
	f.StringVar(&d.dmarcRUA, "dmarc-rua", "", "mailbox for DMARC aggregate reports (default postmaster@DOMAIN)")
	f.BoolVar(&d.mtasts, "mta-sts", false, "add the MTA-STS records (RFC 8461)")
	f.StringVar(&d.tlsrpt, "tlsrpt", "", "mailbox for TLS reports (RFC 8460); empty: no record")
}

// params returns the records' parameters of each domain, and the loaded
// configuration (nil without -c).
func (d *dnsFlags) params(what string) ([]dnsrecords.Params, *config.Config, error) {
	var cfg *config.Config
	var domains []string
	host := d.host
	ips := append(append([]string(nil), d.ips...), d.ipv6...)
	if d.cfgPath != "" {
		c, _, err := config.Load(d.cfgPath)
		if err != nil {
			return nil, nil, err
		}
		cfg = c
		domains = c.Domains
		if host == "" {
			host = c.Hostname
		}
		if len(ips) == 0 {
			ips = c.DNS.HostAddresses
		}
	}
	if d.domain != "" {
		domains = []string{d.domain}
	}
	if len(domains) == 0 {
		return nil, nil, fmt.Errorf("%s: give -c postkit.yaml (its domains) or --domain", what)
	}
	var v4, v6 []netip.Addr
	for _, s := range ips {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: address %q: %w", what, s, err)
		}
		if a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	if len(v4)+len(v6) == 0 {
		return nil, nil, fmt.Errorf("%s: no address for the mail host: set dns.host_addresses in postkit.yaml or give --ip", what)
	}
	// DKIM keys: those of postkit.yaml for each domain, then --dkim-key
	// (for --domain, or every domain).
	type key struct{ domain, selector, file string }
	var keys []key
	if cfg != nil {
		for _, k := range cfg.Milter.DKIM.Keys {
			file := k.KeyFile
			if file == "" {
				file = filepath.Join(cfg.Milter.DKIM.KeyDir, strings.ToLower(k.Domain), k.Selector+".private")
			}
			keys = append(keys, key{strings.ToLower(strings.TrimSuffix(k.Domain, ".")), k.Selector, file})
		}
	}
	for _, spec := range d.keys {
		sel, file, ok := strings.Cut(spec, ":")
		if !ok || sel == "" || file == "" {
			return nil, nil, fmt.Errorf("%s: --dkim-key %q: want SELECTOR:KEYFILE", what, spec)
		}
		keys = append(keys, key{"", sel, file})
	}
	records := map[string]string{} // key file -> record
	var mtastsID string
	if d.mtasts {
		mtastsID = time.Now().UTC().Format("20060102150405")
	}
	var out []dnsrecords.Params
	for _, dom := range domains {
		p := dnsrecords.Params{
			Domain: dom, Host: host, IPv4: v4, IPv6: v6,
			SPF: d.spf, DMARCPolicy: d.dmarcPolicy, DMARCReports: d.dmarcRUA,
			MTASTSID: mtastsID, TLSRPT: d.tlsrpt,
		}
		if p.Host == "" {
			p.Host = "mail." + dom
		}
		for _, k := range keys {
			if k.domain != "" && k.domain != strings.ToLower(strings.TrimSuffix(dom, ".")) {
				continue
			}
			rec, ok := records[k.file]
			if !ok {
				priv, err := dkimkey.LoadPrivateKey(k.file)
				if err != nil {
					return nil, nil, fmt.Errorf("%s: DKIM key %s of %s: %w (create it with postkit dkim keygen)", what, k.selector, dom, err)
				}
				if rec, err = dkimkey.Record(priv.Public()); err != nil {
					return nil, nil, fmt.Errorf("%s: DKIM key %s: %w", what, k.file, err)
				}
				records[k.file] = rec
			}
			p.DKIM = append(p.DKIM, dnsrecords.DKIMKey{Selector: k.selector, Record: rec})
		}
		out = append(out, p)
	}
	return out, cfg, nil
}

func dnsRecordsCmd() *cobra.Command {
	var d dnsFlags
	cmd := &cobra.Command{
		Use:   "records",
		Short: "Print every record to publish for the mail domains, in zone-file syntax",
		Long: `Print the records a mail domain needs: MX, A/AAAA of the mail host, SPF,
one DKIM TXT per key, DMARC, and optionally MTA-STS and TLS-RPT. With -c, every
domain of postkit.yaml, its hostname as MX, dns.host_addresses and the public
halves of the DKIM keys of milter.dkim.keys. Names are absolute (with the final
dot), so the output can be pasted in any zone. 'postkit dns check' checks
exactly these records.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ps, _, err := d.params("dns records")
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			for i, p := range ps {
				rs, err := dnsrecords.Build(p)
				if err != nil {
					return err
				}
				if len(ps) > 1 {
					if i > 0 {
						fmt.Fprintln(out)
					}
					fmt.Fprintf(out, ";; %s\n", p.Domain)
				}
				fmt.Fprint(out, dnsrecords.Zone(rs))
			}
			return nil
		},
	}
	d.register(cmd)
	return cmd
}

// checkFailed is the error of a check that found records to fix, or could
// not look them up: exit 2.
type checkFailed struct{ bad, failed, total int }

func (e checkFailed) Error() string {
	if e.failed > 0 {
		return fmt.Sprintf("dns check: %d of %d records need attention, %d of them not answered by DNS: check dns.servers (or --dns) and run again", e.bad, e.total, e.failed)
	}
	return fmt.Sprintf("dns check: %d of %d records need attention: publish the lines above", e.bad, e.total)
}
func (e checkFailed) ExitCode() int { return 2 }

func dnsCheckCmd() *cobra.Command {
	var d dnsFlags
	var servers []string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Check through DNS that every record of 'postkit dns records' is published",
		Long: `Look up, through postkit's resolver (dns.servers of postkit.yaml, or --dns),
every record 'postkit dns records' prints with the same flags: MX, A/AAAA, SPF,
DKIM (the public halves of the keys on disk), DMARC, MTA-STS and TLS-RPT when
asked for, and the reverse DNS (PTR, forward-confirmed) of each address of the
host. Each is ok, missing, wrong or error (DNS did not answer); for every one
that is not ok the exact zone line to publish is printed. Exit status 2 when
a record needs attention.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ps, cfg, err := d.params("dns check")
			if err != nil {
				return err
			}
			rc := dnsclient.Config{Servers: servers, CacheSize: -1}
			if cfg != nil {
				if !cmd.Flags().Changed("dns") {
					rc.Servers = cfg.DNS.Servers
				}
				rc.Timeout = cfg.DNS.Timeout.D()
			}
			res, err := dnsclient.New(rc)
			if err != nil {
				return err
			}
			defer res.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
			defer cancel()
			var all []dnsrecords.Result
			seen := map[string]bool{} // the host's records, once for every domain
			for i, p := range ps {
				rs, err := dnsrecords.Build(p)
				if err != nil {
					return err
				}
				if i == 0 { // one host for every domain: its PTRs once
					rev, err := dnsrecords.Reverse(p)
					if err != nil {
						return err
					}
					rs = append(rs, rev...)
				}
				var todo []dnsrecords.Record
				for _, r := range rs {
					k := string(r.Kind) + " " + r.Name + " " + r.Text
					if !seen[k] {
						seen[k] = true
						todo = append(todo, r)
					}
				}
				all = append(all, dnsrecords.Check(ctx, res, todo)...)
			}
			bad, failed := 0, 0
			for _, r := range all {
				if r.Status != dnsrecords.OK {
					bad++
				}
				if r.Status == dnsrecords.Failed {
					failed++
				}
			}
			out := cmd.OutOrStdout()
			if asJSON {
				if all == nil {
					all = []dnsrecords.Result{}
				}
				e := json.NewEncoder(out)
				e.SetIndent("", "  ")
				if err := e.Encode(struct {
					OK      bool                `json:"ok"`
					Results []dnsrecords.Result `json:"results"`
				}{bad == 0, all}); err != nil {
					return err
				}
			} else {
				printCheck(out, all)
				if bad == 0 {
					fmt.Fprintf(out, "dns check: all %d records ok\n", len(all))
				}
			}
			if bad > 0 {
				return checkFailed{bad, failed, len(all)}
			}
			return nil
		},
	}
	d.register(cmd)
	cmd.Flags().StringArrayVar(&servers, "dns", nil, "DNS server host:port to ask (default: dns.servers of postkit.yaml, else /etc/resolv.conf)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON object: ok, and each record's status, what was found and the fix")
	return cmd
}

func printCheck(w io.Writer, rs []dnsrecords.Result) {
	for _, r := range rs {
		fmt.Fprintf(w, "%-8s %-12s %s %s", r.Status, r.Kind, r.Name, r.Type)
		if r.Detail != "" {
			fmt.Fprintf(w, ": %s", r.Detail)
		}
		fmt.Fprintln(w)
		if r.Status != dnsrecords.OK {
			for _, f := range r.Found {
				fmt.Fprintf(w, "         found:   %q\n", f)
			}
			label := "publish:"
			if r.Status == dnsrecords.Failed { // unknown: what should be there
				label = "expect: "
			}
			fmt.Fprintf(w, "         %s %s\n", label, strings.ReplaceAll(r.Fix, "\n", "\n                  "))
		}
	}
}
