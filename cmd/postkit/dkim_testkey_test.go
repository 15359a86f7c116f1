package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/postkit/postkit/internal/dkimkey"
	"github.com/postkit/postkit/internal/dnstest"
	"github.com/postkit/postkit/internal/testlib"
)

// TestDKIMTestkey checks keys against records served by the loopback DNS
// server, through postkit's resolver: each verdict, and the exit status.
func TestDKIMTestkey(t *testing.T) {
	dns, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	dir := t.TempDir()
	good, goodTXT := writeKey(t, dir, "example.org", "ed")
	_, otherTXT := writeKey(t, dir, "example.org", "old")
	wrong, _ := writeKey(t, dir, "example.net", "ed")
	missing, _ := writeKey(t, dir, "example.com", "ed")
	revoked, _ := writeKey(t, dir, "example.edu", "ed")
	rk, err := dkimkey.Generate(dkimkey.RSA, 2048, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaFile, _, err := dkimkey.WriteKeyFiles(filepath.Join(dir, "example.info"), "rsa", "example.info", rk)
	if err != nil {
		t.Fatal(err)
	}
	// Some tools publish the bare PKCS#1 key; verifiers accept it.
	pkcs1 := base64.StdEncoding.EncodeToString(x509.MarshalPKCS1PublicKey(&rk.(*rsa.PrivateKey).PublicKey))
	rsaTXT, _ := dkimkey.Record(rk.Public())
	z := dnstest.NewZone()
	z.AddTXT("rsa._domainkey.example.info.", 300, "v=DKIM1; k=rsa; p="+pkcs1[:100], pkcs1[100:])
	z.AddTXT("spki._domainkey.example.info.", 300, dkimkey.SplitTXT(rsaTXT, 255)...)
	z.AddTXT("ed._domainkey.example.info.", 300, "v=spf1 -all") // not a key record
	z.AddTXT("ed._domainkey.example.org.", 300, goodTXT)
	z.AddTXT("ed._domainkey.example.net.", 300, otherTXT) // someone else's key
	z.AddTXT("ed._domainkey.example.edu.", 300, "v=DKIM1; k=ed25519; p=")
	dns.Set(z)

	testkey := func(args ...string) (string, error) {
		cmd := dkimTestkeyCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs(append([]string{"--dns", dns.Addr()}, args...))
		cmd.SilenceUsage, cmd.SilenceErrors = true, true
		err := cmd.ExecuteContext(context.Background())
		return out.String(), err
	}
	for _, c := range []struct {
		key, want string
	}{
		{"example.org:ed:" + good, "ed._domainkey.example.org\tok"},
		{"example.net:ed:" + wrong, "ed._domainkey.example.net\tmismatch"},
		{"example.com:ed:" + missing, "ed._domainkey.example.com\tmissing"},
		{"example.edu:ed:" + revoked, "ed._domainkey.example.edu\trevoked"},
		{"example.org:ed:" + filepath.Join(dir, "nope.private"), "ed._domainkey.example.org\tkey-error"},
		{"example.info:rsa:" + rsaFile, "rsa._domainkey.example.info\tok"},
		{"example.info:spki:" + rsaFile, "spki._domainkey.example.info\tok"},
		{"example.info:ed:" + good, "ed._domainkey.example.info\tmissing"},
		{"example.org:ed:" + rsaFile, "ed._domainkey.example.org\tmismatch"},
	} {
		out, err := testkey("--key", c.key)
		if !strings.HasPrefix(out, c.want) {
			t.Errorf("--key %s: %q; want %q…", c.key, out, c.want)
		}
		if ok := strings.HasSuffix(c.want, "\tok"); ok != (err == nil) || (!ok && exitCode(err) != 1) {
			t.Errorf("--key %s: err = %v (exit %d)", c.key, err, exitCode(err))
		}
	}

	// From postkit.yaml: every key of milter.dkim.keys (key_file defaults to
	// key_dir/DOMAIN/SELECTOR.private), through dns.servers.
	y := fmt.Sprintf("hostname: mail.example.org\ndomains: [example.org]\ndns:\n  servers: [%q]\nmilter:\n  dkim:\n    key_dir: %s\n    keys:\n      - {domain: example.org, selector: ed}\n", dns.Addr(), dir)
	cfg := filepath.Join(dir, "postkit.yaml")
	os.WriteFile(cfg, []byte(y), 0o600)
	cmd := dkimTestkeyCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs([]string{"-c", cfg})
	if err := cmd.ExecuteContext(context.Background()); err != nil || out.String() != "ed._domainkey.example.org\tok\n" {
		t.Errorf("-c: %q, %v", out.String(), err)
	}
	os.WriteFile(cfg, []byte(y+"      - {domain: example.org, selector: old, disabled: true}\n"), 0o600)
	cmd = dkimTestkeyCmd()
	out.Reset()
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs([]string{"-c", cfg})
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	if err := cmd.ExecuteContext(context.Background()); exitCode(err) != 1 || !strings.Contains(out.String(), "old._domainkey.example.org\tmissing") {
		t.Errorf("-c with an unpublished key: %q, exit %d", out.String(), exitCode(err))
	}
}

// TestTestkeyAgreesWithOpenDKIM: for keys made by opendkim-genkey, `postkit
// dkim testkey` and opendkim-testkey give the same verdict on the records a
// loopback DNS server publishes (opendkim-testkey reads Nameservers from its
// configuration, port 53 only: the server listens on a 127/8 address of
// its own).
func TestTestkeyAgreesWithOpenDKIM(t *testing.T) {
	testlib.NeedBinary(t, "opendkim-testkey", "opendkim-genkey")
	testlib.NeedRoot(t)
	dir := t.TempDir()
	record := func(sel string) string {
		out, err := exec.Command("opendkim-genkey", "-b", "2048", "-r", "-d", "example.org", "-s", sel, "-D", dir).CombinedOutput()
		if err != nil {
			t.Fatalf("opendkim-genkey: %v: %s", err, out)
		}
		zone, err := os.ReadFile(filepath.Join(dir, sel+".txt"))
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, m := range regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(string(zone), -1) {
			b.WriteString(m[1])
		}
		return b.String()
	}
	selRec, otherRec := record("sel"), record("other")
	var dns *dnstest.Server
	var addr string
	for i := 0; i < 20 && dns == nil; i++ {
		addr = fmt.Sprintf("127.%d.%d.%d", 100+mrand.IntN(100), mrand.IntN(250), 1+mrand.IntN(250))
		dns, _ = dnstest.StartAt(addr + ":53")
	}
	if dns == nil {
		t.Fatal("no 127/8 address with port 53 free")
	}
	defer dns.Close()
	z := dnstest.NewZone()
	z.AddTXT("sel._domainkey.example.org.", 300, selRec)
	z.AddTXT("mism._domainkey.example.org.", 300, otherRec)
	dns.Set(z)
	conf := filepath.Join(dir, "opendkim.conf")
	os.WriteFile(conf, []byte("Nameservers "+addr+"\n"), 0o600)
	key := filepath.Join(dir, "sel.private")
	for sel, want := range map[string]string{"sel": "ok", "mism": "mismatch", "missing": "missing"} {
		odErr := exec.Command("opendkim-testkey", "-x", conf, "-d", "example.org", "-s", sel, "-k", key).Run()
		cmd := dkimTestkeyCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs([]string{"--dns", dns.Addr(), "--key", "example.org:" + sel + ":" + key})
		cmd.SilenceUsage, cmd.SilenceErrors = true, true
		err := cmd.ExecuteContext(context.Background())
		if !strings.Contains(out.String(), "\t"+want) {
			t.Errorf("selector %s: postkit says %q; want %s", sel, out.String(), want)
		}
		if (odErr == nil) != (err == nil) {
			t.Errorf("selector %s: opendkim-testkey error %v, postkit error %v: the verdicts differ", sel, odErr, err)
		}
	}
}
