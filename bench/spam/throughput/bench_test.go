//go:build bench

// Package throughput measures the spam filters side by side, on the same
// generated messages, in one run: postkit's milter with its spam filter
// (the real `postkit milter` binary, Bayes store trained), SpamAssassin
// through spamass-milter and spamd (Debian's, stock rules, Bayes trained,
// network tests off), and rspamd's milter (Debian's rspamd 3.4, proxy
// worker scanning itself, DNS answered by a loopback server). For each:
// milter-only throughput and latency (go-milter's client, as Postfix talks
// to a milter), the full path (a Go SMTP client → Postfix → milter →
// smtp-sink, every message checked in the sink), the CPU time per message
// of the filter's whole process tree, and its resident memory. Run it with
// bench/spam/throughput/run.sh, which installs the peers and builds
// postkit; the summary table (Markdown) is printed at the end.
package throughput

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
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
	"github.com/postkit/postkit/internal/dnstest"
	"github.com/postkit/postkit/internal/procstat"
	"github.com/postkit/postkit/milter/miltertest"
	"github.com/postkit/postkit/spam"
)

// Knobs (run.sh passes them through).
var (
	nMsgs    = envInt("BENCH_MESSAGES", 2000)   // postkit and rspamd
	nMsgsSA  = envInt("BENCH_SA_MESSAGES", 200) // SpamAssassin, ~9 msg/s here
	nConns   = envInt("BENCH_CONNS", 8)         // milter connections / SMTP sessions
	msgBytes = envInt("BENCH_SIZE", 5120)       // message size
	nTrain   = envInt("BENCH_TRAIN", 1000)      // postkit: spam and ham learned each
	nTrainSA = envInt("BENCH_SA_TRAIN", 200)    // SpamAssassin: its minimum for Bayes
	binPath  = os.Getenv("POSTKIT_BENCH_BIN")   // the postkit binary under test
	strict   = os.Getenv("BENCH_STRICT") == "1" // a missed target fails the run
	only     = os.Getenv("BENCH_TARGETS")       // regexp of target names
	maxRun   = envDur("BENCH_TARGET_TIMEOUT", 4*time.Minute)
)

func envInt(k string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(k)); err == nil && n > 0 {
		return n
	}
	return def
}

func envDur(k string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(k)); err == nil && d > 0 {
		return d
	}
	return def
}

func selected(t testing.TB, name string) bool {
	if only == "" {
		return true
	}
	re, err := regexp.Compile(only)
	if err != nil {
		t.Fatalf("BENCH_TARGETS %q: %v", only, err)
	}
	return re.MatchString(name)
}

func TestMain(m *testing.M) {
	code := m.Run()
	printSummary()
	if fix != nil {
		fix.dns.Close()
		os.RemoveAll(fix.dir)
	}
	if strict && missed > 0 && code == 0 {
		code = 1
	}
	os.Exit(code)
}

// peer is a spam milter under measurement.
type peer struct {
	name   string
	addr   string // Postfix-syntax milter address
	roots  []int  // process trees whose CPU and memory are its cost
	header string // the field every scored message gets
	msgs   int    // how many messages it is given
	// metrics is postkit's metrics endpoint, read for the Go heap beside
	// the resident size; "" for the peers.
	metrics string
}

func (p *peer) cpu(t testing.TB) time.Duration {
	var total time.Duration
	for _, pid := range p.roots {
		c, err := procstat.TreeCPU(pid)
		if err != nil {
			t.Fatalf("%s: %v", p.name, err)
		}
		total += c
	}
	return total
}

// mem returns the resident memory of the filter's process trees: the sum
// of their RSS (pages shared between processes counted in each, as top
// shows them) and of their PSS (shared pages split between the sharers:
// what the filter holds).
func (p *peer) mem(t testing.TB) (rss, pss int64) {
	for _, pid := range p.roots {
		r, err := procstat.TreeRSS(pid)
		if err != nil {
			t.Fatalf("%s: %v", p.name, err)
		}
		s, err := procstat.TreePSS(pid)
		if err != nil {
			t.Fatalf("%s: %v", p.name, err)
		}
		rss, pss = rss+r, pss+s
	}
	return rss, pss
}

