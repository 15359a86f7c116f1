package dmarc_test

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/postkit/postkit/milter/dmarc"
	"github.com/postkit/postkit/milter/filter"
	"github.com/postkit/postkit/milter/miltertest"
)

const authservID = "mx.example.test"

// fakeDNS answers TXT from a map; names in temp fail temporarily; every
// other name does not exist. hosts lists names that have an address.
type fakeDNS struct {
	txt   map[string][]string
	temp  map[string]bool
	hosts map[string]bool
}

func notFound(n string) error { return &net.DNSError{Err: "no such host", Name: n, IsNotFound: true} }

func (f *fakeDNS) LookupTXT(_ context.Context, n string) ([]string, error) {
	if f.temp[n] {
		return nil, &net.DNSError{Err: "timeout", Name: n, IsTimeout: true, IsTemporary: true}
	}
	if t, ok := f.txt[n]; ok {
		return t, nil
	}
	return nil, notFound(n)
}

func (f *fakeDNS) LookupMX(_ context.Context, n string) ([]*net.MX, error) {
	if f.hosts[n] {
		return []*net.MX{{Host: n, Pref: 10}}, nil
	}
	return nil, notFound(n)
}

func (f *fakeDNS) LookupIPAddr(_ context.Context, n string) ([]net.IPAddr, error) {
	if f.hosts[n] {
		return []net.IPAddr{{IP: net.IPv4(192, 0, 2, 1)}}, nil
	}
	return nil, notFound(n)
}

var zone = &fakeDNS{
	txt: map[string][]string{
		"_dmarc.reject.test":       {"v=DMARC1; p=reject; rua=mailto:agg@reject.test"},
		"_dmarc.quar.test":         {"v=DMARC1; p=quarantine"},
		"_dmarc.mon.test":          {"v=DMARC1; p=none"},
		"_dmarc.strict.test":       {"v=DMARC1; p=reject; adkim=s; aspf=s"},
		"_dmarc.sp.test":           {"v=DMARC1; p=none; sp=reject"},
		"_dmarc.np.test":           {"v=DMARC1; p=none; np=reject"},
		"_dmarc.pct0.test":         {"v=DMARC1; p=reject; pct=0"},
		"_dmarc.broken.test":       {"v=DMARC1; p=sometimes"},
		"_dmarc.repaired.test":     {"v=DMARC1; p=sometimes; rua=mailto:r@repaired.test"},
		"_dmarc.two.test":          {"v=DMARC1; p=reject", "v=DMARC1; p=none"},
		"_dmarc.other.test":        {"v=spf1 -all", "v=DMARC1; p=reject"},
		"_dmarc.example.co.uk":     {"v=DMARC1; p=reject"},
		"_dmarc.own.sp.test":       {"v=DMARC1; p=none"},
		"_dmarc.dnsfail.test":      nil,
		"_dmarc.subdnsfail.test":   {"v=DMARC1; p=reject"},
		"_dmarc.quarantine-r.test": {"v=DMARC1; p=quarantine; pct=50"},
	},
	temp:  map[string]bool{"_dmarc.dnsfail.test": true},
	hosts: map[string]bool{"exists.np.test": true},
}

// spf: 192.0.2.10 may send for every domain; others fail.
func spf(_ context.Context, ip netip.Addr, helo, sender string) (string, string) {
	d := helo
	if sender != "" {
		d = sender[strings.LastIndexByte(sender, '@')+1:]
	}
	if ip == netip.MustParseAddr("192.0.2.99") {
		return "temperror", d
	}
	if ip == netip.MustParseAddr("192.0.2.10") {
		return "pass", d
	}
	return "fail", d
}

// fakeVerifier stands for dkimverify: it inserts our Authentication-Results
// with the dkim results named in X-Test-DKIM.
type fakeVerifier struct{}

func (fakeVerifier) Name() string { return "dkimverify" }
func (fakeVerifier) Headers(m *filter.Message, c *filter.Changes) (filter.Body, error) {
	return fakeBody{}, nil
}

type fakeBody struct{}

func (fakeBody) Write([]byte) error { return nil }
func (fakeBody) End(m *filter.Message, c *filter.Changes) error {
	v := authservID + ";\r\n\tdkim=none"
	for _, h := range m.Headers {
		if h.Name == "X-Test-DKIM" {
			v = authservID + ";\r\n\t" + h.Value
		}
	}
	c.InsertHeader(0, "Authentication-Results", v)
	return nil
}

type memRecorder struct {
	mu   sync.Mutex
	rows []dmarc.Row
}

func (r *memRecorder) Record(_ context.Context, row dmarc.Row) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rows = append(r.rows, row)
	return nil
}

