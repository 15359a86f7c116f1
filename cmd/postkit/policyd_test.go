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

// The YAML's meanings differ from the checks' in places; the mapping
// translates them.
func TestPolicyOptionsFromConfig(t *testing.T) {
	tests := []struct {
		name  string
		yaml  string
		check func(t *testing.T, o policyOptions)
	}{
		{"defaults", "", func(t *testing.T, o policyOptions) {
			if !reflect.DeepEqual(o.Checks, []string{"blacklist", "spf"}) || o.BlacklistOwner != "postfix" {
				t.Errorf("checks %v owner %q, want [blacklist spf] and postfix", o.Checks, o.BlacklistOwner)
			}
			if o.Socket.Mode != 0o660 || o.Socket.Owner != "" || o.Socket.Group != "postfix" || o.TimeBudget != 10*time.Second {
				t.Errorf("socket %+v budget %v", o.Socket, o.TimeBudget)
			}
			if o.SPF.IgnoreHeloFail || o.SPF.TempErrorDefer != true || o.SPF.PermErrorReject {
				t.Errorf("spf %+v: want HELO fail refused, temperror deferred, permerror accepted", o.SPF)
			}
			if o.StatePath != "/var/lib/postkit/policyd.sqlite" || o.Database != "/etc/postfix/bdd/postfix.sqlite" {
				t.Errorf("state %q database %q", o.StatePath, o.Database)
			}
			if o.Greylist.AutoAllowClients != 5 || o.Blacklist.SubdomainsNeedDot != true || o.Blacklist.RecipientDelimiter != "+" {
				t.Errorf("greylist auto-allow %d, blacklist %+v", o.Greylist.AutoAllowClients, o.Blacklist)
			}
			if len(o.Trusted) != 1 || o.Trusted[0].String() != "127.0.0.1/32" {
				t.Errorf("trusted %v, want trusted_networks", o.Trusted)
			}
		}},
		{"auto_allow 0 means never", "policy:\n  greylist: {auto_allow: 0}\n", func(t *testing.T, o policyOptions) {
			if o.Greylist.AutoAllowClients != 0 {
				t.Errorf("AutoAllowClients = %d, want 0 (never)", o.Greylist.AutoAllowClients)
			}
		}},
		{"parent_domains", "policy:\n  blacklist: {owner: policy, parent_domains: true}\n", func(t *testing.T, o policyOptions) {
			if o.Blacklist.SubdomainsNeedDot || o.BlacklistOwner != "policy" {
				t.Errorf("blacklist %+v owner %q, want parent domains matching", o.Blacklist, o.BlacklistOwner)
			}
		}},
		{"spf knobs", "policy:\n  spf: {mode: header, helo_reject: false, temperror: accept, permerror: reject, allow_ips: [192.0.2.1], allow_domains: [example.net]}\n", func(t *testing.T, o policyOptions) {
			s := o.SPF
			if s.Mode != "header" || !s.IgnoreHeloFail || s.TempErrorDefer || !s.PermErrorReject ||
				len(s.AllowIPs) != 1 || s.AllowIPs[0].String() != "192.0.2.1/32" || s.AllowSenderDomains[0] != "example.net" {
				t.Errorf("spf %+v", s)
			}
		}},
		{"rate limits", "policy:\n  ratelimit:\n    limits:\n      - {key: sasl_user, count: recipients, max: 500, window: 1h}\n      - {key: client_ip, max: 10, window: 90s}\n", func(t *testing.T, o policyOptions) {
			want := []string{"sasl_user:recipients=500/1h", "client_ip:messages=10/90s"}
			if !reflect.DeepEqual(o.RateLimits, want) {
				t.Errorf("rate limits %q, want %q", o.RateLimits, want)
			}
		}},
		{"dnsbl", "policy:\n  dnsbl: {sites: [bl.test=127.0.0.2*3, wl.test*-2], threshold: 3, check_private: true}\n", func(t *testing.T, o policyOptions) {
			if !reflect.DeepEqual(o.DNSBLSites, []string{"bl.test=127.0.0.2*3", "wl.test*-2"}) || o.DNSBL.Threshold != 3 || !o.DNSBL.CheckPrivate {
				t.Errorf("dnsbl %v %+v", o.DNSBLSites, o.DNSBL)
			}
		}},
		{"paths", "paths: {postkit_run: /srv/pk}\ndatabase: {path: /srv/db.sqlite}\npolicy: {metrics: \"127.0.0.1:9187\", time_budget: 4s}\n", func(t *testing.T, o policyOptions) {
			if o.StatePath != "/srv/pk/policyd.sqlite" || o.Database != "/srv/db.sqlite" || o.Metrics != "127.0.0.1:9187" || o.TimeBudget != 4*time.Second {
				t.Errorf("state %q db %q metrics %q budget %v", o.StatePath, o.Database, o.Metrics, o.TimeBudget)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := policyOptionsFromConfig(policyParse(t, policyYAMLBase+tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, o)
		})
	}
}

// Flags given on the command line override the YAML; others do not.
func TestPolicyFlagsOverride(t *testing.T) {
	o, err := policyOptionsFromConfig(policyParse(t, policyYAMLBase+"policy: {checks: [blacklist, spf, greylist]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	f := policyFlags{checks: []string{"spf,dnsbl", "ratelimit"}, noSPF: true, listen: "inet:127.0.0.1:1", mode: "0600", timeBudget: 3 * time.Second, dnsServers: []string{"192.0.2.53:53"}}
	given := map[string]bool{"checks": true, "listen": true, "socket-mode": true, "time-budget": true}
	if err := f.apply(&o, func(n string) bool { return given[n] }); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(o.Checks, []string{"dnsbl", "ratelimit"}) {
		t.Errorf("checks %v, want [dnsbl ratelimit] (--checks, then --no-spf)", o.Checks)
	}
	if o.Listen != "inet:127.0.0.1:1" || o.Socket.Mode != 0o600 || o.TimeBudget != 3*time.Second {
		t.Errorf("listen %q mode %o budget %v", o.Listen, o.Socket.Mode, o.TimeBudget)
	}
	if o.DNSServers != nil && len(o.DNSServers) != 0 {
		t.Errorf("--dns not given but DNS servers = %v", o.DNSServers)
	}
	bad := policyFlags{mode: "999"}
	if err := bad.apply(&o, func(n string) bool { return n == "socket-mode" }); err == nil || !strings.Contains(err.Error(), "octal") {
		t.Errorf("bad --socket-mode: err = %v", err)
	}
}

func TestBuildPolicyChain(t *testing.T) {
	dir := t.TempDir()
	db := policyTestStore(t, dir)
	tests := []struct {
		name    string
		mutate  func(o *policyOptions)
		want    string // check names, or the error's text
		wantErr bool
	}{
		{"order kept", func(o *policyOptions) {
			o.Checks = []string{"ratelimit", "greylist", "dnsbl", "spf", "blacklist"}
		}, "ratelimit,greylist,dnsbl,spf,blacklist", false},
		{"postfix owns the blacklists", func(o *policyOptions) {
			o.Checks = []string{"blacklist", "spf"}
			o.BlacklistOwner = "postfix"
		}, "spf", false},
		{"bad dnsbl site", func(o *policyOptions) {
			o.Checks = []string{"dnsbl"}
			o.DNSBLSites = []string{"bl.test=999.0.0.1"}
		}, "dnsbl", true},
		{"missing database", func(o *policyOptions) {
			o.Checks = []string{"blacklist"}
			o.Database = filepath.Join(dir, "nope.sqlite")
		}, "postkit db init", true},
		{"unknown check", func(o *policyOptions) { o.Checks = []string{"virus"} }, "unknown check", true},
		{"listed twice", func(o *policyOptions) { o.Checks = []string{"spf", "spf"} }, "twice", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := policyTestOptions(t, dir, db, "127.0.0.1:1")
			tt.mutate(&o)
			pc, err := buildPolicyChain(o)
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("err = %v, want one containing %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			if got := strings.Join(checkNames(pc.checks), ","); got != tt.want {
				t.Errorf("checks %s, want %s", got, tt.want)
			}
		})
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
	o, err := policyOptionsFromConfig(policyParse(t, policyYAMLBase+fmt.Sprintf(`
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
`, db, filepath.Join(dir, "run"), dnsAddr, filepath.Join(dir, "policy.sock"))))
	if err != nil {
		t.Fatal(err)
	}
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	return o
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
	o.Metrics = ln.Addr().String()
	ln.Close()
	sock := strings.TrimPrefix(o.Listen, "unix:")

	reloaded := o
	reloaded.Checks = []string{"spf"}
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

	resp, err := http.Get("http://" + o.Metrics + "/metrics")
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
	o.Checks = []string{"blacklist"}
	sock := strings.TrimPrefix(o.Listen, "unix:")
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
	if !reflect.DeepEqual(o.Checks, []string{"spf"}) {
		t.Errorf("checks %v, want [spf]", o.Checks)
	}
	if o.Socket.Owner != "" || o.Socket.Group != "" || o.Socket.Mode != 0o660 {
		t.Errorf("socket %+v, want no chown and mode 0660", o.Socket)
	}
	if o.Hostname == "" || o.TimeBudget <= 0 {
		t.Errorf("hostname %q budget %v", o.Hostname, o.TimeBudget)
	}
}
