// Command policyd-bench measures the real `postkit policyd` daemon, over its
// unix socket in the Postfix policy protocol (SMTPD_POLICY_README), on SPF
// requests against a loopback DNS server, side by side with
// postfix-policyd-spf-python, in the same run, on the same requests and the
// same DNS server.
//
//	sh bench/policyd/run.sh                                  # the comparison (root: network namespace)
//	go build -o /tmp/postkit ./cmd/postkit && go run ./bench/policyd \
//	    -postkit /tmp/postkit -peer '' -dns-listen 127.0.0.1:0   # postkit alone, no root
//	go run ./bench/policyd -mode requests -n 500 > req.txt    # the requests, for other peers
//
// Scenarios, each postkit phase on a daemon process of its own:
//
//   - cold: every request names a new client, HELO name and sender domain,
//     so every answer needs fresh DNS lookups;
//   - warm: requests repeat -warm-domains (client, HELO, sender domain)
//     sets, after one untimed pass over them (new local parts and new
//     messages: what a busy MX sees from its regular correspondents), so
//     postkit answers from its caches; the peer keeps none;
//   - memory: a new daemon answers -rss-requests cold requests, then its
//     resident set (VmRSS, and its peak VmHWM) is read from /proc.
//
// The DNS server synthesizes the records of every domain (dnstest's
// Zone.Synth), so the number of distinct domains is unbounded. The
// comparison serves them on -dns-listen, by default 127.0.0.1:53: the peer
// uses the system resolver, so run.sh runs this in a network namespace
// whose resolv.conf points there. Every phase is bounded in requests and
// time (-max-time, -rss-max-time).
//
// It is a program, not a test: `go test ./...` never runs it.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/postkit/postkit/bench/buildlabel"
	"github.com/postkit/postkit/internal/dnstest"
	"github.com/postkit/postkit/internal/procstat"
)

const peerName = "postfix-policyd-spf-python"

// coldDomains is the domain space of cold requests: every request of a run
// has its own domain.
const coldDomains = 1 << 30

func main() {
	mode := flag.String("mode", "compare", "compare (postkit policyd and the peer) | state (greylisting and rate-limit state: SQLite vs PostgreSQL) | requests (print them)")
	postkit := flag.String("postkit", "", "the postkit binary whose `postkit policyd` is measured (run.sh builds it)")
	base := flag.String("postkit-base", "", "an older postkit binary measured in the same rounds (A/B)")
	peerCmd := flag.String("peer", "/usr/bin/python3 /usr/bin/policyd-spf", "the peer's command line; empty: postkit alone")
	n := flag.Int("n", 15000, "requests per postkit phase")
	peerN := flag.Int("peer-n", 800, "requests per peer phase")
	conc := flag.Int("c", 4, "concurrent connections (postkit) and processes (peer)")
	rounds := flag.Int("rounds", 3, "rounds of the phases; the median round is printed")
	warmDomains := flag.Int("warm-domains", 50, "distinct (client, HELO, sender domain) sets of the warm scenario")
	rssN := flag.Int("rss-requests", 200000, "distinct requests before the daemon's RSS is read; 0: no memory phase")
	dnsListen := flag.String("dns-listen", "127.0.0.1:53", "where the zone is served (the peer's resolv.conf must point there)")
	maxTime := flag.Duration("max-time", 20*time.Second, "stop sending after this long, per phase")
	rssMaxTime := flag.Duration("rss-max-time", 150*time.Second, "stop the memory phase after this long")
	logLevel := flag.String("log-level", "warn", "the daemon's --log-level (info: one line per request, as in production)")
	strict := flag.Bool("strict", false, "exit 1 when the memory target is missed")
	pgDSN := flag.String("pg-dsn", "", "-mode state: the PostgreSQL database the daemons share (empty: SQLite only)")
	senders := flag.Int("senders", 1000, "-mode state: distinct senders counted by the rate limit")
	pool := flag.Int("known", 2000, "-mode state: triplets that passed greylisting before the known scenario")
	flag.Parse()

	switch *mode {
	case "requests":
		w := bufio.NewWriter(os.Stdout)
		for i := range *n {
			w.WriteString(request(i, coldDomains))
		}
		w.Flush()
	case "compare":
		if *postkit == "" {
			log.Fatal("-postkit: name the postkit binary to measure (go build -o /tmp/postkit ./cmd/postkit)")
		}
		targets := []target{{name: "postkit policyd", bin: *postkit}}
		if *base != "" {
			targets = append(targets, target{name: "postkit policyd (base)", bin: *base})
		}
		for i := range targets {
			d, err := buildlabel.Describe(targets[i].bin)
			if err != nil {
				log.Fatal(err)
			}
			targets[i].build = d
		}
		c := &comparison{targets: targets, peer: *peerCmd, n: *n, peerN: *peerN, conc: *conc,
			warm: *warmDomains, maxTime: *maxTime, logLevel: *logLevel}
		if missed := c.run(*dnsListen, *rounds, *rssN, *rssMaxTime); missed && *strict {
			os.Exit(1)
		}
	case "state":
		if *postkit == "" {
			log.Fatal("-postkit: name the postkit binary to measure (go build -o /tmp/postkit ./cmd/postkit)")
		}
		d, err := buildlabel.Describe(*postkit)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("postkit policyd, greylisting + rate limit state: SQLite vs PostgreSQL; build %s; load %s\n", d, loadavg())
		b := &stateBench{bin: *postkit, pgDSN: *pgDSN, n: *n, conc: *conc, senders: *senders, pool: *pool,
			maxTime: *maxTime, rounds: *rounds, logLevel: *logLevel}
		b.run()
	default:
		log.Fatalf("-mode %q: want compare, state or requests", *mode)
	}
}

