package dkimsign

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/postkit/postkit/internal/dkimkey"
	"github.com/postkit/postkit/milter/filter"
	"github.com/postkit/postkit/milter/header"
	"github.com/postkit/postkit/milter/miltertest"
)

// RFC 8463 Appendix A.1: the Ed25519 secret key (the RFC 8032 section 7.1
// test 1 seed) and A.2's key records.
const (
	rfcEd25519Seed = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A="
	rfcEd25519TXT  = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
)

// rfcMessage is the RFC 8463 Appendix A.3 message without its signatures.
const rfcMessage = "From: Joe SixPack <joe@football.example.com>\r\n" +
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

func rfcEd25519Key(t testing.TB) ed25519.PrivateKey {
	seed, err := base64.StdEncoding.DecodeString(rfcEd25519Seed)
	if err != nil {
		t.Fatal(err)
	}
	return ed25519.NewKeyFromSeed(seed)
}

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

// records maps "sel._domainkey.dom" to key records for the go-msgauth verifier.
type records map[string]string

func (r records) add(t testing.TB, sel, dom string, s crypto.Signer) {
	rec, err := dkimkey.Record(s.Public())
	if err != nil {
		t.Fatal(err)
	}
	r[sel+"._domainkey."+dom] = rec
}

func (r records) lookup(name string) ([]string, error) {
	if v, ok := r[name]; ok {
		return []string{v}, nil
	}
	return nil, fmt.Errorf("no record %s", name)
}

// verify checks a signed message with go-msgauth and returns one error (or
// nil) per signature.
func verify(t testing.TB, msg string, recs records) []error {
	t.Helper()
	vs, err := dkim.VerifyWithOptions(strings.NewReader(msg), &dkim.VerifyOptions{LookupTXT: recs.lookup})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	var errs []error
	for _, v := range vs {
		errs = append(errs, v.Err)
	}
	return errs
}

