package dnstest

import (
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestServer(t *testing.T) {
	srv, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	z, err := ParseZone(
		`a.example. 300 IN A 192.0.2.1`,
		`alias.example. 300 IN CNAME a.example.`,
		`x.sub.example. 300 IN TXT "deep"`,
	)
	if err != nil {
		t.Fatal(err)
	}
	z.Timeout("slow.example")
	srv.Set(z)
	c := &dns.Client{Timeout: 200 * time.Millisecond}
	tests := []struct {
		name    string
		qtype   uint16
		rcode   int
		answers int
		silent  bool
	}{
		{"a.example.", dns.TypeA, dns.RcodeSuccess, 1, false},
		{"A.EXAMPLE.", dns.TypeA, dns.RcodeSuccess, 1, false},
		{"a.example.", dns.TypeTXT, dns.RcodeSuccess, 0, false},
		{"alias.example.", dns.TypeA, dns.RcodeSuccess, 2, false},
		{"sub.example.", dns.TypeTXT, dns.RcodeSuccess, 0, false}, // empty non-terminal
		{"none.example.", dns.TypeA, dns.RcodeNameError, 0, false},
		{"slow.example.", dns.TypeTXT, 0, 0, true},
	}
	for _, tt := range tests {
		m := new(dns.Msg)
		m.SetQuestion(tt.name, tt.qtype)
		r, _, err := c.Exchange(m, srv.Addr())
		if tt.silent {
			if err == nil {
				t.Errorf("%s: got an answer, want silence", tt.name)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if r.Rcode != tt.rcode || len(r.Answer) != tt.answers {
			t.Errorf("%s %s: rcode %d, %d answers; want %d, %d", tt.name, dns.TypeToString[tt.qtype], r.Rcode, len(r.Answer), tt.rcode, tt.answers)
		}
		if len(r.Answer) == 0 && len(r.Ns) != 1 {
			t.Errorf("%s: negative answer without SOA", tt.name)
		}
	}
	if srv.Queries() != int64(len(tests)) {
		t.Errorf("Queries() = %d, want %d", srv.Queries(), len(tests))
	}
}

func TestSetTTL(t *testing.T) {
	srv, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	z, err := ParseZone(`a.example. 300 IN A 192.0.2.1`, `b.example. 60 IN TXT "x"`)
	if err != nil {
		t.Fatal(err)
	}
	z.SetTTL(7)
	srv.Set(z)
	c := &dns.Client{Timeout: time.Second}
	for _, q := range []struct {
		name  string
		qtype uint16
	}{{"a.example.", dns.TypeA}, {"b.example.", dns.TypeTXT}, {"a.example.", dns.TypeTXT}, {"none.example.", dns.TypeA}} {
		m := new(dns.Msg)
		m.SetQuestion(q.name, q.qtype)
		r, _, err := c.Exchange(m, srv.Addr())
		if err != nil {
			t.Fatalf("%s: %v", q.name, err)
		}
		for _, rr := range append(r.Answer, r.Ns...) {
			if rr.Header().Ttl != 7 {
				t.Errorf("%s %s: %s has TTL %d, want 7", q.name, dns.TypeToString[q.qtype], rr, rr.Header().Ttl)
			}
			if soa, ok := rr.(*dns.SOA); ok && soa.Minttl != 7 {
				t.Errorf("%s: SOA MINIMUM %d, want 7", q.name, soa.Minttl)
			}
		}
		if len(r.Answer)+len(r.Ns) == 0 {
			t.Errorf("%s: empty answer", q.name)
		}
	}
}

func TestSynth(t *testing.T) {
	srv, err := Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	z, err := ParseZone(`static.example. 300 IN A 192.0.2.1`)
	if err != nil {
		t.Fatal(err)
	}
	z.Synth = func(name string) []string {
		switch {
		case strings.HasPrefix(name, "bad."):
			return []string{name + " 300 IN TXT \"unterminated"}
		case strings.HasPrefix(name, "other."):
			return []string{"elsewhere.example. 300 IN A 192.0.2.9"}
		case strings.HasSuffix(name, ".gen.example."):
			return []string{name + ` 60 IN TXT "for ` + name + `"`, name + " 60 IN A 192.0.2.7"}
		}
		return nil
	}
	srv.Set(z)
	c := &dns.Client{Timeout: time.Second}
	tests := []struct {
		name    string
		qtype   uint16
		rcode   int
		answers int
	}{
		{"x1.gen.example.", dns.TypeTXT, dns.RcodeSuccess, 1},
		{"X2.GEN.example.", dns.TypeA, dns.RcodeSuccess, 1},
		{"x3.gen.example.", dns.TypeMX, dns.RcodeSuccess, 0},
		{"static.example.", dns.TypeA, dns.RcodeSuccess, 1},
		{"none.example.", dns.TypeA, dns.RcodeNameError, 0},
		{"bad.example.", dns.TypeTXT, dns.RcodeServerFailure, 0},
		{"other.example.", dns.TypeA, dns.RcodeServerFailure, 0},
	}
	for _, tt := range tests {
		m := new(dns.Msg)
		m.SetQuestion(tt.name, tt.qtype)
		r, _, err := c.Exchange(m, srv.Addr())
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if r.Rcode != tt.rcode || len(r.Answer) != tt.answers {
			t.Errorf("%s %s: rcode %d, %d answers; want %d, %d", tt.name, dns.TypeToString[tt.qtype], r.Rcode, len(r.Answer), tt.rcode, tt.answers)
		}
		if tt.qtype == dns.TypeTXT && len(r.Answer) == 1 {
			if got := r.Answer[0].(*dns.TXT).Txt[0]; got != "for "+strings.ToLower(tt.name) {
				t.Errorf("%s: TXT %q", tt.name, got)
			}
		}
	}
}

func TestLoadSPFSuite(t *testing.T) {
	sc, err := LoadSPFSuite("../../policyd/spfcheck/testdata/rfc7208-tests.yml")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, s := range sc {
		n += len(s.Tests)
		if s.Zone == nil {
			t.Errorf("scenario %q has no zone", s.Description)
		}
	}
	if len(sc) != 16 || n != 203 {
		t.Errorf("%d scenarios, %d tests; want 16, 203", len(sc), n)
	}
	if _, err := LoadSPFSuite("no-such-file.yml"); err == nil {
		t.Error("missing file accepted")
	}
}