// zone serves, for every i, a sender domain d<i>.bench.example whose policy
// needs MX, A and include lookups, and a HELO name h<i>.client.example whose
// policy needs an A lookup. Client 203.0.113.(i%250+1) passes both.
func zone() *dnstest.Zone {
	z := dnstest.NewZone()
	if err := z.Add(`_spf.bench.example. 300 IN TXT "v=spf1 ip4:203.0.113.0/24 -all"`); err != nil {
		log.Fatal(err)
	}
	z.Synth = synth
	return z
}

func synth(name string) []string {
	label, rest, _ := strings.Cut(name, ".")
	num := func(s string) (int, bool) {
		i, err := strconv.Atoi(s)
		return i, err == nil && i >= 0
	}
	switch {
	case rest == "bench.example." && strings.HasPrefix(label, "d"):
		if _, ok := num(label[1:]); ok {
			return []string{
				name + ` 300 IN TXT "v=spf1 mx ip4:192.0.2.0/24 include:_spf.bench.example ~all"`,
				name + " 300 IN MX 10 mx." + name,
			}
		}
	case label == "mx" && strings.HasSuffix(rest, ".bench.example.") && strings.HasPrefix(rest, "d"):
		if i, ok := num(strings.TrimSuffix(rest[1:], ".bench.example.")); ok {
			return []string{fmt.Sprintf("%s 300 IN A 198.51.100.%d", name, i%250+1)}
		}
	case rest == "client.example." && strings.HasPrefix(label, "h"):
		if i, ok := num(label[1:]); ok {
			return []string{
				name + ` 300 IN TXT "v=spf1 a -all"`,
				fmt.Sprintf("%s 300 IN A 203.0.113.%d", name, i%250+1),
			}
		}
	}
	return nil
}

// request is request i of a run cycling over domains: client, HELO and
// sender domain of set i%domains, local part and message (instance) of i.
func request(i, domains int) string {
	d := i % domains
	return fmt.Sprintf("request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"+
		"client_address=203.0.113.%d\nclient_name=h%d.client.example\nhelo_name=h%d.client.example\n"+
		"sender=user%d@d%d.bench.example\nrecipient=rcpt@receiver.example\ninstance=%x.%x\nqueue_id=\n\n",
		d%250+1, d, d, i, d, i, d)
}

// target is one postkit build under test.
type target struct {
	name, bin string
	build     string // buildlabel.Describe
}

// row is one measured phase.
type row struct {
	scenario, server string
	conc             int
	lat              []time.Duration // sorted
	elapsed          time.Duration
	answers          map[string]int
	queries          int64         // DNS queries the server saw
	cpu              time.Duration // user+system CPU of the server's processes
	err              error
}

