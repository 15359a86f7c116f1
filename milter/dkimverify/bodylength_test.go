package dkimverify

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/authres"
	"github.com/postkit/postkit/internal/dkimkey"
)

// dkimpyLengthSign signs stdin with dkimpy with a body length count (l=):
// argv = selector, domain, header/body canonicalization, key file.
const dkimpyLengthSign = `
import sys, dkim
sel, dom, canon, keyfile = sys.argv[1:5]
h, b = canon.split('/')
msg = sys.stdin.buffer.read()
sys.stdout.buffer.write(dkim.sign(msg, sel.encode(), dom.encode(), open(keyfile, 'rb').read(),
    canonicalize=(h.encode(), b.encode()), include_headers=[b'from', b'to', b'subject'], length=True))
`

// dkimpyVerify exits 0 when dkimpy verifies the message on stdin, with the
// key record given as argv[1].
const dkimpyVerify = `
import sys, dkim
rec = sys.argv[1].encode()
ok = dkim.verify(sys.stdin.buffer.read(), dnsfunc=lambda name, timeout=5: rec)
sys.exit(0 if ok else 1)
`

// TestBodyLength verifies l= signatures made by dkimpy under each setting:
// untouched, with text appended after the signed length, and with the
// signed part changed; dkimpy's own verdict on the same messages is the
// reference for the default (pass).
func TestBodyLength(t *testing.T) {
	py := needPythonDKIM(t)
	dir := t.TempDir()
	rk := testRSAKey(t)
	pem, _ := dkimkey.MarshalPrivateKey(rk)
	os.WriteFile(dir+"/rsa.pem", pem, 0o600)
	dns := &fakeDNS{txt: map[string][]string{}, temp: map[string]bool{}}
	dns.add(t, "len", "example.org", rk)
	rec := dns.txt["len._domainkey.example.org"][0]
	msg := "From: Ann <ann@example.org>\r\nTo: bob@example.net\r\nSubject: l=\r\n\r\nSigned  part \r\nsecond line\r\n"
	for _, canon := range []string{"relaxed/simple", "relaxed/relaxed", "simple/simple"} {
		cmd := exec.Command(py, "-c", dkimpyLengthSign, "len", "example.org", canon, dir+"/rsa.pem")
		cmd.Stdin = strings.NewReader(msg)
		sig, err := cmd.Output()
		if err != nil {
			t.Fatalf("dkimpy sign %s: %v", canon, err)
		}
		if !strings.Contains(string(sig), "l=") {
			t.Fatalf("dkimpy signature has no l=: %s", sig)
		}
		signed := strings.ReplaceAll(strings.ReplaceAll(string(sig), "\r\n", "\n"), "\n", "\r\n") + msg
		cases := []struct {
			name, msg string
			dkimpy    bool
			want      map[BodyLength]authres.ResultValue
		}{
			{"untouched", signed, true, map[BodyLength]authres.ResultValue{
				BodyLengthPass: authres.ResultPass, BodyLengthComplete: authres.ResultPass, BodyLengthPolicy: authres.ResultPolicy}},
			{"appended", signed + "\r\nAppended by a list\r\n", true, map[BodyLength]authres.ResultValue{
				BodyLengthPass: authres.ResultPass, BodyLengthComplete: authres.ResultPolicy, BodyLengthPolicy: authres.ResultPolicy}},
			{"changed", strings.Replace(signed, "Signed", "Forged", 1), false, map[BodyLength]authres.ResultValue{
				BodyLengthPass: authres.ResultFail, BodyLengthComplete: authres.ResultFail, BodyLengthPolicy: authres.ResultPolicy}},
			{"header changed", strings.Replace(signed, "To: bob", "To: eve", 1), false, map[BodyLength]authres.ResultValue{
				BodyLengthPass: authres.ResultFail, BodyLengthComplete: authres.ResultFail, BodyLengthPolicy: authres.ResultPolicy}},
		}
		for _, c := range cases {
			vc := exec.Command(py, "-c", dkimpyVerify, rec)
			vc.Stdin = strings.NewReader(c.msg)
			if got := vc.Run() == nil; got != c.dkimpy {
				t.Errorf("%s %s: dkimpy verifies %v; the test expects %v", canon, c.name, got, c.dkimpy)
			}
			for mode, want := range c.want {
				v, err := New(Config{Resolver: dns, AuthservID: "mx", BodyLength: mode, Logger: quiet()})
				if err != nil {
					t.Fatal(err)
				}
				res, err := v.VerifyMessage(context.Background(), strings.NewReader(c.msg))
				if err != nil {
					t.Fatal(err)
				}
				if len(res) != 1 || res[0].Value != want || res[0].Domain != "example.org" || res[0].Selector != "len" {
					t.Errorf("%s %s mode %d: %+v; want %s", canon, c.name, mode, res, want)
				}
			}
		}
	}
}

