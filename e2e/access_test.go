package e2e

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postkit/postkit/e2e/harness"
	"github.com/postkit/postkit/internal/testlib"
)

// Neither the milter protocol nor the policy protocol authenticates its
// client: whoever reaches a daemon can have mail signed for our domains, or
// ask and feed the policy checks. These scenarios run the postkit binary's
// daemons as an administrator would start them, with flags alone, and probe
// who may connect.

// Without -c a unix socket gets the same mode as with postkit.yaml (0660),
// in a directory created 0750; an existing directory others may write is
// refused.
func TestDaemonSocketMode(t *testing.T) {
	s := harness.Need(t)
	dir := t.TempDir()
	for _, d := range []struct{ name, sock string }{
		{"milter", filepath.Join(dir, "milter", "milter.sock")},
		{"policyd", filepath.Join(dir, "policyd", "policy.sock")},
	} {
		t.Run(d.name, func(t *testing.T) {
			args := []string{d.name, "--listen", "unix:" + d.sock}
			if d.name == "policyd" {
				args = append(args, "--dns", s.DNS.Addr())
			}
			p, err := s.StartDaemon(ctx(t), harness.DaemonSpec{Name: "mode-" + d.name, Args: args, Ready: "unix:" + d.sock})
			if err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(d.sock)
			if err != nil || st.Mode().Perm() != 0o660 {
				t.Errorf("%s socket mode %v, %v; want 0660 as with postkit.yaml", d.name, st.Mode(), err)
			}
			if st, err := os.Stat(filepath.Dir(d.sock)); err != nil || st.Mode().Perm() != 0o750 {
				t.Errorf("%s socket directory mode %v, %v; want 0750", d.name, st.Mode(), err)
			}
			if err := s.StopDaemon(p); err != nil {
				t.Error(err)
			}

			// A directory every user may write: someone else could put a
			// socket there while the daemon is down, and receive Postfix.
			open := filepath.Join(dir, "open-"+d.name)
			if err := os.Mkdir(open, 0o777); err != nil {
				t.Fatal(err)
			}
			os.Chmod(open, 0o777)
			args[2] = "unix:" + filepath.Join(open, "d.sock")
			out, err := s.Postkit(ctx(t), "", args...)
			if err == nil || !strings.Contains(err.Error(), "can be written by users other than root") {
				t.Errorf("%s with its socket in a 0777 directory: err %v, output %q; want a refusal", d.name, err, out)
			}
		})
	}
}

// A daemon listening on every interface serves only the networks named with
// --allow-client: a client bound to 127.0.0.2 is closed on at once, one from
// 127.0.0.1 is served. Without the list, the daemon does not start.
func TestDaemonAllowClients(t *testing.T) {
	s := harness.Need(t)
	milterPort, policyPort, metricsPort := testlib.FreePort(t), testlib.FreePort(t), testlib.FreePort(t)

	t.Run("milter", func(t *testing.T) {
		wide := fmt.Sprintf("inet:0.0.0.0:%d", milterPort)
		if out, err := s.Postkit(ctx(t), "", "milter", "--listen", wide); err == nil || !strings.Contains(err.Error(), "milter.allow_clients") {
			t.Fatalf("milter on %s without --allow-client: err %v, output %q; want a refusal naming milter.allow_clients", wide, err, out)
		}
		d, err := s.StartDaemon(ctx(t), harness.DaemonSpec{Name: "allow-milter", Ready: fmt.Sprintf("inet:127.0.0.1:%d", milterPort),
			Args: []string{"milter", "--listen", wide, "--allow-client", "127.0.0.1/32"}})
		if err != nil {
			t.Fatal(err)
		}
		defer s.StopDaemon(d)
		// Option negotiation (SMFIC_OPTNEG): version 6, all actions, no
		// protocol steps skipped.
		optneg := binary.BigEndian.AppendUint32(nil, 13)
		optneg = append(optneg, 'O', 0, 0, 0, 6, 0, 0, 0x01, 0xff, 0, 0, 0, 0)
		if reply := exchange(t, harness.OutsideIP, milterPort, optneg); len(reply) != 0 {
			t.Errorf("client %s got %q; want the connection closed unanswered", harness.OutsideIP, reply)
		}
		if reply := exchange(t, "127.0.0.1", milterPort, optneg); len(reply) < 5 || reply[4] != 'O' {
			t.Errorf("client 127.0.0.1 got %q; want the milter's option negotiation", reply)
		}
		wantRefusalLogged(t, d.Log, harness.OutsideIP)
	})

	t.Run("policyd", func(t *testing.T) {
		wide := fmt.Sprintf("inet:0.0.0.0:%d", policyPort)
		metrics := fmt.Sprintf("0.0.0.0:%d", metricsPort)
		base := []string{"policyd", "--listen", wide, "--dns", s.DNS.Addr()}
		if out, err := s.Postkit(ctx(t), "", base...); err == nil || !strings.Contains(err.Error(), "policy.allow_clients") {
			t.Fatalf("policyd on %s without --allow-client: err %v, output %q; want a refusal naming policy.allow_clients", wide, err, out)
		}
		withMetrics := append(append([]string{}, base...), "--allow-client", "127.0.0.1/32", "--metrics", metrics)
		if out, err := s.Postkit(ctx(t), "", withMetrics...); err == nil || !strings.Contains(err.Error(), "policy.metrics_allow_clients") {
			t.Fatalf("policyd metrics on %s without --metrics-allow-client: err %v, output %q; want a refusal", metrics, err, out)
		}
		d, err := s.StartDaemon(ctx(t), harness.DaemonSpec{Name: "allow-policyd", Ready: fmt.Sprintf("inet:127.0.0.1:%d", policyPort),
			Args: append(withMetrics, "--metrics-allow-client", "127.0.0.1/32")})
		if err != nil {
			t.Fatal(err)
		}
		defer s.StopDaemon(d)
		req := []byte("request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address=127.0.0.1\n" +
			"helo_name=localhost\nsender=" + alice + "\nrecipient=" + bob + "\n\n")
		if reply := exchange(t, harness.OutsideIP, policyPort, req); len(reply) != 0 {
			t.Errorf("client %s got %q; want the connection closed unanswered", harness.OutsideIP, reply)
		}
		if reply := exchange(t, "127.0.0.1", policyPort, req); !strings.HasPrefix(string(reply), "action=") {
			t.Errorf("client 127.0.0.1 got %q; want an action", reply)
		}
		if code, err := httpGetFrom(harness.OutsideIP, metricsPort); err == nil {
			t.Errorf("metrics from %s answered %d; want the connection closed", harness.OutsideIP, code)
		}
		if code, err := httpGetFrom("127.0.0.1", metricsPort); err != nil || code != 200 {
			t.Errorf("metrics from 127.0.0.1: %d, %v; want 200", code, err)
		}
		wantRefusalLogged(t, d.Log, harness.OutsideIP)
	})
}