// fixture is what the targets share: the working directory, the messages,
// a loopback DNS server answering NXDOMAIN.
type fixture struct {
	dir   string
	train struct{ spam, ham [][]byte }
	msgs  [][]byte
	dns   *dnstest.Server
}

var (
	fixOnce sync.Once
	fix     *fixture
	fixErr  error
)

func getFixture(t testing.TB) *fixture {
	t.Helper()
	fixOnce.Do(func() {
		dir, err := os.MkdirTemp("", "postkit-bench-spam-")
		if err != nil {
			fixErr = err
			return
		}
		os.Chmod(dir, 0o755)
		f := &fixture{dir: dir}
		c := newCorpus(1)
		n := max(nTrain, nTrainSA)
		for i := 0; i < n; i++ {
			f.train.spam = append(f.train.spam, c.message(true, msgBytes))
			f.train.ham = append(f.train.ham, c.message(false, msgBytes))
		}
		f.msgs = newCorpus(2).messages(max(nMsgs, nMsgsSA)+200, msgBytes)
		if f.dns, fixErr = dnstest.Start(); fixErr != nil {
			return
		}
		fix = f
	})
	if fixErr != nil {
		t.Fatal(fixErr)
	}
	return fix
}

// startPostkit runs `postkit milter` with the spam filter on a store
// trained with the fixture's messages.
func startPostkit(t testing.TB, f *fixture) *peer {
	t.Helper()
	if binPath == "" {
		t.Skip("POSTKIT_BENCH_BIN not set: run bench/spam/throughput/run.sh")
	}
	label, err := buildlabel.Describe(binPath)
	if err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(f.dir, "postkit-run")
	os.MkdirAll(run, 0o755)
	store := filepath.Join(run, "bayes.sqlite")
	if _, err := os.Stat(store); err != nil {
		t0 := time.Now()
		e, err := spam.New(spam.Config{BayesPath: store})
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		for i := 0; i < nTrain; i++ {
			if _, err := e.Learn(ctx, f.train.spam[i], true); err != nil {
				t.Fatal(err)
			}
			if _, err := e.Learn(ctx, f.train.ham[i], false); err != nil {
				t.Fatal(err)
			}
		}
		st, _ := e.Stats(ctx)
		e.Close()
		fi, _ := os.Stat(store)
		note(fmt.Sprintf("postkit Bayes store: %d spam and %d ham learned, %d tokens, %d kB, trained in %v", st.Spam, st.Ham, st.Tokens, fi.Size()>>10, time.Since(t0).Round(time.Millisecond)))
	}
	note("postkit binary " + binPath + ": " + label)
	sock := filepath.Join(f.dir, "postkit.sock")
	ml, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metricsAddr := ml.Addr().String()
	ml.Close()
	cmd := exec.Command(binPath, "milter", "--listen", "unix:"+sock, "--socket-mode", "0666", "--log-level", "warn", "--drain", "5s",
		"--spam", "--set", "paths.postkit_run="+run, "--set", "milter.metrics="+metricsAddr)
	cmd.Stderr = os.Stderr
	start(t, cmd, sock)
	return &peer{name: "postkit spam", addr: "unix:" + sock, roots: []int{cmd.Process.Pid}, header: "X-Spam-Status", msgs: nMsgs,
		metrics: "http://" + metricsAddr + "/metrics"}
}

