// Package report builds DMARC aggregate reports (RFC 7489 section 7.2 and
// the XML schema of its Appendix C) from the evaluations the milter
// recorded, one report per policy domain and UTC day, and mails them,
// gzipped, to the domain's rua= addresses after the external destination
// verification of section 7.1.
package report

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/netip"
	"sort"
	"strings"
	"time"

	"github.com/postkit/postkit/milter/dmarc"
)

// Feedback is the root element of Appendix C.
type Feedback struct {
	XMLName         xml.Name        `xml:"http://dmarc.org/dmarc-xml/0.1 feedback"`
	Version         string          `xml:"version"`
	ReportMetadata  ReportMetadata  `xml:"report_metadata"`
	PolicyPublished PolicyPublished `xml:"policy_published"`
	Records         []Record        `xml:"record"`
}

// ReportMetadata is ReportMetadataType.
type ReportMetadata struct {
	OrgName   string    `xml:"org_name"`
	Email     string    `xml:"email"`
	ReportID  string    `xml:"report_id"`
	DateRange DateRange `xml:"date_range"`
}

// DateRange is DateRangeType (Unix seconds, UTC).
type DateRange struct {
	Begin int64 `xml:"begin"`
	End   int64 `xml:"end"`
}

// PolicyPublished is PolicyPublishedType.
type PolicyPublished struct {
	Domain string `xml:"domain"`
	ADKIM  string `xml:"adkim,omitempty"`
	ASPF   string `xml:"aspf,omitempty"`
	P      string `xml:"p"`
	SP     string `xml:"sp"`
	Pct    int    `xml:"pct"`
	FO     string `xml:"fo"`
}

// Record is RecordType.
type Record struct {
	Row         Row         `xml:"row"`
	Identifiers Identifiers `xml:"identifiers"`
	AuthResults AuthResults `xml:"auth_results"`
}

// Row is RowType.
type Row struct {
	SourceIP        string          `xml:"source_ip"`
	Count           int             `xml:"count"`
	PolicyEvaluated PolicyEvaluated `xml:"policy_evaluated"`
}

// PolicyEvaluated is PolicyEvaluatedType.
type PolicyEvaluated struct {
	Disposition string           `xml:"disposition"`
	DKIM        string           `xml:"dkim"`
	SPF         string           `xml:"spf"`
	Reason      []PolicyOverride `xml:"reason,omitempty"`
}

// PolicyOverride is PolicyOverrideReason.
type PolicyOverride struct {
	Type    string `xml:"type"`
	Comment string `xml:"comment,omitempty"`
}

// Identifiers is IdentifierType.
type Identifiers struct {
	EnvelopeTo   string `xml:"envelope_to,omitempty"`
	EnvelopeFrom string `xml:"envelope_from"`
	HeaderFrom   string `xml:"header_from"`
}

// AuthResults is AuthResultType.
type AuthResults struct {
	DKIM []DKIMAuth `xml:"dkim,omitempty"`
	SPF  []SPFAuth  `xml:"spf"`
}

// DKIMAuth is DKIMAuthResultType.
type DKIMAuth struct {
	Domain   string `xml:"domain"`
	Selector string `xml:"selector,omitempty"`
	Result   string `xml:"result"`
}

// SPFAuth is SPFAuthResultType.
type SPFAuth struct {
	Domain string `xml:"domain"`
	Scope  string `xml:"scope"`
	Result string `xml:"result"`
}

// Meta describes the reporter.
type Meta struct {
	OrgName string // org_name
	Email   string // the reports' sender, email
	Host    string // the submitter named in Report-ID and file names
}

// Report is one report ready to go.
type Report struct {
	Domain   string
	Day      string // YYYY-MM-DD, UTC
	Feedback Feedback
	RUA      []dmarc.URI // as published with the last evaluation of the day
	Messages int         // evaluations covered
}

