package main

// The state bench (-mode state): the real `postkit policyd` daemon with the
// greylisting and rate-limit checks, its state in SQLite (policy.state_file)
// or in PostgreSQL (state.driver postgresql, -pg-dsn), one daemon or two at
// once sharing that state (two hosts: each its own process, pool and
// cache), driven over their unix sockets. bench/policyd/state.sh starts the
// PostgreSQL cluster on the same machine.
//
// Each message is two requests, as Postfix sends them for inbound mail:
// RCPT (greylisting) and END-OF-MESSAGE (the sender's rate limit, counted
// in the shared counters). Scenarios:
//
//   - new: every message has a triplet never seen (deferred: one read, one
//     write) and one of -senders senders (one read, one upsert);
//   - known: triplets from a pool that passed greylisting before the timed
//     run (what an MX mostly sees: its regular correspondents).

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

type stateBench struct {
	bin      string
	pgDSN    string
	n        int // requests per phase and host set
	conc     int // connections per daemon
	senders  int
	pool     int // known triplets
	maxTime  time.Duration
	rounds   int
	logLevel string
}

// stateRequest is request i of a scenario: even i the RCPT of message i/2,
// odd i its END-OF-MESSAGE. run tags the triplets so that rounds and phases
// never share one. The numbers in the sender's local part are glued to
// letters: greylisting folds stand-alone numbers (VERP) into one key.
func stateRequest(scenario, run string, i, pool, senders int) string {
	m := i / 2
	t := m
	if scenario == "known" {
		t = m % pool
	}
	sender := fmt.Sprintf("s%d@senders.example", m%senders)
	if i%2 == 0 {
		return fmt.Sprintf("request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"+
			"client_address=198.51.%d.%d\nclient_name=unknown\nhelo_name=mx.peer.example\n"+
			"sender=%s-r%s-t%d@peer.example\nrecipient=rcpt%d@receiver.example\ninstance=%s.%x\nqueue_id=\n\n",
			t/250%250, t%250+1, scenario, run, t, t%97, run, m)
	}
	return fmt.Sprintf("request=smtpd_access_policy\nprotocol_state=END-OF-MESSAGE\nprotocol_name=ESMTP\n"+
		"client_address=198.51.100.1\nclient_name=unknown\nhelo_name=mx.peer.example\n"+
		"sender=%s\nrecipient=\nrecipient_count=1\ninstance=%s.%x\nqueue_id=\n\n", sender, run, m)
}

// startStateDaemon runs one policy daemon ("host") on the state of driver.
func (b *stateBench) startStateDaemon(driver, stateFile string) (*daemon, error) {
	dir, err := os.MkdirTemp("", "policyd-state-bench-")
	if err != nil {
		return nil, err
	}
	d := &daemon{dir: dir, sock: filepath.Join(dir, "policy.sock"), done: make(chan struct{})}
	args := []string{"policyd", "--listen", "unix:" + d.sock, "--checks", "greylist,ratelimit",
		"--greylist-delay", "1s", "--ratelimit", "sender:messages=100000000/1h",
		"--hostname", "receiver.example", "--log-level", b.logLevel, "--state", stateFile}
	if driver == "postgresql" {
		args = append(args, "--set", "state.driver=postgresql", "--set", "state.dsn="+b.pgDSN)
	}
	return d.start(b.bin, args)
}

// start runs the daemon with args and waits for its socket.
func (d *daemon) start(bin string, args []string) (*daemon, error) {
	cmd, err := startCmd(bin, args, d.dir)
	if err != nil {
		os.RemoveAll(d.dir)
		return nil, err
	}
	d.cmd = cmd
	go func() { d.cmd.Wait(); close(d.done) }()
	if err := d.waitSocket(bin); err != nil {
		return nil, err
	}
	return d, nil
}

// stateRow is one measured phase of the state bench.
type stateRow struct {
	driver, scenario string
	hosts            int
	r                row
}

func (b *stateBench) phase(driver, scenario string, hosts, round int) stateRow {
	out := stateRow{driver: driver, scenario: scenario, hosts: hosts}
	stateFile := filepath.Join(os.TempDir(), fmt.Sprintf("policyd-state-bench-%d-%d.sqlite", os.Getpid(), round))
	defer os.Remove(stateFile)
	defer os.Remove(stateFile + "-wal")
	defer os.Remove(stateFile + "-shm")
	var ds []*daemon
	defer func() {
		for _, d := range ds {
			d.stop()
		}
	}()
	var askers [][]*asker
	for range hosts {
		d, err := b.startStateDaemon(driver, stateFile)
		if err != nil {
			out.r.err = err
			return out
		}
		ds = append(ds, d)
		a, err := d.connect(b.conc)
		if err != nil {
			out.r.err = err
			return out
		}
		defer func() {
			for _, x := range a {
				x.close()
			}
		}()
		askers = append(askers, a)
	}
	run := fmt.Sprintf("%d%s%d%d", os.Getpid(), driver[:2], hosts, round)
	if scenario == "known" {
		// Two untimed passes over the pool, 1s (the delay) apart, through
		// the first host: the pool's triplets have passed.
		for pass := range 2 {
			for t := range b.pool {
				if _, err := askers[0][0].ask(stateRequest(scenario, run, 2*t, b.pool, b.senders)); err != nil {
					out.r.err = err
					return out
				}
			}
			if pass == 0 {
				time.Sleep(1100 * time.Millisecond)
			}
		}
	}
	var all []*asker
	for c := range b.conc {
		for h := range hosts {
			all = append(all, askers[h][c]) // request i on host i%hosts
		}
	}
	out.r = driveGen(all, b.n, b.maxTime, func(i int) string { return stateRequest(scenario, run, i, b.pool, b.senders) })
	return out
}