// startSA runs spamd (stock rules, Bayes trained, network tests off, five
// children as the reference installation) and spamass-milter in front of
// it.
func startSA(t testing.TB, f *fixture) *peer {
	t.Helper()
	miltertest.NeedBinary(t, "spamd", "spamass-milter", "sa-learn")
	d := filepath.Join(f.dir, "sa")
	site := filepath.Join(d, "site")
	os.MkdirAll(site, 0o755)
	os.MkdirAll(filepath.Join(d, "bayes"), 0o777)
	os.MkdirAll(filepath.Join(d, "home"), 0o777)
	// The plugin loader files, then the reference's local.cf.
	pres, _ := filepath.Glob("/etc/spamassassin/*.pre")
	for _, p := range pres {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(site, filepath.Base(p)), b, 0o644)
	}
	local := fmt.Sprintf(`required_score 5.0
report_safe 0
skip_rbl_checks 1
bayes_path %s/bayes/bayes
bayes_file_mode 0666
add_header all Status _YESNO_, score=_SCORE_ required=_REQD_ tests=_TESTS_ autolearn=_AUTOLEARN_ version=_VERSION_
add_header all Level _STARS(*)_
`, d)
	os.WriteFile(filepath.Join(site, "local.cf"), []byte(local), 0o644)
	if _, err := os.Stat(filepath.Join(d, "bayes", "bayes_toks")); err != nil {
		t0 := time.Now()
		for kind, msgs := range map[string][][]byte{"spam": f.train.spam[:nTrainSA], "ham": f.train.ham[:nTrainSA]} {
			md := filepath.Join(d, "train-"+kind)
			os.MkdirAll(md, 0o755)
			for i, m := range msgs {
				os.WriteFile(filepath.Join(md, strconv.Itoa(i)), m, 0o644)
			}
			out, err := exec.Command("sa-learn", "-L", "--siteconfigpath", site, "--dbpath", filepath.Join(d, "bayes"), "--"+kind, md).CombinedOutput()
			if err != nil {
				t.Fatalf("sa-learn --%s: %v\n%s", kind, err, out)
			}
		}
		exec.Command("chmod", "-R", "a+rw", filepath.Join(d, "bayes")).Run()
		note(fmt.Sprintf("SpamAssassin Bayes: %d spam and %d ham learned with sa-learn in %v", nTrainSA, nTrainSA, time.Since(t0).Round(time.Second)))
	}
	spamdSock := filepath.Join(d, "spamd.sock")
	spamd := exec.Command("spamd", "-L", "-x", "--siteconfigpath", site, "--socketpath", spamdSock, "--socketmode", "0666",
		"-u", "nobody", "--helper-home-dir", filepath.Join(d, "home"), "-m", "5", "--min-children", "5", "--min-spare", "1", "--max-spare", "5",
		"-s", filepath.Join(d, "spamd.log"), "--pidfile", filepath.Join(d, "spamd.pid"))
	spamd.Stderr = os.Stderr
	start(t, spamd, spamdSock)
	millSock := filepath.Join(d, "spamass.sock")
	// umask 000: Postfix's smtpd (user postfix) connects to the socket.
	mill := exec.Command("sh", "-c", "umask 000; exec spamass-milter -p "+millSock+" -- -U "+spamdSock)
	mill.Stderr = os.Stderr
	start(t, mill, millSock)
	ver, _ := exec.Command("spamd", "--version").Output()
	note("SpamAssassin: " + strings.SplitN(strings.TrimSpace(string(ver)), "\n", 2)[0] + " (Debian), spamass-milter 0.4.0, spamd -m 5, -L (no network tests)")
	return &peer{name: "spamass-milter + spamd", addr: "unix:" + millSock, roots: []int{spamd.Process.Pid, mill.Process.Pid}, header: "X-Spam-Status", msgs: nMsgsSA}
}

