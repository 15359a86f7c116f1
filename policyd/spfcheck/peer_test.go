package spfcheck

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postkit/postkit/internal/dnsclient"
	"github.com/postkit/postkit/internal/dnstest"
	"github.com/postkit/postkit/internal/testlib"
	"github.com/postkit/postkit/policyd"
)

// peer is postfix-policyd-spf-python answering on stdin and stdout, in a
// mount namespace whose /etc/resolv.conf names the loopback DNS server.
type peer struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func startPeer(t *testing.T, resolv, conf string) *peer {
	t.Helper()
	script := `mount --bind "$1" /etc/resolv.conf && exec /usr/bin/python3 /usr/bin/policyd-spf "$2"`
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", resolv, conf)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	return &peer{cmd: cmd, in: in, out: bufio.NewReader(out)}
}

// ask sends one request and returns the action.
func (p *peer) ask(t *testing.T, r *policyd.Request) string {
	t.Helper()
	var b strings.Builder
	for k, v := range r.Attrs {
		fmt.Fprintf(&b, "%s=%s\n", k, v)
	}
	b.WriteString("\n")
	if _, err := io.WriteString(p.in, b.String()); err != nil {
		t.Fatalf("peer: %v", err)
	}
	action := ""
	for {
		line, err := p.out.ReadString('\n')
		if err != nil {
			t.Fatalf("peer: %v", err)
		}
		line = strings.TrimRight(line, "\n")
		if line == "" {
			return action
		}
		if a, ok := strings.CutPrefix(line, "action="); ok {
			action = a
		}
	}
}

// TestLevelsAgreeWithPolicydSPF: for each rejection setting, postkit and
// postfix-policyd-spf-python refuse the same requests (the texts differ).
func TestLevelsAgreeWithPolicydSPF(t *testing.T) {
	testlib.NeedBinary(t, "unshare", "/usr/bin/policyd-spf")
	testlib.NeedRoot(t)
	testlib.NeedPython(t, "spf")
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
	z, err := dnstest.ParseZone(testZone...)
	if err != nil {
		t.Fatal(err)
	}
	srv.Set(z)
	dir := t.TempDir()
	resolv := filepath.Join(dir, "resolv.conf")
	os.WriteFile(resolv, []byte("nameserver "+ip+"\noptions timeout:2 attempts:1\n"), 0o644)
	res, err := dnsclient.New(dnsclient.Config{Servers: []string{srv.Addr()}, Timeout: time.Second, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}

	helos := []string{"helofail.example", "helosoft.example", "heloneutral.example", "helopass.example", "perm.example", "client.example"}
	senders := []string{"a@plain.example", "a@soft.example", "a@neutral.example", "a@nospf.example", "a@pass.example", "a@perm.example", ""}
	for _, c := range []struct {
		helo, mail, peerHelo, peerMail string
		notPass                        string
		permReject                     bool
	}{
		{"fail", "fail", "Fail", "Fail", "", false},
		{"softfail", "softfail", "Softfail", "Softfail", "", false},
		{"spf_not_pass", "spf_not_pass", "SPF_Not_Pass", "SPF_Not_Pass", "", false},
		{"null", "fail", "Null", "Fail", "", false},
		{"false", "false", "False", "False", "", false},
		{"false", "fail", "False", "Fail", "neutral.example,soft.example", false},
		{"softfail", "spf_not_pass", "Softfail", "SPF_Not_Pass", "", false},
		{"no_check", "fail", "No_Check", "Fail", "", false},
		{"fail", "no_check", "Fail", "No_Check", "", false},
		{"fail", "fail", "Fail", "Fail", "", true},
		{"false", "spf_not_pass", "False", "SPF_Not_Pass", "", true},
	} {
		name := c.peerHelo + "/" + c.peerMail
		if c.permReject {
			name += "/PermError_reject"
		}
		if c.notPass != "" {
			name += "/" + c.notPass
		}
		t.Run(name, func(t *testing.T) {
			conf := filepath.Join(dir, "policyd-spf.conf")
			body := fmt.Sprintf("debugLevel = 0\nTestOnly = 1\nHELO_reject = %s\nMail_From_reject = %s\nPermError_reject = %v\nTempError_Defer = False\nskip_addresses = 127.0.0.0/8,::1\n", c.peerHelo, c.peerMail, map[bool]string{true: "True", false: "False"}[c.permReject])
			if c.notPass != "" {
				body += "Reject_Not_Pass_Domains = " + c.notPass + "\n"
			}
			os.WriteFile(conf, []byte(body), 0o644)
			p := startPeer(t, resolv, conf)
			var notPass []string
			if c.notPass != "" {
				notPass = strings.Split(c.notPass, ",")
			}
			ours, err := New(Config{HeloReject: Level(c.helo), MailFromReject: Level(c.mail), RejectNotPassDomains: notPass, PermErrorReject: c.permReject,
				Hostname: "mx.receiver.example", Logger: slog.New(slog.DiscardHandler), CacheSize: -1}, res)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, h := range helos {
				for _, s := range senders {
					for _, client := range []string{"198.51.100.7", "192.0.2.10"} {
						r := request(client, h, s)
						// Postfix's instance names one message; the peer keeps
						// its HELO result per instance.
						n++
						r.Attrs["instance"] = fmt.Sprintf("%x.parity", n)
						theirs := p.ask(t, r)
						d, err := ours.Check(context.Background(), r)
						if err != nil {
							t.Fatal(err)
						}
						peerRejects := strings.HasPrefix(theirs, "550") || strings.HasPrefix(strings.ToUpper(theirs), "REJECT")
						if ourRejects := strings.HasPrefix(d.Action, "550"); ourRejects != peerRejects {
							t.Errorf("client %s, HELO %s, sender <%s>: postkit %q, postfix-policyd-spf-python %q", client, h, s, d.Action, theirs)
						}
					}
				}
			}
		})
	}
}