func (r row) rate() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(len(r.lat)) / r.elapsed.Seconds()
}

func (r row) pct(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	return r.lat[min(len(r.lat)-1, int(float64(len(r.lat))*p))]
}

// asker talks the policy protocol over one connection or pipe pair.
type asker struct {
	w     io.Writer
	r     *bufio.Reader
	close func()
}

// ask sends a request and returns the reply's action.
func (a *asker) ask(req string) (string, error) {
	if _, err := io.WriteString(a.w, req); err != nil {
		return "", err
	}
	var action string
	for {
		line, err := a.r.ReadString('\n')
		if err != nil {
			return "", err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			if action == "" {
				continue // an empty line before the reply: keep reading
			}
			return action, nil
		}
		if v, ok := strings.CutPrefix(line, "action="); ok {
			action = v
		}
	}
}

// answerClass reduces an action to what both servers say alike:
// "prepend pass", "reject", "defer", "dunno".
func answerClass(a string) string {
	word, rest, _ := strings.Cut(a, " ")
	word = strings.ToLower(word)
	if word == "prepend" {
		if v, ok := strings.CutPrefix(strings.ToLower(rest), "received-spf: "); ok {
			res, _, _ := strings.Cut(v, " ")
			return "prepend " + res
		}
	}
	if len(word) == 3 && word[0] == '5' {
		return "reject"
	}
	return word
}

// drive sends n requests over the askers, request i on asker i%len, until
// maxTime.
func drive(askers []*asker, n, domains, offset int, maxTime time.Duration) row {
	conc := len(askers)
	lat := make([][]time.Duration, conc)
	answers := make([]map[string]int, conc)
	errs := make([]error, conc)
	deadline := time.Now().Add(maxTime)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[w] = map[string]int{}
			for i := w; i < n && time.Now().Before(deadline); i += conc {
				t0 := time.Now()
				a, err := askers[w].ask(request(offset+i, domains))
				if err != nil {
					errs[w] = err
					return
				}
				lat[w] = append(lat[w], time.Since(t0))
				answers[w][answerClass(a)]++
			}
		}()
	}
	wg.Wait()
	r := row{conc: conc, elapsed: time.Since(start), answers: map[string]int{}, err: errors.Join(errs...)}
	for w := range conc {
		r.lat = append(r.lat, lat[w]...)
		for k, v := range answers[w] {
			r.answers[k] += v
		}
	}
	slices.Sort(r.lat)
	return r
}

// daemon is a running `postkit policyd`.
type daemon struct {
	cmd  *exec.Cmd
	dir  string
	sock string
	done chan struct{}
}

