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
	// DMARCPolicy is p= of the DMARC record. Default: DefaultDMARCPolicy.
	DMARCPolicy string
	// DMARCReports receives aggregate reports (rua). Default: postmaster@Domain.
	DMARCReports string
	// MTASTSID, when set, adds the _mta-sts record with this id (RFC 8461
	// section 3.1: change it whenever the policy file changes).
	MTASTSID string
	// TLSRPT, when set, is the mailbox of TLS reports (RFC 8460 section 3).
	TLSRPT string
}

// Kind says what a record is for, and so how Check compares it with DNS.
type Kind string

// The kinds of record Build and Reverse return.
const (
	KindMX         Kind = "mx"
	KindA          Kind = "a"
	KindAAAA       Kind = "aaaa"
	KindSPF        Kind = "spf"
	KindDKIM       Kind = "dkim"
	KindDMARC      Kind = "dmarc"
	KindMTASTS     Kind = "mta-sts"
	KindMTASTSHost Kind = "mta-sts-host"
	KindTLSRPT     Kind = "tls-rpt"
	KindPTR        Kind = "ptr"
)

// Record is one resource record.
type Record struct {
	Name    string // absolute owner name, with the trailing dot
	Type    string // MX, A, AAAA, TXT, CNAME, PTR
	Data    string // RDATA in zone-file syntax (TXT already quoted)
	Comment string
	Kind    Kind
	// Text is the TXT text unquoted, or the target host or address of the
	// other types: what Check compares.
	Text string
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
	rs = append(rs, Record{Name: dom, Type: "MX", Data: "10 " + host, Kind: KindMX, Text: host,
		Comment: "mail for " + strings.TrimSuffix(dom, ".") + " goes to " + strings.TrimSuffix(host, ".")})
	for _, a := range p.IPv4 {
		if !a.Is4() {
			return nil, fmt.Errorf("dnsrecords: %s is not an IPv4 address", a)
		}
		rs = append(rs, Record{Name: host, Type: "A", Data: a.String(), Kind: KindA, Text: a.String(),
			Comment: "PTR of " + a.String() + " should be " + host + " (set by the address owner)"})
	}
	for _, a := range p.IPv6 {
		if !a.Is6() || a.Is4In6() {
			return nil, fmt.Errorf("dnsrecords: %s is not an IPv6 address", a)
		}
		rs = append(rs, Record{Name: host, Type: "AAAA", Data: a.String(), Kind: KindAAAA, Text: a.String(),
			Comment: "PTR of " + a.String() + " should be " + host + " (set by the address owner)"})
	}
	spf := p.SPF
	if spf == "" {
		spf = "v=spf1 mx -all"
	}
	if !strings.HasPrefix(spf, "v=spf1") {
		return nil, fmt.Errorf("dnsrecords: SPF record %q must start with v=spf1 (RFC 7208 section 4.5)", spf)
	}
	spfComment := "SPF: only the MX hosts send for the domain"
	if p.SPF != "" {
		spfComment = "SPF: the hosts that send for the domain"
	}
	rs = append(rs, Record{Name: dom, Type: "TXT", Data: quote(spf), Kind: KindSPF, Text: spf, Comment: spfComment})
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
		rs = append(rs, Record{Name: name, Type: "TXT", Data: data, Kind: KindDKIM, Text: k.Record, Comment: "DKIM key " + k.Selector})
	}
	pol := p.DMARCPolicy
	if pol == "" {
		pol = DefaultDMARCPolicy
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
	dmarc := "v=DMARC1; p=" + pol + "; rua=mailto:" + rua
	rs = append(rs, Record{Name: "_dmarc." + dom, Type: "TXT", Data: quote(dmarc), Kind: KindDMARC, Text: dmarc, Comment: dmarcComment[pol]})
	if p.MTASTSID != "" {
		sts := "v=STSv1; id=" + p.MTASTSID
		rs = append(rs,
			Record{Name: "_mta-sts." + dom, Type: "TXT", Data: quote(sts), Kind: KindMTASTS, Text: sts,
				Comment: "MTA-STS: serve https://mta-sts." + strings.TrimSuffix(dom, ".") + "/.well-known/mta-sts.txt"},
			Record{Name: "mta-sts." + dom, Type: "CNAME", Data: host, Kind: KindMTASTSHost, Text: host,
				Comment: "the web server of the MTA-STS policy (needs a certificate for this name)"})
	}
	if p.TLSRPT != "" {
		rpt := "v=TLSRPTv1; rua=mailto:" + p.TLSRPT
		rs = append(rs, Record{Name: "_smtp._tls." + dom, Type: "TXT", Data: quote(rpt), Kind: KindTLSRPT, Text: rpt, Comment: "TLS reporting"})
	}
	return rs, nil
}

// DefaultDMARCPolicy is p= when Params.DMARCPolicy is empty.
const DefaultDMARCPolicy = "quarantine"

// dmarcComment explains each policy, so that the comment printed above the
// record says what the record does.
var dmarcComment = map[string]string{
	"none":       "DMARC p=none: nothing is refused, receivers send reports; move to quarantine once they show only your own servers",
	"quarantine": "DMARC p=quarantine: mail that fails SPF and DKIM alignment goes to spam; use p=none first if other services send as this domain",
	"reject":     "DMARC p=reject: mail that fails SPF and DKIM alignment is refused",
}

// Reverse returns the PTR records the owners of the addresses of p.Host
// publish in their reverse zones (RFC 1912 section 2.1): receivers check
// that the address names the host and the host has the address (forward-
// confirmed reverse DNS). They belong to no zone of the mail domain, so
// Build leaves them out.
func Reverse(p Params) ([]Record, error) {
	if err := checkName("mail host", p.Host); err != nil {
		return nil, err
	}
	host := fqdn(p.Host)
	var rs []Record
	for _, a := range append(append([]netip.Addr(nil), p.IPv4...), p.IPv6...) {
		name, err := reverseName(a)
		if err != nil {
			return nil, err
		}
		rs = append(rs, Record{Name: name, Type: "PTR", Data: host, Kind: KindPTR, Text: a.Unmap().String(),
			Comment: "reverse DNS of " + a.String() + " (set by the owner of the address, often the hosting provider)"})
	}
	return rs, nil
}

// reverseName is the in-addr.arpa or ip6.arpa name of a (RFC 1035 section
// 3.5, RFC 3596 section 2.5).
func reverseName(a netip.Addr) (string, error) {
	a = a.Unmap()
	if !a.IsValid() {
		return "", errors.New("dnsrecords: invalid address")
	}
	b := a.AsSlice()
	var parts []string
	if a.Is4() {
		for i := len(b) - 1; i >= 0; i-- {
			parts = append(parts, fmt.Sprint(b[i]))
		}
		return strings.Join(parts, ".") + ".in-addr.arpa.", nil
	}
	const hex = "0123456789abcdef"
	for i := len(b) - 1; i >= 0; i-- {
		parts = append(parts, string(hex[b[i]&0xf]), string(hex[b[i]>>4]))
	}
	return strings.Join(parts, ".") + ".ip6.arpa.", nil
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
