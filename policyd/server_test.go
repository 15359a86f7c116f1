package policyd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postkit/postkit/internal/daemon"
)

// stubCheck answers a fixed decision, or runs fn.
type stubCheck struct {
	name string
	d    Decision
	err  error
	fn   func(ctx context.Context, r *Request) (Decision, error)
}

func (f stubCheck) Name() string { return f.name }
func (f stubCheck) Check(ctx context.Context, r *Request) (Decision, error) {
	if f.fn != nil {
		return f.fn(ctx, r)
	}
	return f.d, f.err
}

func serverTestLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func startPolicy(t *testing.T, s *Server) string {
	t.Helper()
	if s.Logger == nil {
		s.Logger = serverTestLogger()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		if err := <-errc; !errors.Is(err, daemon.ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return ln.Addr().String()
}

type policyClient struct {
	c  net.Conn
	br *bufio.Reader
}

func dialPolicy(t *testing.T, addr string) *policyClient {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &policyClient{c: c, br: bufio.NewReader(c)}
}

// ask sends a raw request and returns the action of the reply.
func (c *policyClient) ask(raw string) (string, error) {
	c.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c.c, raw); err != nil {
		return "", err
	}
	line, err := c.br.ReadString('\n')
	if err != nil {
		return "", err
	}
	blank, err := c.br.ReadString('\n')
	if err != nil || blank != "\n" {
		return "", fmt.Errorf("reply not ended by an empty line: %q %v", blank, err)
	}
	return strings.TrimPrefix(strings.TrimSuffix(line, "\n"), "action="), nil
}

func rcptRequest(attrs ...string) string {
	var b strings.Builder
	b.WriteString("request=smtpd_access_policy\nprotocol_state=RCPT\n")
	for _, a := range attrs {
		b.WriteString(a + "\n")
	}
	b.WriteString("\n")
	return b.String()
}

func TestDecisionMerge(t *testing.T) {
	hdrA := stubCheck{name: "a", d: Decision{Prepend: []string{"X-A: 1"}, Reason: "a=1"}}
	hdrB := stubCheck{name: "b", d: Decision{Prepend: []string{"X-B: 2"}}}
	reject := stubCheck{name: "rej", d: Decision{Action: "550 5.7.1 no", Reason: "rej"}}
	defer_ := stubCheck{name: "def", d: Decision{Action: "DEFER_IF_PERMIT later"}}
	ok := stubCheck{name: "ok", d: Decision{Action: "OK"}}
	dunno := stubCheck{name: "dunno", d: Decision{Action: "DUNNO"}}
	failing := stubCheck{name: "broken", err: errors.New("store down")}
	panicking := stubCheck{name: "panics", fn: func(context.Context, *Request) (Decision, error) { panic("boom") }}
	slow := stubCheck{name: "slow", fn: func(ctx context.Context, r *Request) (Decision, error) {
		time.Sleep(2 * time.Second) // ignores ctx on purpose
		return Decision{Action: "REJECT late"}, nil
	}}

	tests := []struct {
		name   string
		checks []Check
		reqs   []string // requests on one connection, in order
		want   []string
	}{
		{"no checks", nil, []string{rcptRequest()}, []string{"DUNNO"}},
		{"first final wins", []Check{reject, defer_}, []string{rcptRequest()}, []string{"550 5.7.1 no"}},
		{"order matters", []Check{defer_, reject}, []string{rcptRequest()}, []string{"DEFER_IF_PERMIT later"}},
		{"final dunno is no opinion", []Check{dunno, reject}, []string{rcptRequest()}, []string{"550 5.7.1 no"}},
		{"prepend then reject", []Check{hdrA, reject}, []string{rcptRequest()}, []string{"550 5.7.1 no"}},
		{"prepend alone", []Check{hdrA}, []string{rcptRequest()}, []string{"PREPEND X-A: 1"}},
		{"ok outranks header", []Check{hdrA, ok}, []string{rcptRequest()}, []string{"OK"}},
		{"error is no opinion", []Check{failing, hdrA}, []string{rcptRequest()}, []string{"PREPEND X-A: 1"}},
		{"panic is no opinion", []Check{panicking, reject}, []string{rcptRequest()}, []string{"550 5.7.1 no"}},
		{"timeout is no opinion", []Check{slow, hdrB}, []string{rcptRequest()}, []string{"PREPEND X-B: 2"}},
		{"one header per message, spread over recipients", []Check{hdrA, hdrB},
			[]string{rcptRequest("instance=1.1", "recipient=r1@x"), rcptRequest("instance=1.1", "recipient=r2@x"), rcptRequest("instance=1.1", "recipient=r3@x"), rcptRequest("instance=2.2")},
			[]string{"PREPEND X-A: 1", "PREPEND X-B: 2", "DUNNO", "PREPEND X-A: 1"}},
		{"unknown request type", []Check{reject}, []string{"request=other\n\n"}, []string{"DUNNO"}},
		{"garbage then good", []Check{reject}, []string{"garbage line\n\n", rcptRequest()}, []string{"DUNNO", "550 5.7.1 no"}},
		{"oversized then good", []Check{reject}, []string{"x=" + strings.Repeat("y", 10000) + "\n\n", rcptRequest()}, []string{"DUNNO", "550 5.7.1 no"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Server{Checks: tt.checks, CheckTimeout: 200 * time.Millisecond}
			c := dialPolicy(t, startPolicy(t, s))
			for i, r := range tt.reqs {
				got, err := c.ask(r)
				if err != nil || got != tt.want[i] {
					t.Errorf("request %d: got %q, %v; want %q", i, got, err, tt.want[i])
				}
			}
		})
	}
}

func TestManyConnections(t *testing.T) {
	s := &Server{Checks: []Check{stubCheck{name: "echo", fn: func(_ context.Context, r *Request) (Decision, error) {
		return Decision{Action: "REJECT " + r.Recipient()}, nil
	}}}}
	addr := startPolicy(t, s)
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := dialPolicy(t, addr)
			for j := range 25 {
				rcpt := fmt.Sprintf("u%d-%d@example.org", i, j)
				got, err := c.ask(rcptRequest("recipient=" + rcpt))
				if err != nil || got != "REJECT "+rcpt {
					errs <- fmt.Errorf("conn %d req %d: %q %v", i, j, got, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestShutdownDrains(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	s := &Server{Logger: serverTestLogger(), Checks: []Check{stubCheck{name: "wait", fn: func(ctx context.Context, r *Request) (Decision, error) {
		close(started)
		<-release
		return Decision{Action: "REJECT drained"}, nil
	}}}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- s.Serve(ln) }()
	busy := dialPolicy(t, ln.Addr().String())
	idle := dialPolicy(t, ln.Addr().String())
	got := make(chan string, 1)
	go func() { a, _ := busy.ask(rcptRequest()); got <- a }()
	<-started

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		shut <- s.Shutdown(ctx)
	}()
	// The idle connection is closed promptly.
	idle.c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := idle.br.ReadByte(); err != io.EOF {
		t.Errorf("idle connection read: %v, want EOF", err)
	}
	// New connections are refused.
	time.Sleep(50 * time.Millisecond)
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Error("dial after Shutdown succeeded")
	}
	close(release)
	if a := <-got; a != "REJECT drained" {
		t.Errorf("busy request answered %q, want its answer", a)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-serveErr; !errors.Is(err, daemon.ErrServerClosed) {
		t.Errorf("Serve: %v", err)
	}
}
