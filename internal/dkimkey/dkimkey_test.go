package dkimkey

import (
	"github.com/postkit/postkit/internal/testlib"

	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// Output of `openssl genpkey -algorithm ed25519` (OpenSSL 3.0).
const opensslEd25519 = `-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIOTpQ88y7Z1UY7PGIkkhl02iveJ2aTb6c9QehD8PlF8D
-----END PRIVATE KEY-----
`

// Output of `openssl genpkey -algorithm EC … | openssl ec`.
const opensslEC = `-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIDsCkG01yc94ONRqgeymxYmW2eiM/TsrY4tKcB/klg5+oAoGCCqGSM49
AwEHoUQDQgAE1oMiauF/iTKnSNEiN2Koph2dixFdn7hmwTGIImoMHkP/EfLfac+1
GCsyjH8GK7KLmLwtMsodZR69j0+7u7Cjvw==
-----END EC PRIVATE KEY-----
`

var (
	keysOnce sync.Once
	rsa2048  *rsa.PrivateKey
	rsa1024  *rsa.PrivateKey
)

func testKeys(t testing.TB) {
	keysOnce.Do(func() {
		var err error
		if rsa2048, err = rsa.GenerateKey(nil, 2048); err != nil {
			t.Fatal(err)
		}
		if rsa1024, err = rsa.GenerateKey(nil, 1024); err != nil {
			t.Fatal(err)
		}
	})
}

func TestParsePrivateKey(t *testing.T) {
	testKeys(t)
	pkcs1 := func(k *rsa.PrivateKey) string {
		return string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}))
	}
	pkcs8 := func(k any) string {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	}
	tests := []struct {
		name, in string
		alg      Algorithm
		err      string
	}{
		{"pkcs1 rsa", pkcs1(rsa2048), RSA, ""},
		{"pkcs8 rsa", pkcs8(rsa2048), RSA, ""},
		{"openssl ed25519", opensslEd25519, Ed25519, ""},
		{"1024 pkcs1", pkcs1(rsa1024), "", "at least 2048"},
		{"1024 pkcs8", pkcs8(rsa1024), "", "postkit dkim keygen"},
		{"empty", "", "", "empty"},
		{"garbage", "hello", "", "no PEM block"},
		{"encrypted", "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n", "", "decrypt"},
		{"ec", opensslEC, "", "ECDSA"},
		{"certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "", "unexpected PEM block"},
		{"bad der", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "", "bad PRIVATE KEY"},
		{"two keys", opensslEd25519 + opensslEd25519, "", "more than one"},
	}
	for _, tc := range tests {
		s, err := ParsePrivateKey([]byte(tc.in))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err = %v; want it to contain %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if alg, _ := AlgorithmOf(s); alg != tc.alg {
			t.Errorf("%s: algorithm %s; want %s", tc.name, alg, tc.alg)
		}
	}
	if _, err := ParsePrivateKey([]byte(pkcs1(rsa1024))); !errors.Is(err, ErrWeakKey) {
		t.Errorf("1024-bit key: %v is not ErrWeakKey", err)
	}
}

func TestGenerateAndRecord(t *testing.T) {
	tests := []struct {
		alg  Algorithm
		bits int
		err  bool
		pLen int // length of the decoded p=
	}{
		{Ed25519, 0, false, 32},
		{RSA, 0, false, 294}, // SubjectPublicKeyInfo of a 2048-bit key
		{RSA, 1024, true, 0},
		{RSA, 8192, true, 0},
		{Ed25519, 2048, true, 0},
		{"dsa", 0, true, 0},
	}
	for _, tc := range tests {
		s, err := Generate(tc.alg, tc.bits, nil)
		if tc.err {
			if err == nil {
				t.Errorf("Generate(%s, %d) succeeded", tc.alg, tc.bits)
			}
			continue
		}
		if err != nil {
			t.Fatalf("Generate(%s, %d): %v", tc.alg, tc.bits, err)
		}
		rec, err := Record(s.Public())
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(rec, "v=DKIM1; k="+string(tc.alg)+"; p=") {
			t.Errorf("record %q", rec)
		}
		p, err := base64.StdEncoding.DecodeString(rec[strings.Index(rec, "p=")+2:])
		if err != nil || len(p) != tc.pLen {
			t.Errorf("%s: p= decodes to %d bytes (%v); want %d", tc.alg, len(p), err, tc.pLen)
		}
		if tc.alg == Ed25519 && string(p) != string(s.Public().(ed25519.PublicKey)) {
			t.Errorf("ed25519 p= is not the raw public key (RFC 8463 section 4)")
		}
		// Round trip through PEM.
		data, err := MarshalPrivateKey(s)
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParsePrivateKey(data)
		if err != nil {
			t.Fatalf("%s: re-reading written key: %v", tc.alg, err)
		}
		rec2, _ := Record(back.Public())
		if rec2 != rec {
			t.Errorf("%s: round trip changed the key", tc.alg)
		}
		wantType := map[Algorithm]string{RSA: "RSA PRIVATE KEY", Ed25519: "PRIVATE KEY"}[tc.alg]
		if b, _ := pem.Decode(data); b == nil || b.Type != wantType {
			t.Errorf("%s: PEM type %v; want %s", tc.alg, b, wantType)
		}
	}
}