// driveGen is drive over the requests gen makes: request i on asker
// (i/2)%len, both requests of a message on the same connection.
func driveGen(askers []*asker, n int, maxTime time.Duration, gen func(int) string) row {
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
			for m := w; 2*m < n && time.Now().Before(deadline); m += conc {
				for i := 2 * m; i < 2*m+2; i++ {
					t0 := time.Now()
					a, err := askers[w].ask(gen(i))
					if err != nil {
						errs[w] = err
						return
					}
					lat[w] = append(lat[w], time.Since(t0))
					answers[w][answerClass(a)]++
				}
			}
		}()
	}
	wg.Wait()
	r := row{conc: conc, elapsed: time.Since(start), answers: map[string]int{}}
	for w := range conc {
		if errs[w] != nil {
			r.err = errs[w]
		}
		r.lat = append(r.lat, lat[w]...)
		for k, v := range answers[w] {
			r.answers[k] += v
		}
	}
	sort.Slice(r.lat, func(i, j int) bool { return r.lat[i] < r.lat[j] })
	return r
}

// run measures every (driver, scenario, hosts) phase -rounds times in turn
// and prints the median round of each, with the PostgreSQL/SQLite ratio.
func (b *stateBench) run() {
	drivers := []string{"sqlite"}
	if b.pgDSN != "" {
		drivers = append(drivers, "postgresql")
	}
	type id struct {
		driver, scenario string
		hosts            int
	}
	results := map[id][]stateRow{}
	var order []id
	for round := range b.rounds {
		for _, scenario := range []string{"new", "known"} {
			for _, hosts := range []int{1, 2} {
				for _, driver := range drivers {
					k := id{driver, scenario, hosts}
					if round == 0 {
						order = append(order, k)
					}
					results[k] = append(results[k], b.phase(driver, scenario, hosts, round))
				}
			}
		}
	}
	median := func(rs []stateRow) stateRow {
		sort.Slice(rs, func(i, j int) bool { return rs[i].r.rate() < rs[j].r.rate() })
		return rs[len(rs)/2]
	}
	fmt.Printf("%-10s %-6s %5s %5s %9s %9s %9s %8s  %s\n", "state", "mail", "hosts", "conns", "req/s", "p50", "p99", "vs sqlite", "answers")
	for _, k := range order {
		m := median(results[k])
		ratio := ""
		if k.driver == "postgresql" {
			s := median(results[id{"sqlite", k.scenario, k.hosts}])
			if s.r.rate() > 0 {
				ratio = fmt.Sprintf("%.2fx", m.r.rate()/s.r.rate())
			}
		}
		var ans []string
		for a, n := range m.r.answers {
			ans = append(ans, fmt.Sprintf("%s=%d", a, n))
		}
		sort.Strings(ans)
		line := fmt.Sprintf("%-10s %-6s %5d %5d %9.0f %9s %9s %8s  %s", k.driver, k.scenario, k.hosts, m.r.conc,
			m.r.rate(), fmtDur(m.r.pct(0.5)), fmtDur(m.r.pct(0.99)), ratio, strings.Join(ans, " "))
		if m.r.err != nil {
			line += "  ERROR: " + m.r.err.Error()
		}
		fmt.Println(line)
	}
}

// startCmd starts bin with args, its log in dir/policyd.log.
func startCmd(bin string, args []string, dir string) (*exec.Cmd, error) {
	logf, err := os.Create(filepath.Join(dir, "policyd.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s policyd: %w", bin, err)
	}
	return cmd, nil
}

// waitSocket waits until the daemon accepts connections.
func (d *daemon) waitSocket(bin string) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.Dial("unix", d.sock); err == nil {
			c.Close()
			return nil
		}
		select {
		case <-d.done:
			b, _ := os.ReadFile(filepath.Join(d.dir, "policyd.log"))
			os.RemoveAll(d.dir)
			return fmt.Errorf("%s policyd exited: %s", bin, b)
		default:
		}
		if time.Now().After(deadline) {
			d.stop()
			return fmt.Errorf("%s policyd did not listen on %s within 20s", bin, d.sock)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
