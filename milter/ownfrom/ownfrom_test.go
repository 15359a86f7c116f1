package ownfrom_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/emersion/go-milter"
	"github.com/postkit/postkit/milter/filter"
	"github.com/postkit/postkit/milter/milterd"
	"github.com/postkit/postkit/milter/miltertest"
	"github.com/postkit/postkit/milter/ownfrom"
)

const authservID = "mx.example.test"

func own(_ context.Context, d string) (bool, error) {
	switch d {
	case "example.test", "sub.example.test", "other.test":
		return true, nil
	case "broken.test":
		return false, errors.New("database is locked")
	}
	return false, nil
}

// spf authorises 192.0.2.10 for example.test; slow.test is ours with DNS
// trouble.
func spf(_ context.Context, ip netip.Addr, _ string, sender string) string {
	d := sender[strings.LastIndexByte(sender, '@')+1:]
	switch {
	case d == "example.test" && ip == netip.MustParseAddr("192.0.2.10"):
		return "pass"
	case d == "other.test":
		return "temperror"
	}
	return "softfail"
}

// fakeVerifier stands for dkimverify: at end of message it inserts our
// Authentication-Results with the dkim results named in X-Test-DKIM.
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

func TestOwnFrom(t *testing.T) {
	f, err := ownfrom.New(ownfrom.Config{Own: own, SPF: spf, AuthservID: authservID,
		Exempt: []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}})
	if err != nil {
		t.Fatal(err)
	}
	srv := miltertest.Start(t, "unix", milterd.Config{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}, fakeVerifier{}, f)
	tests := []struct {
		name   string
		client string
		from   string
		extra  string
		want   string // "accept", or the reply code and enhanced code
	}{
		{"foreign From", "198.51.100.1", "<a@outside.test>", "", "accept"},
		{"our domain, SPF softfail", "198.51.100.1", "Billing <billing@example.test>", "", "550 5.7.1"},
		{"our domain in capitals", "198.51.100.1", "billing@EXAMPLE.TEST", "", "550 5.7.1"},
		{"our domain, SPF pass", "192.0.2.10", "billing@example.test", "", "accept"},
		{"one of two authors ours", "198.51.100.1", "a@outside.test, billing@example.test", "", "550 5.7.1"},
		{"second From field ours", "198.51.100.1", "a@outside.test\r\nFrom: billing@example.test", "", "550 5.7.1"},
		{"display name is not an address", "198.51.100.1", `"billing@example.test via list" <list@lists.outside.test>`, "", "accept"},
		{"unparsable field still seen", "198.51.100.1", "billing@example.test <<broken", "", "550 5.7.1"},
		{"DKIM of the domain", "198.51.100.1", "billing@example.test", "dkim=pass header.d=example.test header.s=s1", "accept"},
		{"DKIM of a parent", "198.51.100.1", "billing@sub.example.test", "dkim=pass header.d=example.test", "accept"},
		{"DKIM of a child does not count", "198.51.100.1", "billing@example.test", "dkim=pass header.d=sub.example.test", "550 5.7.1"},
		{"DKIM of another domain", "198.51.100.1", "billing@example.test", "dkim=pass header.d=outside.test", "550 5.7.1"},
		{"DKIM failed", "198.51.100.1", "billing@example.test", "dkim=fail header.d=example.test", "550 5.7.1"},
		{"SPF temperror defers", "198.51.100.1", "billing@other.test", "", "451 4.7.24"},
		{"database trouble defers", "198.51.100.1", "billing@broken.test", "", "451 4.3.0"},
		{"exempt client", "203.0.113.9", "billing@example.test", "", "accept"},
		{"trusted client (outbound)", "127.0.0.1", "billing@example.test", "", "accept"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := srv.Dial(miltertest.ConnInfo{Hostname: "client.outside.test", Addr: tt.client, Port: 40000, Helo: "client.outside.test"})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			raw := "From: " + tt.from + "\r\nTo: u@example.test\r\nSubject: x\r\n"
			if tt.extra != "" {
				raw += "X-Test-DKIM: " + tt.extra + "\r\n"
			}
			res, err := c.Send(&miltertest.Message{From: "bounce@outside.test", Rcpts: []string{"u@example.test"}, Raw: []byte(raw + "\r\nbody\r\n")})
			if err != nil {
				t.Fatal(err)
			}
			got := "accept"
			if res.Action.Code != milter.ActAccept && res.Action.Code != milter.ActContinue {
				got = fmt.Sprintf("%d %s", res.Action.SMTPCode, res.Action.SMTPText)
			}
			if !strings.HasPrefix(got, tt.want) {
				t.Errorf("answer %q (at %s), want %s", got, res.Stage, tt.want)
			}
		})
	}
}

// A copy of our Authentication-Results that came with the message is never
// taken for the verifier's: only fields added during this pass count.
func TestForgedResultsIgnored(t *testing.T) {
	f, err := ownfrom.New(ownfrom.Config{Own: own, SPF: spf, AuthservID: authservID})
	if err != nil {
		t.Fatal(err)
	}
	forgedAR := "Authentication-Results: " + authservID + "; dkim=pass header.d=example.test\r\n"
	m := &filter.Message{Conn: &filter.Conn{Addr: netip.MustParseAddr("198.51.100.1")}, Headers: miltertest.Headers([]byte(forgedAR + "From: billing@example.test\r\n\r\n"))}
	if c := miltertest.Run(t, m, "", 0, f); c.Verdict != filter.Reject {
		t.Errorf("verdict %v, want Reject: the forged result counted", c.Verdict)
	}
}
