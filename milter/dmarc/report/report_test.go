package report_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postkit/postkit/internal/testlib"
	"github.com/postkit/postkit/milter/dmarc"
	"github.com/postkit/postkit/milter/dmarc/report"
	"github.com/postkit/postkit/milter/dmarc/store"
)

type txt map[string][]string

func (t txt) LookupTXT(_ context.Context, n string) ([]string, error) {
	if v, ok := t[n]; ok {
		return v, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: n, IsNotFound: true}
}

var day = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)

func rows() []dmarc.Row {
	base := dmarc.Row{Time: day, PolicyDomain: "example.org", HeaderFrom: "example.org", ADKIM: "r", ASPF: "r", P: "reject", Pct: 100,
		RUA: "mailto:agg@example.org,mailto:dmarc@reports.test!20k,mailto:x@unverified.test", EnvelopeTo: "example.test"}
	pass := base
	pass.SourceIP, pass.EnvelopeFrom, pass.SPFDomain, pass.SPFScope, pass.SPFResult = "192.0.2.1", "example.org", "example.org", "mfrom", "pass"
	pass.SPFAligned, pass.DKIMAligned, pass.Disposition = true, true, "none"
	pass.DKIM = []dmarc.DKIMResult{{Domain: "example.org", Selector: "s1", Result: "pass"}}
	fail := base
	fail.SourceIP, fail.EnvelopeFrom, fail.SPFDomain, fail.SPFScope, fail.SPFResult = "2001:db8::25", "spammer.test", "spammer.test", "mfrom", "softfail"
	fail.Disposition = "reject"
	fwd := fail
	fwd.SourceIP, fwd.Disposition, fwd.Override = "203.0.113.9", "none", dmarc.OverrideTrustedForwarder
	other := dmarc.Row{Time: day, PolicyDomain: "other.test", HeaderFrom: "sub.other.test", ADKIM: "s", ASPF: "r", P: "none", SP: "quarantine",
		Pct: 50, RUA: "mailto:r@other.test", SourceIP: "198.51.100.7", SPFScope: "helo", SPFDomain: "mx.other.test", SPFResult: "none", Disposition: "quarantine"}
	return []dmarc.Row{pass, pass, fail, fwd, pass, other}
}