func prepend(sigs []string, msg string) string {
	var b strings.Builder
	for _, s := range sigs {
		b.WriteString("DKIM-Signature: " + s + "\r\n")
	}
	return b.String() + msg
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestSignVerifies(t *testing.T) {
	rk, ek := testRSAKey(t), rfcEd25519Key(t)
	recs := records{}
	recs.add(t, "rsa", "football.example.com", rk)
	recs.add(t, "brisbane", "football.example.com", ek)
	msgs := map[string]string{
		"rfc": rfcMessage,
		"folded and spaced": "From: \"Joe\"\r\n <joe@football.example.com>\r\nSubject:  Hello   there \t\r\nTo: a@b.example\r\n" +
			"Cc: c@d.example\r\nReceived: x\r\n\r\nline  with   spaces \t\r\n\r\n\r\n",
		"empty body": "From: joe@football.example.com\r\nSubject: x\r\n\r\n",
	}
	for _, canon := range []string{"relaxed/simple", "simple/simple", "relaxed/relaxed", "simple/relaxed"} {
		for name, msg := range msgs {
			s, err := New(Config{
				Canonicalization: canon,
				Keys: []Key{
					{Domain: "football.example.com", Selector: "rsa", Signer: rk},
					{Domain: "football.example.com", Selector: "brisbane", Signer: ek},
				},
				Logger: quiet(),
			})
			if err != nil {
				t.Fatal(err)
			}
			sigs, err := s.Sign(strings.NewReader(msg))
			if err != nil {
				t.Fatalf("%s %s: %v", canon, name, err)
			}
			if len(sigs) != 2 {
				t.Fatalf("%s %s: %d signatures; want 2", canon, name, len(sigs))
			}
			if !strings.Contains(sigs[0], "a=rsa-sha256") || !strings.Contains(sigs[1], "a=ed25519-sha256") {
				t.Errorf("%s %s: algorithms: %q / %q", canon, name, sigs[0], sigs[1])
			}
			if !strings.Contains(sigs[0], "c="+canon+";") {
				t.Errorf("%s %s: no c=%s in %q", canon, name, canon, sigs[0])
			}
			signed := prepend(sigs, msg)
			for i, err := range verify(t, signed, recs) {
				if err != nil {
					t.Errorf("%s %s: signature %d: %v\n%s", canon, name, i, err, signed)
				}
			}
			// A change to the body must break both signatures.
			tampered := strings.Replace(signed, "\r\n\r\n", "\r\n\r\nX", 1)
			if !strings.Contains(signed, "\r\n\r\n") {
				tampered = signed + "\r\nX"
			}
			for i, err := range verify(t, tampered, recs) {
				if err == nil {
					t.Errorf("%s %s: signature %d verifies after tampering", canon, name, i)
				}
			}
		}
	}
}

// TestRFC8463Vector rebuilds the header hash of RFC 8463 Appendix A.3's
// Ed25519 signature with this package's canonicalization and header selection
// and checks that signing it gives the RFC's bytes (Ed25519 is deterministic).
func TestRFC8463Vector(t *testing.T) {
	const wantBH = "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8="
	const wantB = "/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11BusFa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw=="
	sigValue := "v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n" +
		" d=football.example.com; i=@football.example.com;\r\n" +
		" q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n" +
		" subject : date : message-id : from : subject : date;\r\n" +
		" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n" +
		" b="
	br := bufio.NewReader(strings.NewReader(rfcMessage))
	hs, err := header.Read(br)
	if err != nil {
		t.Fatal(err)
	}
	// Body hash, relaxed.
	h := sha256.New()
	c := newBodyCanon(h, true)
	br.WriteTo(c)
	c.Close()
	if got := base64.StdEncoding.EncodeToString(h.Sum(nil)); got != wantBH {
		t.Errorf("bh = %s; want %s", got, wantBH)
	}
	names, picked := selectHeaders(hs, []string{"from", "to", "subject", "date", "message-id"}, map[string]bool{"from": true, "subject": true, "date": true})
	if got := strings.Join(names, ":"); got != "from:from:to:subject:subject:date:date:message-id" {
		t.Errorf("names = %s", got) // our order groups repeats; the RFC's list differs but picks the same fields
	}
	var data []byte
	for _, p := range picked {
		data = appendHeader(data, p.Name, p.Value, true)
	}
	// The RFC lists from:to:subject:date:message-id then the oversigned
	// names, which pick nothing: hash in the RFC's order.
	data = data[:0]
	for _, n := range []string{"From", "To", "Subject", "Date", "Message-ID"} {
		for _, p := range hs {
			if p.Name == n {
				data = appendHeader(data, p.Name, p.Value, true)
			}
		}
	}
	sf := appendHeader(nil, "DKIM-Signature", sigValue, true)
	h.Reset()
	h.Write(data)
	h.Write(sf[:len(sf)-2])
	sig := ed25519.Sign(rfcEd25519Key(t), h.Sum(nil))
	if got := base64.StdEncoding.EncodeToString(sig); got != wantB {
		t.Errorf("b = %s; want %s", got, wantB)
	}
}

func TestSignatureShape(t *testing.T) {
	ek := rfcEd25519Key(t)
	now := time.Now().Truncate(time.Second)
	s, err := New(Config{Keys: []Key{{Domain: "football.example.com", Selector: "brisbane", Signer: ek}},
		Now: func() time.Time { return now }, Expiration: time.Hour, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	msg := "From: a@football.example.com\r\nTo: x@y.example\r\nTo: z@y.example\r\nSubject: s\r\nX-Other: o\r\n\r\nbody\r\n"
	sigs, err := s.Sign(strings.NewReader(msg))
	if err != nil || len(sigs) != 1 {
		t.Fatalf("Sign = %v, %v", sigs, err)
	}
	v := sigs[0]
	for _, want := range []string{"v=1;", "a=ed25519-sha256;", "c=relaxed/simple;", "d=football.example.com;", "s=brisbane;",
		fmt.Sprintf("t=%d;", now.Unix()), fmt.Sprintf("x=%d;", now.Unix()+3600), "h=from:from:subject:to:to;", "bh="} {
		if !strings.Contains(v, want) {
			t.Errorf("signature lacks %q:\n%s", want, v)
		}
	}
	for _, bad := range []string{"l=", "x-other", "i="} {
		if strings.Contains(v, bad) {
			t.Errorf("signature has %q:\n%s", bad, v)
		}
	}
	for _, line := range strings.Split(v, "\r\n") {
		if len(line) > 78 {
			t.Errorf("line longer than 78: %q", line)
		}
	}
	recs := records{}
	recs.add(t, "brisbane", "football.example.com", ek)
	if errs := verify(t, prepend(sigs, msg), recs); errs[0] != nil {
		t.Error(errs[0])
	}
	// An added From breaks the oversigned signature.
	forged := prepend(sigs, "From: evil@attacker.example\r\n"+msg)
	if errs := verify(t, forged, recs); errs[0] == nil {
		t.Error("signature still verifies with a second From added")
	}
}

func rawMessage(hs []filter.Header, body string) string {
	var b strings.Builder
	for _, h := range hs {
		b.WriteString(h.Name + ": " + h.Value + "\r\n")
	}
	return b.String() + "\r\n" + body
}

func TestFilter(t *testing.T) {
	rk, ek := testRSAKey(t), rfcEd25519Key(t)
	recs := records{}
	recs.add(t, "r1", "example.org", rk)
	recs.add(t, "e1", "example.org", ek)
	recs.add(t, "e1", "other.example", ek)
	cfg := Config{
		Keys: []Key{
			{Domain: "example.org", Selector: "r1", Signer: rk},
			{Domain: "example.org", Selector: "e1", Signer: ek},
			{Domain: "example.org", Selector: "old", KeyFile: "/nonexistent/old.private", Disabled: true},
			{Domain: "other.example", Selector: "e1", Signer: ek},
		},
		Logger: quiet(),
	}
	body := strings.Repeat("Line of the body, with  spaces.\r\n", 200) + "\r\n\r\n"
	tests := []struct {
		name     string
		outbound bool
		subdoms  bool
		headers  []filter.Header
		wantSigs []string // selectors, top first
		wantD    string
	}{
		{"inbound untouched", false, false, []filter.Header{{Name: "From", Value: "a@example.org"}}, nil, ""},
		{"two keys", true, false, []filter.Header{{Name: "From", Value: "Ann <ann@Example.ORG>"}, {Name: "Subject", Value: "hi"}}, []string{"r1", "e1"}, "example.org"},
		{"other domain", true, false, []filter.Header{{Name: "From", Value: "b@other.example"}}, []string{"e1"}, "other.example"},
		{"unknown domain", true, false, []filter.Header{{Name: "From", Value: "c@nokey.example"}}, nil, ""},
		{"subdomain without policy", true, false, []filter.Header{{Name: "From", Value: "d@lists.example.org"}}, nil, ""},
		{"subdomain with policy", true, true, []filter.Header{{Name: "From", Value: "d@a.lists.example.org"}}, []string{"r1", "e1"}, "example.org"},
		{"no From", true, false, []filter.Header{{Name: "Subject", Value: "x"}}, nil, ""},
		{"two From", true, false, []filter.Header{{Name: "From", Value: "a@example.org"}, {Name: "From", Value: "b@example.org"}}, nil, ""},
		{"already signed by r1", true, false, []filter.Header{
			{Name: "DKIM-Signature", Value: "v=1; a=rsa-sha256; d=example.org;\r\n\ts=r1; b=xx"}, {Name: "From", Value: "a@example.org"}}, []string{"e1"}, "example.org"},
		{"signed by someone else", true, false, []filter.Header{
			{Name: "DKIM-Signature", Value: "v=1; a=rsa-sha256; d=example.net; s=r1; b=xx"}, {Name: "From", Value: "a@example.org"}}, []string{"r1", "e1"}, "example.org"},
	}
	for _, tc := range tests {
		cfg.Subdomains = tc.subdoms
		s, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		for _, chunk := range []int{7, 65536} {
			m := &filter.Message{QueueID: "Q1", Outbound: tc.outbound, Headers: append([]filter.Header(nil), tc.headers...)}
			orig := append([]filter.Header(nil), tc.headers...)
			c := miltertest.Run(t, m, body, chunk, s)
			if len(c.Ops) != len(tc.wantSigs) {
				t.Fatalf("%s: %d ops; want %d: %+v", tc.name, len(c.Ops), len(tc.wantSigs), c.Ops)
			}
			for i, op := range c.Ops {
				if op.Kind != filter.OpInsertHeader || op.Index != 0 || op.Name != "DKIM-Signature" {
					t.Errorf("%s: op %d = %+v; want insert DKIM-Signature at 0", tc.name, i, op)
				}
			}
			for i, sel := range tc.wantSigs {
				if got := m.Headers[i]; !strings.Contains(got.Value, " s="+sel+";") || !strings.Contains(got.Value, " d="+tc.wantD+";") {
					t.Errorf("%s: header %d = %q; want s=%s d=%s", tc.name, i, got.Value, sel, tc.wantD)
				}
			}
			if len(tc.wantSigs) > 0 {
				msg := rawMessage(m.Headers, body)
				for i, err := range verify(t, msg, recs) {
					if err != nil && !strings.Contains(m.Headers[i].Value, "b=xx") {
						t.Errorf("%s chunk %d: signature %d: %v", tc.name, chunk, i, err)
					}
				}
			}
			_ = orig
		}
	}
}

func TestReload(t *testing.T) {
	ek := rfcEd25519Key(t)
	_, ek2, _ := ed25519.GenerateKey(nil)
	s, err := New(Config{Keys: []Key{{Domain: "example.org", Selector: "s1", Signer: ek}}, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	msg := "From: a@example.org\r\n\r\nhi\r\n"
	sel := func() string {
		sigs, err := s.Sign(strings.NewReader(msg))
		if err != nil || len(sigs) != 1 {
			t.Fatalf("Sign = %v, %v", sigs, err)
		}
		_, rest, _ := strings.Cut(sigs[0], " s=")
		v, _, _ := strings.Cut(rest, ";")
		return v
	}
	if got := sel(); got != "s1" {
		t.Fatalf("selector %s; want s1", got)
	}
	// Rotation: s1 kept published but disabled, s2 active.
	if err := s.Reload(Config{Keys: []Key{
		{Domain: "example.org", Selector: "s1", Signer: ek, Disabled: true},
		{Domain: "example.org", Selector: "s2", Signer: ek2}}}); err != nil {
		t.Fatal(err)
	}
	if got := sel(); got != "s2" {
		t.Fatalf("after reload: selector %s; want s2", got)
	}
	// A failed reload keeps the previous keys.
	if err := s.Reload(Config{Keys: []Key{{Domain: "example.org", Selector: "s3", KeyFile: "/nonexistent"}}}); err == nil {
		t.Fatal("Reload with a missing key file succeeded")
	}
	if got := sel(); got != "s2" {
		t.Fatalf("after failed reload: selector %s; want s2", got)
	}
}

func TestConfigErrors(t *testing.T) {
	ek := rfcEd25519Key(t)
	weak, err := rsa.GenerateKey(strings.NewReader(strings.Repeat("x", 1<<16)), 1024)
	if err != nil {
		weak = nil
	}
	dir := t.TempDir()
	weakFile := filepath.Join(dir, "weak.private")
	if weak != nil {
		data, _ := dkimkey.MarshalPrivateKey(weak)
		os.WriteFile(weakFile, data, 0o600)
	}
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"bad canon", Config{Canonicalization: "loose/simple"}, "canonicalization"},
		{"no From", Config{Headers: []string{"Subject"}}, "From"},
		{"oversign unknown", Config{Oversign: []string{"X-Foo"}}, "oversigned"},
		{"bad domain", Config{Keys: []Key{{Domain: "localhost", Selector: "s", Signer: ek}}}, "signing domain"},
		{"bad selector", Config{Keys: []Key{{Domain: "example.org", Selector: "a b", Signer: ek}}}, "selector"},
		{"duplicate", Config{Keys: []Key{{Domain: "example.org", Selector: "s", Signer: ek}, {Domain: "Example.org", Selector: "s", Signer: ek}}}, "twice"},
		{"no key file", Config{Keys: []Key{{Domain: "example.org", Selector: "s"}}}, "no key file"},
		{"weak key file", Config{Keys: []Key{{Domain: "example.org", Selector: "s", KeyFile: weakFile}}}, "2048"},
	}
	for _, tc := range tests {
		_, err := New(tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: New = %v; want error with %q", tc.name, err, tc.want)
		}
	}
}

func FuzzReadHeaders(f *testing.F) {
	f.Add(rfcMessage)
	f.Add("From: a\r\n b\r\n\r\n")
	f.Add("x")
	ek := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32))
	s, err := New(Config{Keys: []Key{{Domain: "football.example.com", Selector: "s", Signer: ek}}, Logger: quiet()})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, msg string) {
		hs, err := header.Read(bufio.NewReader(strings.NewReader(msg)))
		if err != nil {
			return
		}
		header.FromDomain(hs)
		sigs, err := s.Sign(strings.NewReader(msg))
		if err != nil || len(sigs) == 0 {
			return
		}
		recs := records{}
		recs.add(t, "s", "football.example.com", ek)
		vs, err := dkim.VerifyWithOptions(strings.NewReader(prepend(sigs, msg)), &dkim.VerifyOptions{LookupTXT: recs.lookup})
		if err != nil {
			return // go-msgauth refuses some headers we accept
		}
		if len(vs) != len(sigs) {
			t.Fatalf("go-msgauth found %d signatures in a message we gave %d", len(vs), len(sigs))
		}
		if vs[0].Err != nil && !undefinedCanon(msg) {
			t.Errorf("signature of %q does not verify: %v", msg, vs[0].Err)
		}
	})
}

// undefinedCanon reports whether msg holds what RFC 5322 forbids and RFC 6376
// section 3.4 does not say how to canonicalize: a CR not followed by LF (we
// drop it from a relaxed header value, go-msgauth makes it a space, dkimpy
// keeps it) or a NUL (cut short by some verifiers).
func undefinedCanon(msg string) bool {
	if strings.IndexByte(msg, 0) >= 0 {
		return true
	}
	for i := 0; i < len(msg); i++ {
		if msg[i] == '\r' && (i+1 == len(msg) || msg[i+1] != '\n') {
			return true
		}
	}
	return false
}