// startRspamd runs rspamd's milter (the proxy worker with self_scan, as
// for a single host), headers added for every client, DNS to the loopback
// server. Its Bayes classifier needs Redis, which is not run: it scores
// with its rules.
func startRspamd(t testing.TB, f *fixture) *peer {
	t.Helper()
	miltertest.NeedBinary(t, "rspamd")
	d := filepath.Join(f.dir, "rspamd")
	for _, s := range []string{"local.d", "db", "run", "log"} {
		os.MkdirAll(filepath.Join(d, s), 0o777)
		os.Chmod(filepath.Join(d, s), 0o777)
	}
	sock := filepath.Join(d, "run", "milter.sock")
	conf := fmt.Sprintf(`.include "$CONFDIR/common.conf"
options {
    pidfile = "$RUNDIR/rspamd.pid";
    .include "$CONFDIR/options.inc"
    .include(try=true; priority=1,duplicate=merge) "$LOCAL_CONFDIR/local.d/options.inc"
}
logging {
    type = "file";
    filename = "$LOGDIR/rspamd.log";
    level = "warning";
}
worker "rspamd_proxy" {
    bind_socket = "%s mode=0666";
    milter = yes;
    timeout = 120s;
    count = 1;
    upstream "local" {
        default = yes;
        self_scan = yes;
    }
}
`, sock)
	os.WriteFile(filepath.Join(d, "rspamd.conf"), []byte(conf), 0o644)
	os.WriteFile(filepath.Join(d, "local.d", "options.inc"), []byte(fmt.Sprintf("dns { nameserver = [%q]; }\nlocal_addrs = [];\n", f.dns.Addr())), 0o644)
	os.WriteFile(filepath.Join(d, "local.d", "milter_headers.conf"), []byte("use = [\"x-spamd-result\", \"x-spam-status\", \"x-spam-level\"];\nskip_local = false;\nskip_authenticated = false;\n"), 0o644)
	cmd := exec.Command("rspamd", "-f", "-u", "_rspamd", "-g", "_rspamd", "-c", filepath.Join(d, "rspamd.conf"),
		"--var=LOCAL_CONFDIR="+d, "--var=DBDIR="+filepath.Join(d, "db"), "--var=RUNDIR="+filepath.Join(d, "run"), "--var=LOGDIR="+filepath.Join(d, "log"))
	cmd.Dir = d
	start(t, cmd, sock)
	ver, _ := exec.Command("rspamd", "--version").Output()
	note("rspamd: " + strings.TrimSpace(string(ver)) + " (Debian), proxy worker in milter mode with self_scan, no Redis (no Bayes)")
	return &peer{name: "rspamd", addr: "unix:" + sock, roots: []int{cmd.Process.Pid}, header: "X-Spam-Status", msgs: nMsgs}
}

// start runs cmd in a process group of its own and waits for its socket.
func start(t testing.TB, cmd *exec.Cmd, sock string) {
	t.Helper()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not listen on %s", cmd.Path, sock)
		}
	}
}

// drive sends msgs over conns milter connections with go-milter's client,
// as Postfix would for mail from an outside client (192.0.2.0/24), and
// returns the latencies. Every answer must carry header or be a refusal
// (a filter may refuse spam); it returns how many were refused.
func drive(t testing.TB, p *peer, msgs [][]byte, conns int) ([]time.Duration, int) {
	t.Helper()
	a, err := daemon.ParseAddr(p.addr)
	if err != nil {
		t.Fatal(err)
	}
	cl := milter.NewClientWithOptions(a.Network, a.Address, milter.ClientOptions{
		ReadTimeout: 2 * time.Minute, WriteTimeout: time.Minute,
		ActionMask: miltertest.DefaultActions, ProtocolMask: miltertest.DefaultProtocol,
	})
	lat := make([]time.Duration, len(msgs))
	var mu sync.Mutex
	var firstErr error
	refused := 0
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}
	var wg sync.WaitGroup
	per := (len(msgs) + conns - 1) / conns
	for c := 0; c < conns; c++ {
		lo, hi := c*per, min((c+1)*per, len(msgs))
		if lo >= hi {
			break
		}
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			s, err := cl.Session()
			if err != nil {
				fail(err)
				return
			}
			defer s.Close()
			ip := fmt.Sprintf("192.0.2.%d", 10+c)
			host := fmt.Sprintf("mx%d.partner.test", c)
			s.Macros(milter.CodeConn, "j", "mx.bench.test", "{daemon_name}", "smtpd", "{client_addr}", ip, "{client_name}", host)
			if _, err := s.Conn(host, milter.FamilyInet, 40000+uint16(c), ip); err != nil {
				fail(err)
				return
			}
			if _, err := s.Helo(host); err != nil {
				fail(err)
				return
			}
			for i := lo; i < hi; i++ {
				hdrs, body, err := miltertest.SplitMessage(msgs[i])
				if err != nil {
					fail(err)
					return
				}
				t0 := time.Now()
				s.Macros(milter.CodeMail, "i", fmt.Sprintf("Q%06d", i))
				if _, err := s.Mail("sender@partner.test", nil); err != nil {
					fail(err)
					return
				}
				if _, err := s.Rcpt("bob@bench.test", nil); err != nil {
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
					fail(fmt.Errorf("%s: end of headers: %v %v", p.name, act, err))
					return
				}
				for off := 0; off < len(body); off += milter.MaxBodyChunk {
					if _, err := s.BodyChunk(body[off:min(off+milter.MaxBodyChunk, len(body))]); err != nil {
						fail(err)
						return
					}
				}
				mods, act, err := s.End()
				if err != nil {
					fail(fmt.Errorf("%s: end of message: %v", p.name, err))
					return
				}
				lat[i] = time.Since(t0)
				switch act.Code {
				case milter.ActReject, milter.ActReplyCode:
					mu.Lock()
					refused++
					mu.Unlock()
					continue
				case milter.ActAccept, milter.ActContinue:
				default:
					fail(fmt.Errorf("%s: message %d: action %v", p.name, i, act))
					return
				}
				marked := false
				for _, md := range mods {
					marked = marked || strings.EqualFold(md.HeaderName, p.header)
				}
				if !marked {
					fail(fmt.Errorf("%s: message %d got no %s (changes %+v)", p.name, i, p.header, mods))
					return
				}
			}
		}(c)
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	return lat, refused
}