func openStore(t *testing.T) *store.SQLite {
	st, err := store.Open(filepath.Join(t.TempDir(), "dmarc.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	for _, r := range rows() {
		if err := st.Record(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

var meta = report.Meta{OrgName: "Example receiver", Email: "postmaster@example.test", Host: "mail.example.test"}

func TestBuildGroupsAndValidates(t *testing.T) {
	st := openStore(t)
	rs, err := st.Rows(context.Background(), "2026-03-01")
	if err != nil {
		t.Fatal(err)
	}
	reps, err := report.Build(rs, "2026-03-01", meta)
	if err != nil {
		t.Fatal(err)
	}
	if len(reps) != 2 || reps[0].Domain != "example.org" || reps[1].Domain != "other.test" {
		t.Fatalf("reports %+v; want example.org and other.test", reps)
	}
	fb := reps[0].Feedback
	if len(fb.Records) != 3 || fb.Records[0].Row.Count != 3 || reps[0].Messages != 5 {
		t.Errorf("records %+v; want 3 groups, the first of 3 messages", fb.Records)
	}
	if fb.Records[2].Row.PolicyEvaluated.Reason[0].Type != "trusted_forwarder" {
		t.Errorf("forwarded row %+v; want reason trusted_forwarder", fb.Records[2].Row)
	}
	if dr := fb.ReportMetadata.DateRange; dr.Begin != 1772323200 || dr.End != 1772409599 {
		t.Errorf("date range %+v; want the UTC day", dr)
	}
	if reps[1].Feedback.PolicyPublished.SP != "quarantine" || reps[0].Feedback.PolicyPublished.SP != "reject" {
		t.Errorf("sp published %q, %q; want quarantine, and p= where sp= is absent", reps[1].Feedback.PolicyPublished.SP, reps[0].Feedback.PolicyPublished.SP)
	}
	xmllint := testlib.NeedBinary(t, "xmllint")[0]
	for _, r := range reps {
		x, err := r.XML()
		if err != nil {
			t.Fatal(err)
		}
		validate(t, xmllint, x)
	}
	// The schema catches what is wrong: a disposition it does not know.
	x, _ := reps[0].XML()
	bad := bytes.Replace(x, []byte("<disposition>reject</disposition>"), []byte("<disposition>bounce</disposition>"), 1)
	if out, err := runXmllint(t, xmllint, bad); err == nil {
		t.Errorf("xmllint accepted a bad disposition: %s", out)
	}
}

func runXmllint(t *testing.T, xmllint string, x []byte) (string, error) {
	p := filepath.Join(t.TempDir(), "report.xml")
	if err := os.WriteFile(p, x, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(xmllint, "--noout", "--schema", "testdata/rfc7489.xsd", p).CombinedOutput()
	return string(out), err
}

func validate(t *testing.T, xmllint string, x []byte) {
	t.Helper()
	if out, err := runXmllint(t, xmllint, x); err != nil {
		t.Errorf("report does not validate against RFC 7489's schema: %v\n%s\n%s", err, out, x)
	}
}

// Section 7.1: an address outside the policy domain needs the consent
// record of its domain.
func TestDestinations(t *testing.T) {
	st := openStore(t)
	rs, _ := st.Rows(context.Background(), "2026-03-01")
	reps, _ := report.Build(rs, "2026-03-01", meta)
	res := txt{"example.org._report._dmarc.reports.test": {"v=DMARC1"}, "example.org._report._dmarc.unverified.test": {"v=spf1 -all"}}
	ok, why := report.Destinations(context.Background(), res, &reps[0])
	var got []string
	for _, u := range ok {
		got = append(got, u.Addr)
	}
	if strings.Join(got, ",") != "agg@example.org,dmarc@reports.test" || len(why) != 1 || !strings.Contains(why[0], "x@unverified.test") {
		t.Errorf("destinations %v (left out %q); want agg@example.org,dmarc@reports.test, not x@unverified.test", got, why)
	}
}

type sent struct {
	from string
	to   []string
	msg  []byte
}

func TestRunSend(t *testing.T) {
	st := openStore(t)
	var mails []sent
	o := report.Options{Mode: report.Send, Meta: meta, MaxBytes: 1 << 20, Keep: 7 * 24 * time.Hour,
		Resolver: txt{"example.org._report._dmarc.reports.test": {"v=DMARC1"}},
		Sendmail: func(_ context.Context, from string, to []string, msg []byte) error {
			mails = append(mails, sent{from, to, msg})
			return nil
		},
		Out: io.Discard, Logger: testlib.Discard(), Now: func() time.Time { return day.Add(24 * time.Hour) }}
	if err := report.Run(context.Background(), st, o); err != nil {
		t.Fatal(err)
	}
	if len(mails) != 2 {
		t.Fatalf("%d mails; want one per domain", len(mails))
	}
	if strings.Join(mails[0].to, ",") != "agg@example.org,dmarc@reports.test" || mails[0].from != meta.Email {
		t.Errorf("mail to %v from %s", mails[0].to, mails[0].from)
	}
	// The attachment is the gzipped XML.
	m, err := mail.ReadMessage(bytes.NewReader(mails[0].msg))
	if err != nil {
		t.Fatal(err)
	}
	if s := m.Header.Get("Subject"); !strings.HasPrefix(s, "Report Domain: example.org Submitter: mail.example.test Report-ID: <") {
		t.Errorf("Subject %q", s)
	}
	_, params, _ := mime.ParseMediaType(m.Header.Get("Content-Type"))
	mr := multipart.NewReader(m.Body, params["boundary"])
	var xmlDoc []byte
	for {
		p, err := mr.NextPart()
		if err != nil {
			break
		}
		if p.FileName() == "mail.example.test!example.org!1772323200!1772409599.xml.gz" {
			gz, err := gzip.NewReader(base64.NewDecoder(base64.StdEncoding, p))
			if err != nil {
				t.Fatal(err)
			}
			xmlDoc, _ = io.ReadAll(gz)
		}
	}
	if !bytes.Contains(xmlDoc, []byte("<policy_published>")) {
		t.Fatalf("no gzipped report attached: %q", xmlDoc)
	}
	// Sent once: a second run sends nothing.
	if err := report.Run(context.Background(), st, o); err != nil || len(mails) != 2 {
		t.Errorf("second run: %v, %d mails; want none more", err, len(mails))
	}
	// Size limits: the 20k limit of dmarc@reports.test and MaxBytes.
	st2 := openStore(t)
	mails = nil
	o.MaxBytes = 100
	if err := report.Run(context.Background(), st2, o); err != nil || len(mails) != 0 {
		t.Errorf("over the size limit: %v, %d mails; want none", err, len(mails))
	}
}

// A report the MTA did not take is released and sent by the next run; one
// that another run holds the claim of is not sent.
func TestRunSendRetriesAndClaims(t *testing.T) {
	st := openStore(t)
	var mails int
	fail := true
	now := day.Add(24 * time.Hour)
	o := report.Options{Mode: report.Send, Meta: meta, MaxBytes: 1 << 20,
		Resolver: txt{"example.org._report._dmarc.reports.test": {"v=DMARC1"}},
		Sendmail: func(context.Context, string, []string, []byte) error {
			if fail {
				return errors.New("sendmail: queue file write error")
			}
			mails++
			return nil
		},
		Out: io.Discard, Logger: testlib.Discard(), Now: func() time.Time { return now }}
	if err := report.Run(context.Background(), st, o); err == nil || !strings.Contains(err.Error(), "queue file write error") {
		t.Fatalf("failing sendmail: %v", err)
	}
	// Another host claims other.test's day meanwhile.
	if won, err := st.Claim(context.Background(), "other.test", "2026-03-01", now); err != nil || !won {
		t.Fatalf("claim of a released report: %v, %v; want won", won, err)
	}
	fail = false
	now = now.Add(time.Minute)
	if err := report.Run(context.Background(), st, o); err != nil {
		t.Fatal(err)
	}
	if mails != 1 {
		t.Errorf("%d mails after the failure; want 1 (example.org; other.test is claimed elsewhere)", mails)
	}
}
