package dkimverify

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/authres"
	"github.com/postkit/postkit/internal/dkimkey"
	"github.com/postkit/postkit/internal/dnsclient"
	"github.com/postkit/postkit/internal/dnstest"
	"github.com/postkit/postkit/internal/testlib"
)

// TestBodyLengthAsOpenDKIM: signatures with l= made by dkimpy, verified by
// OpenDKIM (its test mode, -t, over the loopback DNS server: OpenDKIM's
// Nameservers takes addresses, port 53, so the server has a 127/8 address
// of its own) and by postkit: untouched, with text appended after the
// signed length (OpenDKIM passes it, as postkit's default does;
// BodyLengthComplete says policy), and with the signed part changed.
func TestBodyLengthAsOpenDKIM(t *testing.T) {
	const bin = "/usr/sbin/opendkim"
	testlib.NeedBinary(t, bin)
	testlib.NeedRoot(t)
	py := needPythonDKIM(t)
	dir := t.TempDir()
	rk := testRSAKey(t)
	pem, _ := dkimkey.MarshalPrivateKey(rk)
	os.WriteFile(filepath.Join(dir, "rsa.pem"), pem, 0o600)
	rec, err := dkimkey.Record(rk.Public())
	if err != nil {
		t.Fatal(err)
	}
	var srv *dnstest.Server
	var ip string
	for i := 0; i < 20 && srv == nil; i++ {
		ip = fmt.Sprintf("127.%d.%d.%d", 100+mrand.IntN(100), mrand.IntN(250), 1+mrand.IntN(250))
		srv, _ = dnstest.StartAt(ip + ":53")
	}
	if srv == nil {
		t.Fatal("no 127/8 address with port 53 free")
	}
	defer srv.Close()
	z := dnstest.NewZone()
	z.AddTXT("len._domainkey.example.org.", 300, dkimkey.SplitTXT(rec, 255)...)
	srv.Set(z)
	res, err := dnsclient.New(dnsclient.Config{Servers: []string{srv.Addr()}, Timeout: time.Second, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "opendkim.conf")
	os.WriteFile(conf, []byte("Mode v\nSyslog no\nAuthservID mx\nNameservers "+ip+"\n"), 0o600)

	msg := "From: Ann <ann@example.org>\r\nTo: bob@example.net\r\nSubject: l=\r\n\r\nSigned part\r\n"
	cmd := exec.Command(py, "-c", dkimpyLengthSign, "len", "example.org", "relaxed/simple", filepath.Join(dir, "rsa.pem"))
	cmd.Stdin = strings.NewReader(msg)
	sig, err := cmd.Output()
	if err != nil {
		t.Fatalf("dkimpy sign: %v", err)
	}
	signed := strings.ReplaceAll(strings.ReplaceAll(string(sig), "\r\n", "\n"), "\n", "\r\n") + msg
	appended := signed + "\r\n-- \r\nAppended by a mailing list\r\n"
	odResult := regexp.MustCompile(`verification \(s=len,? d=example\.org[^)]*\) (succeeded|failed)`)
	for _, c := range []struct {
		name, msg, od string
		ours          map[BodyLength]authres.ResultValue
	}{
		{"untouched", signed, "pass", map[BodyLength]authres.ResultValue{BodyLengthPass: authres.ResultPass, BodyLengthComplete: authres.ResultPass}},
		{"appended", appended, "pass", map[BodyLength]authres.ResultValue{BodyLengthPass: authres.ResultPass, BodyLengthComplete: authres.ResultPolicy}},
		{"signed part changed", strings.Replace(appended, "Signed", "Forged", 1), "fail", map[BodyLength]authres.ResultValue{BodyLengthPass: authres.ResultFail, BodyLengthComplete: authres.ResultFail}},
	} {
		f := filepath.Join(dir, "msg.eml")
		os.WriteFile(f, []byte(c.msg), 0o600)
		out, err := exec.Command(bin, "-x", conf, "-t", f).CombinedOutput()
		// Test mode says "verification (s=…, d=…) succeeded" or "… failed".
		od := ""
		if m := odResult.FindStringSubmatch(string(out)); m != nil {
			od = map[string]string{"succeeded": "pass", "failed": "fail"}[m[1]]
		}
		if err != nil || od != c.od {
			t.Errorf("%s: OpenDKIM says %q (%v):\n%s\nthe test expects dkim=%s", c.name, od, err, out, c.od)
		}
		for mode, want := range c.ours {
			v, err := New(Config{Resolver: res, AuthservID: "mx", BodyLength: mode, Logger: quiet()})
			if err != nil {
				t.Fatal(err)
			}
			got, err := v.VerifyMessage(context.Background(), strings.NewReader(c.msg))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || got[0].Value != want {
				t.Errorf("%s, mode %d: %+v; want %s", c.name, mode, got, want)
			}
		}
	}
}
