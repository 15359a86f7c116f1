package dkimsign

import (
	"github.com/postkit/postkit/internal/testlib"

	"crypto"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postkit/postkit/internal/dkimkey"
)

// need returns the path of a Debian tool, skipping the test when it is
// missing (failing with POSTKIT_E2E=1).
func need(t *testing.T, path string) string {
	t.Helper()
	return testlib.NeedProgram(t, path)
}

// dkimpyVerify is run by Debian's python3 with python3-dkim: each argument
// is FILE|NAME=RECORD; it verifies every signature of FILE with that key
// record and prints one line per file, "pass" or "fail" per signature.
const dkimpyVerify = `
import sys, dkim
for arg in sys.argv[1:]:
    path, rec = arg.split('|', 1)
    name, text = rec.split('=', 1)
    def txt(q, timeout=5):
        return text.encode() if q.decode().rstrip('.') == name else None
    d = dkim.DKIM(open(path, 'rb').read())
    n = sum(1 for k, v in d.headers if k.lower() == b'dkim-signature')
    out = []
    for i in range(n):
        try:
            out.append('pass' if d.verify(idx=i, dnsfunc=txt) else 'fail')
        except dkim.ValidationError:
            out.append('fail')
    print(' '.join(out))
`

// interopMessage has what trips canonicalizations: folded and spaced
// headers, trailing white space, a long line, empty lines at the end. One
// space follows each colon: OpenDKIM's test mode (like libmilter) rebuilds
// "Name: value" from the value without its leading white space, so under
// simple header canonicalization it cannot verify "Subject:   x" — neither
// can any milter that is not given the leading space.
const interopMessage = "From: \"Joe Q. Public\" <joe@example.org>\r\n" +
	"To: Mary <mary@example.net>,\r\n\tBob <bob@example.net>\r\n" +
	"Subject: Lunch   plans \t\r\n" +
	"Date: Tue, 1 Apr 2025 10:00:00 +0200\r\n" +
	"Message-ID: <interop-1@example.org>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"X-Unsigned: not in h=\r\n" +
	"\r\n" +
	"Hello  Mary, \r\n" +
	"\tindented line\r\n" +
	"\r\n" +
	"A long line " + "0123456789 " + "abcdefghij abcdefghij abcdefghij abcdefghij abcdefghij abcdefghij abcdefghij\r\n" +
	".leading dot\r\n" +
	"\r\n\r\n"

type interopKey struct {
	name   string
	sel    string
	signer crypto.Signer
}

func interopKeys(t *testing.T) []interopKey {
	return []interopKey{{"rsa", "r2048", testRSAKey(t)}, {"ed25519", "ed", rfcEd25519Key(t)}}
}

func signFile(t *testing.T, dir string, k interopKey, canon, msg string) (path, record string) {
	t.Helper()
	s, err := New(Config{Canonicalization: canon, Logger: quiet(),
		Keys: []Key{{Domain: "example.org", Selector: k.sel, Signer: k.signer}}})
	if err != nil {
		t.Fatal(err)
	}
	sigs, err := s.Sign(strings.NewReader(msg))
	if err != nil || len(sigs) != 1 {
		t.Fatalf("Sign: %v, %v", sigs, err)
	}
	record, err = dkimkey.Record(k.signer.Public())
	if err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(dir, k.name+"-"+strings.ReplaceAll(canon, "/", "-")+".eml")
	if err := os.WriteFile(path, []byte(prepend(sigs, msg)), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, record
}

var canons = []string{"relaxed/simple", "simple/simple", "relaxed/relaxed"}

func TestInteropDkimpy(t *testing.T) {
	py := testlib.NeedPython(t, "dkim")
	dir := t.TempDir()
	var args, want, what []string
	for _, k := range interopKeys(t) {
		for _, canon := range canons {
			for _, tamper := range []bool{false, true} {
				path, rec := signFile(t, dir, k, canon, interopMessage)
				w := "pass"
				if tamper {
					path2 := strings.TrimSuffix(path, ".eml") + "-tampered.eml"
					data, _ := os.ReadFile(path)
					os.WriteFile(path2, []byte(strings.Replace(string(data), "Hello  Mary", "Hello  Marx", 1)), 0o644)
					path, w = path2, "fail"
				}
				args = append(args, path+"|"+k.sel+"._domainkey.example.org="+rec)
				want = append(want, w)
				what = append(what, k.name+" "+canon)
			}
		}
	}
	out, err := exec.Command(py, append([]string{"-c", dkimpyVerify}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("dkimpy: %v\n%s", err, out)
	}
	got := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(got) != len(want) {
		t.Fatalf("dkimpy printed %q; want %d lines", out, len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("%s: dkimpy says %q; want %s", what[i], got[i], want[i])
		}
	}
}

func TestInteropOpenDKIM(t *testing.T) {
	bin := need(t, "/usr/sbin/opendkim")
	dir := t.TempDir()
	for _, k := range interopKeys(t) {
		for _, canon := range canons {
			for _, tamper := range []bool{false, true} {
				path, rec := signFile(t, dir, k, canon, interopMessage)
				if tamper {
					data, _ := os.ReadFile(path)
					os.WriteFile(path, []byte(strings.Replace(string(data), "Subject: Lunch", "Subject: Lunck", 1)), 0o644)
				}
				keys := filepath.Join(dir, "keys")
				os.WriteFile(keys, []byte(k.sel+"._domainkey.example.org "+rec+"\n"), 0o644)
				conf := filepath.Join(dir, "opendkim.conf")
				os.WriteFile(conf, []byte("Mode v\nSyslog no\nTestPublicKeys "+keys+"\n"), 0o644)
				out, _ := exec.Command(bin, "-x", conf, "-t", path).CombinedOutput()
				// opendkim exits 0 either way: read its verdict.
				ok := strings.Contains(string(out), "verification") && strings.Contains(string(out), "succeeded")
				if ok == tamper {
					t.Errorf("%s %s tampered=%v: opendkim says %q", k.name, canon, tamper, out)
				}
			}
		}
	}
}
