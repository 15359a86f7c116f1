package policyd

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postkit/postkit/internal/daemon"
)

// recorder is an Observer that keeps what it was told.
type recorder struct {
	mu        sync.Mutex
	decisions []string // "check=result"
	requests  []string // actions
}

func (r *recorder) ObserveDecision(check string, d Decision, err error, _ time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.decisions = append(r.decisions, check+"="+ResultOf(d, err))
}

func (r *recorder) ObserveRequest(action string, _ time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = append(r.requests, action)
}

func TestObserver(t *testing.T) {
	hdr := stubCheck{name: "hdr", d: Decision{Prepend: []string{"X-A: 1"}}}
	reject := stubCheck{name: "rej", d: Decision{Action: "550 5.7.1 no"}}
	broken := stubCheck{name: "broken", err: context.DeadlineExceeded}
	never := stubCheck{name: "never", d: Decision{Action: "OK"}}
	tests := []struct {
		name          string
		checks        []Check
		wantDecisions string
		wantAction    string
	}{
		{"chain stops at the refusal", []Check{hdr, broken, reject, never}, "hdr=prepend broken=error rej=reject", "550 5.7.1 no"},
		{"header only", []Check{hdr}, "hdr=prepend", "PREPEND X-A: 1"},
		{"no checks", nil, "", "DUNNO"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			s := &Server{Checks: tt.checks, Observer: rec}
			c := dialPolicy(t, startPolicy(t, s))
			got, err := c.ask(rcptRequest())
			if err != nil || got != tt.wantAction {
				t.Fatalf("action %q, %v; want %q", got, err, tt.wantAction)
			}
			rec.mu.Lock()
			defer rec.mu.Unlock()
			if d := strings.Join(rec.decisions, " "); d != tt.wantDecisions {
				t.Errorf("observed decisions %q, want %q", d, tt.wantDecisions)
			}
			if len(rec.requests) != 1 || rec.requests[0] != tt.wantAction {
				t.Errorf("observed requests %q, want [%q]", rec.requests, tt.wantAction)
			}
		})
	}
}

// The observer feeds the Prometheus registry end to end.
func TestObserverMetrics(t *testing.T) {
	m := NewMetrics()
	s := &Server{Checks: []Check{stubCheck{name: "rej", d: Decision{Action: "REJECT no"}}}, Observer: m}
	c := dialPolicy(t, startPolicy(t, s))
	for range 3 {
		if _, err := c.ask(rcptRequest()); err != nil {
			t.Fatal(err)
		}
	}
	var b strings.Builder
	m.WriteTo(&b)
	for _, want := range []string{`check="rej"`, `result="reject"`} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("metrics lack %s:\n%s", want, b.String())
		}
	}
	found := false
	for _, line := range strings.Split(b.String(), "\n") {
		if strings.Contains(line, `check="rej"`) && strings.Contains(line, `result="reject"`) && strings.HasSuffix(line, " 3") {
			found = true
		}
	}
	if !found {
		t.Errorf("metrics do not count 3 rej rejections:\n%s", b.String())
	}
}

// closeRecorder is a chain that records when it is closed.
type closeRecorder struct {
	CheckList
	closed chan struct{}
}

func newCloseRecorder(checks ...Check) *closeRecorder {
	return &closeRecorder{CheckList: checks, closed: make(chan struct{})}
}

func (c *closeRecorder) Close() error { close(c.closed); return nil }