// TestMalformedIsPermerror: RFC 6376 section 6.1.1, a signature that does
// not parse is PERMFAIL (dkim=permerror), even where go-msgauth's order of
// checks would report fail.
func TestMalformedIsPermerror(t *testing.T) {
	dns := &fakeDNS{txt: map[string][]string{}, temp: map[string]bool{}}
	dns.add(t, "s", "example.org", testRSAKey(t))
	v, err := New(Config{Resolver: dns, AuthservID: "mx", Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	body := "From: a@example.org\r\nSubject: x\r\n\r\nbody\r\n"
	good := "v=1; a=rsa-sha256; c=relaxed/simple; d=example.org; s=s; h=from:subject; bh=frcCV1k9oG9oKj3dpUqdJg1PxRT2RSN/XKdLCPjaYaY=; b=AAAA"
	for _, c := range []struct{ name, sig, reason string }{
		{"l not a number", good + "; l=ten", "l=ten"},
		{"duplicate tag", good + "; d=example.org", "duplicate tag d="},
		{"bh not base64", strings.Replace(good, "bh=frcC", "bh=!!", 1) + "; l=3", "bh= is not base64"},
		{"unknown canonicalization", strings.Replace(good, "c=relaxed/simple", "c=loose", 1), "c=loose"},
		{"tag without value", good + "; junk", "malformed tag"},
		{"no h=", strings.Replace(good, "h=from:subject;", "", 1), "required tag h="},
		{"bad time", good + "; t=yesterday", "t=yesterday"},
	} {
		res, err := v.VerifyMessage(context.Background(), strings.NewReader("DKIM-Signature: "+c.sig+"\r\n"+body))
		if err != nil {
			t.Fatal(err)
		}
		if len(res) != 1 || res[0].Value != authres.ResultPermError || !strings.Contains(res[0].Reason, c.reason) {
			t.Errorf("%s: %+v; want permerror with %q", c.name, res, c.reason)
		}
	}
	if _, err := ParseBodyLength("sometimes"); err == nil {
		t.Error("ParseBodyLength accepted sometimes")
	}
	for s, want := range map[string]BodyLength{"": BodyLengthPass, "pass": BodyLengthPass, "complete": BodyLengthComplete, "POLICY": BodyLengthPolicy} {
		if got, err := ParseBodyLength(s); err != nil || got != want {
			t.Errorf("ParseBodyLength(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
}

// FuzzMalformed: the syntax check never panics, and a value it accepts has
// every required tag.
func FuzzMalformed(f *testing.F) {
	f.Add("v=1; a=rsa-sha256; d=example.org; s=s; h=from; bh=AAAA; b=AAAA; l=10")
	f.Add("v=1; a=rsa-sha256; d=example.org; d=x")
	f.Add(";;=;")
	f.Fuzz(func(t *testing.T, v string) {
		if malformed(v) != "" {
			return
		}
		tags := tagMap(v)
		for _, req := range []string{"v", "a", "b", "bh", "d", "h", "s"} {
			if _, ok := tags[req]; !ok {
				t.Fatalf("%q accepted without %s=", v, req)
			}
		}
	})
}

// TestBodyLengthKeyAndExpiry: the checks go-msgauth makes on the signatures
// it verifies are made on l= signatures too: expiry, the key record's
// service and revocation, a missing key.
func TestBodyLengthKeyAndExpiry(t *testing.T) {
	rk := testRSAKey(t)
	rec, _ := dkimkey.Record(rk.Public())
	pub := rec[strings.Index(rec, "p="):]
	msg := func(extra string) string {
		body := "hello\r\n"
		hdrs := "From: a@example.org\r\nSubject: x\r\n"
		// The signature need not verify: every case fails before that.
		return "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/simple; d=example.org; s=s; h=from:subject; l=7; bh=WFvm7E3ZQFqHplXTwy6q1oi4ORM9XOiO9zQ8WFtz7Yg=; b=AAAA" + extra + "\r\n" + hdrs + "\r\n" + body
	}
	for _, c := range []struct {
		name, record, extra, reason string
	}{
		{"expired", "v=DKIM1; k=rsa; " + pub, "; x=1000", "signature has expired"},
		{"service", "v=DKIM1; k=rsa; s=other; " + pub, "", "inappropriate service"},
		{"revoked", "v=DKIM1; k=rsa; p=", "", "key revoked"},
		{"no key", "", "", "no key for signature"},
	} {
		dns := &fakeDNS{txt: map[string][]string{}, temp: map[string]bool{}}
		if c.record != "" {
			dns.txt["s._domainkey.example.org"] = []string{c.record}
		}
		v, err := New(Config{Resolver: dns, AuthservID: "mx", Logger: quiet()})
		if err != nil {
			t.Fatal(err)
		}
		res, err := v.VerifyMessage(context.Background(), strings.NewReader(msg(c.extra)))
		if err != nil {
			t.Fatal(err)
		}
		if len(res) != 1 || res[0].Value != authres.ResultPermError || !strings.Contains(res[0].Reason, c.reason) {
			t.Errorf("%s: %+v; want permerror %q", c.name, res, c.reason)
		}
	}
}
