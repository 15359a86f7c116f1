package dmarc_test

import (
	"strings"
	"testing"

	"github.com/postkit/postkit/milter/dmarc"
)

// Any TXT record parses without panicking, and a parsed record holds only
// values the evaluation can use.
func FuzzParseRecord(f *testing.F) {
	for _, s := range []string{"v=DMARC1; p=reject", "v=DMARC1;p=none;sp=quarantine;pct=5;rua=mailto:a@b.test!10m,mailto:c@d.test",
		"v=DMARC1; p=bad; rua=mailto:%61@x.test", "v=DMARC1; adkim=s; aspf=x; np=reject", "v=spf1 -all", "v=DMARC1; rua=mailto:!", "v=DMARC1; p=none; rua=mailto:a@b.test!9999999999999t", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := dmarc.ParseRecord(s)
		if err != nil {
			return
		}
		switch r.P {
		case dmarc.PolicyNone, dmarc.PolicyQuarantine, dmarc.PolicyReject:
		default:
			t.Fatalf("%q: p=%q", s, r.P)
		}
		if r.Pct < 0 || r.Pct > 100 || (r.ADKIM != 'r' && r.ADKIM != 's') || (r.ASPF != 'r' && r.ASPF != 's') {
			t.Fatalf("%q: %+v", s, r)
		}
		for _, u := range r.RUA {
			if u.Addr == "" || u.Limit < 0 || strings.ContainsAny(u.Addr, "\r\n<>,") {
				t.Fatalf("%q: rua %+v", s, u)
			}
		}
	})
}
