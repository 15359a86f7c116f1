//go:build bench

// Package milterbench measures postkit's milter daemon (the real `postkit
// milter` binary, pure Go and built with -tags openssl) against OpenDKIM on
// the same machine in one run: milter-only throughput and latency with
// go-milter's client, the full path smtp-source → Postfix → milter →
// smtp-sink, CPU per message of each milter process, and memory for a 30 MB
// message. Run it with bench/milter/run.sh, which builds both binaries; the
// summary table (Markdown, for BENCHMARKS.md) is printed at the end.
package milterbench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-milter"
	"github.com/postkit/postkit/bench/buildlabel"
	"github.com/postkit/postkit/internal/daemon"
	"github.com/postkit/postkit/internal/procstat"
	"github.com/postkit/postkit/milter/filter"
	"github.com/postkit/postkit/milter/milterd"
	"github.com/postkit/postkit/milter/miltertest"
)

const (
	domain   = "bench.test"
	selector = "sel"
)

// Environment knobs (run.sh sets them): message count, connections, size,
// and the binaries under test.
var (
	nMsgs      = envInt("BENCH_MESSAGES", 2000)
	nConns     = envInt("BENCH_CONNS", 8)
	msgBytes   = envInt("BENCH_SIZE", 5120)
	binGo      = os.Getenv("POSTKIT_BENCH_BIN")         // go build ./cmd/postkit
	binOpenSSL = os.Getenv("POSTKIT_BENCH_BIN_OPENSSL") // go build -tags openssl ./cmd/postkit
	strict     = os.Getenv("BENCH_STRICT") == "1"       // a missed target fails the run
	// BENCH_NEW_SESSIONS=1: one SMTP session per message in the full path,
	// so Postfix opens one milter connection per message (the common case
	// for inbound mail) instead of reusing eight.
	newSessions = os.Getenv("BENCH_NEW_SESSIONS") == "1"
	// BENCH_LOG_LEVEL: the postkit daemons' --log-level. Default warn, like
	// OpenDKIM's "Syslog no"; info is production's one line per message.
	logLevel = envString("BENCH_LOG_LEVEL", "warn")
)

// selected reports whether the target named name is measured: every one
// unless BENCH_TARGETS, a regular expression, leaves it out (e.g.
// BENCH_TARGETS='no milter|Ed25519' to iterate on one comparison).
func selected(t testing.TB, name string) bool {
	expr := os.Getenv("BENCH_TARGETS")
	if expr == "" {
		return true
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		t.Fatalf("BENCH_TARGETS %q: %v", expr, err)
	}
	return re.MatchString(name)
}

func envString(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func envInt(k string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(k)); err == nil && n > 0 {
		return n
	}
	return def
}

// TestMain doubles as a milter server process for the protocol-layer
// comparison: with POSTKIT_BENCH_SERVER set, the test binary serves a trivial
// filter on milterd or on go-milter's server. After the tests it prints the
// summary table and the targets.
func TestMain(m *testing.M) {
	if addrs := os.Getenv("POSTKIT_BENCH_SERVER"); addrs != "" {
		if os.Getenv("POSTKIT_BENCH_IMPL") == "go-milter" {
			os.Exit(serveGoMilter(strings.Fields(addrs)))
		}
		os.Exit(serveTrivial(strings.Fields(addrs)))
	}
	code := m.Run()
	printSummary()
	if strict && missedTargets > 0 && code == 0 {
		code = 1
	}
	os.Exit(code)
}

