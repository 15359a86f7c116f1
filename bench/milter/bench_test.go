//go:build bench

// Package milterbench measures postkit's milter daemon against OpenDKIM:
// milter-only throughput and latency with go-milter's client, the full path
// smtp-source → Postfix → milter → smtp-sink, CPU per message of each milter
// process, and memory for a 30 MB message. Run with bench/milter/run.sh.
package milterbench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-milter"
	"github.com/postkit/postkit/internal/daemon"
	"github.com/postkit/postkit/milter/dkimsign"
	"github.com/postkit/postkit/milter/filter"
	"github.com/postkit/postkit/milter/milterd"
	"github.com/postkit/postkit/milter/miltertest"
	"github.com/postkit/postkit/milter/scrub"
	"net/textproto"
)

const (
	domain   = "bench.test"
	selector = "sel"
)

// Environment knobs (run.sh sets them): message count and size.
var (
	nMsgs    = envInt("BENCH_MESSAGES", 2000)
	nConns   = envInt("BENCH_CONNS", 8)
	msgBytes = envInt("BENCH_SIZE", 5120)
)

func envInt(k string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(k)); err == nil && n > 0 {
		return n
	}
	return def
}

// TestMain doubles as the postkit milter server process: with
// POSTKIT_BENCH_SERVER set, the test binary runs the daemon (scrub + DKIM
// signing) on the listed addresses so its CPU and memory are its own.
func TestMain(m *testing.M) {
	if addrs := os.Getenv("POSTKIT_BENCH_SERVER"); addrs != "" {
		if os.Getenv("POSTKIT_BENCH_IMPL") == "go-milter" {
			os.Exit(serveGoMilter(strings.Fields(addrs)))
		}
		os.Exit(serve(strings.Fields(addrs), os.Getenv("POSTKIT_BENCH_KEY")))
	}
	os.Exit(m.Run())
}