func TestSplitTXT(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want []string
	}{
		{"", 0, []string{""}},
		{"abc", 2, []string{"ab", "c"}},
		{strings.Repeat("x", 300), 0, []string{strings.Repeat("x", 255), strings.Repeat("x", 45)}},
		{"abcd", 2, []string{"ab", "cd"}},
	}
	for _, tc := range tests {
		if got := SplitTXT(tc.in, tc.n); strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("SplitTXT(%q, %d) = %q; want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

var quoted = regexp.MustCompile(`"((?:[^"\\]|\\.)*)"`)

// parseZoneTXT joins the quoted strings of a zone-file TXT record.
func parseZoneTXT(t *testing.T, zone string) (owner string, text string) {
	t.Helper()
	owner, _, _ = strings.Cut(zone, "\t")
	rdata := zone
	if i := strings.Index(rdata, ";"); i >= 0 && strings.LastIndex(rdata, "\"") < i {
		rdata = rdata[:i]
	}
	for _, m := range quoted.FindAllStringSubmatch(rdata, -1) {
		if len(m[1]) > 255 {
			t.Errorf("string of %d bytes in %q", len(m[1]), zone)
		}
		text += m[1]
	}
	return owner, text
}

func TestWriteKeyFiles(t *testing.T) {
	testKeys(t)
	dir := filepath.Join(t.TempDir(), "example.org")
	ek := ed25519.NewKeyFromSeed(make([]byte, 32))
	for _, tc := range []struct {
		sel string
		key crypto.Signer
	}{{"rsa2026", rsa2048}, {"ed2026", ek}} {
		priv, txt, err := WriteKeyFiles(dir, tc.sel, "example.org", tc.key)
		if err != nil {
			t.Fatal(err)
		}
		st, err := os.Stat(priv)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v (%v); want 0600", priv, st.Mode(), err)
		}
		if _, err := LoadPrivateKey(priv); err != nil {
			t.Errorf("LoadPrivateKey(%s): %v", priv, err)
		}
		zone, err := os.ReadFile(txt)
		if err != nil {
			t.Fatal(err)
		}
		owner, text := parseZoneTXT(t, string(zone))
		want, _ := Record(tc.key.Public())
		if owner != tc.sel+"._domainkey" || text != want {
			t.Errorf("zone %q gives %s %q; want %s._domainkey %q", zone, owner, text, tc.sel, want)
		}
		if !strings.Contains(string(zone), "; ----- DKIM key "+tc.sel+" for example.org") {
			t.Errorf("zone lacks the opendkim-genkey comment: %q", zone)
		}
		// Never overwrite a key.
		if _, _, err := WriteKeyFiles(dir, tc.sel, "example.org", ek); err == nil || !strings.Contains(err.Error(), "exists") {
			t.Errorf("second WriteKeyFiles(%s) = %v; want exists error", tc.sel, err)
		}
	}
	if _, _, err := WriteKeyFiles(dir, "../x", "example.org", ek); err == nil {
		t.Error("WriteKeyFiles accepted selector ../x")
	}
}

// TestOpenSSLReadsKey checks that libcrypto, which OpenDKIM loads keys with,
// parses what WriteKeyFiles writes.
func TestOpenSSLReadsKey(t *testing.T) {
	bin := testlib.NeedProgram(t, "openssl")
	testKeys(t)
	dir := t.TempDir()
	ek := ed25519.NewKeyFromSeed(make([]byte, 32))
	p1, _, err := WriteKeyFiles(dir, "r", "example.org", rsa2048)
	if err != nil {
		t.Fatal(err)
	}
	p2, _, err := WriteKeyFiles(dir, "e", "example.org", ek)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{p1, p2} {
		out, err := exec.Command(bin, "pkey", "-in", p, "-noout", "-text_pub").CombinedOutput()
		if err != nil {
			t.Errorf("openssl pkey %s: %v\n%s", p, err, out)
		}
	}
}