func TestFilter(t *testing.T) {
	tests := []struct {
		name     string
		client   string
		mailFrom string
		from     string
		extra    string // more header lines
		rcpt     string
		action   string
		badFrom  string
		want     string // "accept", "quarantine", or "550"
		wantAR   string // in our Authentication-Results
	}{
		{"aligned spf", "192.0.2.10", "a@reject.test", "<a@reject.test>", "", "", "", "", "accept", "dmarc=pass (p=reject dis=none) header.from=reject.test policy.dmarc=reject"},
		{"relaxed spf subdomain", "192.0.2.10", "a@bounce.reject.test", "<a@reject.test>", "", "", "", "", "accept", "dmarc=pass"},
		{"strict spf subdomain", "192.0.2.10", "a@bounce.strict.test", "<a@strict.test>", "", "", "", "", "550", "dmarc=fail"},
		{"unaligned spf pass", "192.0.2.10", "a@elsewhere.test", "<a@reject.test>", "", "", "", "", "550", "dmarc=fail (p=reject dis=reject) header.from=reject.test"},
		{"aligned dkim", "198.51.100.1", "a@elsewhere.test", "<a@reject.test>", "X-Test-DKIM: dkim=pass header.d=reject.test\r\n", "", "", "", "accept", "dmarc=pass"},
		{"relaxed dkim parent", "198.51.100.1", "a@elsewhere.test", "<a@mail.reject.test>", "X-Test-DKIM: dkim=pass header.d=reject.test\r\n", "", "", "", "accept", "dmarc=pass"},
		{"strict dkim parent", "198.51.100.1", "a@elsewhere.test", "<a@strict.test>", "X-Test-DKIM: dkim=pass header.d=mail.strict.test\r\n", "", "", "", "550", "dmarc=fail"},
		{"failing dkim", "198.51.100.1", "a@elsewhere.test", "<a@reject.test>", "X-Test-DKIM: dkim=fail header.d=reject.test\r\n", "", "", "", "550", "dmarc=fail"},
		{"quarantine policy", "198.51.100.1", "a@quar.test", "<a@quar.test>", "", "", "", "", "quarantine", "dmarc=fail (p=quarantine dis=quarantine)"},
		{"monitor policy", "198.51.100.1", "a@mon.test", "<a@mon.test>", "", "", "", "", "accept", "dmarc=fail (p=none dis=none)"},
		{"action quarantine", "198.51.100.1", "a@reject.test", "<a@reject.test>", "", "", "quarantine", "", "quarantine", "dis=quarantine"},
		{"action none", "198.51.100.1", "a@reject.test", "<a@reject.test>", "", "", "none", "", "accept", "dmarc=fail (p=reject dis=none)"},
		{"subdomain policy", "198.51.100.1", "a@x.sp.test", "<a@x.sp.test>", "", "", "", "", "550", "policy.dmarc=reject"},
		{"org domain p=none", "198.51.100.1", "a@sp.test", "<a@sp.test>", "", "", "", "", "accept", "policy.dmarc=none"},
		{"own record at subdomain", "198.51.100.1", "a@own.sp.test", "<a@own.sp.test>", "", "", "", "", "accept", "dmarc=fail (p=none dis=none) header.from=own.sp.test"},
		{"np nonexistent", "198.51.100.1", "a@gone.np.test", "<a@gone.np.test>", "", "", "", "", "550", "policy.dmarc=reject"},
		{"np existing", "198.51.100.1", "a@exists.np.test", "<a@exists.np.test>", "", "", "", "", "accept", "policy.dmarc=none"},
		{"pct=0", "198.51.100.1", "a@pct0.test", "<a@pct0.test>", "", "", "", "", "quarantine", "dis=quarantine"},
		{"no record", "198.51.100.1", "a@none.test", "<a@none.test>", "", "", "", "", "accept", "dmarc=none header.from=none.test"},
		{"broken record", "198.51.100.1", "a@broken.test", "<a@broken.test>", "", "", "", "", "accept", "dmarc=permerror"},
		{"repaired record", "198.51.100.1", "a@repaired.test", "<a@repaired.test>", "", "", "", "", "accept", "dmarc=fail (p=none dis=none)"},
		{"two records", "198.51.100.1", "a@two.test", "<a@two.test>", "", "", "", "", "accept", "dmarc=none"},
		{"non-DMARC TXT ignored", "198.51.100.1", "a@other.test", "<a@other.test>", "", "", "", "", "550", "dmarc=fail"},
		{"public suffix list", "198.51.100.1", "a@x.example.co.uk", "<a@www.example.co.uk>", "", "", "", "", "550", "dmarc=fail"},
		{"SPF temperror, aligned", "192.0.2.99", "a@reject.test", "<a@reject.test>", "", "", "", "", "accept", "dmarc=temperror"},
		{"SPF temperror, unaligned", "192.0.2.99", "a@elsewhere.test", "<a@reject.test>", "", "", "", "", "550", "dmarc=fail"},
		{"DKIM temperror, aligned", "198.51.100.1", "a@elsewhere.test", "<a@reject.test>", "X-Test-DKIM: dkim=temperror header.d=reject.test\r\n", "", "", "", "accept", "dmarc=temperror"},
		{"dns timeout", "198.51.100.1", "a@dnsfail.test", "<a@dnsfail.test>", "", "", "", "", "accept", "dmarc=temperror"},
		{"several domains, strictest failing", "198.51.100.1", "a@reject.test", "<b@mon.test>, <a@reject.test>", "", "", "", "", "550", "dmarc=fail (p=reject dis=reject) header.from=reject.test"},
		{"several domains, one passing", "192.0.2.10", "a@mon.test", "<b@mon.test>, <a@quar.test>", "", "", "", "", "quarantine", "dmarc=fail (p=quarantine dis=quarantine) header.from=quar.test"},
		{"several domains, none failing", "192.0.2.10", "a@mon.test", "<b@mon.test>, <a@none.test>", "", "", "", "", "accept", "dmarc=pass (p=none dis=none) header.from=mon.test"},
		{"several domains refused by bad_from", "198.51.100.1", "a@mon.test", "<a@mon.test>, <b@none.test>", "", "", "", "reject", "550", "dmarc=fail (p=none dis=none)"},
		{"several of one domain", "198.51.100.1", "a@reject.test", "<a@reject.test>, <b@reject.test>", "", "", "", "", "550", "dmarc=fail"},
		{"unparsable From", "198.51.100.1", "a@reject.test", "nobody at all", "", "", "", "", "accept", "dmarc=permerror (no From address)"},
		{"null sender helo aligned", "192.0.2.10", "", "<a@reject.test>", "", "", "", "", "accept", "spf=pass smtp.helo=mx.reject.test"},
		{"trusted forwarder", "203.0.113.5", "a@reject.test", "<a@reject.test>", "", "", "", "", "accept", "dmarc=fail (p=reject dis=none)"},
		{"mailing list", "198.51.100.1", "a@reject.test", "<a@reject.test>", "List-Id: Talk <talk.lists.test>\r\n", "", "", "", "accept", "dis=none"},
		{"exempt recipient", "198.51.100.1", "a@reject.test", "<a@reject.test>", "", "postmaster@example.test", "", "", "accept", "dis=none"},
		{"exempt recipient domain", "198.51.100.1", "a@reject.test", "<a@reject.test>", "", "bob@exempt.test", "", "", "accept", "dis=none"},
		{"forged AR kept out", "198.51.100.1", "a@elsewhere.test", "<a@reject.test>", "Authentication-Results: mx.example.test; dkim=pass header.d=reject.test\r\n", "", "", "", "550", "dmarc=fail"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &memRecorder{}
			f, err := dmarc.New(dmarc.Config{Resolver: zone, SPF: spf, AuthservID: authservID, Action: tt.action, BadFrom: tt.badFrom,
				TrustedForwarders: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")},
				ExemptRecipients:  []string{"Postmaster@example.test", "exempt.test"},
				ExemptListIDs:     []string{"<talk.lists.test>"},
				Recorder:          rec, Sample: func() int { return 42 }, Logger: miltertest.Logger(t)})
			if err != nil {
				t.Fatal(err)
			}
			rcpt := tt.rcpt
			if rcpt == "" {
				rcpt = "bob@example.test"
			}
			raw := "From: " + tt.from + "\r\nTo: <" + rcpt + ">\r\nSubject: hi\r\n" + tt.extra
			m := &filter.Message{Conn: &filter.Conn{Addr: netip.MustParseAddr(tt.client), Helo: "mx.reject.test"},
				MailFrom: tt.mailFrom, Rcpts: []string{rcpt}, Headers: miltertest.Headers([]byte(raw + "\r\n"))}
			c := miltertest.Run(t, m, "body\r\n", 0, fakeVerifier{}, f)
			var ars []string
			quarantined := false
			for _, h := range m.Headers {
				if h.Name == "Authentication-Results" && strings.HasPrefix(h.Value, authservID) {
					ars = append(ars, h.Value)
				}
				if h.Name == dmarc.QuarantineField {
					quarantined = true
				}
			}
			got := "accept"
			switch {
			case c.Verdict == filter.Reject:
				got = c.Code
			case quarantined:
				got = "quarantine"
			}
			if got != tt.want {
				t.Errorf("verdict %s, want %s (%v)", got, tt.want, ars)
			}
			// One field of ours (the forged one is not counted: the
			// forged filter removes it in the chain; here it stays).
			var mine []string
			for _, a := range ars {
				if strings.Contains(a, "dmarc=") {
					mine = append(mine, a)
				}
			}
			if len(mine) != 1 || !strings.Contains(mine[0], tt.wantAR) || !strings.Contains(mine[0], "dkim=") {
				t.Errorf("Authentication-Results %q, want one with dkim= and %q", ars, tt.wantAR)
			}
		})
	}
}