// TestSpamMilterOnly: each filter with go-milter's client, the same
// messages (each one different), warm-up excluded.
func TestSpamMilterOnly(t *testing.T) {
	f := getFixture(t)
	for _, st := range starters {
		if !selected(t, st.name) {
			continue
		}
		p := st.start(t, f)
		t.Run(p.name, func(t *testing.T) {
			warm := f.msgs[len(f.msgs)-50:]
			drive(t, p, warm, 2)
			msgs := f.msgs[:p.msgs]
			c0 := p.cpu(t)
			t0 := time.Now()
			lat, refused := drive(t, p, msgs, nConns)
			el := time.Since(t0)
			c1 := p.cpu(t)
			r := row{section: "milter only", name: p.name, n: len(msgs), rate: float64(len(msgs)) / el.Seconds(),
				p50: pct(lat, 0.5), p99: pct(lat, 0.99), cpuMsg: (c1 - c0) / time.Duration(len(msgs)), refused: refused}
			r.rss, r.pss = p.mem(t)
			record(r)
			if p.metrics != "" {
				note(memSplit(p))
			}
		})
	}
}

// memSplit says where postkit's resident memory is after the milter-only
// run: private pages (the Go heap and the rest) against mapped files, and
// the Go runtime's own account from the metrics endpoint.
func memSplit(p *peer) string {
	pid := p.roots[0]
	anon, file, err := procstat.RSSSplit(pid)
	if err != nil {
		return "postkit memory split: " + err.Error()
	}
	out := fmt.Sprintf("postkit milter after the milter-only run: RSS %.1f MB = private %.1f MB + mapped files %.1f MB (the binary, libraries)",
		float64(anon+file)/(1<<20), float64(anon)/(1<<20), float64(file)/(1<<20))
	resp, err := http.Get(p.metrics)
	if err != nil {
		return out + "; metrics: " + err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	val := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if f := strings.Fields(line); len(f) == 2 && strings.HasPrefix(f[0], "go_memstats_") {
			val[f[0]], _ = strconv.ParseFloat(f[1], 64)
		}
	}
	mb := func(k string) float64 { return val["go_memstats_"+k] / (1 << 20) }
	return out + fmt.Sprintf("; Go heap in use %.1f MB, idle and not returned %.1f MB, next GC at %.1f MB, all the runtime holds %.1f MB",
		mb("heap_inuse_bytes"), mb("heap_idle_bytes")-mb("heap_released_bytes"), mb("next_gc_bytes"), mb("sys_bytes"))
}

