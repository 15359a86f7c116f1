package dnsrecords

import (
	"crypto/rsa"
	"net/netip"
	"strings"
	"testing"

	"github.com/miekg/dns"

	"github.com/postkit/postkit/internal/dkimkey"
)

func TestBuildParses(t *testing.T) {
	k, err := rsa.GenerateKey(nil, 4096)
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := dkimkey.Record(k.Public())
	p := Params{
		Domain: "Example.org", Host: "mail.example.org.",
		IPv4:     []netip.Addr{netip.MustParseAddr("192.0.2.10")},
		IPv6:     []netip.Addr{netip.MustParseAddr("2001:db8::10")},
		DKIM:     []DKIMKey{{Selector: "mail", Record: rec}, {Selector: "ed", Record: "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="}},
		MTASTSID: "20260101000000", TLSRPT: "tls@example.org",
	}
	rs, err := Build(p)
	if err != nil {
		t.Fatal(err)
	}
	zone := Zone(rs)
	want := map[string]string{ // name/type -> joined RDATA
		"example.org./MX":                  "10 mail.example.org.",
		"mail.example.org./A":              "192.0.2.10",
		"mail.example.org./AAAA":           "2001:db8::10",
		"example.org./TXT":                 "v=spf1 mx -all",
		"mail._domainkey.example.org./TXT": rec,
		"ed._domainkey.example.org./TXT":   p.DKIM[1].Record,
		"_dmarc.example.org./TXT":          "v=DMARC1; p=quarantine; rua=mailto:postmaster@example.org",
		"_mta-sts.example.org./TXT":        "v=STSv1; id=20260101000000",
		"mta-sts.example.org./CNAME":       "mail.example.org.",
		"_smtp._tls.example.org./TXT":      "v=TLSRPTv1; rua=mailto:tls@example.org",
	}
	zp := dns.NewZoneParser(strings.NewReader(zone), "", "")
	got := map[string]string{}
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		key := rr.Header().Name + "/" + dns.TypeToString[rr.Header().Rrtype]
		switch r := rr.(type) {
		case *dns.MX:
			got[key] = "10 " + r.Mx
		case *dns.A:
			got[key] = r.A.String()
		case *dns.AAAA:
			got[key] = r.AAAA.String()
		case *dns.CNAME:
			got[key] = r.Target
		case *dns.TXT:
			for _, s := range r.Txt {
				if len(s) > 255 {
					t.Errorf("%s: string of %d bytes", key, len(s))
				}
			}
			got[key] = strings.Join(r.Txt, "")
		}
	}
	if err := zp.Err(); err != nil {
		t.Fatalf("zone does not parse: %v\n%s", err, zone)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q; want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d records; want %d:\n%s", len(got), len(want), zone)
	}
}

func TestBuildErrors(t *testing.T) {
	ip := []netip.Addr{netip.MustParseAddr("192.0.2.1")}
	tests := []struct {
		name string
		p    Params
		want string
	}{
		{"no domain", Params{Host: "mail.example.org", IPv4: ip}, "domain"},
		{"bad host", Params{Domain: "example.org", Host: "mail", IPv4: ip}, "mail host"},
		{"no ip", Params{Domain: "example.org", Host: "mail.example.org"}, "address"},
		{"v6 as v4", Params{Domain: "example.org", Host: "mail.example.org", IPv4: []netip.Addr{netip.MustParseAddr("::1")}}, "IPv4"},
		{"bad spf", Params{Domain: "example.org", Host: "mail.example.org", IPv4: ip, SPF: "mx -all"}, "v=spf1"},
		{"bad dmarc", Params{Domain: "example.org", Host: "mail.example.org", IPv4: ip, DMARCPolicy: "drop"}, "DMARC policy"},
		{"bad dkim", Params{Domain: "example.org", Host: "mail.example.org", IPv4: ip, DKIM: []DKIMKey{{Selector: "s", Record: "p=x"}}}, "v=DKIM1"},
	}
	for _, tc := range tests {
		if _, err := Build(tc.p); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v; want %q", tc.name, err, tc.want)
		}
	}
}
