package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postkit/postkit/internal/dnstest"
	"github.com/postkit/postkit/internal/pgtest"
	"github.com/postkit/postkit/milter/dmarc"
	"github.com/postkit/postkit/milter/dmarc/store"
)

// runDMARC runs `postkit dmarc report` with fresh flags.
func runDMARC(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	cmd := dmarcReportCmd()
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

// --dry-run shows the XML and the verified destinations; --print a table;
// both leave the day unsent.
func TestDMARCReportDryRunAndPrint(t *testing.T) {
	dns, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	if err := dns.SetZone(`example.org._report._dmarc.reports.test. 60 IN TXT "v=DMARC1"`); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "postkit.yaml")
	y := "hostname: mx.example.test\ndomains: [example.test]\npaths: {postkit_run: " + dir + "}\ndns: {servers: [\"" + dns.Addr() + "\"]}\n"
	if err := os.WriteFile(cfg, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := runDMARC(t, "-c", cfg, "--print"); err == nil || !strings.Contains(err.Error(), "no evaluations recorded") {
		t.Errorf("without a store: %v; want a hint", err)
	}
	st, err := store.Open(filepath.Join(dir, "dmarc.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	day := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	st.Record(context.Background(), dmarc.Row{Time: day, PolicyDomain: "example.org", HeaderFrom: "example.org", ADKIM: "r", ASPF: "r", P: "reject",
		Pct: 100, RUA: "mailto:agg@reports.test,mailto:x@elsewhere.test", SourceIP: "192.0.2.1", SPFScope: "mfrom", SPFDomain: "example.org",
		SPFResult: "fail", Disposition: "reject"})
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := runDMARC(t, "-c", cfg, "--dry-run", "--day", "2026-03-01")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# example.org 2026-03-01: to agg@reports.test\n", "# not to x@elsewhere.test", "<disposition>reject</disposition>", "<org_name>mx.example.test</org_name>", "<email>postmaster@example.test</email>"} {
		if !strings.Contains(out, want) {
			t.Errorf("--dry-run output lacks %q:\n%s", want, out)
		}
	}
	out, err = runDMARC(t, "-c", cfg)
	if err != nil || !strings.Contains(out, "2026-03-01  example.org  p=reject") || !strings.Contains(out, "192.0.2.1") {
		t.Errorf("--print: %v\n%s", err, out)
	}
	if _, err := runDMARC(t, "-c", cfg, "--send", "--dry-run"); err == nil {
		t.Error("--send with --dry-run accepted")
	}
	if _, err := runDMARC(t, "-c", cfg, "--day", "yesterday"); err == nil || !strings.Contains(err.Error(), "--day") {
		t.Errorf("bad --day: %v", err)
	}
}

// With state.driver postgresql the report reads every host's rows from the
// shared database; with the server down it fails and says where to look.
func TestDMARCReportPostgreSQL(t *testing.T) {
	srv := pgtest.Start(t)
	dsn := srv.CreateDatabase("dmarcreport")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "postkit.yaml")
	y := "hostname: mx.example.test\ndomains: [example.test]\npaths: {postkit_run: " + dir + "}\nstate: {driver: postgresql, dsn: \"" + dsn + "\"}\n"
	if err := os.WriteFile(cfg, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	day := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, ip := range []string{"192.0.2.1", "198.51.100.7"} { // two hosts
		st, err := store.OpenPG(context.Background(), dsn, "")
		if err != nil {
			t.Fatal(err)
		}
		st.Record(context.Background(), dmarc.Row{Time: day, PolicyDomain: "example.org", HeaderFrom: "example.org", ADKIM: "r", ASPF: "r",
			P: "reject", Pct: 100, RUA: "mailto:agg@reports.test", SourceIP: ip, SPFScope: "mfrom", SPFDomain: "example.org",
			SPFResult: "fail", Disposition: "reject"})
		if err := st.Close(); err != nil {
			t.Fatal(err)
		}
	}
	out, err := runDMARC(t, "-c", cfg, "--print")
	if err != nil || !strings.Contains(out, "2026-03-01  example.org  p=reject") || !strings.Contains(out, "2 messages") ||
		!strings.Contains(out, "192.0.2.1") || !strings.Contains(out, "198.51.100.7") {
		t.Errorf("--print from postgresql: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "dmarc.sqlite")); err == nil {
		t.Error("a SQLite store was made with state.driver postgresql")
	}
	srv.Stop()
	if _, err := runDMARC(t, "-c", cfg, "--print"); err == nil || !strings.Contains(err.Error(), "is the server at state.dsn up") {
		t.Errorf("server down: %v; want a failure naming state.dsn", err)
	}
}