// Build groups the rows of one day (any domains) into one report per
// policy domain, in domain order.
func Build(rows []dmarc.Row, day string, m Meta) ([]Report, error) {
	start, err := time.Parse(time.DateOnly, day)
	if err != nil {
		return nil, fmt.Errorf("report: day %q: want YYYY-MM-DD", day)
	}
	byDomain := map[string][]dmarc.Row{}
	for _, r := range rows {
		byDomain[r.PolicyDomain] = append(byDomain[r.PolicyDomain], r)
	}
	var out []Report
	for dom, rs := range byDomain {
		last := rs[len(rs)-1]
		sp := last.SP
		if sp == "" {
			sp = last.P // section 6.3: sp= defaults to p=
		}
		fb := Feedback{
			Version: "1.0",
			ReportMetadata: ReportMetadata{OrgName: m.OrgName, Email: m.Email,
				ReportID:  dom + "." + strings.ReplaceAll(day, "-", "") + "@" + m.Host,
				DateRange: DateRange{Begin: start.Unix(), End: start.Add(24*time.Hour).Unix() - 1}},
			PolicyPublished: PolicyPublished{Domain: dom, ADKIM: last.ADKIM, ASPF: last.ASPF, P: last.P, SP: sp, Pct: last.Pct, FO: "0"},
		}
		index := map[string]int{}
		for _, r := range rs {
			rec := record(r)
			k := key(rec)
			if i, ok := index[k]; ok {
				fb.Records[i].Row.Count++
				continue
			}
			rec.Row.Count = 1
			index[k] = len(fb.Records)
			fb.Records = append(fb.Records, rec)
		}
		rep := Report{Domain: dom, Day: day, Feedback: fb, Messages: len(rs)}
		for _, u := range strings.Split(last.RUA, ",") {
			if r, err := dmarc.ParseRecord("v=DMARC1; p=none; rua=" + u); err == nil {
				rep.RUA = append(rep.RUA, r.RUA...)
			}
		}
		out = append(out, rep)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Domain < out[j].Domain })
	return out, nil
}

func passFail(b bool) string {
	if b {
		return "pass"
	}
	return "fail"
}

// dkimResults are the values DKIMResultType allows.
var dkimResults = map[string]bool{"none": true, "pass": true, "fail": true, "policy": true, "neutral": true, "temperror": true, "permerror": true}

// spfResults are SPFResultType's (softfail, not "softfail" in every
// writer: Appendix C spells it so).
var spfResults = map[string]bool{"none": true, "neutral": true, "pass": true, "fail": true, "softfail": true, "temperror": true, "permerror": true}

func record(r dmarc.Row) Record {
	rec := Record{
		Row: Row{SourceIP: sourceIP(r.SourceIP), PolicyEvaluated: PolicyEvaluated{Disposition: r.Disposition,
			DKIM: passFail(r.DKIMAligned), SPF: passFail(r.SPFAligned)}},
		Identifiers: Identifiers{EnvelopeTo: r.EnvelopeTo, EnvelopeFrom: r.EnvelopeFrom, HeaderFrom: r.HeaderFrom},
	}
	if r.Override != "" {
		rec.Row.PolicyEvaluated.Reason = []PolicyOverride{{Type: r.Override, Comment: r.OverrideNote}}
	}
	for _, d := range r.DKIM {
		if d.Domain == "" {
			continue
		}
		res := d.Result
		if !dkimResults[res] {
			res = "permerror"
		}
		rec.AuthResults.DKIM = append(rec.AuthResults.DKIM, DKIMAuth{Domain: d.Domain, Selector: d.Selector, Result: res})
	}
	spf := r.SPFResult
	if !spfResults[spf] {
		spf = "none"
	}
	dom := r.SPFDomain
	if dom == "" {
		dom = r.EnvelopeFrom
	}
	rec.AuthResults.SPF = []SPFAuth{{Domain: dom, Scope: r.SPFScope, Result: spf}}
	return rec
}

// sourceIP writes an IPv6 address in full (eight groups): the IPAddress
// type of Appendix C has no pattern for the compressed form ("::").
func sourceIP(s string) string {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is6() || a.Is4In6() {
		return s
	}
	return a.StringExpanded()
}

func key(r Record) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s|%s|%s|%s|%v|%s|%s|%s|%v|%v", r.Row.SourceIP, r.Row.PolicyEvaluated.Disposition, r.Row.PolicyEvaluated.DKIM,
		r.Row.PolicyEvaluated.SPF, r.Row.PolicyEvaluated.Reason, r.Identifiers.EnvelopeTo, r.Identifiers.EnvelopeFrom,
		r.Identifiers.HeaderFrom, r.AuthResults.DKIM, r.AuthResults.SPF)
	return b.String()
}

