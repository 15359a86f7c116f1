package dkimverify

import (
	"github.com/postkit/postkit/internal/testlib"

	"context"
	"encoding/base64"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/authres"
	"github.com/postkit/postkit/internal/dkimkey"
)

func needPythonDKIM(t *testing.T) string {
	t.Helper()
	py := testlib.NeedPython(t, "dkim")
	return py
}

// dkimpySign signs stdin with dkimpy and prints the DKIM-Signature field:
// argv = selector, domain, algorithm, header/body canonicalization, key file
// (PEM for RSA, base64 seed for Ed25519 as dkimpy's dknewkey writes).
const dkimpySign = `
import sys, dkim
sel, dom, alg, canon, keyfile = sys.argv[1:6]
h, b = canon.split('/')
msg = sys.stdin.buffer.read()
sig = dkim.sign(msg, sel.encode(), dom.encode(), open(keyfile, 'rb').read(),
                canonicalize=(h.encode(), b.encode()), signature_algorithm=alg.encode(),
                include_headers=[b'from', b'to', b'subject', b'date'])
sys.stdout.buffer.write(sig)
`

// TestInteropDkimpySigned verifies mail signed by dkimpy (RSA and Ed25519,
// relaxed and simple) with the filter's verifier.
func TestInteropDkimpySigned(t *testing.T) {
	py := needPythonDKIM(t)
	dir := t.TempDir()
	rk := testRSAKey(t)
	rsaPEM, _ := dkimkey.MarshalPrivateKey(rk)
	os.WriteFile(dir+"/rsa.pem", rsaPEM, 0o600)
	ek := edKey()
	os.WriteFile(dir+"/ed.key", []byte(base64.StdEncoding.EncodeToString(ek.Seed())), 0o600)
	dns := &fakeDNS{txt: map[string][]string{}, temp: map[string]bool{}}
	dns.add(t, "py", "example.org", rk)
	dns.add(t, "pyed", "example.org", ek)
	v, err := New(Config{Resolver: dns, AuthservID: "mx", Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	msg := "From: Ann <ann@example.org>\r\nTo: bob@example.net\r\nSubject:  spaced   subject \r\nDate: Tue, 1 Apr 2025 10:00:00 +0200\r\n\r\nHello  there \r\n\r\n\r\n"
	for _, c := range []struct{ sel, alg, key string }{{"py", "rsa-sha256", "rsa.pem"}, {"pyed", "ed25519-sha256", "ed.key"}} {
		for _, canon := range []string{"relaxed/simple", "simple/simple", "relaxed/relaxed"} {
			cmd := exec.Command(py, "-c", dkimpySign, c.sel, "example.org", c.alg, canon, dir+"/"+c.key)
			cmd.Stdin = strings.NewReader(msg)
			sig, err := cmd.Output()
			if err != nil {
				t.Fatalf("dkimpy sign %s %s: %v", c.alg, canon, err)
			}
			signed := strings.ReplaceAll(strings.ReplaceAll(string(sig), "\r\n", "\n"), "\n", "\r\n") + msg
			for _, tamper := range []bool{false, true} {
				m := signed
				if tamper {
					m = strings.Replace(m, "Hello", "Jello", 1)
				}
				res, err := v.VerifyMessage(context.Background(), strings.NewReader(m))
				if err != nil {
					t.Fatal(err)
				}
				want := authres.ResultValue(authres.ResultPass)
				if tamper {
					want = authres.ResultFail
				}
				if len(res) != 1 || res[0].Value != want || res[0].Algorithm != c.alg {
					t.Errorf("%s %s tampered=%v: %+v; want %s", c.alg, canon, tamper, res, want)
				}
			}
		}
	}
}
