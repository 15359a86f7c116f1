package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/postkit/postkit/internal/testlib"
)

// toyChain is a chain that knows whether it was closed.
type toyChain struct {
	name   string
	closed atomic.Int32
	err    error // what Close returns
}

func (c *toyChain) Close() error { c.closed.Add(1); return c.err }

// toyServer takes the current chain for each connection, tells the client
// its name, and gives it back when the client sends a line.
type toyServer struct {
	h *Holder[*toyChain]

	mu      sync.Mutex
	lns     []net.Listener
	conns   map[net.Conn]bool
	closing bool
	wg      sync.WaitGroup
}

func (s *toyServer) Serve(ln net.Listener) error {
	s.mu.Lock()
	s.lns = append(s.lns, ln)
	s.mu.Unlock()
	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.closing {
				return ErrServerClosed
			}
			return err
		}
		s.mu.Lock()
		if s.conns == nil {
			s.conns = map[net.Conn]bool{}
		}
		s.conns[c] = true
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer func() { s.mu.Lock(); delete(s.conns, c); s.mu.Unlock(); c.Close() }()
			chain, release := s.h.Acquire()
			defer release()
			fmt.Fprintln(c, chain.name)
			bufio.NewReader(c).ReadString('\n')
		}()
	}
}

func (s *toyServer) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for _, ln := range s.lns {
		ln.Close()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

// toyDaemon runs Run with toy chains: each Load builds the next chain of
// names, or fails when fail is set.
type toyDaemon struct {
	t      *testing.T
	sock   string
	hup    chan os.Signal
	stop   chan os.Signal
	logs   *testlib.Buffer
	done   chan error
	srv    *toyServer
	fail   atomic.Bool
	exited atomic.Bool
	drain  time.Duration // of every plan
	// closeErr is what the chains' Close returns; set before start.
	closeErr error
	listen   atomic.Value // string: the listen address Load returns

	mu     sync.Mutex
	chains []*toyChain
}

func startToy(t *testing.T, signals bool, drain time.Duration) *toyDaemon {
	t.Helper()
	return startToyWith(t, func(d *toyDaemon) {
		d.drain = drain
		if !signals {
			d.hup, d.stop = make(chan os.Signal, 1), make(chan os.Signal, 1)
		}
	})
}

// startToyWith starts a toy daemon set up by set (default: process signals,
// 5 s drain) and waits until it listens.
func startToyWith(t *testing.T, set func(*toyDaemon)) *toyDaemon {
	t.Helper()
	d := &toyDaemon{t: t, sock: filepath.Join(t.TempDir(), "run", "toy.sock"), logs: &testlib.Buffer{}, done: make(chan error, 1), drain: 5 * time.Second}
	set(d)
	d.listen.Store("unix:" + d.sock)
	spec := Spec[*toyChain]{
		Name:   "toy",
		Load:   d.load,
		Logger: d.logs.Logger(),
		NewServer: func(h *Holder[*toyChain]) (Server, error) {
			d.srv = &toyServer{h: h}
			return d.srv, nil
		},
	}
	if d.hup != nil {
		spec.Hangup, spec.Stop = d.hup, d.stop
	}
	go func() {
		err := Run(context.Background(), spec)
		d.exited.Store(true)
		d.done <- err
	}()
	testlib.Eventually(t, 5*time.Second, "the toy daemon listens on "+d.sock, func() bool {
		c, err := net.Dial("unix", d.sock)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	t.Cleanup(func() {
		if d.exited.Load() {
			return
		}
		if d.stop != nil {
			d.stop <- syscall.SIGTERM
		} else {
			syscall.Kill(os.Getpid(), syscall.SIGTERM)
		}
		<-d.done
	})
	return d
}

func (d *toyDaemon) load() (Plan[*toyChain], error) {
	if d.fail.Load() {
		return Plan[*toyChain]{}, errors.New("postkit.yaml:3:5: policy.checks[0]: \"virus\" is not allowed")
	}
	d.mu.Lock()
	c := &toyChain{name: fmt.Sprintf("chain%d", len(d.chains)), err: d.closeErr}
	d.chains = append(d.chains, c)
	d.mu.Unlock()
	a, err := ParseAddr(d.listen.Load().(string))
	if err != nil {
		return Plan[*toyChain]{}, err
	}
	return Plan[*toyChain]{
		Chain:   c,
		Listen:  []Listener{{Addr: a, Socket: SocketOpts{Mode: 0o660}}},
		Drain:   d.drain,
		Restart: map[string]string{"toy.budget": "10s"},
		Attrs:   []any{"chain", c.name},
	}, nil
}

func (d *toyDaemon) chain(i int) *toyChain {
	d.mu.Lock()
	defer d.mu.Unlock()
	if i >= len(d.chains) {
		return nil
	}
	return d.chains[i]
}

// client connects and reads the name of the chain it was given; sending a
// line ends its work.
func (d *toyDaemon) client() (net.Conn, string) {
	d.t.Helper()
	c, err := net.Dial("unix", d.sock)
	if err != nil {
		d.t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	name, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		d.t.Fatalf("reading the chain name: %v", err)
	}
	return c, strings.TrimSpace(name)
}

func (d *toyDaemon) reload(signals bool) {
	if signals {
		syscall.Kill(os.Getpid(), syscall.SIGHUP)
		return
	}
	d.hup <- syscall.SIGHUP
}

// SIGHUP builds a new chain and swaps it in: new work gets it, work in
// flight keeps the old one, which is closed when that work is done. A
// failing load keeps the running chain.
func TestRunReload(t *testing.T) {
	for _, signals := range []bool{false, true} {
		t.Run(fmt.Sprintf("process signals %v", signals), func(t *testing.T) {
			d := startToy(t, signals, 5*time.Second)
			busy, name := d.client()
			defer busy.Close()
			if name != "chain0" {
				t.Fatalf("first client got %q; want chain0", name)
			}
			d.reload(signals)
			testlib.Eventually(t, 5*time.Second, "the reload swaps in chain1", func() bool { return d.srv.h.Current() == d.chain(1) })
			c, name := d.client()
			c.Close()
			if name != "chain1" {
				t.Errorf("client after SIGHUP got %q; want chain1", name)
			}
			if n := d.chain(0).closed.Load(); n != 0 {
				t.Fatalf("chain0 closed %d times while a client still used it", n)
			}
			fmt.Fprintln(busy, "done")
			testlib.Eventually(t, 5*time.Second, "chain0 is closed once its last client is done", func() bool { return d.chain(0).closed.Load() == 1 })

			d.fail.Store(true)
			d.reload(signals)
			testlib.Eventually(t, 5*time.Second, "the failed reload is logged", func() bool { return strings.Contains(d.logs.String(), "toy reload failed") })
			if d.srv.h.Current() != d.chain(1) || d.chain(1).closed.Load() != 0 {
				t.Errorf("after a failed reload the current chain is %v (chain1 closed %d times); want chain1, open", d.srv.h.Current().name, d.chain(1).closed.Load())
			}
			if !strings.Contains(d.logs.String(), `err="postkit.yaml:3:5: policy.checks[0]: \"virus\" is not allowed"`) {
				t.Errorf("log %q; want the load error", d.logs.String())
			}
			c, name = d.client()
			c.Close()
			if name != "chain1" {
				t.Errorf("client after a failed reload got %q; want chain1", name)
			}
			if signals {
				syscall.Kill(os.Getpid(), syscall.SIGTERM)
			} else {
				d.stop <- syscall.SIGTERM
			}
			if err := <-d.done; err != nil {
				t.Fatalf("Run after SIGTERM = %v; want nil", err)
			}
			if n := d.chain(1).closed.Load(); n != 1 {
				t.Errorf("chain1 closed %d times at exit; want 1", n)
			}
			if _, err := os.Lstat(d.sock); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("socket after exit: %v; want it removed", err)
			}
		})
	}
}

// A reload that changes what only a restart applies says so, and keeps the
// listener it has.
func TestRunReloadNeedsRestart(t *testing.T) {
	d := startToy(t, false, 5*time.Second)
	other := filepath.Join(t.TempDir(), "other.sock")
	d.listen.Store("unix:" + other)
	d.reload(false)
	testlib.Eventually(t, 5*time.Second, "the reload is logged", func() bool { return strings.Contains(d.logs.String(), "toy reloaded") })
	if want := "toy: listen addresses, socket settings or allowed clients changed: restart the daemon to apply them"; !strings.Contains(d.logs.String(), want) {
		t.Errorf("log %q; want %q", d.logs.String(), want)
	}
	if c, name := d.client(); name != "chain1" {
		t.Errorf("client on the old address got %q; want chain1", name)
	} else {
		c.Close()
	}
	if _, err := os.Lstat(other); err == nil {
		t.Error("the new address is listened on; want it left for a restart")
	}
}

// SIGTERM stops accepting and lets work in flight finish; then the chain is
// closed.
func TestRunStopDrains(t *testing.T) {
	d := startToy(t, false, 5*time.Second)
	busy, _ := d.client()
	defer busy.Close()
	d.stop <- syscall.SIGTERM
	testlib.Eventually(t, 5*time.Second, "shutdown starts", func() bool { return strings.Contains(d.logs.String(), "toy shutting down") })
	testlib.Eventually(t, 5*time.Second, "no new connection is accepted", func() bool {
		c, err := net.Dial("unix", d.sock)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
	select {
	case err := <-d.done:
		t.Fatalf("Run returned (%v) while a client was still working", err)
	case <-time.After(100 * time.Millisecond):
	}
	if d.chain(0).closed.Load() != 0 {
		t.Fatal("chain closed while a client was still working")
	}
	fmt.Fprintln(busy, "done")
	select {
	case err := <-d.done:
		if err != nil {
			t.Fatalf("Run = %v; want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after the last client was done")
	}
	if n := d.chain(0).closed.Load(); n != 1 {
		t.Errorf("chain closed %d times; want 1", n)
	}
}

// Work that outlasts the drain bound is cut, and the chain closed.
func TestRunStopDrainBound(t *testing.T) {
	d := startToy(t, false, 200*time.Millisecond)
	busy, _ := d.client()
	defer busy.Close()
	start := time.Now()
	d.stop <- syscall.SIGTERM
	select {
	case err := <-d.done:
		if err != nil {
			t.Fatalf("Run = %v; want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after the drain bound")
	}
	if el := time.Since(start); el < 200*time.Millisecond {
		t.Errorf("Run returned after %v; want the 200ms drain waited", el)
	}
	if n := d.chain(0).closed.Load(); n != 1 {
		t.Errorf("chain closed %d times; want 1", n)
	}
	if s := d.logs.String(); !strings.Contains(s, "toy: shutdown cut work in flight") {
		t.Errorf("log %q; want the cut logged", s)
	}
}

// A start that cannot listen returns the error, with the hint for an
// exposed address, and leaves the chain closed and nothing listening.
func TestRunStartErrors(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "a.sock")
	wide := Listener{Addr: Addr{Network: "tcp", Address: fmt.Sprintf("0.0.0.0:%d", testlib.FreePort(t))}, AllowHint: "toy.allow_clients in postkit.yaml, --allow-client"}
	occupied, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer occupied.Close()
	busy := Listener{Addr: Addr{Network: "tcp", Address: occupied.Addr().String()}}
	tests := []struct {
		name   string
		plan   func(*toyChain) Plan[*toyChain]
		load   error
		srvErr error
		want   string
	}{
		{name: "load fails", load: errors.New("postkit.yaml:1:1: hostname: is required"), want: "postkit.yaml:1:1: hostname: is required"},
		{name: "no address", plan: func(c *toyChain) Plan[*toyChain] { return Plan[*toyChain]{Chain: c} }, want: "toy: no listen address: give one"},
		{name: "exposed", plan: func(c *toyChain) Plan[*toyChain] {
			return Plan[*toyChain]{Chain: c, Listen: []Listener{{Addr: Addr{Network: "unix", Address: sock}}, wide}}
		}, want: "toy: listen inet:" + wide.Addr.Address + ": daemon: inet:" + wide.Addr.Address + " can be reached from other hosts and the protocol has no authentication: name the client networks that may connect, or listen on 127.0.0.1 or a unix: socket (toy.allow_clients in postkit.yaml, --allow-client)"},
		{name: "extra in use", plan: func(c *toyChain) Plan[*toyChain] {
			return Plan[*toyChain]{Chain: c, Listen: []Listener{{Addr: Addr{Network: "unix", Address: sock}}}, Extras: []Extra{{Name: "metrics", Listener: busy, Server: &toyServer{}}}}
		}, want: "toy: metrics: listen tcp " + occupied.Addr().String() + ": bind: address already in use"},
		{name: "server fails", srvErr: errors.New("toy: bad settings"), plan: func(c *toyChain) Plan[*toyChain] {
			return Plan[*toyChain]{Chain: c, Listen: []Listener{{Addr: Addr{Network: "unix", Address: sock}}}}
		}, want: "toy: bad settings"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &toyChain{}
			err := Run(context.Background(), Spec[*toyChain]{
				Name:   "toy",
				Logger: testlib.Discard(),
				Hangup: make(chan os.Signal), Stop: make(chan os.Signal),
				Load: func() (Plan[*toyChain], error) {
					if tt.load != nil {
						return Plan[*toyChain]{}, tt.load
					}
					return tt.plan(c), nil
				},
				NewServer: func(h *Holder[*toyChain]) (Server, error) {
					if tt.srvErr != nil {
						return nil, tt.srvErr
					}
					return &toyServer{h: h}, nil
				},
			})
			if err == nil || err.Error() != tt.want {
				t.Errorf("Run = %v;\nwant %s", err, tt.want)
			}
			if tt.load == nil && c.closed.Load() != 1 {
				t.Errorf("chain closed %d times; want 1", c.closed.Load())
			}
			if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("socket left behind: %v", err)
			}
		})
	}
}

// A server that fails while serving stops the daemon with its error.
func TestRunServeError(t *testing.T) {
	c := &toyChain{}
	broken := errors.New("toy: accept: too many open files in system")
	err := Run(context.Background(), Spec[*toyChain]{
		Name: "toy", Logger: testlib.Discard(),
		Hangup: make(chan os.Signal), Stop: make(chan os.Signal),
		Load: func() (Plan[*toyChain], error) {
			return Plan[*toyChain]{Chain: c, Listen: []Listener{{Addr: Addr{Network: "tcp", Address: "127.0.0.1:0"}, Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}}}, nil
		},
		NewServer: func(h *Holder[*toyChain]) (Server, error) { return failingServer{broken}, nil },
	})
	if !errors.Is(err, broken) {
		t.Errorf("Run = %v; want %v", err, broken)
	}
	if c.closed.Load() != 1 {
		t.Errorf("chain closed %d times; want 1", c.closed.Load())
	}
}

type failingServer struct{ err error }

func (f failingServer) Serve(net.Listener) error       { return f.err }
func (f failingServer) Shutdown(context.Context) error { return nil }

// An extra server (the metrics endpoint) runs beside the protocol server
// and is shut down with it; ctx ending stops the daemon as SIGTERM does.
func TestRunExtraAndContext(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	extra := &toyServer{h: NewHolder(&toyChain{name: "metrics"})}
	c := &toyChain{name: "main"}
	port := testlib.FreePort(t)
	done := make(chan error, 1)
	logs := &testlib.Buffer{}
	go func() {
		done <- Run(ctx, Spec[*toyChain]{
			Name: "toy", Logger: logs.Logger(),
			Hangup: make(chan os.Signal), Stop: make(chan os.Signal),
			Load: func() (Plan[*toyChain], error) {
				return Plan[*toyChain]{Chain: c, Listen: []Listener{{Addr: Addr{Network: "unix", Address: filepath.Join(dir, "t.sock")}}},
					Extras: []Extra{{Name: "metrics", Listener: Listener{Addr: Addr{Network: "tcp", Address: fmt.Sprintf("127.0.0.1:%d", port)}}, Server: extra}}}, nil
			},
			NewServer: func(h *Holder[*toyChain]) (Server, error) { return &toyServer{h: h}, nil },
		})
	}()
	var conn net.Conn
	testlib.Eventually(t, 5*time.Second, "the extra server answers", func() bool {
		var err error
		conn, err = net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		return err == nil
	})
	name, _ := bufio.NewReader(conn).ReadString('\n')
	conn.Close()
	if name != "metrics\n" {
		t.Errorf("extra server said %q; want metrics", name)
	}
	if s := logs.String(); !strings.Contains(s, fmt.Sprintf(`msg="toy metrics listening" addr=inet:127.0.0.1:%d`, port)) {
		t.Errorf("log %q; want the extra's address", s)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v; want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return when ctx ended")
	}
	if !extra.closing || c.closed.Load() != 1 {
		t.Errorf("extra shut down %v, chain closed %d times; want true, 1", extra.closing, c.closed.Load())
	}
}

// A second stop signal cuts the drain short.
func TestRunSecondStopCuts(t *testing.T) {
	d := startToy(t, false, time.Minute)
	busy, _ := d.client()
	defer busy.Close()
	d.stop <- syscall.SIGTERM
	testlib.Eventually(t, 5*time.Second, "shutdown starts", func() bool { return strings.Contains(d.logs.String(), "toy shutting down") })
	d.stop <- syscall.SIGINT
	select {
	case err := <-d.done:
		if err != nil {
			t.Fatalf("Run = %v; want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run still drains after a second signal")
	}
	if s := d.logs.String(); !strings.Contains(s, "toy: second stop signal: cutting work in flight") || d.chain(0).closed.Load() != 1 {
		t.Errorf("log %q, chain closed %d times; want the cut logged and the chain closed", s, d.chain(0).closed.Load())
	}
}

// A chain whose Close fails is logged, at reload and at exit.
func TestRunLogsCloseErrors(t *testing.T) {
	d := startToyWith(t, func(d *toyDaemon) {
		d.closeErr = errors.New("database is locked")
		d.hup, d.stop = make(chan os.Signal, 1), make(chan os.Signal, 1)
	})
	d.reload(false)
	testlib.Eventually(t, 5*time.Second, "the retired chain's error is logged", func() bool {
		return strings.Count(d.logs.String(), `msg="toy: closing a chain failed" err="database is locked"`) == 1
	})
	d.stop <- syscall.SIGTERM
	if err := <-d.done; err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(d.logs.String(), `msg="toy: closing a chain failed" err="database is locked"`); n != 2 {
		t.Errorf("%d close errors logged; want 2 (reload, exit):\n%s", n, d.logs.String())
	}
}

// An optional extra (the metrics endpoint) never stops the daemon: an
// address in use at start, or its server failing, is logged and the
// protocol server goes on.
func TestRunOptionalExtra(t *testing.T) {
	occupied, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer occupied.Close()
	free := Listener{Addr: Addr{Network: "tcp", Address: fmt.Sprintf("127.0.0.1:%d", testlib.FreePort(t))}}
	busy := Listener{Addr: Addr{Network: "tcp", Address: occupied.Addr().String()}}
	for _, tt := range []struct {
		name  string
		extra Extra
		want  string
	}{
		{"address in use", Extra{Name: "metrics", Listener: busy, Server: &toyServer{}, Optional: true}, `msg="toy: metrics not served; the daemon runs without it"`},
		{"server fails", Extra{Name: "metrics", Listener: free, Server: failingServer{errors.New("broken")}, Optional: true}, `msg="toy: metrics stopped; the daemon goes on without it" err=broken`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			sock := filepath.Join(dir, "t.sock")
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			logs := &testlib.Buffer{}
			done := make(chan error, 1)
			go func() {
				done <- Run(ctx, Spec[*toyChain]{
					Name: "toy", Logger: logs.Logger(),
					Hangup: make(chan os.Signal), Stop: make(chan os.Signal),
					Load: func() (Plan[*toyChain], error) {
						return Plan[*toyChain]{Chain: &toyChain{name: "main"}, Listen: []Listener{{Addr: Addr{Network: "unix", Address: sock}}},
							Extras: []Extra{tt.extra}}, nil
					},
					NewServer: func(h *Holder[*toyChain]) (Server, error) { return &toyServer{h: h}, nil },
				})
			}()
			testlib.Eventually(t, 5*time.Second, "the failure logged", func() bool { return strings.Contains(logs.String(), tt.want) })
			conn, err := net.Dial("unix", sock)
			if err != nil {
				t.Fatalf("the protocol server does not answer: %v\n%s", err, logs.String())
			}
			name, _ := bufio.NewReader(conn).ReadString('\n')
			conn.Close()
			if name != "main\n" {
				t.Errorf("protocol server said %q; want main", name)
			}
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run = %v; want nil", err)
			}
		})
	}
}
