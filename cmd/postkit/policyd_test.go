package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/internal/dnstest"
	"github.com/postkit/postkit/policyd/assemble"
	"github.com/postkit/postkit/sqlmaps"
)

const policyYAMLBase = `hostname: mx.example.test
domains: [example.test]
trusted_networks: [127.0.0.1/32]
postfix: {chroot: false}
`

func policyParse(t *testing.T, y string) *config.Config {
	t.Helper()
	c, _, err := config.Parse("postkit.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The listen settings come from the policy section.
func TestPolicyServingFromConfig(t *testing.T) {
	sv, err := policyServingFromConfig(policyParse(t, policyYAMLBase))
	if err != nil {
		t.Fatal(err)
	}
	if sv.Socket.Mode != 0o660 || sv.Socket.Owner != "" || sv.Socket.Group != "postfix" || sv.TimeBudget != 10*time.Second || sv.Metrics != "" {
		t.Errorf("defaults: socket %+v budget %v metrics %q", sv.Socket, sv.TimeBudget, sv.Metrics)
	}
	sv, err = policyServingFromConfig(policyParse(t, policyYAMLBase+"policy: {listen: \"inet:127.0.0.1:10040\", metrics: \"127.0.0.1:9187\", time_budget: 4s}\n"))
	if err != nil || sv.Listen != "inet:127.0.0.1:10040" || sv.Metrics != "127.0.0.1:9187" || sv.TimeBudget != 4*time.Second {
		t.Errorf("listen %q metrics %q budget %v, %v", sv.Listen, sv.Metrics, sv.TimeBudget, err)
	}
	c := policyParse(t, policyYAMLBase)
	c.Policy.Listen = ""
	if _, err := policyServingFromConfig(c); err == nil || !strings.Contains(err.Error(), "policy.listen") {
		t.Errorf("empty listen: err = %v", err)
	}
}

// Flags given on the command line override the YAML keys they stand for;
// others do not.
func TestPolicyFlagsOverride(t *testing.T) {
	o := policyOptions{Config: policyParse(t, policyYAMLBase+"policy: {checks: [blacklist, spf, greylist]}\n")}
	f := policyFlags{checks: []string{"spf,dnsbl", "ratelimit"}, noSPF: true, listen: "inet:127.0.0.1:1", mode: "0600", timeBudget: 3 * time.Second,
		dnsServers: []string{"192.0.2.53:53"}, statePath: "/srv/state.sqlite", tempDefer: false, permReject: true,
		rateLimits: []string{"sasl_username:recipients=500/1h", "client:messages=10/90s"}}
	given := map[string]bool{"checks": true, "listen": true, "socket-mode": true, "time-budget": true, "state": true,
		"spf-temperror-defer": true, "spf-permerror-reject": true, "ratelimit": true}
	if err := f.apply(&o, func(n string) bool { return given[n] }); err != nil {
		t.Fatal(err)
	}
	c := o.Config
	if !reflect.DeepEqual(c.Policy.Checks, []string{"dnsbl", "ratelimit"}) {
		t.Errorf("checks %v, want [dnsbl ratelimit] (--checks, then --no-spf)", c.Policy.Checks)
	}
	if c.Policy.Listen != "inet:127.0.0.1:1" || c.Policy.SocketMode != "0600" || c.Policy.TimeBudget.D() != 3*time.Second {
		t.Errorf("listen %q mode %s budget %v", c.Policy.Listen, c.Policy.SocketMode, c.Policy.TimeBudget.D())
	}
	if len(c.DNS.Servers) != 0 {
		t.Errorf("--dns not given but DNS servers = %v", c.DNS.Servers)
	}
	if c.Policy.SPF.TempError != "accept" || c.Policy.SPF.PermError != "reject" || o.Assemble.StatePath != "/srv/state.sqlite" {
		t.Errorf("temperror %q permerror %q state %q", c.Policy.SPF.TempError, c.Policy.SPF.PermError, o.Assemble.StatePath)
	}
	want := []config.Limit{
		{Key: "sasl_user", Count: "recipients", Max: 500, Window: config.Duration(time.Hour)},
		{Key: "client_ip", Count: "messages", Max: 10, Window: config.Duration(90 * time.Second)},
	}
	if !reflect.DeepEqual(c.Policy.RateLimit.Limits, want) {
		t.Errorf("rate limits %+v, want %+v", c.Policy.RateLimit.Limits, want)
	}
	for _, bad := range []struct {
		flag string
		f    policyFlags
		want string
	}{
		{"socket-mode", policyFlags{mode: "999"}, "octal"},
		{"ratelimit", policyFlags{rateLimits: []string{"foo"}}, "--ratelimit"},
		{"trusted", policyFlags{trusted: []string{"10.0.0.300"}}, "--trusted"},
	} {
		if err := bad.f.apply(&o, func(n string) bool { return n == bad.flag }); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("bad --%s: err = %v, want one naming %s", bad.flag, err, bad.want)
		}
	}
}

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

func policyTestOptions(t *testing.T, dir, db, dnsAddr string) policyOptions {
	t.Helper()
	c := policyParse(t, policyYAMLBase+fmt.Sprintf(`
database: {path: %s}
paths: {postkit_run: %s}
dns: {servers: [%q], timeout: 500ms}
policy:
  listen: unix:%s
  socket_owner: ""
  socket_group: ""
  time_budget: 3s
  checks: [blacklist, spf, dnsbl, greylist, ratelimit]
  blacklist: {owner: policy}
  dnsbl: {sites: [bl.test=127.0.0.2*3], threshold: 3}
  greylist: {delay: 1s}
  ratelimit:
    limits:
      - {key: sasl_user, count: messages, max: 2, window: 1h}
`, db, filepath.Join(dir, "run"), dnsAddr, filepath.Join(dir, "policy.sock")))
	return policyOptions{Config: c, Assemble: assemble.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}}
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
	o := policyTestOptions(t, dir, db, dns.Addr())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o.Config.Policy.Metrics = ln.Addr().String()
	ln.Close()
	sock := strings.TrimPrefix(o.Config.Policy.Listen, "unix:")

	reloaded := o
	rc := *o.Config
	rc.Policy.Checks = []string{"spf"}
	reloaded.Config = &rc
	hup := make(chan os.Signal, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runPolicyd(ctx, o, func() (policyOptions, error) { return reloaded, nil }, hup) }()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("runPolicyd: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("runPolicyd did not stop")
		}
		if _, err := os.Stat(sock); err == nil {
			t.Error("socket left behind after shutdown")
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("policyd never listened")
		}
		time.Sleep(20 * time.Millisecond)
	}

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

	resp, err := http.Get("http://" + o.Config.Policy.Metrics + "/metrics")
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

	// SIGHUP: only SPF remains, so the blacklisted sender now passes SPF.
	hup <- syscall.SIGHUP
	deadline = time.Now().Add(5 * time.Second)
	for {
		got := policyAsk(t, sock, rcpt("192.0.2.5", "spammer@bad.test", "c@example.test")...)
		if strings.HasPrefix(got, "PREPEND Received-SPF: pass") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after SIGHUP: action %q, want the blacklist gone (PREPEND Received-SPF: pass)", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A reload that fails keeps the running checks.
func TestRunPolicydBadReload(t *testing.T) {
	dir := t.TempDir()
	db := policyTestStore(t, dir)
	o := policyTestOptions(t, dir, db, "127.0.0.1:1")
	o.Config.Policy.Checks = []string{"blacklist"}
	sock := strings.TrimPrefix(o.Config.Policy.Listen, "unix:")
	hup := make(chan os.Signal, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runPolicyd(ctx, o, func() (policyOptions, error) {
			return o, fmt.Errorf("postkit.yaml:3:1: broken")
		}, hup)
	}()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("policyd never listened")
		}
		time.Sleep(20 * time.Millisecond)
	}
	hup <- syscall.SIGHUP
	hup <- syscall.SIGHUP // the second send waits until the first was taken
	if got := policyAsk(t, sock, "protocol_state=RCPT", "client_address=192.0.2.5", "sender=spammer@bad.test", "recipient=a@example.test"); !strings.HasPrefix(got, "554 5.7.1 Go away") {
		t.Errorf("after a failed reload: action %q, want the old blacklist answer", got)
	}
}

// Without -c: the SPF check alone, and a socket left to the daemon's own
// user and group, so that it runs unprivileged, with the mode it has with -c.
func TestDefaultPolicyOptions(t *testing.T) {
	o := defaultPolicyOptions()
	c := o.Config
	if !reflect.DeepEqual(c.Policy.Checks, []string{"spf"}) {
		t.Errorf("checks %v, want [spf]", c.Policy.Checks)
	}
	sv, err := policyServingFromConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	if sv.Socket.Owner != "" || sv.Socket.Group != "" || sv.Socket.Mode != 0o660 {
		t.Errorf("socket %+v, want no chown and mode 0660", sv.Socket)
	}
	if c.Hostname == "" || sv.TimeBudget <= 0 {
		t.Errorf("hostname %q budget %v", c.Hostname, sv.TimeBudget)
	}
	// Nothing known of our domains, and no seal key for a milter.
	if c.Policy.SPF.OwnDomains != "off" || !o.Assemble.NoSeal {
		t.Errorf("own_domains %q, no seal %v; want off, true", c.Policy.SPF.OwnDomains, o.Assemble.NoSeal)
	}
}