func TestParseRecord(t *testing.T) {
	for _, tt := range []struct {
		in, want string
	}{
		{"v=DMARC1; p=reject", "p=reject sp= pct=100 adkim=r rua=0"},
		{"v=DMARC1;p=Quarantine;sp=none;pct=20;adkim=s;aspf=s", "p=quarantine sp=none pct=20 adkim=s rua=0"},
		{"v=DMARC1; p=none; rua=mailto:a@x.test!10m, mailto:b@y.test,https://x.test/", "p=none sp= pct=100 adkim=r rua=2"},
		{"v=DMARC1; p=bad; rua=mailto:a@x.test", "p=none sp= pct=100 adkim=r rua=1"},
		{"v=DMARC1; p=bad", "error"},
		{"v=DMARC1", "error"},
		{"v=DMARC1; p=reject; pct=200", "p=reject sp= pct=100 adkim=r rua=0"},
		{"v=spf1 -all", "not dmarc"},
		{"p=reject; v=DMARC1", "not dmarc"},
	} {
		r, err := dmarc.ParseRecord(tt.in)
		var got string
		switch {
		case err == dmarc.ErrNotDMARC:
			got = "not dmarc"
		case err != nil:
			got = "error"
		default:
			got = "p=" + string(r.P) + " sp=" + string(r.SP) + " pct=" + strconv.Itoa(r.Pct) + " adkim=" + string(r.ADKIM) + " rua=" + strconv.Itoa(len(r.RUA))
		}
		if got != tt.want {
			t.Errorf("ParseRecord(%q) = %s; want %s", tt.in, got, tt.want)
		}
	}
	r, _ := dmarc.ParseRecord("v=DMARC1; p=none; rua=mailto:a@x.test!10m")
	if r.RUA[0].Addr != "a@x.test" || r.RUA[0].Limit != 10<<20 {
		t.Errorf("rua %+v; want a@x.test limited to 10 MiB", r.RUA[0])
	}
}

