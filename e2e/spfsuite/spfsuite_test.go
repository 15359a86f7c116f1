// Package spfsuite runs the RFC 7208 test suite through one long-running
// `postkit policyd` process, the real binary, over its unix socket in the
// Postfix policy protocol (SMTPD_POLICY_README), against the loopback DNS
// server serving each scenario's zone with TTL 0.
//
// Scenarios run in the suite's order in the same daemon, so that anything
// the daemon keeps from one scenario (cached DNS answers, SPF results) and
// should no longer trust shows up as a wrong result in a later one.
package spfsuite

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/postkit/postkit/e2e/harness"
	"github.com/postkit/postkit/internal/dnstest"
	"github.com/postkit/postkit/internal/testlib"
)

// suitePath is the suite as the project keeps it (policyd/spfcheck/testdata).
const suitePath = "../../policyd/spfcheck/testdata/rfc7208-tests.yml"

// parallel is the number of connections (and requests in flight) to the
// daemon within one scenario.
const parallel = 4

// receiver is the daemon's --hostname: the suite's explanations use %{r}.
const receiver = "receiver.test"

var receivedSPF = regexp.MustCompile(`^PREPEND Received-SPF: ([a-z]+) \((.*?)\) client-ip=`)

// TestRFC7208SuiteOneDaemon asks one `postkit policyd --spf-mode header` every
// test of the suite, scenario after scenario, and reads each result (and the
// explanation of fail results) from the Received-SPF header of its answer.
// Every test of the suite can be expressed in the policy protocol: the
// client address, HELO name and envelope sender are request attributes, and
// header mode answers every result, fail included, with the header.
func TestRFC7208SuiteOneDaemon(t *testing.T) {
	testlib.NeedShortSkip(t)
	scenarios, err := dnstest.LoadSPFSuite(suitePath)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	bin, err := harness.BuildPostkit(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "policy.sock")
	d := startPolicyd(t, bin, sock, srv.Addr())

	conns := make([]*conn, parallel)
	for i := range conns {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		conns[i] = &conn{c: c, r: bufio.NewReader(c)}
	}

	total, passed := 0, 0
	for si, sc := range scenarios {
		sc.Zone.SetTTL(0)
		srv.Set(sc.Zone)
		answers := make([]string, len(sc.Tests))
		errs := make([]error, len(sc.Tests))
		var wg sync.WaitGroup
		for w, c := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < len(sc.Tests); i += parallel {
					tt := sc.Tests[i]
					answers[i], errs[i] = c.ask(map[string]string{
						"client_address": tt.Host,
						"helo_name":      tt.Helo,
						"sender":         tt.MailFrom,
						// One message per test: the daemon adds a header
						// once per message.
						"instance": fmt.Sprintf("suite.%d.%s", si, tt.Name),
					})
				}
			}()
		}
		wg.Wait()
		for i, tt := range sc.Tests {
			total++
			if why := judge(tt, answers[i], errs[i]); why != "" {
				t.Errorf("%s / %s: %s\n  spec %s: %s", sc.Description, tt.Name, why, strings.Join(tt.Spec, ","), tt.Description)
				continue
			}
			passed++
		}
		if !d.running() {
			t.Fatalf("postkit policyd exited during scenario %q", sc.Description)
		}
	}
	t.Logf("RFC 7208 suite through one postkit policyd (TTL 0, %d scenarios in order, %d connections): %d/%d passed",
		len(scenarios), parallel, passed, total)
	if total != 203 {
		t.Errorf("the suite has %d tests, want 203: the loader lost or gained some", total)
	}
	if passed != total {
		t.Errorf("%d/%d passed; want all", passed, total)
	}
}

// judge returns why the answer does not satisfy the test, or "".
func judge(tt dnstest.SPFTest, action string, err error) string {
	if err != nil {
		return err.Error()
	}
	m := receivedSPF.FindStringSubmatch(action)
	if m == nil {
		return fmt.Sprintf("answer %q has no Received-SPF header", action)
	}
	if !slices.Contains(tt.Results, m[1]) {
		return fmt.Sprintf("result %s, want %s\n  %s", m[1], strings.Join(tt.Results, " or "), action)
	}
	if m[1] == "fail" && tt.Explanation != "" && tt.Explanation != "DEFAULT" {
		// Case-insensitive: the suite writes %{ir} of an IPv6 address in
		// upper case, RFC 7208 §7.4's example in lower case.
		if want := receiver + ": " + tt.Explanation; !strings.EqualFold(m[2], want) {
			return fmt.Sprintf("explanation %q, want %q", m[2], want)
		}
	}
	return ""
}

// daemon is the running `postkit policyd`.
type daemon struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func (d *daemon) running() bool {
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

// startPolicyd runs `postkit policyd` with the SPF check alone, in header
// mode, resolving through dnsAddr, and waits until it accepts connections.
// A timed-out DNS query (the suite's TIMEOUT) costs 2 × 200 ms.
func startPolicyd(t *testing.T, bin, sock, dnsAddr string) *daemon {
	t.Helper()
	cmd := exec.Command(bin, "policyd", "--listen", "unix:"+sock, "--dns", dnsAddr, "--dns-timeout", "200ms",
		"--spf-mode", "header", "--hostname", receiver, "--log-level", "warn")
	stderr := &testlib.Buffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &daemon{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-d.done
		}
		if t.Failed() {
			t.Logf("postkit policyd stderr:\n%s", stderr.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return d
		}
		if !d.running() || time.Now().After(deadline) {
			t.Fatalf("postkit policyd did not listen on %s:\n%s", sock, stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// conn is one policy-protocol connection: requests one after the other, as
// Postfix sends them.
type conn struct {
	c net.Conn
	r *bufio.Reader
}

// ask sends an RCPT-stage request with attrs and returns its action.
func (c *conn) ask(attrs map[string]string) (string, error) {
	var b strings.Builder
	b.WriteString("request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nrecipient=rcpt@" + receiver + "\n")
	for _, k := range []string{"client_address", "helo_name", "sender", "instance"} {
		fmt.Fprintf(&b, "%s=%s\n", k, attrs[k])
	}
	b.WriteString("\n")
	c.c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c.c, b.String()); err != nil {
		return "", err
	}
	line, err := c.r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("reading the answer: %w", err)
	}
	if blank, err := c.r.ReadString('\n'); err != nil || blank != "\n" {
		return "", fmt.Errorf("answer %q not ended by an empty line: %q %v", line, blank, err)
	}
	action, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "action=")
	if !ok {
		return "", fmt.Errorf("answer %q has no action", line)
	}
	return action, nil
}