// starters are the filters, in the order they are measured.
var starters = []struct {
	name  string
	start func(testing.TB, *fixture) *peer
}{
	{"postkit spam", startPostkit},
	{"spamass-milter + spamd", startSA},
	{"rspamd", startRspamd},
}

// TestSpamFullPath: a Go SMTP client → Postfix (XCLIENT gives each session
// an outside client address) → the filter → smtp-sink; every message must
// reach the sink marked (or be refused by the filter).
func TestSpamFullPath(t *testing.T) {
	miltertest.NeedBinary(t, "postfix", "smtp-sink")
	f := getFixture(t)
	type target struct {
		name string
		p    *peer
		n    int
	}
	var targets []target
	if selected(t, "no filter") {
		targets = append(targets, target{name: "no filter", n: nMsgs})
	}
	for _, st := range starters {
		if selected(t, st.name) {
			p := st.start(t, f)
			targets = append(targets, target{p.name, p, p.msgs})
		}
	}
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			sinkDir := miltertest.PublicTempDir(t)
			os.Chmod(sinkDir, 0o777)
			dump := filepath.Join(sinkDir, "dump")
			sinkPort := miltertest.FreePort(t)
			sink := exec.Command("smtp-sink", "-u", "postfix", "-D", dump, fmt.Sprintf("127.0.0.1:%d", sinkPort), "256")
			sink.Stderr = os.Stderr
			if err := sink.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { sink.Process.Kill(); sink.Wait() })
			milters, header := "", ""
			if tg.p != nil {
				milters, header = tg.p.addr, tg.p.header
			}
			pf := miltertest.StartPostfix(t, miltertest.PostfixOptions{
				Milters: milters,
				Relay:   fmt.Sprintf("[127.0.0.1]:%d", sinkPort),
				Main: map[string]string{
					"relay_domains":                       "bench.test",
					"smtpd_relay_restrictions":            "permit_mynetworks, reject_unauth_destination",
					"smtpd_client_connection_count_limit": "0",
					"smtpd_client_connection_rate_limit":  "0",
					"smtpd_client_message_rate_limit":     "0",
					"default_process_limit":               "100",
					"smtp_destination_concurrency_limit":  "20",
					"milter_content_timeout":              "300s",
				},
			})
			msgs := f.msgs[:tg.n]
			send(t, pf.Addr(), f.msgs[len(f.msgs)-20:], 2) // warm-up
			got0 := waitSink(t, dump, 20, 0, "", time.Minute)
			var c0 time.Duration
			if tg.p != nil {
				c0 = tg.p.cpu(t)
			}
			master := masterPid(t, pf)
			pf0, _ := procstat.TreeCPU(master)
			t0 := time.Now()
			refused := send(t, pf.Addr(), msgs, nConns)
			intake := time.Since(t0)
			got := waitSink(t, dump, 20+len(msgs)-refused, got0.marked, header, maxRun)
			through := time.Since(t0)
			pf1, _ := procstat.TreeCPU(master)
			r := row{section: "full path", name: tg.name, n: len(msgs), rate: float64(len(msgs)) / intake.Seconds(),
				through: float64(len(msgs)) / through.Seconds(), postfixCPU: (pf1 - pf0) / time.Duration(len(msgs)), refused: refused}
			if tg.p != nil {
				r.cpuMsg = (tg.p.cpu(t) - c0) / time.Duration(len(msgs))
				r.rss, r.pss = tg.p.mem(t)
			}
			if got.count < 20+len(msgs)-refused {
				t.Errorf("%s: the sink has %d of %d messages", tg.name, got.count-20, len(msgs)-refused)
			}
			if tg.p != nil && got.marked-got0.marked < len(msgs)-refused {
				t.Errorf("%s: %d of %d relayed messages carry %s", tg.name, got.marked-got0.marked, len(msgs)-refused, header)
			}
			record(r)
		})
	}
}