func (c *closeRecorder) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// A reload swaps the chain between two requests on one connection: a
// request in progress finishes on the chain it started with, which is
// closed once that last request is answered, not before.
func TestChainsSwap(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	slowOld := stubCheck{name: "old", fn: func(context.Context, *Request) (Decision, error) {
		close(started)
		<-release
		return Decision{Action: "REJECT old"}, nil
	}}
	old := newCloseRecorder(slowOld)
	chains := daemon.NewHolder[Chain](old)
	s := &Server{Chains: chains}
	addr := startPolicy(t, s)
	busy := dialPolicy(t, addr)
	got := make(chan string, 1)
	go func() { a, _ := busy.ask(rcptRequest()); got <- a }()
	<-started
	next := newCloseRecorder(stubCheck{name: "new", d: Decision{Action: "REJECT new"}})
	closeErr := chains.Swap(next)
	if a, err := dialPolicy(t, addr).ask(rcptRequest()); err != nil || a != "REJECT new" {
		t.Errorf("after Swap: %q, %v; want REJECT new", a, err)
	}
	if old.isClosed() {
		t.Fatal("old chain closed while a request still runs on it")
	}
	close(release)
	if a := <-got; a != "REJECT old" {
		t.Errorf("request in progress answered %q, want REJECT old", a)
	}
	select {
	case err := <-closeErr:
		if err != nil {
			t.Errorf("closing the old chain: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("old chain not closed after its last request was answered")
	}
	if !old.isClosed() {
		t.Error("Swap's channel fired but the old chain's Close was not called")
	}
	if a, err := busy.ask(rcptRequest()); err != nil || a != "REJECT new" {
		t.Errorf("next request on the old connection: %q, %v; want REJECT new", a, err)
	}
	if cs := chains.Current().Checks(); len(cs) != 1 || cs[0].Name() != "new" || next.isClosed() {
		t.Errorf("current chain %v (closed %v), want [new], open", cs, next.isClosed())
	}
}

// An idle chain is closed at once when swapped out: no request holds it.
func TestChainsSwapIdle(t *testing.T) {
	old := newCloseRecorder(stubCheck{name: "old", d: Decision{Action: "REJECT old"}})
	chains := daemon.NewHolder[Chain](old)
	s := &Server{Chains: chains}
	addr := startPolicy(t, s)
	if a, err := dialPolicy(t, addr).ask(rcptRequest()); err != nil || a != "REJECT old" {
		t.Fatalf("first request: %q, %v; want REJECT old", a, err)
	}
	<-chains.Swap(CheckList{stubCheck{name: "new", d: Decision{Action: "REJECT new"}}})
	if !old.isClosed() {
		t.Error("idle chain not closed by Swap")
	}
	if a, err := dialPolicy(t, addr).ask(rcptRequest()); err != nil || a != "REJECT new" {
		t.Errorf("after Swap: %q, %v; want REJECT new", a, err)
	}
}

// RequestTimeout bounds the whole chain: a check that eats the budget leaves
// the later ones unrun, and the request is answered in time.
func TestRequestTimeout(t *testing.T) {
	slow := stubCheck{name: "slow", fn: func(ctx context.Context, r *Request) (Decision, error) {
		<-ctx.Done()
		return Decision{}, ctx.Err()
	}}
	reject := stubCheck{name: "rej", d: Decision{Action: "REJECT too late"}}
	tests := []struct {
		name    string
		timeout time.Duration
		want    string
	}{
		{"budget exhausted", 100 * time.Millisecond, "DUNNO"},
		{"no budget: per-check timeout only", 0, "REJECT too late"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &Server{Checks: []Check{slow, reject}, CheckTimeout: 300 * time.Millisecond, RequestTimeout: tt.timeout}
			c := dialPolicy(t, startPolicy(t, s))
			start := time.Now()
			got, err := c.ask(rcptRequest())
			if err != nil || got != tt.want {
				t.Fatalf("action %q, %v; want %q", got, err, tt.want)
			}
			if el := time.Since(start); tt.timeout > 0 && el > 250*time.Millisecond {
				t.Errorf("answered after %v, want within the %v budget", el, tt.timeout)
			}
		})
	}
}

// The per-message header memory stays bounded, keeps the message being
// answered, and still deduplicates its headers.
func TestSentHeadersBound(t *testing.T) {
	h := newSentHeaders(100, time.Minute)
	now := time.Unix(1_700_000_000, 0)
	for i := range 1000 {
		key := fmt.Sprintf("msg%d", i)
		if got, _ := h.next(key, []string{"X-A: 1", "X-B: 2"}, now); got != "X-A: 1" {
			t.Fatalf("message %d: first header %q, want X-A: 1", i, got)
		}
		if got, _ := h.next(key, []string{"X-A: 1", "X-B: 2"}, now); got != "X-B: 2" {
			t.Fatalf("message %d: second header %q, want X-B: 2 (the entry was evicted)", i, got)
		}
		if n := h.items.Len(); n > 100 {
			t.Fatalf("after %d messages: %d entries, want at most 100", i+1, n)
		}
	}
	// An entry lives ttl after the message's last request: a request
	// after that is a new message to it.
	h = newSentHeaders(10, time.Minute)
	h.next("msg", []string{"X-A: 1"}, now)
	if got, _ := h.next("msg", []string{"X-A: 1"}, now.Add(59*time.Second)); got != "" {
		t.Errorf("within the ttl: header %q sent again", got)
	}
	if got, _ := h.next("msg", []string{"X-A: 1"}, now.Add(118*time.Second)); got != "" {
		t.Errorf("within the ttl of the last request: header %q sent again", got)
	}
	if got, _ := h.next("msg", []string{"X-A: 1"}, now.Add(180*time.Second)); got != "X-A: 1" {
		t.Errorf("after the ttl: header %q, want X-A: 1 again", got)
	}
}

func BenchmarkSentHeadersFull(b *testing.B) {
	h := newSentHeaders(20000, time.Hour)
	now := time.Unix(1_700_000_000, 0)
	for i := range b.N {
		h.next(fmt.Sprintf("msg%d", i), []string{"X-A: 1"}, now)
	}
}
