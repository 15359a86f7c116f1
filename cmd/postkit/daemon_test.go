package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/internal/testlib"
	"github.com/postkit/postkit/milter/assemble"
)

// daemonRun is `postkit milter` or `postkit policyd` running in the test
// process, its log in a buffer, SIGHUP through a channel.
type daemonRun struct {
	name   string
	hup    chan os.Signal
	log    *testlib.Buffer
	cancel context.CancelFunc
	done   chan error

	once sync.Once
	err  error
}

func newDaemonCommand(name string, hup <-chan os.Signal) *cobra.Command {
	if name == "milter" {
		return newMilterCommand(hup)
	}
	return newPolicydCommand(hup)
}

// startDaemon runs the daemon's command with args until the test ends and
// returns once it listens.
func startDaemon(t *testing.T, name string, args ...string) *daemonRun {
	t.Helper()
	return startDaemonLogs(t, name, nil, args...)
}

// startDaemonLogs is startDaemon for a daemon whose lines go elsewhere than
// its stderr (syslog): logs returns them.
func startDaemonLogs(t *testing.T, name string, logs func() string, args ...string) *daemonRun {
	t.Helper()
	d := &daemonRun{name: name, hup: make(chan os.Signal), log: &testlib.Buffer{}, done: make(chan error, 1)}
	cmd := newDaemonCommand(name, d.hup)
	cmd.SetArgs(args)
	cmd.SetOut(d.log)
	cmd.SetErr(d.log)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	go func() { d.done <- cmd.ExecuteContext(ctx) }()
	t.Cleanup(func() {
		if err := d.stop(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	})
	if logs == nil {
		logs = d.log.String
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs(), name+" listening") {
		select {
		case err := <-d.done:
			d.done <- err
			t.Fatalf("%s stopped at start: %v\n%s", name, err, d.log.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not listen:\n%s", name, d.log.String())
		}
	}
	return d
}

// reload sends SIGHUP and waits for the daemon to say how it went: nil when
// it reloaded, the logged failure otherwise.
func (d *daemonRun) reload(t *testing.T) error {
	t.Helper()
	count := func() (ok, failed int) {
		s := d.log.String()
		return strings.Count(s, d.name+" reloaded"), strings.Count(s, d.name+" reload failed")
	}
	ok0, failed0 := count()
	d.hup <- syscall.SIGHUP
	var ok, failed int
	testlib.Eventually(t, 10*time.Second, d.name+" reloading", func() bool {
		ok, failed = count()
		return ok > ok0 || failed > failed0
	})
	if failed > failed0 {
		lines := strings.Split(d.log.String(), "\n")
		for i := len(lines) - 1; i >= 0; i-- {
			if strings.Contains(lines[i], d.name+" reload failed") {
				return fmt.Errorf("%s", lines[i])
			}
		}
	}
	return nil
}

// stop ends the daemon (as SIGTERM does) and returns what its command returned.
func (d *daemonRun) stop() error {
	d.once.Do(func() {
		d.cancel()
		select {
		case d.err = <-d.done:
		case <-time.After(40 * time.Second):
			d.err = fmt.Errorf("did not stop within 40s")
		}
	})
	return d.err
}

// openFiles counts this process's descriptors open on path.
func openFiles(t *testing.T, path string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && target == path {
			n++
		}
	}
	return n
}

// daemonLoad parses args as the daemon's command line and loads what it
// would run, without running it.
func daemonLoad(t *testing.T, name string, args ...string) (*config.Config, *config.File, error) {
	t.Helper()
	cmd := &cobra.Command{Use: name}
	f := addDaemonFlags(cmd, name)
	if err := cmd.ParseFlags(args); err != nil {
		return nil, nil, err
	}
	return f.load()
}

func writeYAML(t *testing.T, y string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "postkit.yaml")
	if err := os.WriteFile(p, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Flags given on the command line set the postkit.yaml keys they stand
// for, validated as the file is; the others leave the file alone. Without
// -c they apply to the daemon's built-in defaults.
func TestMilterFlags(t *testing.T) {
	cfg := writeYAML(t, milterYAMLBase+"database: {path: /y.sqlite}\nmilter:\n  listen: unix:/y.sock\n  on_error: tempfail\n  dkim:\n    authserv_id: y\n    keys: [{domain: example.test, selector: ed1}]\n")
	c, _, err := daemonLoad(t, "milter", "-c", cfg, "--on-error", "accept", "--verify=false", "--unowned-from", "unsigned", "--dkim-key", "Other.Test:s2:/k/s2.private")
	if err != nil {
		t.Fatal(err)
	}
	d := c.Milter.DKIM
	if c.Milter.Listen != "unix:/y.sock" || c.Milter.OnError != "accept" || d.Verify || d.AuthservID != "y" || c.Database.Path != "/y.sqlite" || d.UnownedFrom != "unsigned" {
		t.Errorf("got %+v, database %s", c.Milter, c.Database.Path)
	}
	if len(d.Keys) != 2 || d.Keys[1].Domain != "other.test" || d.Keys[1].Selector != "s2" || d.Keys[1].KeyFile != "/k/s2.private" {
		t.Errorf("keys %+v; want the YAML's and --dkim-key's", d.Keys)
	}
	c, _, err = daemonLoad(t, "milter", "-c", cfg, "--db", "/f.sqlite", "--listen", "inet:127.0.0.1:1", "--listen", "unix:/f.sock")
	if err != nil {
		t.Fatal(err)
	}
	if c.Database.Path != "/f.sqlite" || c.Milter.Listen != "inet:127.0.0.1:1" || !reflect.DeepEqual(c.Milter.ExtraListen, []string{"unix:/f.sock"}) {
		t.Errorf("--db, --listen not applied: %s, %s %v", c.Database.Path, c.Milter.Listen, c.Milter.ExtraListen)
	}
	for _, bad := range [][]string{
		{"--dkim-key", "example.test:s1"},
		{"--allow-client", "10.0.0.1/8"},
		{"--socket-mode", "999"},
		{"--on-error", "maybe"},
		{"--set", "milter.dkim.canonicalization=loose"},
	} {
		if _, _, err := daemonLoad(t, "milter", append([]string{"-c", cfg}, bad...)...); err == nil || !strings.Contains(err.Error(), strings.Join(bad, " ")) {
			t.Errorf("%s: error %v; want one naming the flag as typed", strings.Join(bad, " "), err)
		}
	}

	// Without -c: the flags alone. No database, no verification, no From
	// check of our domains, no seal key: only what the flags say.
	c, file, err := daemonLoad(t, "milter")
	if err != nil {
		t.Fatal(err)
	}
	if !file.Builtin() {
		t.Error("without -c the file is not the built-in one")
	}
	ch, err := assemble.New(c, assemble.Options{Logger: testlib.Discard(), NoSeal: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	if got := strings.Join(assemble.Names(ch), ","); got != "scrub,forged" {
		t.Errorf("chain without -c or flags: %s; want scrub,forged", got)
	}
	ls, err := c.DaemonListeners("milter")
	if err != nil || len(ls) != 1 || ls[0].Socket.Group != "" || ls[0].Socket.Mode != 0o660 {
		t.Errorf("listeners without -c: %+v, %v", ls, err)
	}
}

func TestPolicydFlags(t *testing.T) {
	cfg := writeYAML(t, policyYAMLBase+"policy: {checks: [blacklist, spf, greylist]}\n")
	c, _, err := daemonLoad(t, "policyd", "-c", cfg, "--checks", "spf,dnsbl", "--checks", "ratelimit", "--no-spf",
		"--listen", "inet:127.0.0.1:1", "--socket-mode", "0600", "--time-budget", "3s", "--state", "/srv/state.sqlite",
		"--spf-temperror-defer=false", "--spf-permerror-reject", "--dnsbl-site", "bl.example=127.0.0.2*3",
		"--ratelimit", "sasl_username:recipients=500/1h", "--ratelimit", "client:messages=10/90s")
	if err != nil {
		t.Fatal(err)
	}
	p := c.Policy
	if !reflect.DeepEqual(p.Checks, []string{"dnsbl", "ratelimit"}) {
		t.Errorf("checks %v, want [dnsbl ratelimit] (--checks, then --no-spf)", p.Checks)
	}
	if p.Listen != "inet:127.0.0.1:1" || p.SocketMode != "0600" || p.TimeBudget.D() != 3*time.Second || p.StateFile != "/srv/state.sqlite" {
		t.Errorf("listen %q mode %s budget %v state %s", p.Listen, p.SocketMode, p.TimeBudget.D(), p.StateFile)
	}
	if len(c.DNS.Servers) != 0 {
		t.Errorf("--dns not given but DNS servers = %v", c.DNS.Servers)
	}
	if p.SPF.TempError != "accept" || p.SPF.PermError != "reject" {
		t.Errorf("temperror %q permerror %q", p.SPF.TempError, p.SPF.PermError)
	}
	want := []config.Limit{
		{Key: "sasl_user", Count: "recipients", Max: 500, Window: config.Duration(time.Hour)},
		{Key: "client_ip", Count: "messages", Max: 10, Window: config.Duration(90 * time.Second)},
	}
	if !reflect.DeepEqual(p.RateLimit.Limits, want) {
		t.Errorf("rate limits %+v, want %+v", p.RateLimit.Limits, want)
	}
	// Every malformed override fails at start with the flag as typed, even
	// for a check that is not listed.
	for _, bad := range [][]string{
		{"--socket-mode", "999"},
		{"--ratelimit", "foo"},
		{"--trusted", "10.0.0.300"},
		{"--dnsbl-site", "!!"},
		{"--greylist-delay", "10x"},
		{"--set", "policy.greylist.retry_window=soon"},
		{"--set", "policy.grey.delay=1m"},
	} {
		if _, _, err := daemonLoad(t, "policyd", append([]string{"-c", cfg}, bad...)...); err == nil || !strings.Contains(err.Error(), strings.Join(bad, " ")) {
			t.Errorf("%s: error %v; want one naming the flag as typed", strings.Join(bad, " "), err)
		}
	}

	// Without -c: the SPF check alone, and a socket left to the daemon's
	// own user and group, so that it runs unprivileged, with the mode it
	// has with -c; nothing known of our domains.
	c, file, err := daemonLoad(t, "policyd")
	if err != nil {
		t.Fatal(err)
	}
	if !file.Builtin() || !reflect.DeepEqual(c.Policy.Checks, []string{"spf"}) || c.Policy.SPF.OwnDomains != "off" || c.Hostname == "" {
		t.Errorf("without -c: builtin %v checks %v own_domains %q hostname %q", file.Builtin(), c.Policy.Checks, c.Policy.SPF.OwnDomains, c.Hostname)
	}
	ls, err := c.DaemonListeners("policyd")
	if err != nil || len(ls) != 1 || ls[0].Socket.Owner != "" || ls[0].Socket.Group != "" || ls[0].Socket.Mode != 0o660 {
		t.Errorf("listeners without -c: %+v, %v", ls, err)
	}
}

// runOnce runs a daemon command that must stop at start.
func runOnce(t *testing.T, name string, args ...string) error {
	t.Helper()
	cmd := newDaemonCommand(name, nil)
	cmd.SetArgs(args)
	log := &testlib.Buffer{}
	cmd.SetOut(log)
	cmd.SetErr(log)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := cmd.ExecuteContext(ctx)
	if ctx.Err() != nil {
		t.Fatalf("%s %s did not stop at start:\n%s", name, strings.Join(args, " "), log.String())
	}
	return err
}

// Started on an address other hosts can reach without allowed clients,
// each daemon (and the metrics endpoint) refuses to start and names the key.
func TestDaemonsRefuseExposedListen(t *testing.T) {
	wide := fmt.Sprintf("inet:0.0.0.0:%d", testlib.FreePort(t))
	if err := runOnce(t, "milter", "--listen", wide); err == nil || !strings.Contains(err.Error(), "milter.allow_clients") {
		t.Errorf("milter on %s without allowed clients: %v; want a refusal naming milter.allow_clients", wide, err)
	}
	if err := runOnce(t, "policyd", "--listen", wide); err == nil || !strings.Contains(err.Error(), "policy.allow_clients") {
		t.Errorf("policyd on %s without allowed clients: %v; want a refusal naming policy.allow_clients", wide, err)
	}
	metrics := fmt.Sprintf("0.0.0.0:%d", testlib.FreePort(t))
	if err := runOnce(t, "policyd", "--listen", fmt.Sprintf("inet:127.0.0.1:%d", testlib.FreePort(t)), "--metrics", metrics); err == nil || !strings.Contains(err.Error(), "policy.metrics_allow_clients") {
		t.Errorf("policyd metrics on %s without allowed clients: %v; want a refusal naming policy.metrics_allow_clients", metrics, err)
	}
}