func TestOrgDomain(t *testing.T) {
	for in, want := range map[string]string{
		"a.b.example.com": "example.com", "example.co.uk": "example.co.uk", "www.example.co.uk": "example.co.uk",
		"co.uk": "co.uk", "Example.COM.": "example.com", "x.test": "x.test", "a.x.test": "x.test",
	} {
		if got := dmarc.OrgDomain(in); got != want {
			t.Errorf("OrgDomain(%q) = %q; want %q", in, got, want)
		}
	}
}

// An evaluation of a domain with rua= is recorded with what the aggregate
// report needs; one without rua= is not.
func TestRecorded(t *testing.T) {
	rec := &memRecorder{}
	f, err := dmarc.New(dmarc.Config{Resolver: zone, SPF: spf, AuthservID: authservID, Recorder: rec, Logger: miltertest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	for _, from := range []string{"a@reject.test", "a@quar.test"} {
		raw := "From: <" + from + ">\r\nSubject: hi\r\nX-Test-DKIM: dkim=pass (good) header.d=reject.test header.i=@reject.test header.s=s1 header.a=ed25519-sha256\r\n\r\n"
		m := &filter.Message{Conn: &filter.Conn{Addr: netip.MustParseAddr("198.51.100.1"), Helo: "mx.x.test"},
			MailFrom: "b@bounce.x.test", Rcpts: []string{"bob@Example.test"}, Headers: miltertest.Headers([]byte(raw))}
		miltertest.Run(t, m, "body\r\n", 0, fakeVerifier{}, f)
	}
	if len(rec.rows) != 1 {
		t.Fatalf("%d rows; want the one of reject.test (quar.test asks for no reports)", len(rec.rows))
	}
	r := rec.rows[0]
	if r.PolicyDomain != "reject.test" || r.HeaderFrom != "reject.test" || r.EnvelopeFrom != "bounce.x.test" || r.EnvelopeTo != "example.test" ||
		r.SourceIP != "198.51.100.1" || !r.DKIMAligned || r.SPFAligned || r.SPFResult != "fail" || r.SPFScope != "mfrom" ||
		r.Disposition != "none" || r.P != "reject" || r.RUA != "mailto:agg@reject.test" ||
		len(r.DKIM) != 1 || r.DKIM[0] != (dmarc.DKIMResult{Domain: "reject.test", Selector: "s1", Result: "pass"}) {
		t.Errorf("row %+v", r)
	}
}