// config check refuses a daemon address other hosts can reach without its
// list of clients, at the line and column of the address.
func TestConfigCheckExposedListen(t *testing.T) {
	s := harness.Need(t)
	file := filepath.Join(t.TempDir(), "postkit.yaml")
	yaml := "hostname: mail.example.test\ndomains: [example.test]\nmilter:\n  listen: inet:0.0.0.0:8891\npolicy:\n  listen: \"inet:[::]:10040\"\n"
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := s.Postkit(ctx(t), "", "config", "check", "-c", file)
	for _, want := range []string{file + ":4:11: milter.listen:", "milter.allow_clients", file + ":6:11: policy.listen:", "policy.allow_clients"} {
		if err == nil || !strings.Contains(out, want) {
			t.Errorf("config check: err %v, output %q; want it to contain %q", err, out, want)
		}
	}
	yaml = "hostname: mail.example.test\ndomains: [example.test]\nmilter:\n  listen: inet:0.0.0.0:8891\n  allow_clients: [192.0.2.25/32]\n" +
		"policy:\n  listen: \"inet:[::]:10040\"\n  allow_clients: [\"2001:db8::25\"]\n"
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := s.Postkit(ctx(t), "", "config", "check", "-c", file); err != nil {
		t.Errorf("config check with both lists: %v\n%s", err, out)
	}
}

// exchange connects to 127.0.0.1:port from local, sends msg and returns
// what comes back before the daemon closes the connection or 2 s pass.
func exchange(t *testing.T, local string, port int, msg []byte) []byte {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	c, err := d.Dial("tcp", harness.Addr(port))
	if err != nil {
		t.Fatalf("dial %s from %s: %v", harness.Addr(port), local, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	c.Write(msg) // a refused client may find the connection closed already
	var got []byte
	buf := make([]byte, 512)
	for {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil || (n > 0 && len(got) >= 5) {
			return got
		}
	}
}

func httpGetFrom(local string, port int) (int, error) {
	tr := &http.Transport{DialContext: (&net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}).DialContext}
	defer tr.CloseIdleConnections()
	cl := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := cl.Get(fmt.Sprintf("http://%s/metrics", harness.Addr(port)))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

func wantRefusalLogged(t *testing.T, logFile, client string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		f, err := os.Open(logFile)
		if err == nil {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				if strings.Contains(sc.Text(), "refused a connection") && strings.Contains(sc.Text(), client) {
					f.Close()
					return
				}
			}
			f.Close()
		}
		if time.Now().After(deadline) {
			t.Errorf("%s does not log the refused client %s", logFile, client)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}