// send sends msgs over conns SMTP sessions, each presenting an outside
// client with XCLIENT, and returns how many the server refused with 5xx.
func send(t testing.TB, addr string, msgs [][]byte, conns int) int {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	refused := 0
	per := (len(msgs) + conns - 1) / conns
	for c := 0; c < conns; c++ {
		lo, hi := c*per, min((c+1)*per, len(msgs))
		if lo >= hi {
			break
		}
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			err := func() error {
				host := fmt.Sprintf("mx%d.partner.test", c)
				s, err := miltertest.DialSMTP(addr, "bench-client")
				if err != nil {
					return err
				}
				defer s.Close()
				if err := s.Expect(220, fmt.Sprintf("XCLIENT ADDR=192.0.2.%d NAME=%s HELO=%s", 10+c, host, host)); err != nil {
					return err
				}
				if err := s.Expect(250, "EHLO "+host); err != nil {
					return err
				}
				for i := lo; i < hi; i++ {
					code, text, err := s.Send("sender@partner.test", []string{"bob@bench.test"}, msgs[i])
					switch {
					case err != nil:
						return err
					case code/100 == 5:
						mu.Lock()
						refused++
						mu.Unlock()
						if err := s.Expect(250, "RSET"); err != nil {
							return err
						}
					case code != 250:
						return fmt.Errorf("message %d: %d %s", i, code, text)
					}
				}
				return nil
			}()
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
			}
		}(c)
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	return refused
}

type sinkCount struct{ count, marked int }

// waitSink waits until smtp-sink's dump holds n transactions and returns
// them with how many carry header (all of them, when header is "").
func waitSink(t testing.TB, dump string, n, _ int, header string, limit time.Duration) sinkCount {
	t.Helper()
	var sc sinkCount
	for deadline := time.Now().Add(limit); ; time.Sleep(20 * time.Millisecond) {
		b, _ := os.ReadFile(dump)
		sc.count = bytes.Count(b, []byte("X-Mail-Args: ")) // one per transaction
		sc.marked = sc.count
		if header != "" {
			sc.marked = bytes.Count(b, []byte("\n"+header+":"))
		}
		if sc.count >= n || time.Now().After(deadline) {
			return sc
		}
	}
}