// XML returns the report document.
func (r *Report) XML() ([]byte, error) {
	b, err := xml.MarshalIndent(r.Feedback, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	return append([]byte(xml.Header), append(b, '\n')...), nil
}

// FileName is section 7.2.1.1's: receiver "!" policy domain "!" begin "!"
// end, with .xml.gz.
func (r *Report) FileName(host string) string {
	dr := r.Feedback.ReportMetadata.DateRange
	return fmt.Sprintf("%s!%s!%d!%d.xml.gz", host, r.Domain, dr.Begin, dr.End)
}

// Mail builds the report message (section 7.2.1.1): Subject "Report Domain:
// … Submitter: … Report-ID: <…>", a short text part, and the gzipped XML
// as an application/gzip attachment.
func (r *Report) Mail(m Meta, to []string, now time.Time) ([]byte, error) {
	x, err := r.XML()
	if err != nil {
		return nil, err
	}
	var gz bytes.Buffer
	w, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	w.Write(x)
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("report: gzip: %w", err)
	}
	boundary := fmt.Sprintf("postkit-dmarc-%x", now.UnixNano())
	id := r.Feedback.ReportMetadata.ReportID
	var b strings.Builder
	fmt.Fprintf(&b, "From: %s\r\n", m.Email)
	fmt.Fprintf(&b, "To: %s\r\n", strings.Join(to, ", "))
	fmt.Fprintf(&b, "Subject: Report Domain: %s Submitter: %s Report-ID: <%s>\r\n", r.Domain, m.Host, id)
	fmt.Fprintf(&b, "Date: %s\r\n", now.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <%s.%d>\r\n", id, now.Unix())
	b.WriteString("MIME-Version: 1.0\r\n")
	fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=\"%s\"\r\n\r\n", boundary)
	fmt.Fprintf(&b, "--%s\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n", boundary)
	fmt.Fprintf(&b, "DMARC aggregate report for %s, %s (UTC), from %s: %d messages.\r\n\r\n", r.Domain, r.Day, m.Host, r.Messages)
	name := r.FileName(m.Host)
	fmt.Fprintf(&b, "--%s\r\nContent-Type: application/gzip; %s\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; %s\r\n\r\n",
		boundary, strings.TrimPrefix(mime.FormatMediaType("x", map[string]string{"name": name}), "x; "),
		strings.TrimPrefix(mime.FormatMediaType("x", map[string]string{"filename": name}), "x; "))
	enc := base64.StdEncoding.EncodeToString(gz.Bytes())
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n")
	fmt.Fprintf(&b, "--%s--\r\n", boundary)
	return []byte(b.String()), nil
}

// TXTResolver is the DNS the destination verification needs.
type TXTResolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// Destinations returns the rua addresses of r that may receive its report
// (section 7.1): an address whose organizational domain is not the policy
// domain's must be vouched for by a "v=DMARC1" TXT record at
// <policy-domain>._report._dmarc.<address domain>. It also returns why the
// others were left out.
func Destinations(ctx context.Context, res TXTResolver, r *Report) ([]dmarc.URI, []string) {
	var ok []dmarc.URI
	var why []string
	for _, u := range r.RUA {
		dom := strings.ToLower(u.Addr[strings.LastIndexByte(u.Addr, '@')+1:])
		if dmarc.OrgDomain(dom) == dmarc.OrgDomain(r.Domain) {
			ok = append(ok, u)
			continue
		}
		name := r.Domain + "._report._dmarc." + dom
		txts, err := res.LookupTXT(ctx, name)
		var de *net.DNSError
		switch {
		case err != nil && errors.As(err, &de) && de.IsNotFound:
			why = append(why, u.Addr+": "+dom+" does not accept reports for "+r.Domain+" (no record at "+name+")")
			continue
		case err != nil:
			why = append(why, u.Addr+": cannot verify the destination now: "+err.Error())
			continue
		}
		found := false
		for _, t := range txts {
			// Section 7.1: the record starts with v=DMARC1 (the rest may
			// carry rua= overrides, which are not followed).
			if v, _, _ := strings.Cut(t, ";"); strings.EqualFold(strings.ReplaceAll(v, " ", ""), "v=DMARC1") {
				found = true
			}
		}
		if !found {
			why = append(why, u.Addr+": no v=DMARC1 record at "+name)
			continue
		}
		ok = append(ok, u)
	}
	return ok, why
}