// serveTrivial runs milterd with the trivial filter.
func serveTrivial(addrs []string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// Declared like postkit's own filters: headers and body only.
	srv, err := milterd.New(milterd.Config{Chains: map[string][]filter.Filter{milterd.DefaultChain: {filter.Declare(trivial{}, filter.Needs{})}}, Logger: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for _, a := range addrs {
		pa, err := daemon.ParseAddr(a)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		ln, err := daemon.Listen(pa, daemon.SocketOpts{Mode: 0o666})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		go srv.Serve(ln)
	}
	fmt.Println("ready")
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	<-ch
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	return 0
}

// trivial adds one header: the protocol layer's cost with no real work.
type trivial struct{}

func (trivial) Name() string { return "trivial" }
func (trivial) Headers(m *filter.Message, c *filter.Changes) (filter.Body, error) {
	return trivialBody{}, nil
}

type trivialBody struct{}

func (trivialBody) Write([]byte) error { return nil }
func (trivialBody) End(m *filter.Message, c *filter.Changes) error {
	c.InsertHeader(0, "X-Bench", "1")
	return nil
}

// goMilterTrivial is the same filter on go-milter's server.
type goMilterTrivial struct{ milter.NoOpMilter }

func (goMilterTrivial) Headers(textproto.MIMEHeader, *milter.Modifier) (milter.Response, error) {
	return milter.RespContinue, nil
}

func (goMilterTrivial) Body(m *milter.Modifier) (milter.Response, error) {
	if err := m.InsertHeader(0, "X-Bench", "1"); err != nil {
		return nil, err
	}
	return milter.RespAccept, nil
}

func serveGoMilter(addrs []string) int {
	srv := &milter.Server{
		NewMilter: func() milter.Milter { return goMilterTrivial{} },
		Actions:   milter.OptAddHeader | milter.OptChangeHeader,
	}
	for _, a := range addrs {
		pa, _ := daemon.ParseAddr(a)
		ln, err := daemon.Listen(pa, daemon.SocketOpts{Mode: 0o666})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		go srv.Serve(ln)
	}
	fmt.Println("ready")
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	<-ch
	srv.Close()
	return 0
}

// proc is a milter server process under measurement.
type proc struct {
	cmd  *exec.Cmd
	addr map[string]string // "unix"/"tcp" → Postfix-syntax address
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// cpu returns utime+stime of the process (proc(5)).
func cpu(t testing.TB, pid int) time.Duration {
	c, err := procstat.CPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// rss returns VmRSS and VmHWM in bytes.
func rss(t testing.TB, pid int) (cur, peak int64) {
	cur, peak, err := procstat.Mem(pid)
	if err != nil {
		t.Fatal(err)
	}
	return cur, peak
}

// genKey makes a key with openssl, as an administrator would for OpenDKIM:
// algo "rsa" (2048 bits) or "ed25519".
func genKey(t testing.TB, dir, algo string) string {
	t.Helper()
	miltertest.NeedBinary(t, "openssl")
	key := filepath.Join(dir, algo+".pem")
	args := []string{"genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key}
	if algo == "ed25519" {
		args = []string{"genpkey", "-algorithm", "ed25519", "-out", key}
	}
	out, err := exec.Command("openssl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	os.Chmod(key, 0o644)
	return key
}

var buildOnce struct {
	sync.Once
	path string
	err  error
}

// postkitBin returns the binary under test; without run.sh the pure Go one
// is built here and the openssl one is skipped. Each binary's build tags
// are read back from it: a binary measured as pure Go that was built with
// -tags openssl (GOFLAGS from the environment adds it silently), or the
// reverse, fails the run instead of being mislabelled.
func postkitBin(t testing.TB, openssl bool) string {
	t.Helper()
	path := binGo
	if openssl {
		if binOpenSSL == "" {
			t.Skip("POSTKIT_BENCH_BIN_OPENSSL not set: run bench/milter/run.sh")
		}
		path = binOpenSSL
	} else if path == "" {
		buildOnce.Do(func() {
			dir, err := os.MkdirTemp("", "postkit-bench-bin-")
			if err != nil {
				buildOnce.err = err
				return
			}
			buildOnce.path = filepath.Join(dir, "postkit")
			cmd := exec.Command("go", "build", "-o", buildOnce.path, "./cmd/postkit")
			cmd.Dir = "../.."
			cmd.Env = append(os.Environ(), "GOFLAGS="+withoutTags(os.Getenv("GOFLAGS")))
			if out, err := cmd.CombinedOutput(); err != nil {
				buildOnce.err = fmt.Errorf("go build: %v\n%s", err, out)
			}
		})
		if buildOnce.err != nil {
			t.Fatal(buildOnce.err)
		}
		path = buildOnce.path
	}
	return verifyBuild(t, path, openssl)
}

// verifyBuild fails t unless the binary at path was built with -tags
// openssl exactly when openssl is set, notes its build once, and returns
// path.
func verifyBuild(t testing.TB, path string, openssl bool) string {
	t.Helper()
	has, err := buildlabel.Has(path, "openssl")
	if err != nil {
		t.Fatal(err)
	}
	if has != openssl {
		label, _ := buildlabel.Label(path)
		want := "pure Go"
		if openssl {
			want = "-tags openssl"
		}
		t.Fatalf("%s is measured as %s but was built %s: build it as bench/milter/run.sh does", path, want, label)
	}
	if _, seen := labelled.LoadOrStore(path, true); !seen {
		d, err := buildlabel.Describe(path)
		if err != nil {
			t.Fatal(err)
		}
		note(fmt.Sprintf("binary %s: %s", path, d))
	}
	return path
}

// labelled holds the binaries whose build was noted.
var labelled sync.Map

// withoutTags removes -tags settings from a GOFLAGS value.
func withoutTags(goflags string) string {
	var keep []string
	for _, f := range strings.Fields(goflags) {
		if !strings.HasPrefix(strings.TrimLeft(f, "-"), "tags=") {
			keep = append(keep, f)
		}
	}
	return strings.Join(keep, " ")
}

// startPostkit runs `postkit milter` (scrub + DKIM signing, the production
// chain for outbound mail; logging at warn like OpenDKIM's Syslog no) on a
// unix socket and a TCP port.
func startPostkit(t testing.TB, dir, name, bin, key string) *proc {
	t.Helper()
	sock := filepath.Join(dir, name+".sock")
	port := miltertest.FreePort(t)
	p := &proc{addr: map[string]string{"unix": "unix:" + sock, "tcp": fmt.Sprintf("inet:127.0.0.1:%d", port)}}
	p.cmd = exec.Command(bin, "milter", "--listen", p.addr["unix"], "--listen", p.addr["tcp"],
		"--dkim-key", domain+":"+selector+":"+key, "--socket-mode", "0666", "--log-level", logLevel, "--drain", "5s")
	p.cmd.Stderr = os.Stderr
	if logLevel != "warn" {
		// Lines per message: into a file, as journald would take them.
		f, err := os.Create(filepath.Join(dir, name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		p.cmd.Stderr = f
	}
	p.start(t, sock, bin)
	return p
}

// start runs the milter and waits until it listens on sock; SIGTERM at the end.
func (p *proc) start(t testing.TB, sock, name string) {
	t.Helper()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.cmd.Process.Signal(syscall.SIGTERM); p.cmd.Wait() })
	for i := 0; ; i++ {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return
		}
		if i > 400 {
			t.Fatalf("postkit milter (%s) did not listen on %s", name, sock)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// startServer runs this test binary as a trivial milter server: impl
// "postkit" (milterd) or "go-milter".
func startServer(t testing.TB, dir, impl string) *proc {
	t.Helper()
	sock := filepath.Join(dir, impl+".sock")
	port := miltertest.FreePort(t)
	p := &proc{addr: map[string]string{"unix": "unix:" + sock, "tcp": fmt.Sprintf("inet:127.0.0.1:%d", port)}}
	p.cmd = exec.Command(os.Args[0])
	p.cmd.Env = append(os.Environ(), "POSTKIT_BENCH_SERVER="+p.addr["unix"]+" "+p.addr["tcp"], "POSTKIT_BENCH_IMPL="+impl)
	p.cmd.Stderr = os.Stderr
	out, _ := p.cmd.StdoutPipe()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := out.Read(buf); err != nil || string(buf[:5]) != "ready" {
		t.Fatalf("bench server did not start: %q %v", buf, err)
	}
	t.Cleanup(func() { p.cmd.Process.Signal(syscall.SIGTERM); p.cmd.Wait() })
	return p
}

func startOpenDKIM(t testing.TB, dir, key string) *proc {
	t.Helper()
	miltertest.NeedBinary(t, "opendkim")
	sock := filepath.Join(dir, "opendkim.sock")
	conf := filepath.Join(dir, "opendkim.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(`Syslog no
Background no
Mode s
Domain %s
Selector %s
KeyFile %s
Canonicalization relaxed/simple
Socket local:%s
UMask 000
RequireSafeKeys false
InternalHosts 127.0.0.0/8
PidFile %s/opendkim.pid
`, domain, selector, key, sock, dir)), 0o644)
	p := &proc{addr: map[string]string{"unix": "unix:" + sock}}
	p.cmd = exec.Command("opendkim", "-x", conf, "-f")
	p.cmd.Stderr = os.Stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if i > 200 {
			t.Fatal("opendkim did not create its socket")
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Cleanup(func() { p.cmd.Process.Signal(syscall.SIGTERM); p.cmd.Wait() })
	return p
}

func message(size int) []byte {
	var b bytes.Buffer
	b.WriteString("Received: from laptop (laptop [192.0.2.7]) by mx.bench.test with ESMTPSA id 1; Mon, 1 Jan 2024 00:00:00 +0000\r\n")
	b.WriteString("From: Alice <alice@" + domain + ">\r\nTo: <bob@example.org>\r\nSubject: benchmark\r\n")
	b.WriteString("Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <bench@" + domain + ">\r\nX-Mailer: bench\r\n\r\n")
	line := strings.Repeat("0123456789", 7) + "abcdefgh\r\n" // 80 bytes
	for b.Len() < size {
		b.WriteString(line)
	}
	return b.Bytes()
}

// drive sends n messages over conns connections with go-milter's client, as
// Postfix would from a loopback client, and returns per-message latencies.
func drive(t testing.TB, network, address string, n, conns int, raw []byte) []time.Duration {
	return driveCheck(t, network, address, n, conns, raw, "DKIM-Signature")
}

// driveCheck is drive with the header name every answer must add.
func driveCheck(t testing.TB, network, address string, n, conns int, raw []byte, want string) []time.Duration {
	t.Helper()
	hdrs, body, err := miltertest.SplitMessage(raw)
	if err != nil {
		t.Fatal(err)
	}
	cl := milter.NewClientWithOptions(network, address, milter.ClientOptions{
		ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second,
		ActionMask: miltertest.DefaultActions, ProtocolMask: miltertest.DefaultProtocol,
	})
	lat := make([]time.Duration, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	per := (n + conns - 1) / conns
	for c := 0; c < conns; c++ {
		lo, hi := c*per, min((c+1)*per, n)
		if lo >= hi {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			fail := func(err error) {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
			s, err := cl.Session()
			if errors.Is(err, milter.ErrUnsupportedMilterVersion) {
				// go-milter's server speaks version 2: offer what Postfix
				// offers a version 2 milter.
				s, err = milter.NewClientWithOptions(network, address, milter.ClientOptions{
					ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second,
					ActionMask: miltertest.DefaultActions & 0x3f,
				}).Session()
			}
			if err != nil {
				fail(err)
				return
			}
			defer s.Close()
			s.Macros(milter.CodeConn, "j", "mx.bench.test", "{daemon_name}", "ORIGINATING")
			if _, err := s.Conn("localhost", milter.FamilyInet, 40000, "127.0.0.1"); err != nil {
				fail(err)
				return
			}
			if _, err := s.Helo("client.bench.test"); err != nil {
				fail(err)
				return
			}
			for i := lo; i < hi; i++ {
				t0 := time.Now()
				s.Macros(milter.CodeMail, "i", fmt.Sprintf("Q%06d", i), "{auth_type}", "PLAIN", "{auth_authen}", "alice")
				if _, err := s.Mail("alice@"+domain, nil); err != nil {
					fail(err)
					return
				}
				if _, err := s.Rcpt("bob@example.org", nil); err != nil {
					fail(err)
					return
				}
				for _, h := range hdrs {
					if _, err := s.HeaderField(h.Name, h.Value); err != nil {
						fail(err)
						return
					}
				}
				if act, err := s.HeaderEnd(); err != nil || act.Code != milter.ActContinue {
					fail(fmt.Errorf("eoh: %v %v", act, err))
					return
				}
				for off := 0; off < len(body); off += milter.MaxBodyChunk {
					if _, err := s.BodyChunk(body[off:min(off+milter.MaxBodyChunk, len(body))]); err != nil {
						fail(err)
						return
					}
				}
				mods, act, err := s.End()
				if err != nil || (act.Code != milter.ActAccept && act.Code != milter.ActContinue) {
					fail(fmt.Errorf("eom: %v %v", act, err))
					return
				}
				signed := false
				for _, md := range mods {
					signed = signed || strings.EqualFold(md.HeaderName, want)
				}
				if !signed {
					fail(fmt.Errorf("message %d not signed (mods %+v)", i, mods))
					return
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	return lat
}

func pct(d []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// row is one measured target.
type row struct {
	section  string // "milter only", "full path", "protocol layer"
	name     string
	rate     float64 // messages per second
	p50, p99 time.Duration
	cpuMsg   time.Duration // the milter process's CPU per message; 0: none
	// Full path only: the rate until every message reached the sink, and
	// the CPU per message of the Postfix instance, relaying included.
	through    float64
	postfixCPU time.Duration
}

var (
	resultsMu     sync.Mutex
	results       []row
	notes         []string
	missedTargets int
)

func record(r row) {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	results = append(results, r)
	if r.section == "full path" {
		fmt.Printf("%-15s %-30s %8.0f msg/s  delivered %4.0f msg/s  cpu %.3f ms/msg  postfix cpu %.3f ms/msg\n", r.section, r.name, r.rate, r.through, float64(r.cpuMsg)/1e6, float64(r.postfixCPU)/1e6)
		return
	}
	fmt.Printf("%-15s %-30s %8.0f msg/s  p50 %-9s p99 %-9s cpu %.3f ms/msg\n", r.section, r.name, r.rate, dur(r.p50), dur(r.p99), float64(r.cpuMsg)/1e6)
}

func note(s string) {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	notes = append(notes, s)
	fmt.Println(s)
}

func find(section, name string) *row {
	for i := range results {
		if results[i].section == section && results[i].name == name {
			return &results[i]
		}
	}
	return nil
}

func dur(d time.Duration) string {
	if d == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f ms", float64(d)/1e6)
}

// printSummary prints every result as a Markdown table, then the targets.
func printSummary() {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	if len(results) == 0 {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n## Summary: %d messages of %d bytes, %d connections, %s\n\n", nMsgs, msgBytes, nConns, time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	b.WriteString("| path | target | msg/s | p50 | p99 | milter CPU ms/msg |\n|---|---|---:|---:|---:|---:|\n")
	for _, r := range results {
		cpu := "—"
		if r.cpuMsg > 0 {
			cpu = fmt.Sprintf("%.3f", float64(r.cpuMsg)/1e6)
		}
		fmt.Fprintf(&b, "| %s | %s | %.0f | %s | %s | %s |\n", r.section, r.name, r.rate, dur(r.p50), dur(r.p99), cpu)
	}
	var full []row
	for _, r := range results {
		if r.section == "full path" {
			full = append(full, r)
		}
	}
	if len(full) > 0 {
		// Intake: smtp-source's rate while Postfix relays in the background.
		// Delivered: until the sink has every message, so the relaying
		// that intake leaves for later is counted too. Postfix CPU is its
		// whole instance (smtpd, cleanup, qmgr, smtp…) over the same span.
		base := find("full path", "no milter")
		b.WriteString("\nFull path, per target:\n\n| target | intake msg/s | delivered msg/s | milter CPU ms/msg | Postfix CPU ms/msg | Postfix CPU over no milter |\n|---|---:|---:|---:|---:|---:|\n")
		for _, r := range full {
			mc, over := "—", "—"
			if r.cpuMsg > 0 {
				mc = fmt.Sprintf("%.3f", float64(r.cpuMsg)/1e6)
			}
			if base != nil && r.name != base.name {
				over = fmt.Sprintf("%+.3f", float64(r.postfixCPU-base.postfixCPU)/1e6)
			}
			fmt.Fprintf(&b, "| %s | %.0f | %.0f | %s | %.3f | %s |\n", r.name, r.rate, r.through, mc, float64(r.postfixCPU)/1e6, over)
		}
	}
	b.WriteString("\nTargets:\n")
	ratio := func(label, sec, num, den string, min float64) {
		n, d := find(sec, num), find(sec, den)
		if n == nil || d == nil || d.rate == 0 {
			fmt.Fprintf(&b, "- %s: not measured\n", label)
			return
		}
		r := n.rate / d.rate
		verdict := "met"
		if r < min {
			verdict = "MISSED"
			missedTargets++
		}
		fmt.Fprintf(&b, "- %s: %.2f× (want ≥ %.1f×) %s\n", label, r, min, verdict)
	}
	ratio("milter only, postkit RSA-2048 (pure Go) / OpenDKIM RSA-2048, unix", "milter only", "postkit unix RSA (Go)", "opendkim unix RSA", 1.5)
	ratio("milter only, postkit RSA-2048 (-tags openssl) / OpenDKIM RSA-2048, unix", "milter only", "postkit unix RSA (openssl)", "opendkim unix RSA", 1.5)
	ratio("milter only, postkit Ed25519 / OpenDKIM RSA-2048, unix", "milter only", "postkit unix Ed25519", "opendkim unix RSA", 5)
	ratio("full path, postkit RSA-2048 (pure Go) / no milter", "full path", "postkit unix RSA (Go)", "no milter", 0.7)
	ratio("full path, postkit RSA-2048 (-tags openssl) / no milter", "full path", "postkit unix RSA (openssl)", "no milter", 0.7)
	ratio("full path, postkit Ed25519 / no milter", "full path", "postkit unix Ed25519", "no milter", 0.8)
	ratio("full path, postkit RSA-2048 (pure Go) / OpenDKIM (less overhead: > 1)", "full path", "postkit unix RSA (Go)", "opendkim unix RSA", 1.0)
	through := func(label, num string) {
		n, d := find("full path", num), find("full path", "no milter")
		if n == nil || d == nil || d.through == 0 {
			return
		}
		fmt.Fprintf(&b, "- %s: %.2f× (delivered rate, for information)\n", label, n.through/d.through)
	}
	through("full path, postkit RSA-2048 (pure Go) / no milter", "postkit unix RSA (Go)")
	through("full path, postkit RSA-2048 (-tags openssl) / no milter", "postkit unix RSA (openssl)")
	through("full path, postkit Ed25519 / no milter", "postkit unix Ed25519")
	through("full path, OpenDKIM RSA-2048 / no milter", "opendkim unix RSA")
	b.WriteString("\nCPU per message of the milter process, OpenDKIM RSA-2048 / postkit (milter only; steadier than throughput on a loaded machine):\n")
	for _, name := range []string{"postkit unix RSA (Go)", "postkit unix RSA (openssl)", "postkit unix Ed25519"} {
		n, d := find("milter only", name), find("milter only", "opendkim unix RSA")
		if n != nil && d != nil && n.cpuMsg > 0 {
			fmt.Fprintf(&b, "- %s: %.2f× less CPU than OpenDKIM\n", name, float64(d.cpuMsg)/float64(n.cpuMsg))
		}
	}
	for _, n := range notes {
		b.WriteString("- " + n + "\n")
	}
	fmt.Print(b.String())
}

// target is one milter address under measurement.
type target struct {
	name    string
	p       *proc
	network string // "unix" or "tcp"
	lat     []time.Duration
	elapsed time.Duration
	cpu     time.Duration
}

// measure drives every target with go-milter's client and records them.
// The targets alternate in BENCH_ROUNDS rounds (default 2), the order
// rotating every round, so that the machine's drift spreads over all of them.
func measure(t *testing.T, section, want string, raw []byte, tgs []*target) {
	t.Helper()
	addr := func(tg *target) (string, string) {
		a, err := daemon.ParseAddr(tg.p.addr[tg.network])
		if err != nil {
			t.Fatal(err)
		}
		return a.Network, a.Address
	}
	for _, tg := range tgs {
		n, a := addr(tg)
		driveCheck(t, n, a, 50, 2, raw, want) // warm up
	}
	rounds := envInt("BENCH_ROUNDS", 2)
	per := (nMsgs + rounds - 1) / rounds
	for r := 0; r < rounds; r++ {
		for i := range tgs {
			tg := tgs[(i+r)%len(tgs)]
			n, a := addr(tg)
			c0 := cpu(t, tg.p.pid())
			t0 := time.Now()
			tg.lat = append(tg.lat, driveCheck(t, n, a, per, nConns, raw, want)...)
			tg.elapsed += time.Since(t0)
			tg.cpu += cpu(t, tg.p.pid()) - c0
		}
	}
	for _, tg := range tgs {
		n := len(tg.lat)
		record(row{section: section, name: tg.name, rate: float64(n) / tg.elapsed.Seconds(), p50: pct(tg.lat, 0.5), p99: pct(tg.lat, 0.99), cpuMsg: tg.cpu / time.Duration(n)})
	}
}

// TestMilterOnly: go-milter's client straight to each milter, the way
// Postfix talks to it from a trusted client.
func TestMilterOnly(t *testing.T) {
	dir := miltertest.PublicTempDir(t)
	rsaKey, edKey := genKey(t, dir, "rsa"), genKey(t, dir, "ed25519")
	od := startOpenDKIM(t, dir, rsaKey)
	pkGo := startPostkit(t, dir, "postkit-rsa-go", postkitBin(t, false), rsaKey)
	pkEd := startPostkit(t, dir, "postkit-ed25519", postkitBin(t, false), edKey)
	tgs := []*target{
		{name: "opendkim unix RSA", p: od, network: "unix"},
		{name: "postkit unix RSA (Go)", p: pkGo, network: "unix"},
		{name: "postkit tcp RSA (Go)", p: pkGo, network: "tcp"},
		{name: "postkit unix Ed25519", p: pkEd, network: "unix"},
		{name: "postkit tcp Ed25519", p: pkEd, network: "tcp"},
	}
	if binOpenSSL != "" {
		pkSSL := startPostkit(t, dir, "postkit-rsa-openssl", postkitBin(t, true), rsaKey)
		tgs = append(tgs,
			&target{name: "postkit unix RSA (openssl)", p: pkSSL, network: "unix"},
			&target{name: "postkit tcp RSA (openssl)", p: pkSSL, network: "tcp"})
	} else {
		note("postkit -tags openssl not measured: POSTKIT_BENCH_BIN_OPENSSL not set (run bench/milter/run.sh)")
	}
	measure(t, "milter only", "DKIM-Signature", message(msgBytes), tgs)
}

// TestProtocolLayer: the same trivial filter (insert one header at end of
// message) on go-milter's server and on milterd: the cost of the protocol
// layer alone, the measurement behind writing milterd.
func TestProtocolLayer(t *testing.T) {
	dir := miltertest.PublicTempDir(t)
	measure(t, "protocol layer", "X-Bench", message(msgBytes), []*target{
		{name: "go-milter unix (trivial)", p: startServer(t, dir, "go-milter"), network: "unix"},
		{name: "milterd unix (trivial)", p: startServer(t, dir, "postkit"), network: "unix"},
	})
}

// TestFullPath: smtp-source → Postfix → milter → smtp-sink, every message
// checked for its signature in the sink's dump.
func TestFullPath(t *testing.T) {
	miltertest.NeedBinary(t, "postfix", "smtp-source", "smtp-sink")
	dir := miltertest.PublicTempDir(t)
	rsaKey, edKey := genKey(t, dir, "rsa"), genKey(t, dir, "ed25519")
	type named struct {
		name  string
		start func() *proc // nil: no milter
	}
	all := []named{
		{"no milter", nil},
		{"opendkim unix RSA", func() *proc { return startOpenDKIM(t, dir, rsaKey) }},
		{"postkit unix RSA (Go)", func() *proc { return startPostkit(t, dir, "postkit-rsa-go", postkitBin(t, false), rsaKey) }},
		{"postkit unix Ed25519", func() *proc { return startPostkit(t, dir, "postkit-ed25519", postkitBin(t, false), edKey) }},
	}
	// The protocol layer alone (milterd with the trivial filter of
	// TestProtocolLayer: one header inserted, no crypto): the floor of any
	// milter on this path, Postfix's side of the protocol included.
	all = append(all, named{"milterd unix (trivial)", func() *proc { return startServer(t, dir, "postkit") }})
	if binOpenSSL != "" {
		all = append(all, named{"postkit unix RSA (openssl)", func() *proc {
			return startPostkit(t, dir, "postkit-rsa-openssl", postkitBin(t, true), rsaKey)
		}})
	}
	// A/B: the same targets run by other binaries (an older build), in the
	// same rounds, so that both see the same machine.
	if b := os.Getenv("POSTKIT_BENCH_BIN_BASE"); b != "" {
		all = append(all, named{"postkit unix Ed25519 (base)", func() *proc {
			return startPostkit(t, dir, "base-ed25519", verifyBuild(t, b, false), edKey)
		}})
	}
	if b := os.Getenv("POSTKIT_BENCH_BIN_OPENSSL_BASE"); b != "" {
		all = append(all, named{"postkit unix RSA (openssl, base)", func() *proc {
			return startPostkit(t, dir, "base-rsa-openssl", verifyBuild(t, b, true), rsaKey)
		}})
	}
	var targets []struct {
		name string
		p    *proc
	}
	for _, n := range all {
		if !selected(t, n.name) {
			continue
		}
		var p *proc
		if n.start != nil {
			p = n.start()
		}
		targets = append(targets, struct {
			name string
			p    *proc
		}{n.name, p})
	}
	// Every target gets its own sink and Postfix, started up front; the
	// measurement then alternates between targets in rounds so that the
	// machine's drift (other load, page cache, CPU frequency) spreads over
	// all of them instead of favouring whichever ran first.
	type fullTarget struct {
		name    string
		p       *proc
		pf      *miltertest.Postfix
		dump    string
		want    string        // the header every relayed message must carry
		elapsed time.Duration // smtp-source runs: the intake rate
		through time.Duration // from smtp-source's start until the sink has every message
		cpu     time.Duration // the milter's CPU
		pfCPU   time.Duration // the Postfix instance's CPU, relaying included
		// The sink's dump, scanned incrementally.
		scanned     int64
		got, signed int
		partial     []byte
	}
	var fts []*fullTarget
	for _, tg := range targets {
		sinkDir := filepath.Join(dir, "sink-"+strings.NewReplacer(" ", "-", "(", "", ")", "").Replace(tg.name))
		os.MkdirAll(sinkDir, 0o777)
		os.Chmod(sinkDir, 0o777) // smtp-sink drops to the postfix user
		dump := filepath.Join(sinkDir, "dump")
		sinkPort := miltertest.FreePort(t)
		sink := exec.Command("smtp-sink", "-u", "postfix", "-D", dump, fmt.Sprintf("127.0.0.1:%d", sinkPort), "256")
		sink.Stderr = os.Stderr
		if err := sink.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sink.Process.Kill(); sink.Wait() })
		milters := ""
		if tg.p != nil {
			milters = tg.p.addr["unix"]
		}
		pf := miltertest.StartPostfix(t, miltertest.PostfixOptions{
			Milters: milters,
			Relay:   fmt.Sprintf("[127.0.0.1]:%d", sinkPort),
			Main: map[string]string{
				"smtpd_client_connection_count_limit": "0",
				"smtpd_client_connection_rate_limit":  "0",
				"smtpd_client_message_rate_limit":     "0",
				"default_process_limit":               "100",
				"smtp_destination_concurrency_limit":  "20",
			},
		})
		want := "DKIM-Signature:"
		if strings.Contains(tg.name, "trivial") {
			want = "X-Bench:"
		}
		fts = append(fts, &fullTarget{name: tg.name, p: tg.p, pf: pf, dump: dump, want: want})
	}
	run := func(ft *fullTarget, n int) time.Duration {
		t0 := time.Now()
		args := []string{"-s", strconv.Itoa(nConns), "-m", strconv.Itoa(n), "-l", strconv.Itoa(msgBytes),
			"-f", "alice@" + domain, "-t", "bob@example.org", ft.pf.Addr()}
		if !newSessions {
			args = append([]string{"-d"}, args...) // keep each SMTP session for many messages
		}
		out, err := exec.Command("smtp-source", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: smtp-source: %v\n%s", ft.name, err, out)
		}
		return time.Since(t0)
	}
	// scan reads what the sink appended to its dump since the last call
	// (whole lines only) and counts transactions and signatures.
	scan := func(ft *fullTarget) {
		f, err := os.Open(ft.dump)
		if err != nil {
			return
		}
		defer f.Close()
		buf := make([]byte, 1<<20)
		for {
			n, err := f.ReadAt(buf, ft.scanned)
			if n > 0 {
				ft.scanned += int64(n)
				chunk := append(ft.partial, buf[:n]...)
				last := bytes.LastIndexByte(chunk, '\n')
				done := chunk[:last+1]
				ft.got += bytes.Count(done, []byte("X-Mail-Args: ")) // one per transaction in the dump
				ft.signed += bytes.Count(done, []byte(ft.want))
				ft.partial = append([]byte(nil), chunk[last+1:]...)
			}
			if err != nil || n == 0 {
				return
			}
		}
	}
	// waitDrained waits until Postfix has relayed everything to the sink,
	// so that one target's queue does not compete with the next one.
	waitDrained := func(ft *fullTarget, total int) {
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if scan(ft); ft.got >= total {
				return
			}
		}
	}
	const warm = 50
	for _, ft := range fts {
		run(ft, warm)
		waitDrained(ft, warm)
	}
	rounds := envInt("BENCH_ROUNDS", 2)
	per := (nMsgs + rounds - 1) / rounds
	sent := map[*fullTarget]int{}
	for r := 0; r < rounds; r++ {
		for i := range fts {
			ft := fts[(i+r)%len(fts)] // rotate the order every round
			var c0 time.Duration
			if ft.p != nil {
				c0 = cpu(t, ft.p.pid())
			}
			pf0 := postfixCPU(t, ft.pf)
			t0 := time.Now()
			ft.elapsed += run(ft, per)
			sent[ft] += per
			waitDrained(ft, warm+sent[ft])
			ft.through += time.Since(t0)
			ft.pfCPU += postfixCPU(t, ft.pf) - pf0
			if ft.p != nil {
				ft.cpu += cpu(t, ft.p.pid()) - c0
			}
		}
	}
	for _, ft := range fts {
		total := warm + sent[ft]
		waitDrained(ft, total)
		if ft.got < total {
			t.Errorf("%s: sink has %d messages, want %d", ft.name, ft.got, total)
		}
		if ft.p != nil && ft.signed < total {
			t.Errorf("%s: %d of %d relayed messages carry %s", ft.name, ft.signed, ft.got, ft.want)
		}
		if n := strings.Count(ft.pf.Log(), "milter-reject"); n > 0 {
			t.Errorf("%s: %d milter rejections in the Postfix log", ft.name, n)
		}
		n := time.Duration(sent[ft])
		r := row{section: "full path", name: ft.name, rate: float64(sent[ft]) / ft.elapsed.Seconds(),
			through: float64(sent[ft]) / ft.through.Seconds(), postfixCPU: ft.pfCPU / n}
		if ft.p != nil {
			r.cpuMsg = ft.cpu / n
		}
		record(r)
	}
}

// postfixCPU returns the CPU time (user+system) used so far by a Postfix
// instance: its master, the children master reaped (every smtpd, cleanup,
// smtp… that exited) and the children still running.
func postfixCPU(t testing.TB, pf *miltertest.Postfix) time.Duration {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(pf.Dir, "queue", "pid", "master.pid"))
	if err != nil {
		t.Fatal(err)
	}
	master, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("master.pid: %v", err)
	}
	c, err := procstat.TreeCPU(master)
	if err != nil {
		t.Fatalf("postfix master %d: %v", master, err)
	}
	return c
}

// TestLargeMessage: a 30 MB message through postkit must not grow its peak
// RSS by 16 MB or more (the body is streamed, never accumulated).
func TestLargeMessage(t *testing.T) {
	dir := miltertest.PublicTempDir(t)
	pk := startPostkit(t, dir, "postkit-large", postkitBin(t, false), genKey(t, dir, "rsa"))
	a, _ := daemon.ParseAddr(pk.addr["unix"])
	drive(t, a.Network, a.Address, 20, 1, message(msgBytes)) // warm up
	r0, h0 := rss(t, pk.pid())
	lat := drive(t, a.Network, a.Address, 1, 1, message(30<<20))
	r1, h1 := rss(t, pk.pid())
	msg := fmt.Sprintf("30 MB message through postkit (RSA-2048): %s; RSS %d → %d kB, peak %d → %d kB (peak growth %d kB, want < 16384 kB)",
		lat[0].Round(time.Millisecond), r0>>10, r1>>10, h0>>10, h1>>10, (h1-h0)>>10)
	note(msg)
	if h1-h0 >= 16<<20 {
		t.Errorf("peak RSS grew by %d MB, want < 16 MB", (h1-h0)>>20)
	}
}
