// Command policyd-bench measures postkit's policy server on SPF requests
// (SMTPD_POLICY_README protocol) against a loopback DNS server serving a
// generated zone, and compares it with postfix-policyd-spf-python in the same
// run, on the same requests and the same DNS server.
//
//	sh bench/policyd/run.sh                                    # the comparison (root: network namespace)
//	go run ./bench/policyd -n 20000 -domains 20000 -c 8         # postkit alone, every request needs DNS
//	go run ./bench/policyd -n 20000 -domains 50 -c 8            # postkit alone, DNS answers cached
//	go run ./bench/policyd -mode requests -n 500 > req.txt      # the requests, for other peers
//
// The comparison (-mode compare) serves the zone on -dns-listen, by default
// 127.0.0.1:53: the peer uses the system resolver, so run.sh runs it in a
// network namespace whose resolv.conf points there. Every phase is bounded
// by -max-time.
//
// It is a program, not a test: `go test ./...` never runs it.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/postkit/postkit/internal/dnsclient"
	"github.com/postkit/postkit/internal/dnstest"
	"github.com/postkit/postkit/policyd"
	"github.com/postkit/postkit/policyd/spfcheck"
)

func main() {
	mode := flag.String("mode", "bench", "bench (postkit alone) | compare (postkit and the peer) | requests (print them)")
	n := flag.Int("n", 20000, "requests (postkit)")
	peerN := flag.Int("peer-n", 1000, "compare: requests sent to the peer per scenario")
	domains := flag.Int("domains", 20000, "bench: distinct sender domains (requests cycle over them)")
	cachedDomains := flag.Int("cached-domains", 50, "compare: distinct domains of the cached scenario")
	rounds := flag.Int("rounds", 3, "compare: rounds of the four phases; the median round is printed")
	conc := flag.Int("c", 4, "concurrent connections (postkit) and processes (peer)")
	dnsListen := flag.String("dns-listen", "127.0.0.1:53", "compare: where the zone is served (the peer's resolv.conf must point there)")
	peerCmd := flag.String("peer", "/usr/bin/python3 /usr/bin/policyd-spf", "compare: the peer's command line")
	resultCache := flag.Bool("result-cache", true, "bench: keep the SPF check's per-(ip, helo, sender) cache")
	maxTime := flag.Duration("max-time", 20*time.Second, "stop sending after this long, per phase")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of postkit's phases here")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			log.Fatal(err)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}

	switch *mode {
	case "requests":
		w := bufio.NewWriter(os.Stdout)
		for i := range *n {
			w.WriteString(request(i, *domains))
		}
		w.Flush()
	case "bench":
		srv, err := dnstest.Start()
		if err != nil {
			log.Fatal(err)
		}
		defer srv.Close()
		srv.Set(zone(*domains))
		r := runPostkit(srv, "", *n, *domains, 0, *conc, *resultCache, *maxTime)
		printTable([]row{r}, nil)
	case "compare":
		compare(*dnsListen, *peerCmd, *n, *peerN, *cachedDomains, *conc, *rounds, *maxTime)
	default:
		log.Fatalf("-mode %q: want bench, compare or requests", *mode)
	}
}

// zone holds, per domain i: a sender policy needing MX, A and include
// lookups, and a HELO policy needing an A lookup. Clients pass both.
func zone(domains int) *dnstest.Zone {
	z := dnstest.NewZone()
	add := func(s string) {
		if err := z.Add(s); err != nil {
			log.Fatal(err)
		}
	}
	add(`_spf.bench.example. 300 IN TXT "v=spf1 ip4:203.0.113.0/24 -all"`)
	for i := range domains {
		d := fmt.Sprintf("d%d.bench.example.", i)
		add(d + ` 300 IN TXT "v=spf1 mx ip4:192.0.2.0/24 include:_spf.bench.example ~all"`)
		add(d + " 300 IN MX 10 mx." + d)
		add(fmt.Sprintf("mx.%s 300 IN A 198.51.100.%d", d, i%250+1))
		h := fmt.Sprintf("h%d.client.example.", i)
		add(h + ` 300 IN TXT "v=spf1 a -all"`)
		add(fmt.Sprintf("%s 300 IN A 203.0.113.%d", h, i%250+1))
	}
	return z
}

