package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/postkit/postkit/internal/dkimkey"
	"github.com/postkit/postkit/internal/dnstest"
)

// runDNS runs a fresh `dns records` or `dns check` command (fresh flags).
func runDNS(t *testing.T, mk func() *cobra.Command, args ...string) (string, error) {
	t.Helper()
	cmd := mk()
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

// dnsSetup writes a postkit.yaml for two domains served by host
// mx.example.net, with a DKIM key on disk for one of them, resolving through
// the loopback DNS server.
func dnsSetup(t *testing.T) (cfgPath, dkimLine string, srv *dnstest.Server) {
	t.Helper()
	srv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	dir := t.TempDir()
	key, err := dkimkey.Generate(dkimkey.Ed25519, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	priv, txt, err := dkimkey.WriteKeyFiles(filepath.Join(dir, "keys", "example.org"), "s1", "example.org", key)
	if err != nil {
		t.Fatal(err)
	}
	_ = priv
	zone, err := os.ReadFile(txt)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath = filepath.Join(dir, "postkit.yaml")
	yaml := `hostname: mx.example.net
domains: [example.org, example.com]
dns:
  servers: [` + srv.Addr() + `]
  host_addresses: [192.0.2.25]
milter:
  dkim:
    key_dir: ` + filepath.Join(dir, "keys") + `
    keys:
      - {domain: example.org, selector: s1}
`
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfgPath, string(zone), srv
}

func TestDNSRecordsFromConfig(t *testing.T) {
	cfg, keyZone, _ := dnsSetup(t)
	out, err := runDNS(t, dnsRecordsCmd, "-c", cfg)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{
		"example.org.\tIN\tMX\t10 mx.example.net.\n",
		"example.com.\tIN\tMX\t10 mx.example.net.\n",
		"mx.example.net.\tIN\tA\t192.0.2.25\n",
		"s1._domainkey.example.org.\tIN\tTXT\t",
		"; DMARC p=quarantine:",
		`_dmarc.example.com.	IN	TXT	"v=DMARC1; p=quarantine; rua=mailto:postmaster@example.com"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("dns records -c lacks %q:\n%s", want, out)
		}
	}
	pub := strings.Fields(keyZone)
	if p := pub[len(pub)-1]; !strings.Contains(out, strings.Trim(p, `")`)) {
		t.Errorf("the DKIM record is not the key on disk's (%s):\n%s", p, out)
	}
	if strings.Contains(out, "mail.example") || strings.Contains(out, "_domainkey.example.com") {
		t.Errorf("mail.DOMAIN as MX, or a key for a domain that has none:\n%s", out)
	}
	// Without -c, a domain and an address are needed; the comment and the record agree.
	out, err = runDNS(t, dnsRecordsCmd, "--domain", "example.org", "--host", "mx.example.net", "--ip", "192.0.2.25", "--dmarc-policy", "none")
	if err != nil || !strings.Contains(out, "; DMARC p=none:") || !strings.Contains(out, `"v=DMARC1; p=none;`) {
		t.Errorf("--dmarc-policy none: %v\n%s", err, out)
	}
	if _, err := runDNS(t, dnsRecordsCmd); err == nil || !strings.Contains(err.Error(), "-c postkit.yaml") {
		t.Errorf("no domain: %v", err)
	}
}

// The acceptance scenario: the DKIM record is missing and SPF is wrong;
// check names both with the exact lines to publish and fails; once those
// lines are published it passes.
func TestDNSCheckFlagsAndPasses(t *testing.T) {
	cfg, _, srv := dnsSetup(t)
	published := []string{
		`example.org. IN MX 10 mx.example.net.`,
		`example.com. IN MX 10 mx.example.net.`,
		`mx.example.net. IN A 192.0.2.25`,
		`25.2.0.192.in-addr.arpa. IN PTR mx.example.net.`,
		`example.org. IN TXT "v=spf1 a:old.example.org -all"`,
		`example.com. IN TXT "v=spf1 mx -all"`,
		`_dmarc.example.org. IN TXT "v=DMARC1; p=quarantine; rua=mailto:postmaster@example.org"`,
		`_dmarc.example.com. IN TXT "v=DMARC1; p=quarantine; rua=mailto:postmaster@example.com"`,
	}
	if err := srv.SetZone(published...); err != nil {
		t.Fatal(err)
	}
	// What records prints is what check expects: take the fixes from there.
	records, err := runDNS(t, dnsRecordsCmd, "-c", cfg, "--domain", "example.org")
	if err != nil {
		t.Fatal(err)
	}
	var spfLine, dkimLine, dkimRecord string
	lines := strings.Split(records, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "example.org.\tIN\tTXT\t") {
			spfLine = l
		}
		if strings.HasPrefix(l, "s1._domainkey.example.org.\tIN\tTXT\t") {
			dkimLine, dkimRecord = l, l
			for j := i + 1; strings.Contains(l, "(") && !strings.Contains(dkimRecord, ")") && j < len(lines); j++ {
				dkimRecord += " " + lines[j]
			}
		}
	}
	if spfLine != "example.org.\tIN\tTXT\t\"v=spf1 mx -all\"" || dkimLine == "" {
		t.Fatalf("records: SPF %q, DKIM %q:\n%s", spfLine, dkimLine, records)
	}

	out, err := runDNS(t, dnsCheckCmd, "-c", cfg)
	var ec interface{ ExitCode() int }
	if !errors.As(err, &ec) || ec.ExitCode() == 0 {
		t.Fatalf("check with a missing DKIM record and a wrong SPF: err %v; want a non-zero exit\n%s", err, out)
	}
	for _, want := range []string{
		"missing  dkim         s1._domainkey.example.org. TXT",
		"publish: " + dkimLine,
		"wrong    spf          example.org. TXT: the SPF record differs",
		`found:   "v=spf1 a:old.example.org -all"`,
		"publish: " + spfLine,
		"ok       spf          example.com. TXT",
		"ok       ptr          25.2.0.192.in-addr.arpa. PTR",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "publish:"); n != 2 {
		t.Errorf("%d fixes; want 2 (DKIM, SPF):\n%s", n, out)
	}

	// JSON for scripts.
	out, _ = runDNS(t, dnsCheckCmd, "-c", cfg, "--json")
	var rep struct {
		OK      bool `json:"ok"`
		Results []struct {
			Name, Kind, Status, Fix string
		} `json:"results"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	statuses := map[string]string{}
	for _, r := range rep.Results {
		statuses[r.Kind+" "+r.Name] = r.Status
	}
	if rep.OK || statuses["dkim s1._domainkey.example.org."] != "missing" || statuses["spf example.org."] != "wrong" || statuses["mx example.com."] != "ok" {
		t.Errorf("--json: ok=%v %v", rep.OK, statuses)
	}

	// Publish the two lines check printed (the DKIM one is split in strings).
	fixed := []string{strings.Join(strings.Fields(dkimRecord), " ")}
	for _, r := range published {
		if !strings.HasPrefix(r, "example.org. IN TXT") {
			fixed = append(fixed, r)
		}
	}
	fixed = append(fixed, strings.ReplaceAll(spfLine, "\t", " "))
	if err := srv.SetZone(fixed...); err != nil {
		t.Fatal(err)
	}
	out, err = runDNS(t, dnsCheckCmd, "-c", cfg)
	// MX, SPF, DMARC of both domains, the DKIM key, the host's A and PTR once.
	if err != nil || strings.Contains(out, "publish:") || strings.Count(out, "\nok ")+1 != 9 || !strings.Contains(out, "all 9 records ok") {
		t.Errorf("after publishing: %v\n%s", err, out)
	}
}
