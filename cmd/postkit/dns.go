package main

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/postkit/postkit/internal/dkimkey"
	"github.com/postkit/postkit/internal/dnsrecords"
)

func init() {
	dnsCmd := &cobra.Command{
		Use:   "dns",
		Short: "DNS records for the mail domains",
	}
	dnsCmd.AddCommand(dnsRecordsCmd())
	rootCmd.AddCommand(dnsCmd)
}

func dnsRecordsCmd() *cobra.Command {
	var p dnsrecords.Params
	var ipv4, ipv6, keys []string
	var mtasts bool
	cmd := &cobra.Command{
		Use:   "records",
		Short: "Print every record to publish for a mail domain, in zone-file syntax",
		Long: `Print the records a mail domain needs: MX, A/AAAA of the mail host, SPF,
one DKIM TXT per --dkim-key, DMARC, and optionally MTA-STS and TLS-RPT.
Names are absolute (with the final dot), so the output can be pasted in any zone.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if p.Domain == "" {
				return fmt.Errorf("dns records: --domain is required")
			}
			if p.Host == "" {
				p.Host = "mail." + p.Domain
			}
			for _, s := range ipv4 {
				a, err := netip.ParseAddr(s)
				if err != nil {
					return fmt.Errorf("dns records: --ip %q: %w", s, err)
				}
				p.IPv4 = append(p.IPv4, a)
			}
			for _, s := range ipv6 {
				a, err := netip.ParseAddr(s)
				if err != nil {
					return fmt.Errorf("dns records: --ipv6 %q: %w", s, err)
				}
				p.IPv6 = append(p.IPv6, a)
			}
			for _, spec := range keys {
				sel, file, ok := strings.Cut(spec, ":")
				if !ok || sel == "" || file == "" {
					return fmt.Errorf("dns records: --dkim-key %q: want SELECTOR:KEYFILE", spec)
				}
				k, err := dkimkey.LoadPrivateKey(file)
				if err != nil {
					return err
				}
				rec, err := dkimkey.Record(k.Public())
				if err != nil {
					return err
				}
				p.DKIM = append(p.DKIM, dnsrecords.DKIMKey{Selector: sel, Record: rec})
			}
			if mtasts {
				p.MTASTSID = time.Now().UTC().Format("20060102150405")
			}
			rs, err := dnsrecords.Build(p)
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), dnsrecords.Zone(rs))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&p.Domain, "domain", "", "mail domain")
	f.StringVar(&p.Host, "host", "", "mail host name (MX target; default mail.DOMAIN)")
	f.StringArrayVar(&ipv4, "ip", nil, "IPv4 address of the mail host (repeatable)")
	f.StringArrayVar(&ipv6, "ipv6", nil, "IPv6 address of the mail host (repeatable)")
	f.StringArrayVar(&keys, "dkim-key", nil, "DKIM key SELECTOR:KEYFILE (repeatable)")
	f.StringVar(&p.SPF, "spf", "", "SPF record (default \"v=spf1 mx -all\")")
	f.StringVar(&p.DMARCPolicy, "dmarc-policy", "quarantine", "DMARC policy: none, quarantine or reject")
	f.StringVar(&p.DMARCReports, "dmarc-rua", "", "mailbox for DMARC aggregate reports (default postmaster@DOMAIN)")
	f.BoolVar(&mtasts, "mta-sts", false, "add the MTA-STS records (RFC 8461)")
	f.StringVar(&p.TLSRPT, "tlsrpt", "", "mailbox for TLS reports (RFC 8460); empty: no record")
	return cmd
}