func masterPid(t testing.TB, pf *miltertest.Postfix) int {
	b, err := os.ReadFile(filepath.Join(pf.Dir, "queue", "pid", "master.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// TestSpamLargeMessage: a 30 MB message through postkit's spam filter must
// not grow the milter's peak RSS by 16 MB or more: the filter holds at most
// max_scan_bytes of the body.
func TestSpamLargeMessage(t *testing.T) {
	if !selected(t, "postkit spam") {
		t.Skip("BENCH_TARGETS leaves postkit out")
	}
	f := getFixture(t)
	p := startPostkit(t, f)
	drive(t, p, f.msgs[:50], 2)
	var big bytes.Buffer
	big.Write(f.msgs[0])
	line := strings.Repeat("0123456789", 7) + "abcdefgh\r\n"
	for big.Len() < 30<<20 {
		big.WriteString(line)
	}
	_, h0, _ := procstat.Mem(p.roots[0])
	t0 := time.Now()
	drive(t, p, [][]byte{big.Bytes()}, 1)
	el := time.Since(t0)
	r1, h1, _ := procstat.Mem(p.roots[0])
	note(fmt.Sprintf("30 MB message through postkit's spam filter: %v; RSS now %d kB, peak %d → %d kB (growth %d kB, want < 16384 kB)",
		el.Round(time.Millisecond), r1>>10, h0>>10, h1>>10, (h1-h0)>>10))
	if h1-h0 >= 16<<20 {
		t.Errorf("peak RSS grew by %d MB, want < 16 MB", (h1-h0)>>20)
	}
}

func pct(d []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// row is one measured target.
type row struct {
	section    string
	name       string
	n          int
	rate       float64 // messages per second (milter only; full path: intake)
	through    float64 // full path: until the sink has every message
	p50, p99   time.Duration
	cpuMsg     time.Duration // the filter's process trees, per message
	postfixCPU time.Duration // full path: the Postfix instance, per message
	rss, pss   int64         // the filter's process trees after the run
	refused    int
}

var (
	resultsMu sync.Mutex
	results   []row
	notes     []string
	missed    int
)

func record(r row) {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	results = append(results, r)
	fmt.Printf("%-12s %-24s %5d msgs %8.1f msg/s  cpu %7.3f ms/msg  rss %6.1f MB  pss %6.1f MB  refused %d\n",
		r.section, r.name, r.n, r.rate, ms(r.cpuMsg), float64(r.rss)/(1<<20), float64(r.pss)/(1<<20), r.refused)
}

// note records a line for the summary, once.
func note(s string) {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	for _, n := range notes {
		if n == s {
			return
		}
	}
	notes = append(notes, s)
	fmt.Println(s)
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

func find(section, name string) *row {
	for i := range results {
		if results[i].section == section && results[i].name == name {
			return &results[i]
		}
	}
	return nil
}

func printSummary() {
	resultsMu.Lock()
	defer resultsMu.Unlock()
	if len(results) == 0 {
		return
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n## Spam filters: messages of %d bytes (one in five spam, each different), %d connections, %s\n\n", msgBytes, nConns, time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	b.WriteString("| path | filter | messages | msg/s | delivered msg/s | p50 ms | p99 ms | filter CPU ms/msg | Postfix CPU ms/msg | filter RSS MB | filter PSS MB | refused |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range results {
		dash := func(v float64, f string) string {
			if v == 0 {
				return "—"
			}
			return fmt.Sprintf(f, v)
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %.1f | %s | %s | %s | %s | %s | %s | %s | %d |\n", r.section, r.name, r.n, r.rate,
			dash(r.through, "%.1f"), dash(ms(r.p50), "%.2f"), dash(ms(r.p99), "%.2f"), dash(ms(r.cpuMsg), "%.3f"),
			dash(ms(r.postfixCPU), "%.3f"), dash(float64(r.rss)/(1<<20), "%.1f"), dash(float64(r.pss)/(1<<20), "%.1f"), r.refused)
	}
	b.WriteString("\nTargets:\n")
	check := func(label string, ok bool, got string) {
		v := "met"
		if !ok {
			v = "MISSED"
			missed++
		}
		fmt.Fprintf(&b, "- %s: %s %s\n", label, got, v)
	}
	for _, sec := range []string{"milter only", "full path"} {
		pk, rs, sa := find(sec, "postkit spam"), find(sec, "rspamd"), find(sec, "spamass-milter + spamd")
		if pk == nil {
			fmt.Fprintf(&b, "- %s: postkit not measured\n", sec)
			continue
		}
		check(sec+", postkit CPU per message < 3 ms", pk.cpuMsg < 3*time.Millisecond, fmt.Sprintf("%.3f ms", ms(pk.cpuMsg)))
		if rs != nil && rs.cpuMsg > 0 {
			check(sec+", postkit CPU per message below rspamd's", pk.cpuMsg < rs.cpuMsg, fmt.Sprintf("%.3f ms vs %.3f ms (rspamd / postkit %.2f×)", ms(pk.cpuMsg), ms(rs.cpuMsg), float64(rs.cpuMsg)/float64(max(pk.cpuMsg, 1))))
		}
		if sa != nil && sa.cpuMsg > 0 {
			fmt.Fprintf(&b, "- %s, SpamAssassin / postkit CPU per message: %.0f× (for information)\n", sec, float64(sa.cpuMsg)/float64(max(pk.cpuMsg, 1)))
		}
		check(sec+", postkit RSS with its trained Bayes store < 60 MB", pk.rss < 60<<20, fmt.Sprintf("%.1f MB", float64(pk.rss)/(1<<20)))
	}
	for _, n := range notes {
		b.WriteString("- " + n + "\n")
	}
	fmt.Print(b.String())
}
