package dkimverify

import (
	"bufio"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/authres"
	"github.com/postkit/postkit/internal/dkimkey"
	"github.com/postkit/postkit/milter/dkimsign"
	"github.com/postkit/postkit/milter/filter"
	"github.com/postkit/postkit/milter/header"
	"github.com/postkit/postkit/milter/miltertest"
)

// fakeDNS answers TXT lookups from a map; names in temp fail temporarily.
type fakeDNS struct {
	mu    sync.Mutex
	txt   map[string][]string
	temp  map[string]bool
	calls int
}

func (f *fakeDNS) LookupTXT(ctx context.Context, name string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	name = strings.TrimSuffix(name, ".")
	if f.temp[name] {
		return nil, &net.DNSError{Err: "server failure", Name: name, IsTemporary: true}
	}
	if v, ok := f.txt[name]; ok {
		return v, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (f *fakeDNS) add(t testing.TB, sel, dom string, s crypto.Signer) {
	rec, err := dkimkey.Record(s.Public())
	if err != nil {
		t.Fatal(err)
	}
	f.txt[sel+"._domainkey."+dom] = []string{rec}
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

var (
	rsaOnce sync.Once
	rsaKey  *rsa.PrivateKey
)

func testRSAKey(t testing.TB) *rsa.PrivateKey {
	rsaOnce.Do(func() {
		k, err := dkimkey.Generate(dkimkey.RSA, 2048, nil)
		if err != nil {
			t.Fatal(err)
		}
		rsaKey = k.(*rsa.PrivateKey)
	})
	return rsaKey
}

func edKey() ed25519.PrivateKey {
	seed, _ := base64.StdEncoding.DecodeString("nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=")
	return ed25519.NewKeyFromSeed(seed)
}

// signed returns msg signed for example.org with an RSA (s=r) and an Ed25519
// (s=e) key, and a resolver that publishes both.
func signed(t testing.TB, msg string) (string, *fakeDNS) {
	rk, ek := testRSAKey(t), edKey()
	s, err := dkimsign.New(dkimsign.Config{Logger: quiet(), Keys: []dkimsign.Key{
		{Domain: "example.org", Selector: "r", Signer: rk},
		{Domain: "example.org", Selector: "e", Signer: ek}}})
	if err != nil {
		t.Fatal(err)
	}
	sigs, err := s.Sign(strings.NewReader(msg))
	if err != nil || len(sigs) != 2 {
		t.Fatalf("Sign = %d, %v", len(sigs), err)
	}
	dns := &fakeDNS{txt: map[string][]string{}, temp: map[string]bool{}}
	dns.add(t, "r", "example.org", rk)
	dns.add(t, "e", "example.org", ek)
	return "DKIM-Signature: " + sigs[0] + "\r\nDKIM-Signature: " + sigs[1] + "\r\n" + msg, dns
}

// splitMessage turns a raw message into milter headers and body.
func splitMessage(t testing.TB, raw string) ([]filter.Header, string) {
	br := bufio.NewReader(strings.NewReader(raw))
	hs, err := header.Read(br)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(br)
	return hs, string(body)
}

const plain = "From: Ann <ann@example.org>\r\nTo: bob@example.net\r\nSubject: test\r\n\r\nHello  Bob,\r\nbye.\r\n"

func TestFilter(t *testing.T) {
	good, dns := signed(t, plain)
	tests := []struct {
		name     string
		raw      string
		outbound bool
		temp     string // name failing temporarily
		drop     string // record removed
		want     []string
	}{
		{"both pass", good, false, "", "", []string{"dkim=pass header.a=rsa-sha256 header.b=", "header.d=example.org header.i=@example.org header.s=r",
			"dkim=pass header.a=ed25519-sha256", "header.s=e"}},
		{"body changed", strings.Replace(good, "Hello", "Hallo", 1), false, "", "", []string{"dkim=fail reason=\"body hash did not verify\"", "header.s=r", "header.s=e"}},
		{"header changed", strings.Replace(good, "Subject: test", "Subject: t3st", 1), false, "", "", []string{"dkim=fail reason=\"signature did not verify"}},
		{"unsigned", plain, false, "", "", []string{"dkim=none"}},
		{"dns servfail", good, false, "r._domainkey.example.org", "", []string{"dkim=temperror reason=\"key unavailable", "header.s=r;", "dkim=pass"}},
		{"no key", good, false, "", "e._domainkey.example.org", []string{"dkim=pass", "dkim=permerror reason=\"no key for signature", "header.s=e"}},
		{"malformed signature", "DKIM-Signature: v=1; a=rsa-sha256; d=example.org\r\n" + plain, false, "", "", []string{"dkim=permerror", "header.d=example.org"}},
		{"outbound untouched", good, true, "", "", nil},
	}
	for _, tc := range tests {
		d := &fakeDNS{txt: map[string][]string{}, temp: map[string]bool{}}
		for k, v := range dns.txt {
			if k != tc.drop {
				d.txt[k] = v
			}
		}
		if tc.temp != "" {
			d.temp[tc.temp] = true
		}
		v, err := New(Config{Resolver: d, AuthservID: "mx.example.net", Logger: quiet()})
		if err != nil {
			t.Fatal(err)
		}
		for _, chunk := range []int{5, 65536} {
			hs, body := splitMessage(t, tc.raw)
			m := &filter.Message{QueueID: "Q", Outbound: tc.outbound, Headers: hs}
			c := miltertest.Run(t, m, body, chunk, v)
			if tc.want == nil {
				if len(c.Ops) != 0 {
					t.Errorf("%s: ops %+v; want none", tc.name, c.Ops)
				}
				continue
			}
			if len(c.Ops) != 1 || c.Ops[0].Kind != filter.OpInsertHeader || c.Ops[0].Index != 0 || c.Ops[0].Name != "Authentication-Results" {
				t.Fatalf("%s: ops %+v; want one Authentication-Results at the top", tc.name, c.Ops)
			}
			ar := c.Ops[0].Value
			if !strings.HasPrefix(ar, "mx.example.net;\r\n\tdkim=") {
				t.Errorf("%s: %q does not start with the authserv-id", tc.name, ar)
			}
			flat := strings.ReplaceAll(ar, "\r\n\t", " ")
			for _, w := range tc.want {
				if !strings.Contains(flat, w) {
					t.Errorf("%s chunk %d: %q lacks %q", tc.name, chunk, flat, w)
				}
			}
			// The value must parse back (RFC 8601 syntax).
			if id, res, err := authres.Parse(strings.ReplaceAll(ar, "\r\n\t", " ")); err != nil || id != "mx.example.net" || len(res) == 0 {
				t.Errorf("%s: authres.Parse(%q) = %q, %d results, %v", tc.name, ar, id, len(res), err)
			}
		}
	}
}

func TestForgedResults(t *testing.T) {
	v, err := New(Config{Resolver: &fakeDNS{}, AuthservID: "mx.example.net", Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	hs := []filter.Header{
		{Name: "Authentication-Results", Value: "MX.example.net; dkim=pass header.d=bank.example"},
		{Name: "Authentication-Results", Value: "other.example; spf=pass"},
		{Name: "Received", Value: "from x"},
		{Name: "Authentication-Results", Value: "(comment) mx.example.net 1 ; dkim=pass"},
		{Name: "Authentication-Results", Value: "mx.example.net.evil; dkim=pass"},
		{Name: "From", Value: "a@example.org"},
	}
	m := &filter.Message{Headers: hs}
	c := miltertest.Run(t, m, "body\r\n", 100, v)
	var deleted []int
	for _, op := range c.Ops {
		if op.Kind == filter.OpChangeHeader && op.Value == "" {
			deleted = append(deleted, op.Index)
		}
	}
	// Occurrence 1 deleted, then the third field is occurrence 2 of the view.
	if fmt.Sprint(deleted) != "[1 2]" {
		t.Errorf("deleted occurrences %v; want [1 2]", deleted)
	}
	var left []string
	for _, h := range m.Headers {
		if h.Name == "Authentication-Results" {
			left = append(left, header.ServID(h.Value))
		}
	}
	if fmt.Sprint(left) != "[mx.example.net other.example mx.example.net.evil]" {
		t.Errorf("remaining Authentication-Results ids %v", left)
	}
	if !strings.HasPrefix(m.Headers[0].Value, "mx.example.net;\r\n\tdkim=none") {
		t.Errorf("top header %+v; want our dkim=none", m.Headers[0])
	}
}

// FuzzVerify feeds arbitrary messages through the filter: never a panic,
// always exactly one Authentication-Results.
func FuzzVerify(f *testing.F) {
	f.Add("DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=r; h=from; bh=; b=\r\nFrom: a\r\n", "body\r\n")
	f.Add("DKIM-Signature: \r\n", "")
	f.Add("DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed; d=example.org; s=e; h=from:from; bh=AAAA; b=AAAA; l=1\r\nFrom: x\r\n", "\r\n\r\n")
	v, err := New(Config{Resolver: &fakeDNS{txt: map[string][]string{"e._domainkey.example.org": {"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="}}}, AuthservID: "mx", Logger: quiet()})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, head, body string) {
		var hs []filter.Header
		for _, line := range strings.Split(head, "\r\n") {
			n, val, ok := strings.Cut(line, ":")
			if !ok || n == "" || strings.ContainsAny(n, " \t\r\n") {
				continue
			}
			hs = append(hs, filter.Header{Name: n, Value: strings.TrimPrefix(val, " ")})
		}
		m := &filter.Message{Headers: hs}
		c := miltertest.Run(t, m, body, 3, v)
		n := 0
		for _, op := range c.Ops {
			if op.Kind == filter.OpInsertHeader && op.Name == "Authentication-Results" {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%d Authentication-Results added", n)
		}
	})
}

// TestRFC8463 verifies the signed example of RFC 8463 Appendix A.3 with the
// key records of A.2: both the Ed25519 and the RSA signature pass.
func TestRFC8463(t *testing.T) {
	msg := "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n" +
		" d=football.example.com; i=@football.example.com;\r\n" +
		" q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n" +
		" subject : date : message-id : from : subject : date;\r\n" +
		" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n" +
		" b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus\r\n" +
		" Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==\r\n" +
		"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;\r\n" +
		" d=football.example.com; i=@football.example.com;\r\n" +
		" q=dns/txt; s=test; t=1528637909; h=from : to : subject :\r\n" +
		" date : message-id : from : subject : date;\r\n" +
		" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n" +
		" b=F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3\r\n" +
		" DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2Jz\r\n" +
		" dA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=\r\n" +
		"From: Joe SixPack <joe@football.example.com>\r\n" +
		"To: Suzie Q <suzie@shopping.example.net>\r\n" +
		"Subject: Is dinner ready?\r\n" +
		"Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n" +
		"Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n" +
		"\r\n" +
		"Hi.\r\n" +
		"\r\n" +
		"We lost the game.  Are you hungry yet?\r\n" +
		"\r\n" +
		"Joe.\r\n"
	dns := &fakeDNS{txt: map[string][]string{
		"brisbane._domainkey.football.example.com": {"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="},
		"test._domainkey.football.example.com":     {"v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bdOKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyVYLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB"},
	}}
	v, err := New(Config{Resolver: dns, AuthservID: "mx", Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	res, err := v.VerifyMessage(context.Background(), strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 {
		t.Fatalf("%d results; want 2: %+v", len(res), res)
	}
	for i, want := range []struct{ s, a string }{{"brisbane", "ed25519-sha256"}, {"test", "rsa-sha256"}} {
		r := res[i]
		if r.Value != authres.ResultPass || r.Selector != want.s || r.Algorithm != want.a || r.Domain != "football.example.com" {
			t.Errorf("result %d = %+v; want pass s=%s a=%s", i, r, want.s, want.a)
		}
	}
	// And one changed byte fails it.
	res, _ = v.VerifyMessage(context.Background(), strings.NewReader(strings.Replace(msg, "hungry", "Hungry", 1)))
	for i, r := range res {
		if r.Value != authres.ResultFail {
			t.Errorf("tampered: result %d = %s; want fail", i, r.Value)
		}
	}
}

// TestNoGoroutineLeak runs many messages, some abandoned, and checks that the
// verification goroutines end.
func TestNoGoroutineLeak(t *testing.T) {
	good, dns := signed(t, plain)
	v, err := New(Config{Resolver: dns, AuthservID: "mx", Logger: quiet(), MessageTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	base := runtime.NumGoroutine()
	for i := 0; i < 30; i++ {
		hs, body := splitMessage(t, good)
		m := &filter.Message{Headers: hs}
		c := filter.NewChanges(m)
		b, err := v.Headers(m, c)
		if err != nil || b == nil {
			t.Fatal(b, err)
		}
		b.Write([]byte(body[:3]))
		switch i % 3 {
		case 0:
			b.(interface{ Abort() }).Abort() // the daemon saw the client go
		case 1:
			// dropped without a word: the message timeout ends it
		case 2:
			b.Write([]byte(body[3:]))
			b.End(m, c)
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > base && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base {
		t.Errorf("%d goroutines left; started with %d", n, base)
	}
}

func TestNew(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Error("New without resolver succeeded")
	}
	if _, err := New(Config{Resolver: &fakeDNS{}, AuthservID: "a b"}); err == nil {
		t.Error("New with a spaced authserv-id succeeded")
	}
	v, err := New(Config{Resolver: &fakeDNS{}})
	if err != nil || v.AuthservID() == "" {
		t.Errorf("default authserv-id: %v, %v", v, err)
	}
}

func TestLookupClassifies(t *testing.T) {
	v, _ := New(Config{Resolver: &fakeDNS{txt: map[string][]string{}, temp: map[string]bool{"t": true}}, AuthservID: "mx"})
	f := v.lookup(context.Background())
	_, err := f("t")
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Temporary() {
		t.Errorf("temporary failure gives %v; want a temporary net.Error", err)
	}
	_, err = f("missing")
	if err == nil || errors.As(err, &ne) {
		t.Errorf("missing record gives %v; want a permanent error", err)
	}
}