func request(i, domains int) string {
	d := i % domains
	return fmt.Sprintf("request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"+
		"client_address=203.0.113.%d\nclient_name=h%d.client.example\nhelo_name=h%d.client.example\n"+
		"sender=user%d@d%d.bench.example\nrecipient=rcpt@receiver.example\ninstance=%x.%x\nqueue_id=\n\n",
		d%250+1, d, d, i, d, i, d)
}

// row is one measured phase.
type row struct {
	scenario, server string
	conc             int
	lat              []time.Duration // sorted
	elapsed          time.Duration
	answers          map[string]int
	queries          int64 // DNS queries the server saw
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

// drive sends n requests over conc askers, request i on asker i%conc,
// until maxTime.
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

// runPostkit measures postkit's policy server with the SPF check (enforce
// mode, as the peer) over a unix socket, resolving through srv. With
// warmDomains > 0, one pass over those domains runs first, untimed, so that
// the phase measures cached answers.
func runPostkit(srv *dnstest.Server, scenario string, n, domains, offset, conc int, resultCache bool, maxTime time.Duration) row {
	res, err := dnsclient.New(dnsclient.Config{Servers: []string{srv.Addr()}})
	if err != nil {
		log.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := spfcheck.Config{Mode: spfcheck.Enforce, Hostname: "receiver.example", Logger: quiet}
	if !resultCache {
		cfg.CacheSize = -1
	}
	chk, err := spfcheck.New(cfg, res)
	if err != nil {
		log.Fatal(err)
	}
	ps := &policyd.Server{Checks: []policyd.Check{chk}, Logger: quiet}
	dir, err := os.MkdirTemp("", "policyd-bench")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "policy.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		log.Fatal(err)
	}
	go ps.Serve(ln)
	defer ps.Shutdown(context.Background())
	var askers []*asker
	for range conc {
		c, err := net.Dial("unix", sock)
		if err != nil {
			log.Fatal(err)
		}
		defer c.Close()
		askers = append(askers, &asker{w: c, r: bufio.NewReader(c)})
	}
	if scenario == "cached" {
		drive(askers, domains, domains, 0, maxTime)
		// Same domains, new messages (instance): no header deduplication.
		offset = domains
	}
	q := srv.Queries()
	r := drive(askers, n, domains, offset, maxTime)
	r.queries = srv.Queries() - q
	r.scenario, r.server = scenario, "postkit policyd"
	return r
}

// runPeer measures the peer: conc processes, each fed requests on stdin as
// Postfix's spawn(8) would. Each process answers one untimed request first
// (interpreter start-up is not part of the measure).
func runPeer(srv *dnstest.Server, cmdline, scenario string, n, domains, offset, conc int, maxTime time.Duration) row {
	args := strings.Fields(cmdline)
	var askers []*asker
	var cmds []*exec.Cmd
	for range conc {
		cmd := exec.Command(args[0], args[1:]...)
		in, err := cmd.StdinPipe()
		if err != nil {
			log.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			log.Fatal(err)
		}
		cmd.Stderr = io.Discard
		if err := cmd.Start(); err != nil {
			return row{scenario: scenario, server: "postfix-policyd-spf-python", conc: conc, err: fmt.Errorf("start %s: %w", cmdline, err)}
		}
		cmds = append(cmds, cmd)
		askers = append(askers, &asker{w: in, r: bufio.NewReader(out), close: func() { in.Close() }})
	}
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
	warm := strings.NewReplacer("d0.bench.example", "warm.bench.example", "instance=0.0", "instance=warm").Replace(request(0, 1))
	for _, a := range askers {
		if _, err := a.ask(warm); err != nil {
			return row{scenario: scenario, server: "postfix-policyd-spf-python", conc: conc, err: fmt.Errorf("peer: %w", err)}
		}
	}
	// No warm-up pass in the cached scenario: the peer keeps no DNS cache
	// between requests (it asks the system resolver every time).
	q := srv.Queries()
	r := drive(askers, n, domains, offset, maxTime)
	r.queries = srv.Queries() - q
	r.scenario, r.server = scenario, "postfix-policyd-spf-python"
	return r
}

// compare runs both servers on both scenarios, rounds times in turn (so
// that a burst of load from elsewhere on the machine hits one round, not one
// server), and prints the round with the median rate of each.
func compare(dnsListen, peerCmd string, n, peerN, cachedDomains, conc, rounds int, maxTime time.Duration) {
	// Every uncached request has its own domain: each round uses n domains
	// for postkit and the next peerN for the peer.
	uncachedDomains := rounds * (n + peerN)
	t0 := time.Now()
	srv, err := dnstest.StartAt(dnsListen)
	if err != nil {
		log.Fatalf("%v (compare mode serves the zone on %s: run it through bench/policyd/run.sh)", err, dnsListen)
	}
	defer srv.Close()
	srv.Set(zone(uncachedDomains))
	fmt.Fprintf(os.Stderr, "zone of %d domains served on %s (%v)\n", uncachedDomains, srv.Addr(), time.Since(t0).Round(time.Millisecond))

	all := map[string][]row{}
	var order []string
	step := func(r row) {
		fmt.Fprintf(os.Stderr, "  %-9s %-28s %6d requests in %-8v %8.0f req/s\n", r.scenario, r.server, len(r.lat), r.elapsed.Round(time.Millisecond), r.rate())
		k := r.scenario + "/" + r.server
		if all[k] == nil {
			order = append(order, k)
		}
		all[k] = append(all[k], r)
	}
	for round := range rounds {
		fmt.Fprintf(os.Stderr, "round %d of %d\n", round+1, rounds)
		base := round * (n + peerN)
		step(runPeer(srv, peerCmd, "uncached", peerN, uncachedDomains, base+n, conc, maxTime))
		step(runPostkit(srv, "uncached", n, uncachedDomains, base, conc, false, maxTime))
		step(runPeer(srv, peerCmd, "cached", peerN, cachedDomains, 0, conc, maxTime))
		step(runPostkit(srv, "cached", n, cachedDomains, 0, conc, true, maxTime))
	}
	// The ratio of a round compares phases that ran seconds apart; its
	// median is steadier than the ratio of the median rates.
	ratios := map[string][]float64{}
	for _, sc := range []string{"uncached", "cached"} {
		peer, ours := all[sc+"/postfix-policyd-spf-python"], all[sc+"/postkit policyd"]
		for i := range min(len(peer), len(ours)) {
			if peer[i].rate() > 0 {
				ratios[sc] = append(ratios[sc], ours[i].rate()/peer[i].rate())
			}
		}
	}
	var rows []row
	for _, k := range order {
		rs := append([]row(nil), all[k]...)
		sort.Slice(rs, func(i, j int) bool { return rs[i].rate() < rs[j].rate() })
		rows = append(rows, rs[len(rs)/2])
	}
	fmt.Printf("\nmedian round of %d for each row (by req/s); ratio = median of the per-round ratios; load average %s\n", rounds, loadavg())
	printTable(rows, ratios)
	for _, sc := range []string{"uncached", "cached"} {
		var b strings.Builder
		for _, x := range ratios[sc] {
			fmt.Fprintf(&b, " %.1fx", x)
		}
		fmt.Printf("per-round ratios, %s:%s\n", sc, b.String())
	}
}

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

// printTable prints rows; ratios, when given per scenario, are the
// per-round ratios to the peer, whose median is shown.
func printTable(rows []row, ratios map[string][]float64) {
	fmt.Printf("\n%-9s %-28s %4s %8s %10s %10s %10s %8s %7s  %s\n",
		"scenario", "server", "conc", "requests", "req/s", "p50", "p99", "DNS q/r", "ratio", "answers")
	peer := map[string]float64{}
	for _, r := range rows {
		if r.server == "postfix-policyd-spf-python" {
			peer[r.scenario] = r.rate()
		}
	}
	for _, r := range rows {
		ratio := "-"
		if rs := ratios[r.scenario]; len(rs) > 0 && r.server != "postfix-policyd-spf-python" {
			rs = slices.Sorted(slices.Values(rs))
			ratio = fmt.Sprintf("%.1fx", rs[len(rs)/2])
		} else if p := peer[r.scenario]; p > 0 {
			ratio = fmt.Sprintf("%.1fx", r.rate()/p)
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
		qpr := 0.0
		if len(r.lat) > 0 {
			qpr = float64(r.queries) / float64(len(r.lat))
		}
		fmt.Printf("%-9s %-28s %4d %8d %10.0f %10s %10s %8.2f %7s  %s\n",
			r.scenario, r.server, r.conc, len(r.lat), r.rate(), fmtDur(r.pct(0.50)), fmtDur(r.pct(0.99)), qpr, ratio, strings.Join(ans, ", "))
		if r.err != nil {
			fmt.Printf("          error: %v\n", r.err)
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
