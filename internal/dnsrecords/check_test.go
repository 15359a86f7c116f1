package dnsrecords

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/postkit/postkit/internal/dnsclient"
	"github.com/postkit/postkit/internal/dnstest"
)

// checkAgainst serves zone from the loopback DNS server and checks the
// records of p (with the reverse ones) through postkit's resolver.
func checkAgainst(t *testing.T, p Params, zone ...string) map[string]Result {
	t.Helper()
	srv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	if err := srv.SetZone(zone...); err != nil {
		t.Fatal(err)
	}
	r, err := dnsclient.New(dnsclient.Config{Servers: []string{srv.Addr()}, CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rs, err := Build(p)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := Reverse(p)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Result{}
	for _, res := range Check(context.Background(), r, append(rs, rev...)) {
		got[string(res.Kind)] = res
	}
	return got
}

func TestCheck(t *testing.T) {
	const dkimRec = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
	p := Params{
		Domain: "example.org", Host: "mail.example.org",
		IPv4:     []netip.Addr{netip.MustParseAddr("192.0.2.10")},
		IPv6:     []netip.Addr{netip.MustParseAddr("2001:db8::10")},
		DKIM:     []DKIMKey{{Selector: "ed", Record: dkimRec}},
		MTASTSID: "1", TLSRPT: "tls@example.org", DMARCPolicy: "reject",
	}
	good := []string{
		`example.org. IN MX 10 mail.example.org.`,
		`mail.example.org. IN A 192.0.2.10`,
		`mail.example.org. IN AAAA 2001:db8::10`,
		`example.org. IN TXT "v=spf1  MX -all"`,
		`example.org. IN TXT "google-site-verification=x"`,
		`ed._domainkey.example.org. IN TXT "v=DKIM1; k=ed25519; " "p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="`,
		`_dmarc.example.org. IN TXT "v=DMARC1; p=reject; rua=mailto:dmarc@reports.example.net"`,
		`_mta-sts.example.org. IN TXT "v=STSv1; id=20250101"`,
		`mta-sts.example.org. IN CNAME mail.example.org.`,
		`_smtp._tls.example.org. IN TXT "v=TLSRPTv1; rua=mailto:tls@example.org"`,
		`10.2.0.192.in-addr.arpa. IN PTR mail.example.org.`,
	}
	got := checkAgainst(t, p, good...)
	if len(got) != 10 {
		t.Errorf("%d kinds checked; want 10: %+v", len(got), got)
	}
	for k, r := range got {
		if k == string(KindPTR) {
			continue // two PTRs; checked below
		}
		if r.Status != OK || r.Fix != "" {
			t.Errorf("%s: %s %q (found %q, fix %q); want ok", k, r.Status, r.Detail, r.Found, r.Fix)
		}
	}

	// The IPv6 address has no PTR: the last result is that one.
	if r := got[string(KindPTR)]; r.Status != Missing || r.Fix != "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.\tIN\tPTR\tmail.example.org." {
		t.Errorf("v6 PTR: %s fix %q", r.Status, r.Fix)
	}

	bad := []string{
		`example.org. IN MX 10 mx.elsewhere.example.`,
		`mail.example.org. IN A 192.0.2.99`,
		`example.org. IN TXT "v=spf1 a -all"`,
		`ed._domainkey.example.org. IN TXT "v=DKIM1; k=ed25519; p="`,
		`_dmarc.example.org. IN TXT "v=DMARC1; p=none"`,
		`_dmarc.example.org. IN TXT "v=DMARC1; p=reject"`,
		`_mta-sts.example.org. IN TXT "v=STSv1;"`,
		`mta-sts.example.org. IN A 198.51.100.1`,
		`_smtp._tls.example.org. IN TXT "v=TLSRPTv1; rua=mailto:other@example.org"`,
		`10.2.0.192.in-addr.arpa. IN PTR host-10.provider.example.`,
	}
	got = checkAgainst(t, p, bad...)
	want := map[Kind]Status{KindMX: Wrong, KindA: Wrong, KindAAAA: Missing, KindSPF: Wrong, KindDKIM: Wrong,
		KindDMARC: Wrong, KindMTASTS: Wrong, KindMTASTSHost: Wrong, KindTLSRPT: Wrong}
	for k, st := range want {
		r := got[string(k)]
		if r.Status != st || r.Fix == "" {
			t.Errorf("%s: %s %q fix %q; want %s with a fix", k, r.Status, r.Detail, r.Fix, st)
		}
	}
	if r := got[string(KindSPF)]; r.Fix != "example.org.\tIN\tTXT\t\"v=spf1 mx -all\"" || len(r.Found) != 1 || r.Found[0] != "v=spf1 a -all" {
		t.Errorf("SPF fix %q found %q", r.Fix, r.Found)
	}
	if r := got[string(KindDMARC)]; !strings.Contains(r.Detail, "2 dmarc records") {
		t.Errorf("two DMARC records: %q", r.Detail)
	}
	if r := got[string(KindDKIM)]; !strings.Contains(r.Detail, "revoked") {
		t.Errorf("revoked DKIM key: %q", r.Detail)
	}

	// Nothing published at all: every record missing, none ok.
	got = checkAgainst(t, p, `other.example. IN A 192.0.2.1`)
	for k, r := range got {
		if r.Status != Missing || !strings.Contains(r.Fix, "\tIN\t") {
			t.Errorf("empty zone: %s is %s (%q)", k, r.Status, r.Fix)
		}
	}
}

func TestCheckForwardConfirmed(t *testing.T) {
	p := Params{Domain: "example.org", Host: "mail.example.org", IPv4: []netip.Addr{netip.MustParseAddr("192.0.2.10")}}
	// The PTR names the host, but the host does not resolve back.
	got := checkAgainst(t, p, `10.2.0.192.in-addr.arpa. IN PTR mail.example.org.`)
	if r := got[string(KindPTR)]; r.Status != Wrong || !strings.Contains(r.Detail, "forward-confirmed") {
		t.Errorf("PTR without the forward record: %s %q", r.Status, r.Detail)
	}
}

func TestCheckServerFailure(t *testing.T) {
	srv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	z := dnstest.NewZone()
	z.ServFail("example.org")
	srv.Set(z)
	r, err := dnsclient.New(dnsclient.Config{Servers: []string{srv.Addr()}, CacheSize: -1, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rs, _ := Build(Params{Domain: "example.org", Host: "mail.example.org", IPv4: []netip.Addr{netip.MustParseAddr("192.0.2.10")}})
	res := Check(context.Background(), r, rs[:1])
	if res[0].Status != Failed || !strings.Contains(res[0].Detail, "lookup failed") {
		t.Errorf("SERVFAIL: %+v; want error", res[0])
	}
}

func TestReverseNames(t *testing.T) {
	rs, err := Reverse(Params{Host: "mail.example.org", IPv4: []netip.Addr{netip.MustParseAddr("192.0.2.10")},
		IPv6: []netip.Addr{netip.MustParseAddr("2001:db8::1")}})
	if err != nil {
		t.Fatal(err)
	}
	if rs[0].Name != "10.2.0.192.in-addr.arpa." || rs[1].Name != "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa." {
		t.Errorf("reverse names %q %q", rs[0].Name, rs[1].Name)
	}
}

func TestDMARCCommentFollowsPolicy(t *testing.T) {
	for _, pol := range []string{"", "none", "quarantine", "reject"} {
		rs, err := Build(Params{Domain: "example.org", Host: "mail.example.org", IPv4: []netip.Addr{netip.MustParseAddr("192.0.2.10")}, DMARCPolicy: pol})
		if err != nil {
			t.Fatal(err)
		}
		want := pol
		if want == "" {
			want = DefaultDMARCPolicy
		}
		for _, r := range rs {
			if r.Kind == KindDMARC && (!strings.HasPrefix(r.Comment, "DMARC p="+want+":") || !strings.Contains(r.Data, "p="+want+";")) {
				t.Errorf("policy %q: comment %q over %s", pol, r.Comment, r.Data)
			}
		}
	}
}
