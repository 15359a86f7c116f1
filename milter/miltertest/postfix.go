package miltertest

import (
	"github.com/postkit/postkit/internal/testlib"

	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// NeedBinary skips the test when a Debian binary is missing, or fails it when
// POSTKIT_E2E=1 asks for the end-to-end tests to run.
func NeedBinary(t testing.TB, names ...string) {
	t.Helper()
	testlib.NeedBinary(t, names...)
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int { return testlib.FreePort(t) }

// PostfixOptions configure a throwaway Postfix instance.
type PostfixOptions struct {
	// Milters is the smtpd_milters value ("unix:/path inet:127.0.0.1:port").
	Milters string
	// Relay is where all mail goes: "[127.0.0.1]:PORT".
	Relay string
	// Main holds extra main.cf settings, applied last.
	Main map[string]string
}

// Postfix is a sandboxed Postfix: its own config, queue and data
// directories under a temporary directory, no chroot, listening on
// 127.0.0.1:SMTPPort, logging to LogFile.
type Postfix struct {
	Dir      string
	SMTPPort int
	LogFile  string
}

// StartPostfix writes the sandbox, starts Postfix and stops it at cleanup.
// The caller has checked NeedBinary/E2E and runs as root.
func StartPostfix(t testing.TB, o PostfixOptions) *Postfix {
	t.Helper()
	testlib.NeedRoot(t)
	dir := PublicTempDir(t)
	p := &Postfix{Dir: dir, SMTPPort: FreePort(t), LogFile: filepath.Join(dir, "maillog")}
	for _, d := range []string{"etc", "queue", "data"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	run(t, "chown", "postfix:postfix", filepath.Join(dir, "data"))
	run(t, "chmod", "700", filepath.Join(dir, "data"))
	main := map[string]string{
		"compatibility_level":            "3.6",
		"queue_directory":                filepath.Join(dir, "queue"),
		"data_directory":                 filepath.Join(dir, "data"),
		"mail_owner":                     "postfix",
		"setgid_group":                   "postdrop",
		"myhostname":                     "mx.postkit.test",
		"mydomain":                       "postkit.test",
		"mydestination":                  "",
		"inet_interfaces":                "loopback-only",
		"inet_protocols":                 "ipv4",
		"mynetworks":                     "127.0.0.0/8",
		"relayhost":                      o.Relay,
		"maillog_file":                   p.LogFile,
		"maillog_file_prefixes":          dir,
		"alias_maps":                     "",
		"alias_database":                 "",
		"smtputf8_enable":                "no",
		"biff":                           "no",
		"smtpd_authorized_xclient_hosts": "127.0.0.0/8",
		"smtp_dns_support_level":         "disabled",
		"smtpd_milters":                  o.Milters,
		"milter_protocol":                "6",
		"milter_default_action":          "tempfail",
		"smtpd_relay_restrictions":       "permit_mynetworks, reject",
		"master_service_disable":         "",
		"default_process_limit":          "20",
	}
	for k, v := range o.Main {
		main[k] = v
	}
	var mb strings.Builder
	for k, v := range main {
		fmt.Fprintf(&mb, "%s = %s\n", k, v)
	}
	master := fmt.Sprintf(`127.0.0.1:%d inet n - n - - smtpd
cleanup   unix n - n - 0 cleanup
qmgr      unix n - n 300 1 qmgr
tlsmgr    unix - - n 1000? 1 tlsmgr
rewrite   unix - - n - - trivial-rewrite
bounce    unix - - n - 0 bounce
defer     unix - - n - 0 bounce
trace     unix - - n - 0 bounce
verify    unix - - n - 1 verify
flush     unix n - n 1000? 0 flush
proxymap  unix - - n - - proxymap
smtp      unix - - n - - smtp
relay     unix - - n - - smtp
showq     unix n - n - - showq
error     unix - - n - - error
retry     unix - - n - - error
discard   unix - - n - - discard
anvil     unix - - n - 1 anvil
scache    unix - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
`, p.SMTPPort)
	write(t, filepath.Join(dir, "etc", "main.cf"), mb.String())
	write(t, filepath.Join(dir, "etc", "master.cf"), master)
	cfg := filepath.Join(dir, "etc")
	run(t, "postfix", "-c", cfg, "check")
	run(t, "postfix", "-c", cfg, "start")
	t.Cleanup(func() {
		exec.Command("postfix", "-c", cfg, "stop").Run()
		// Give master a moment to take its children down.
		for i := 0; i < 50; i++ {
			if _, err := os.Stat(filepath.Join(dir, "queue", "pid", "master.pid")); err != nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if t.Failed() {
			if b, err := os.ReadFile(p.LogFile); err == nil {
				t.Logf("postfix log:\n%s", tail(b, 4000))
			}
		}
	})
	// Wait for smtpd to answer.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", p.SMTPPort))
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(p.LogFile)
			t.Fatalf("miltertest: postfix did not listen on %d: %v\n%s", p.SMTPPort, err, tail(b, 4000))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return p
}

// Addr is the SMTP address of the sandbox.
func (p *Postfix) Addr() string { return fmt.Sprintf("127.0.0.1:%d", p.SMTPPort) }

// Log returns the Postfix log so far.
func (p *Postfix) Log() string {
	b, _ := os.ReadFile(p.LogFile)
	return string(b)
}

// PublicTempDir is t.TempDir made traversable by Postfix's unprivileged
// processes (sockets and files under it).
func PublicTempDir(t testing.TB) string { return testlib.PublicTempDir(t) }

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("miltertest: %s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func write(t testing.TB, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// Delivered is one message received by a Sink.
type Delivered struct {
	From  string
	Rcpts []string
	Data  []byte
}

// Sink is an in-process SMTP server on 127.0.0.1 that keeps what it receives.
type Sink struct {
	Port int
	srv  *smtp.Server
	mu   sync.Mutex
	msgs []Delivered
}

// StartSink starts a Sink and closes it at cleanup.
func StartSink(t testing.TB) *Sink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Sink{Port: ln.Addr().(*net.TCPAddr).Port}
	s.srv = smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &sinkSession{s: s}, nil
	}))
	s.srv.Domain = "sink.postkit.test"
	s.srv.AllowInsecureAuth = true
	s.srv.MaxMessageBytes = 64 << 20
	s.srv.ReadTimeout = 30 * time.Second
	s.srv.WriteTimeout = 30 * time.Second
	go s.srv.Serve(ln)
	t.Cleanup(func() { s.srv.Close() })
	return s
}

// Relay is the Postfix relayhost value pointing at the sink.
func (s *Sink) Relay() string { return fmt.Sprintf("[127.0.0.1]:%d", s.Port) }

// Wait returns once n messages arrived, or an error after timeout.
func (s *Sink) Wait(n int, timeout time.Duration) ([]Delivered, error) {
	deadline := time.Now().Add(timeout)
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.msgs) < n {
		if time.Now().After(deadline) {
			return append([]Delivered(nil), s.msgs...), fmt.Errorf("miltertest: sink got %d of %d messages in %s", len(s.msgs), n, timeout)
		}
		s.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
		s.mu.Lock()
	}
	return append([]Delivered(nil), s.msgs...), nil
}

type sinkSession struct {
	s   *Sink
	cur Delivered
}

func (ss *sinkSession) Reset()        { ss.cur = Delivered{} }
func (ss *sinkSession) Logout() error { return nil }
func (ss *sinkSession) Mail(from string, _ *smtp.MailOptions) error {
	ss.cur.From = from
	return nil
}
func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.cur.Rcpts = append(ss.cur.Rcpts, to)
	return nil
}
func (ss *sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	// go-smtp hands the data with LF line ends; keep CRLF like the wire.
	if !bytes.Contains(b, []byte("\r\n")) {
		b = bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
	}
	ss.cur.Data = b
	ss.s.mu.Lock()
	ss.s.msgs = append(ss.s.msgs, ss.cur)
	ss.s.mu.Unlock()
	ss.cur = Delivered{}
	return nil
}