// startDaemon runs `postkit policyd` with the SPF check alone, in enforce
// mode (as the peer), resolving through dnsAddr, on a unix socket, and
// waits until it accepts connections.
func startDaemon(bin, dnsAddr, logLevel string) (*daemon, error) {
	dir, err := os.MkdirTemp("", "policyd-bench-")
	if err != nil {
		return nil, err
	}
	d := &daemon{dir: dir, sock: filepath.Join(dir, "policy.sock"), done: make(chan struct{})}
	d.cmd = exec.Command(bin, "policyd", "--listen", "unix:"+d.sock, "--checks", "spf", "--spf-mode", "enforce",
		"--dns", dnsAddr, "--hostname", "receiver.example", "--log-level", logLevel)
	// Its log (one line per request at info) goes to a file, as journald
	// would take it.
	logf, err := os.Create(filepath.Join(dir, "policyd.log"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	defer logf.Close()
	d.cmd.Stderr = logf
	if err := d.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s policyd: %w", bin, err)
	}
	go func() { d.cmd.Wait(); close(d.done) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.Dial("unix", d.sock); err == nil {
			c.Close()
			return d, nil
		}
		select {
		case <-d.done:
			b, _ := os.ReadFile(filepath.Join(dir, "policyd.log"))
			os.RemoveAll(dir)
			return nil, fmt.Errorf("%s policyd exited: %s", bin, b)
		default:
		}
		if time.Now().After(deadline) {
			d.stop()
			return nil, fmt.Errorf("%s policyd did not listen on %s within 20s", bin, d.sock)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// connect opens n connections to the daemon.
func (d *daemon) connect(n int) ([]*asker, error) {
	var askers []*asker
	for range n {
		c, err := net.Dial("unix", d.sock)
		if err != nil {
			for _, a := range askers {
				a.close()
			}
			return nil, err
		}
		askers = append(askers, &asker{w: c, r: bufio.NewReader(c), close: func() { c.Close() }})
	}
	return askers, nil
}

// rss returns the daemon's VmRSS and VmHWM in bytes (proc(5)).
func (d *daemon) rss() (cur, peak int64, err error) {
	return procstat.Mem(d.cmd.Process.Pid)
}

// stop ends the daemon with SIGTERM (SIGKILL after 10 s) and removes its
// directory.
func (d *daemon) stop() {
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(10 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
	}
	os.RemoveAll(d.dir)
}

// comparison is one run of every phase.
type comparison struct {
	srv      *dnstest.Server
	targets  []target
	peer     string
	n, peerN int
	conc     int
	warm     int
	maxTime  time.Duration
	logLevel string
}

// runPostkit measures one phase on a new daemon of t. A warm phase first
// makes one untimed pass over its domains, then asks about the same
// domains for new senders and messages.
func (c *comparison) runPostkit(t target, scenario string, offset int) row {
	fail := func(err error) row {
		return row{scenario: scenario, server: t.name, conc: c.conc, err: err}
	}
	d, err := startDaemon(t.bin, c.srv.Addr(), c.logLevel)
	if err != nil {
		return fail(err)
	}
	defer d.stop()
	askers, err := d.connect(c.conc)
	if err != nil {
		return fail(err)
	}
	defer func() {
		for _, a := range askers {
			a.close()
		}
	}()
	domains := coldDomains
	if scenario == "warm" {
		domains = c.warm
		if r := drive(askers, domains, domains, 0, c.maxTime); r.err != nil {
			return fail(r.err)
		}
		offset = domains
	}
	q, cpu0 := c.srv.Queries(), cpuTime(d.cmd.Process.Pid)
	r := drive(askers, c.n, domains, offset, c.maxTime)
	r.queries = c.srv.Queries() - q
	r.cpu = cpuTime(d.cmd.Process.Pid) - cpu0
	r.scenario, r.server = scenario, t.name
	return r
}

// runPeer measures the peer: conc processes, each fed requests on stdin as
// Postfix's spawn(8) would. Each process answers one untimed request first
// (interpreter start-up is not part of the measure). The peer keeps no DNS
// cache between requests, so it gets no warm-up pass.
func (c *comparison) runPeer(scenario string, offset int) row {
	fail := func(err error) row {
		return row{scenario: scenario, server: peerName, conc: c.conc, err: err}
	}
	args := strings.Fields(c.peer)
	var askers []*asker
	var cmds []*exec.Cmd
	defer func() {
		for i, a := range askers {
			a.close()
			done := make(chan struct{})
			go func() { cmds[i].Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				cmds[i].Process.Kill()
				<-done
			}
		}
	}()
	for range c.conc {
		cmd := exec.Command(args[0], args[1:]...)
		in, err := cmd.StdinPipe()
		if err != nil {
			return fail(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return fail(err)
		}
		cmd.Stderr = io.Discard
		if err := cmd.Start(); err != nil {
			return fail(fmt.Errorf("start %s: %w", c.peer, err))
		}
		cmds = append(cmds, cmd)
		askers = append(askers, &asker{w: in, r: bufio.NewReader(out), close: func() { in.Close() }})
	}
	warm := strings.NewReplacer("d0.bench.example", "d999999999.bench.example", "instance=0.0", "instance=warm").Replace(request(0, 1))
	for _, a := range askers {
		if _, err := a.ask(warm); err != nil {
			return fail(fmt.Errorf("peer: %w", err))
		}
	}
	domains := coldDomains
	if scenario == "warm" {
		domains, offset = c.warm, c.warm
	}
	cpu := func() time.Duration {
		var sum time.Duration
		for _, cmd := range cmds {
			sum += cpuTime(cmd.Process.Pid)
		}
		return sum
	}
	q, cpu0 := c.srv.Queries(), cpu()
	r := drive(askers, c.peerN, domains, offset, c.maxTime)
	r.queries = c.srv.Queries() - q
	r.cpu = cpu() - cpu0
	r.scenario, r.server = scenario, peerName
	return r
}

// cpuTime is the user+system CPU time of process pid so far (proc(5):
// utime and stime, in clock ticks of 1/100 s on Linux).
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces: fields count from the
	// last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// memRow is the memory phase of one target.
type memRow struct {
	t         target
	requests  int
	elapsed   time.Duration
	rss, peak int64
	answers   map[string]int
	err       error
}

// runMemory sends n distinct requests to a new daemon of t, then reads its
// resident set.
func (c *comparison) runMemory(t target, n, offset int, maxTime time.Duration) memRow {
	m := memRow{t: t}
	d, err := startDaemon(t.bin, c.srv.Addr(), c.logLevel)
	if err != nil {
		m.err = err
		return m
	}
	defer d.stop()
	askers, err := d.connect(c.conc)
	if err != nil {
		m.err = err
		return m
	}
	r := drive(askers, n, coldDomains, offset, maxTime)
	for _, a := range askers {
		a.close()
	}
	m.requests, m.elapsed, m.answers, m.err = len(r.lat), r.elapsed, r.answers, r.err
	// What the daemon holds once the requests are answered: its caches
	// and whatever the runtime has not returned to the kernel.
	time.Sleep(500 * time.Millisecond)
	if cur, peak, err := d.rss(); err != nil {
		m.err = errors.Join(m.err, err)
	} else {
		m.rss, m.peak = cur, peak
	}
	return m
}

// run runs every phase: the rounds (each target and the peer on both
// scenarios, in turn, so that a burst of load from elsewhere on the
// machine hits one round rather than one server), then the memory phase of
// each target, and prints the tables. It reports whether a memory phase
// missed its target (or could not run in full).
func (c *comparison) run(dnsListen string, rounds, rssN int, rssMaxTime time.Duration) (missed bool) {
	srv, err := dnstest.StartAt(dnsListen)
	if err != nil {
		log.Fatalf("%v (the comparison serves the zone on %s: run it through bench/policyd/run.sh)", err, dnsListen)
	}
	defer srv.Close()
	srv.Set(zone())
	c.srv = srv
	fmt.Printf("DNS: %s (records synthesized per domain, TTL 300)\n", srv.Addr())
	for _, t := range c.targets {
		fmt.Printf("%s: %s policyd (%s)\n", t.name, t.bin, t.build)
	}
	if c.peer != "" {
		fmt.Printf("%s: %s, %d processes on kept-open pipes\n", peerName, c.peer, c.conc)
	}
	fmt.Printf("load average at the start: %s\n", loadavg())

	all := map[string][]row{}
	var order []string
	step := func(r row) {
		fmt.Fprintf(os.Stderr, "  %-5s %-28s %6d requests in %-8v %8.0f req/s\n", r.scenario, r.server, len(r.lat), r.elapsed.Round(time.Millisecond), r.rate())
		if r.err != nil {
			fmt.Fprintf(os.Stderr, "        error: %v\n", r.err)
		}
		k := r.scenario + "/" + r.server
		if all[k] == nil {
			order = append(order, k)
		}
		all[k] = append(all[k], r)
	}
	// Every cold request of the run has its own domain.
	next := 0
	offset := func(n int) int { o := next; next += n; return o }
	for round := range rounds {
		fmt.Fprintf(os.Stderr, "round %d of %d\n", round+1, rounds)
		for _, sc := range []string{"cold", "warm"} {
			if c.peer != "" {
				step(c.runPeer(sc, offset(c.peerN)))
			}
			for _, t := range c.targets {
				step(c.runPostkit(t, sc, offset(c.n)))
			}
		}
	}
	var mem []memRow
	if rssN > 0 {
		for _, t := range c.targets {
			fmt.Fprintf(os.Stderr, "memory: %d distinct requests to %s\n", rssN, t.name)
			m := c.runMemory(t, rssN, offset(rssN), rssMaxTime)
			mem = append(mem, m)
		}
	}

	// The ratio of a round compares phases that ran seconds apart; its
	// median is steadier than the ratio of the median rates.
	ratios := map[string][]float64{}
	for _, k := range order {
		sc, server, _ := strings.Cut(k, "/")
		peer := all[sc+"/"+peerName]
		if server == peerName {
			continue
		}
		ours := all[k]
		for i := range min(len(peer), len(ours)) {
			if peer[i].rate() > 0 {
				ratios[k] = append(ratios[k], ours[i].rate()/peer[i].rate())
			}
		}
	}
	var rows []row
	for _, k := range order {
		rs := append([]row(nil), all[k]...)
		sort.Slice(rs, func(i, j int) bool { return rs[i].rate() < rs[j].rate() })
		rows = append(rows, rs[len(rs)/2])
	}
	fmt.Printf("\nmedian round of %d for each row (by req/s); ratio = median of the per-round ratios to the peer; load average at the end %s\n", rounds, loadavg())
	printTable(rows, ratios)
	for _, k := range order {
		if len(ratios[k]) == 0 {
			continue
		}
		var b strings.Builder
		for _, x := range ratios[k] {
			fmt.Fprintf(&b, " %.1fx", x)
		}
		fmt.Printf("per-round ratios, %s:%s\n", k, b.String())
	}
	if len(mem) > 0 {
		missed = printMemory(mem, rssN)
	}
	return missed
}

// rssTarget is the most the daemon may hold after the memory phase.
const rssTarget = 48 << 20

func printMemory(mem []memRow, n int) (missed bool) {
	fmt.Printf("\nmemory: %d distinct (cold) requests to a new daemon, then its resident set\n", n)
	fmt.Printf("%-28s %8s %8s %8s %10s %10s  %s\n", "server", "requests", "time", "req/s", "VmRSS", "VmHWM", "target VmRSS < 48 MB")
	for _, m := range mem {
		verdict := "ok"
		switch {
		case m.err != nil:
			verdict = "error: " + m.err.Error()
		case m.requests < n:
			verdict = fmt.Sprintf("only %d of %d requests within the time bound", m.requests, n)
		case m.rss >= rssTarget:
			verdict = "MISSED"
		}
		missed = missed || verdict != "ok"
		rate := 0.0
		if m.elapsed > 0 {
			rate = float64(m.requests) / m.elapsed.Seconds()
		}
		fmt.Printf("%-28s %8d %8s %8.0f %10s %10s  %s\n", m.t.name, m.requests, m.elapsed.Round(100*time.Millisecond),
			rate, mb(m.rss), mb(m.peak), verdict)
	}
	return missed
}

func mb(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/(1<<20)) }

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// printTable prints rows; ratios, per scenario/server, are the per-round
// ratios to the peer, whose median is shown.
func printTable(rows []row, ratios map[string][]float64) {
	fmt.Printf("\n%-8s %-28s %4s %8s %10s %10s %10s %10s %8s %7s  %s\n",
		"scenario", "server", "conc", "requests", "req/s", "p50", "p99", "CPU µs/r", "DNS q/r", "ratio", "answers")
	for _, r := range rows {
		ratio := "-"
		if rs := ratios[r.scenario+"/"+r.server]; len(rs) > 0 {
			rs = slices.Sorted(slices.Values(rs))
			ratio = fmt.Sprintf("%.1fx", rs[len(rs)/2])
		}
		var ans []string
		keys := make([]string, 0, len(r.answers))
		for k := range r.answers {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ans = append(ans, fmt.Sprintf("%d %s", r.answers[k], k))
		}
		qpr, cpr := 0.0, 0.0
		if len(r.lat) > 0 {
			qpr = float64(r.queries) / float64(len(r.lat))
			cpr = float64(r.cpu.Microseconds()) / float64(len(r.lat))
		}
		fmt.Printf("%-8s %-28s %4d %8d %10.0f %10s %10s %10.0f %8.2f %7s  %s\n",
			r.scenario, r.server, r.conc, len(r.lat), r.rate(), fmtDur(r.pct(0.50)), fmtDur(r.pct(0.99)), cpr, qpr, ratio, strings.Join(ans, ", "))
		if r.err != nil {
			fmt.Printf("         error: %v\n", r.err)
		}
	}
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d.Microseconds())/1000)
	}
	return fmt.Sprintf("%dµs", d.Microseconds())
}
