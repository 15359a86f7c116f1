// Package dnsrecords builds the DNS records a mail domain publishes, in
// zone-file syntax (RFC 1035 section 5): MX (RFC 5321 section 5), A/AAAA of the
// mail host, SPF (RFC 7208), DKIM keys (RFC 6376 section 3.6.2), DMARC
// (RFC 7489 section 6.1) and optionally MTA-STS (RFC 8461) and TLS-RPT
// (RFC 8460).
package dnsrecords

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/postkit/postkit/internal/dkimkey"
)

// DKIMKey is one published key: its selector and record text
// ("v=DKIM1; k=…; p=…", see dkimkey.Record).
type DKIMKey struct {
	Selector string
	Record   string
}

// Params describe one mail domain.
type Params struct {
	Domain string       // the mail domain, e.g. example.org
	Host   string       // the MX host name, e.g. mail.example.org
	IPv4   []netip.Addr // addresses of Host
	IPv6   []netip.Addr
	DKIM   []DKIMKey
	// SPF is the SPF policy. Default: "v=spf1 mx -all" (only the MX hosts send).
	SPF string
	// DMARCPolicy is p= of the DMARC record. Default: quarantine.
	DMARCPolicy string
	// DMARCReports receives aggregate reports (rua). Default: postmaster@Domain.
	DMARCReports string
	// MTASTSID, when set, adds the _mta-sts record with this id (RFC 8461
	// section 3.1: change it whenever the policy file changes).
	MTASTSID string
	// TLSRPT, when set, is the mailbox of TLS reports (RFC 8460 section 3).
	TLSRPT string
}

// Record is one resource record.
type Record struct {
	Name    string // absolute owner name, with the trailing dot
	Type    string // MX, A, AAAA, TXT, CNAME
	Data    string // RDATA in zone-file syntax (TXT already quoted)
	Comment string
}

func fqdn(s string) string { return strings.TrimSuffix(strings.ToLower(s), ".") + "." }

func checkName(what, s string) error {
	s = strings.TrimSuffix(s, ".")
	if s == "" || !strings.Contains(s, ".") || strings.ContainsAny(s, " \t\"@;/\\") || len(s) > 253 {
		return fmt.Errorf("dnsrecords: bad %s %q: expected a domain name such as example.org", what, s)
	}
	return nil
}

// quote quotes TXT text, split in strings of at most 255 bytes.
func quote(text string) string {
	parts := dkimkey.SplitTXT(text, 0)
	for i, p := range parts {
		parts[i] = `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(p) + `"`
	}
	if len(parts) == 1 {
		return parts[0]
	}
	return "( " + strings.Join(parts, "\n\t  ") + " )"
}

// Build returns the records of p, in the order an administrator adds them.
func Build(p Params) ([]Record, error) {
	if err := checkName("domain", p.Domain); err != nil {
		return nil, err
	}
	if err := checkName("mail host", p.Host); err != nil {
		return nil, err
	}
	if len(p.IPv4)+len(p.IPv6) == 0 {
		return nil, errors.New("dnsrecords: no address for the mail host: give at least one IPv4 or IPv6 address")
	}
	dom, host := fqdn(p.Domain), fqdn(p.Host)
	var rs []Record
	rs = append(rs, Record{Name: dom, Type: "MX", Data: "10 " + host, Comment: "mail for " + strings.TrimSuffix(dom, ".") + " goes to " + strings.TrimSuffix(host, ".")})
	for _, a := range p.IPv4 {
		if !a.Is4() {
			return nil, fmt.Errorf("dnsrecords: %s is not an IPv4 address", a)
		}
		rs = append(rs, Record{Name: host, Type: "A", Data: a.String(), Comment: "PTR of " + a.String() + " should be " + host + " (set by the address owner)"})
	}
	for _, a := range p.IPv6 {
		if !a.Is6() || a.Is4In6() {
			return nil, fmt.Errorf("dnsrecords: %s is not an IPv6 address", a)
		}
		rs = append(rs, Record{Name: host, Type: "AAAA", Data: a.String(), Comment: "PTR of " + a.String() + " should be " + host})
	}
	spf := p.SPF
	if spf == "" {
		spf = "v=spf1 mx -all"
	}
	if !strings.HasPrefix(spf, "v=spf1") {
		return nil, fmt.Errorf("dnsrecords: SPF record %q must start with v=spf1 (RFC 7208 section 4.5)", spf)
	}
	rs = append(rs, Record{Name: dom, Type: "TXT", Data: quote(spf), Comment: "SPF: only the MX hosts send for the domain"})
	for _, k := range p.DKIM {
		if err := dkimkey.CheckSelector(k.Selector); err != nil {
			return nil, fmt.Errorf("dnsrecords: %w", err)
		}
		if !strings.HasPrefix(k.Record, "v=DKIM1;") {
			return nil, fmt.Errorf("dnsrecords: DKIM record for selector %s must start with v=DKIM1;", k.Selector)
		}
		name := dkimkey.RecordName(k.Selector) + "." + dom
		z := dkimkey.ZoneTXT(name, k.Record, "")
		_, data, _ := strings.Cut(strings.TrimSuffix(z, "\n"), "\tIN\tTXT\t")
		rs = append(rs, Record{Name: name, Type: "TXT", Data: data, Comment: "DKIM key " + k.Selector})
	}
	pol := p.DMARCPolicy
	if pol == "" {
		pol = "quarantine"
	}
	if pol != "none" && pol != "quarantine" && pol != "reject" {
		return nil, fmt.Errorf("dnsrecords: DMARC policy %q: use none, quarantine or reject", pol)
	}
	rua := p.DMARCReports
	if rua == "" {
		rua = "postmaster@" + strings.TrimSuffix(dom, ".")
	}
	if !strings.Contains(rua, "@") || strings.ContainsAny(rua, " ;,") {
		return nil, fmt.Errorf("dnsrecords: DMARC report address %q is not a mailbox", rua)
	}
	rs = append(rs, Record{Name: "_dmarc." + dom, Type: "TXT", Data: quote("v=DMARC1; p=" + pol + "; rua=mailto:" + rua),
		Comment: "DMARC: start with p=none to collect reports, then quarantine or reject"})
	if p.MTASTSID != "" {
		rs = append(rs,
			Record{Name: "_mta-sts." + dom, Type: "TXT", Data: quote("v=STSv1; id=" + p.MTASTSID),
				Comment: "MTA-STS: serve https://mta-sts." + strings.TrimSuffix(dom, ".") + "/.well-known/mta-sts.txt"},
			Record{Name: "mta-sts." + dom, Type: "CNAME", Data: host, Comment: "the web server of the MTA-STS policy (needs a certificate for this name)"})
	}
	if p.TLSRPT != "" {
		rs = append(rs, Record{Name: "_smtp._tls." + dom, Type: "TXT", Data: quote("v=TLSRPTv1; rua=mailto:" + p.TLSRPT), Comment: "TLS reporting"})
	}
	return rs, nil
}

// Zone formats records one per line: "NAME<TAB>IN<TAB>TYPE<TAB>DATA ; comment".
func Zone(rs []Record) string {
	var b strings.Builder
	for _, r := range rs {
		if r.Comment != "" {
			b.WriteString("; " + r.Comment + "\n")
		}
		fmt.Fprintf(&b, "%s\tIN\t%s\t%s\n", r.Name, r.Type, r.Data)
	}
	return b.String()
}
