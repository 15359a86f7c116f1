package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postkit/postkit/internal/dnstest"
	"github.com/postkit/postkit/internal/testlib"
	"github.com/postkit/postkit/sqlmaps"
)

const policyYAMLBase = `hostname: mx.example.test
domains: [example.test]
trusted_networks: [127.0.0.1/32]
postfix: {chroot: false}
`

// policyTestStore creates a blacklist store the way `postkit db` does.
func policyTestStore(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "postfix.sqlite")
	st, err := sqlmaps.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := st.AddSenderBlacklist(ctx, "spammer@bad.test", 554, "5.7.1 Go away, spammer"); err != nil {
		t.Fatal(err)
	}
	return path
}

// policyTestConfig writes a postkit.yaml running every check; checks
// replaces the list when not empty.
func policyTestConfig(t *testing.T, dir, db, dnsAddr, metrics string, checks ...string) string {
	t.Helper()
	list := "blacklist, spf, dnsbl, greylist, ratelimit"
	if len(checks) > 0 {
		list = strings.Join(checks, ", ")
	}
	y := policyYAMLBase + fmt.Sprintf(`
database: {path: %s}
paths: {postkit_run: %s}
dns: {servers: [%q], timeout: 500ms}
policy:
  listen: unix:%s
  socket_owner: ""
  socket_group: ""
  time_budget: 3s
  metrics: %q
  checks: [%s]
  blacklist: {owner: policy}
  dnsbl: {sites: [bl.test=127.0.0.2*3], threshold: 3}
  greylist: {delay: 1s}
  ratelimit:
    limits:
      - {key: sasl_user, count: messages, max: 2, window: 1h}
`, db, filepath.Join(dir, "run"), dnsAddr, filepath.Join(dir, "policy.sock"), metrics, list)
	p := filepath.Join(dir, "postkit.yaml")
	if err := os.WriteFile(p, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// policyAsk sends one request over a fresh connection and returns the action.
func policyAsk(t *testing.T, sock string, attrs ...string) string {
	t.Helper()
	c, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	req := "request=smtpd_access_policy\n" + strings.Join(attrs, "\n") + "\n\n"
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(strings.TrimSpace(line), "action=")
}

// The daemon built from YAML answers with every check, in order, exports
// metrics, reloads on SIGHUP and stops on cancel.
func TestRunPolicyd(t *testing.T) {
	dns, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	if err := dns.SetZone(
		`spf-fail.test. 300 IN TXT "v=spf1 -all"`,
		`spf-pass.test. 300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"`,
		`bad.test. 300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"`,
		`66.2.0.192.bl.test. 300 IN A 127.0.0.2`,
	); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	db := policyTestStore(t, dir)
	metrics := fmt.Sprintf("127.0.0.1:%d", testlib.FreePort(t))
	cfg := policyTestConfig(t, dir, db, dns.Addr(), metrics)
	sock := filepath.Join(dir, "policy.sock")
	state := filepath.Join(dir, "run", "policyd.sqlite")
	t.Cleanup(func() { // runs after the daemon's own cleanup stopped it
		if _, err := os.Stat(sock); err == nil {
			t.Error("socket left behind after shutdown")
		}
	})
	d := startDaemon(t, "policyd", "-c", cfg)

	rcpt := func(client, sender, rcpt string) []string {
		return []string{"protocol_state=RCPT", "client_address=" + client, "helo_name=client.outside.test",
			"sender=" + sender, "recipient=" + rcpt, "instance=" + client + sender + rcpt}
	}
	eom := func(user string) []string {
		return []string{"protocol_state=END-OF-MESSAGE", "client_address=192.0.2.9", "sasl_username=" + user,
			"sender=" + user + "@example.test", "recipient_count=1"}
	}
	steps := []struct {
		name  string
		attrs []string
		want  string // prefix
	}{
		{"blacklisted sender", rcpt("192.0.2.5", "spammer@bad.test", "a@example.test"), "554 5.7.1 Go away, spammer"},
		{"spf fail", rcpt("192.0.2.5", "x@spf-fail.test", "a@example.test"), "550 5.7.23 "},
		{"dnsbl listed", rcpt("192.0.2.66", "x@spf-pass.test", "a@example.test"), "554 5.7.1 Service unavailable; client [192.0.2.66] blocked using bl.test"},
		{"greylisted", rcpt("192.0.2.5", "x@spf-pass.test", "a@example.test"), "DEFER_IF_PERMIT 4.7.1 Greylisted"},
		{"trusted client not greylisted", rcpt("127.0.0.1", "x@spf-pass.test", "b@example.test"), "DUNNO"},
		{"first message", eom("alice"), "DUNNO"},
		{"second message", eom("alice"), "DUNNO"},
		{"over the limit", eom("alice"), "450 4.7.1 Rate limit reached: user alice may send 2 messages per hour"},
		{"other user", eom("bob"), "DUNNO"},
	}
	for _, s := range steps {
		if got := policyAsk(t, sock, s.attrs...); !strings.HasPrefix(got, s.want) {
			t.Errorf("%s: action %q, want %q…", s.name, got, s.want)
		}
	}
	time.Sleep(1100 * time.Millisecond) // the greylisting delay
	if got := policyAsk(t, sock, rcpt("192.0.2.5", "x@spf-pass.test", "a@example.test")...); !strings.HasPrefix(got, "PREPEND Received-SPF: pass") {
		t.Errorf("retry after the greylisting delay: action %q, want PREPEND Received-SPF: pass", got)
	}

	resp, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`check="blacklist",result="reject"`, `check="greylist",result="defer"`, `check="ratelimit",result="defer"`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s:\n%s", want, body)
		}
	}

	// SIGHUP: only SPF remains, so the blacklisted sender now passes SPF,
	// and the databases of the replaced chain are closed: the store is open
	// twice (the blacklist check, and our domains for SPF's own-domain
	// rule), the greylisting and rate-limit state once; the new chain opens
	// the store once, for our domains.
	for f, want := range map[string]int{db: 2, state: 1} {
		if n := openFiles(t, f); n != want {
			t.Errorf("%s: %d descriptors before the reload; want %d", f, n, want)
		}
	}
	policyTestConfig(t, dir, db, dns.Addr(), metrics, "spf")
	if err := d.reload(t); err != nil {
		t.Fatal(err)
	}
	if got := policyAsk(t, sock, rcpt("192.0.2.5", "spammer@bad.test", "c@example.test")...); !strings.HasPrefix(got, "PREPEND Received-SPF: pass") {
		t.Errorf("after SIGHUP: action %q, want the blacklist gone (PREPEND Received-SPF: pass)", got)
	}
	for f, want := range map[string]int{db: 1, state: 0} {
		if n := openFiles(t, f); n != want {
			t.Errorf("%s: %d descriptors after the reload; want %d (the old chain closed)", f, n, want)
		}
	}
}

// A reload that fails keeps the running checks.
func TestRunPolicydBadReload(t *testing.T) {
	dir := t.TempDir()
	db := policyTestStore(t, dir)
	cfg := policyTestConfig(t, dir, db, "127.0.0.1:1", "", "blacklist")
	sock := filepath.Join(dir, "policy.sock")
	d := startDaemon(t, "policyd", "-c", cfg)
	if err := os.WriteFile(cfg, []byte("hostname: [broken\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.reload(t); err == nil || !strings.Contains(err.Error(), "postkit.yaml") {
		t.Errorf("reload of a broken file: %v; want a failure naming the file", err)
	}
	if got := policyAsk(t, sock, "protocol_state=RCPT", "client_address=192.0.2.5", "sender=spammer@bad.test", "recipient=a@example.test"); !strings.HasPrefix(got, "554 5.7.1 Go away") {
		t.Errorf("after a failed reload: action %q, want the old blacklist answer", got)
	}
}