func serve(addrs []string, key string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	sc, err := scrub.New(scrub.Config{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	chain := []filter.Filter{sc}
	if key == "trivial" {
		chain, key = []filter.Filter{trivial{}}, ""
	}
	if key != "" {
		dk, err := dkimsign.New(dkimsign.Config{Keys: []dkimsign.Key{{Domain: domain, Selector: selector, KeyFile: key}}, Logger: log})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		chain = append(chain, dk)
	}
	srv, err := milterd.New(milterd.Config{Chains: map[string][]filter.Filter{milterd.DefaultChain: chain}, Logger: log})
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

// cpu returns utime+stime of the process in clock ticks (proc(5)).
func cpu(t testing.TB, pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // CLK_TCK is 100 on Linux
}

// rss returns VmRSS and VmHWM in bytes.
func rss(t testing.TB, pid int) (cur, peak int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		n, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			cur = n << 10
		case "VmHWM:":
			peak = n << 10
		}
	}
	return
}

func genKey(t testing.TB, dir string) string {
	t.Helper()
	miltertest.NeedBinary(t, "openssl")
	key := filepath.Join(dir, "key.pem")
	out, err := exec.Command("openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	os.Chmod(key, 0o644)
	return key
}

func startPostkit(t testing.TB, dir, key string) *proc { return startServer(t, dir, key, "postkit") }

// startServer runs this test binary as a milter server: impl "postkit" or
// "go-milter"; key is a key file, "" (scrub only) or "trivial".
func startServer(t testing.TB, dir, key, impl string) *proc {
	t.Helper()
	sock := filepath.Join(dir, impl+".sock")
	port := miltertest.FreePort(t)
	p := &proc{addr: map[string]string{"unix": "unix:" + sock, "tcp": fmt.Sprintf("inet:127.0.0.1:%d", port)}}
	p.cmd = exec.Command(os.Args[0])
	p.cmd.Env = append(os.Environ(), "POSTKIT_BENCH_SERVER="+p.addr["unix"]+" "+p.addr["tcp"], "POSTKIT_BENCH_KEY="+key, "POSTKIT_BENCH_IMPL="+impl, "GOMAXPROCS=2")
	p.cmd.Stderr = os.Stderr
	out, _ := p.cmd.StdoutPipe()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := out.Read(buf); err != nil || string(buf[:5]) != "ready" {
		t.Fatalf("postkit bench server did not start: %q %v", buf, err)
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

type row struct {
	name     string
	rate     float64
	p50, p99 time.Duration
	cpuMsg   time.Duration
}

func report(t testing.TB, title string, rows []row) {
	var b strings.Builder
	fmt.Fprintf(&b, "\n%s\n%-16s %8s %10s %10s %11s\n", title, "target", "msg/s", "p50", "p99", "cpu ms/msg")
	for _, r := range rows {
		fmt.Fprintf(&b, "%-16s %8.0f %10s %10s %11.3f\n", r.name, r.rate, r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), float64(r.cpuMsg)/1e6)
	}
	for i, base := range rows {
		for _, r := range rows[i+1:] {
			fmt.Fprintf(&b, "ratio %s / %s: throughput %.2fx", r.name, base.name, r.rate/base.rate)
			if base.cpuMsg > 0 && r.cpuMsg > 0 {
				fmt.Fprintf(&b, ", cpu/msg %.2fx", float64(r.cpuMsg)/float64(base.cpuMsg))
			}
			b.WriteString("\n")
		}
	}
	t.Log(b.String())
	fmt.Print(b.String())
}

// TestMilterOnly: go-milter's client straight to each milter.
func TestMilterOnly(t *testing.T) {
	dir := miltertest.PublicTempDir(t)
	key := genKey(t, dir)
	pk := startPostkit(t, dir, key)
	od := startOpenDKIM(t, dir, key)
	raw := message(msgBytes)
	targets := []struct {
		name string
		p    *proc
		net  string
	}{
		{"opendkim unix", od, "unix"},
		{"postkit unix", pk, "unix"},
		{"postkit tcp", pk, "tcp"},
	}
	var rows []row
	for _, tg := range targets {
		a, _ := daemon.ParseAddr(tg.p.addr[tg.net])
		drive(t, a.Network, a.Address, 50, 2, raw) // warm up
		c0 := cpu(t, tg.p.pid())
		t0 := time.Now()
		lat := drive(t, a.Network, a.Address, nMsgs, nConns, raw)
		el := time.Since(t0)
		c1 := cpu(t, tg.p.pid())
		rows = append(rows, row{tg.name, float64(nMsgs) / el.Seconds(), pct(lat, 0.5), pct(lat, 0.99), (c1 - c0) / time.Duration(nMsgs)})
	}
	report(t, fmt.Sprintf("milter only: %d messages of %d bytes, %d connections, RSA-2048 signing", nMsgs, len(raw), nConns), rows)
}

// TestProtocolLayer: the same trivial filter (insert one header at end of
// message) on go-milter's server and on milterd: the cost of the protocol
// layer alone, the measurement behind writing milterd.
func TestProtocolLayer(t *testing.T) {
	dir := miltertest.PublicTempDir(t)
	gm := startServer(t, dir, "", "go-milter")
	pk := startServer(t, dir, "trivial", "postkit")
	raw := message(msgBytes)
	var rows []row
	for _, tg := range []struct {
		name string
		p    *proc
	}{{"go-milter unix", gm}, {"milterd unix", pk}} {
		a, _ := daemon.ParseAddr(tg.p.addr["unix"])
		driveCheck(t, a.Network, a.Address, 50, 2, raw, "X-Bench")
		c0 := cpu(t, tg.p.pid())
		t0 := time.Now()
		lat := driveCheck(t, a.Network, a.Address, nMsgs, nConns, raw, "X-Bench")
		el := time.Since(t0)
		rows = append(rows, row{tg.name, float64(nMsgs) / el.Seconds(), pct(lat, 0.5), pct(lat, 0.99), (cpu(t, tg.p.pid()) - c0) / time.Duration(nMsgs)})
	}
	report(t, fmt.Sprintf("protocol layer: trivial filter, %d messages of %d bytes, %d connections", nMsgs, len(raw), nConns), rows)
}

// TestFullPath: smtp-source → Postfix → milter → smtp-sink.
func TestFullPath(t *testing.T) {
	miltertest.NeedBinary(t, "postfix", "smtp-source", "smtp-sink")
	dir := miltertest.PublicTempDir(t)
	key := genKey(t, dir)
	pk := startPostkit(t, dir, key)
	od := startOpenDKIM(t, dir, key)
	sinkPort := miltertest.FreePort(t)
	sink := exec.Command("smtp-sink", fmt.Sprintf("127.0.0.1:%d", sinkPort), "256")
	if err := sink.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Process.Kill(); sink.Wait() })
	targets := []struct {
		name    string
		p       *proc
		milters string
	}{
		{"no milter", nil, ""},
		{"opendkim unix", od, od.addr["unix"]},
		{"postkit unix", pk, pk.addr["unix"]},
		{"postkit tcp", pk, pk.addr["tcp"]},
	}
	var rows []row
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			pf := miltertest.StartPostfix(t, miltertest.PostfixOptions{
				Milters: tg.milters,
				Relay:   fmt.Sprintf("[127.0.0.1]:%d", sinkPort),
				Main: map[string]string{
					"smtpd_client_connection_count_limit": "0",
					"smtpd_client_connection_rate_limit":  "0",
					"smtpd_client_message_rate_limit":     "0",
					"default_process_limit":               "100",
					"smtp_destination_concurrency_limit":  "20",
				},
			})
			run := func(n int) time.Duration {
				t0 := time.Now()
				out, err := exec.Command("smtp-source", "-d", "-s", strconv.Itoa(nConns), "-m", strconv.Itoa(n), "-l", strconv.Itoa(msgBytes),
					"-f", "alice@"+domain, "-t", "bob@example.org", pf.Addr()).CombinedOutput()
				if err != nil {
					t.Fatalf("smtp-source: %v\n%s", err, out)
				}
				return time.Since(t0)
			}
			run(50)
			var c0 time.Duration
			if tg.p != nil {
				c0 = cpu(t, tg.p.pid())
			}
			el := run(nMsgs)
			r := row{name: tg.name, rate: float64(nMsgs) / el.Seconds()}
			if tg.p != nil {
				r.cpuMsg = (cpu(t, tg.p.pid()) - c0) / time.Duration(nMsgs)
			}
			if n := strings.Count(pf.Log(), "milter-reject"); n > 0 {
				t.Errorf("%d milter rejections in the Postfix log", n)
			}
			rows = append(rows, r)
		})
	}
	report(t, fmt.Sprintf("full path smtp-source -s %d -m %d -l %d → Postfix → milter → smtp-sink (latency not measured)", nConns, nMsgs, msgBytes), rows)
}

// TestLargeMessage: a 30 MB message through postkit must not grow its RSS by
// 16 MB or more (the body is streamed, never accumulated).
func TestLargeMessage(t *testing.T) {
	dir := miltertest.PublicTempDir(t)
	key := genKey(t, dir)
	pk := startPostkit(t, dir, key)
	a, _ := daemon.ParseAddr(pk.addr["unix"])
	drive(t, a.Network, a.Address, 20, 1, message(msgBytes)) // warm up
	r0, h0 := rss(t, pk.pid())
	lat := drive(t, a.Network, a.Address, 1, 1, message(30<<20))
	r1, h1 := rss(t, pk.pid())
	msg := fmt.Sprintf("30 MB message: %s; RSS %d → %d kB, peak %d → %d kB (growth %d kB)", lat[0].Round(time.Millisecond), r0>>10, r1>>10, h0>>10, h1>>10, (h1-h0)>>10)
	t.Log(msg)
	fmt.Println(msg)
	if h1-h0 >= 16<<20 {
		t.Errorf("peak RSS grew by %d MB, want < 16 MB", (h1-h0)>>20)
	}
}
