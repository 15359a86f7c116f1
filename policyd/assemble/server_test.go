package assemble_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/internal/daemon"
	"github.com/postkit/postkit/policyd"
	"github.com/postkit/postkit/policyd/assemble"
)

// noop is a check with no opinion that counts the requests it saw.
type noop struct{ seen *atomic.Int64 }

func (noop) Name() string { return "noop" }
func (n noop) Check(context.Context, *policyd.Request) (policyd.Decision, error) {
	n.seen.Add(1)
	return policyd.Decision{Reason: "noop=seen"}, nil
}

// resource is what a check opened: the chain closes it.
type resource struct{ closed chan struct{} }

func (r *resource) Close() error { close(r.closed); return nil }

// A check added through the table alone runs in a real policy server over
// a socket, after the built-in checks policy.checks puts before it; a
// reload swaps its chain out, and the resource its constructor opened is
// closed once the last request on the old chain is answered.
func TestTableAddsCheck(t *testing.T) {
	var seen atomic.Int64
	opened := make(chan *resource, 2)
	table := assemble.Checks()
	table["noop"] = func(b *assemble.Builder) (policyd.Check, error) {
		r := &resource{closed: make(chan struct{})}
		b.OnClose(r)
		opened <- r
		return noop{&seen}, nil
	}
	c := config.Defaults()
	c.Hostname = "mx.example.test"
	c.Policy.Checks = []string{"blacklist", "noop"} // blacklist: owned by Postfix, skipped
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	chain, err := table.Build(c, assemble.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(chain.Names(), ","); got != "noop" {
		t.Fatalf("chain %s, want noop", got)
	}
	first := <-opened

	chains := daemon.NewHolder[policyd.Chain](chain)
	srv := &policyd.Server{Chains: chains, Logger: quiet}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-errc; !errors.Is(err, daemon.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
		<-chains.Close()
	}()

	conn, err := net.DialTimeout("tcp", ln.Addr().String(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	ask := func() string {
		t.Helper()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(conn, "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.1\nsender=a@example.org\nrecipient=b@example.test\n\n"); err != nil {
			t.Fatal(err)
		}
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		br.ReadString('\n') // the empty line ending the reply
		return strings.TrimSpace(line)
	}
	if got := ask(); got != "action=DUNNO" || seen.Load() != 1 {
		t.Fatalf("reply %q after %d noop checks; want action=DUNNO after 1", got, seen.Load())
	}

	next, err := table.Build(c, assemble.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	second := <-opened
	select {
	case err := <-chains.Swap(next):
		if err != nil {
			t.Fatalf("closing the old chain: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the old chain, idle, was not closed by the swap")
	}
	select {
	case <-first.closed:
	default:
		t.Fatal("the old chain closed without closing what its check opened")
	}
	if got := ask(); got != "action=DUNNO" || seen.Load() != 2 {
		t.Errorf("after the swap: reply %q after %d noop checks; want action=DUNNO after 2", got, seen.Load())
	}
	select {
	case <-second.closed:
		t.Error("the running chain's resource was closed")
	default:
	}
}
