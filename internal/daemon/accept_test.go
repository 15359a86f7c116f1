package daemon

import (
	"errors"
	"net"
	"syscall"
	"testing"

	"github.com/postkit/postkit/internal/testlib"
)

// fakeListener returns the queued errors, then a connection.
type fakeListener struct {
	errs []error
	n    int
}

func (l *fakeListener) Accept() (net.Conn, error) {
	if l.n < len(l.errs) {
		l.n++
		return nil, l.errs[l.n-1]
	}
	c, _ := net.Pipe()
	return c, nil
}
func (l *fakeListener) Close() error   { return nil }
func (l *fakeListener) Addr() net.Addr { return &net.UnixAddr{Name: "fake", Net: "unix"} }

func TestAccept(t *testing.T) {
	log := testlib.Discard()
	open := func() bool { return false }
	// Descriptor shortage is retried, then the connection comes through.
	ln := &fakeListener{errs: []error{syscall.EMFILE, syscall.ENFILE}}
	c, err := Accept(ln, "test", open, log)
	if err != nil || c == nil || ln.n != 2 {
		t.Fatalf("Accept after EMFILE, ENFILE = %v, %v after %d tries; want a connection after 2", c, err, ln.n)
	}
	c.Close()
	// Other errors end the loop, wrapped.
	ln = &fakeListener{errs: []error{net.ErrClosed}}
	if _, err := Accept(ln, "test", open, log); err == nil || !errors.Is(err, net.ErrClosed) || errors.Is(err, ErrServerClosed) {
		t.Errorf("Accept on a closed listener = %v; want net.ErrClosed wrapped", err)
	}
	// After Shutdown every error is ErrServerClosed.
	ln = &fakeListener{errs: []error{net.ErrClosed}}
	if _, err := Accept(ln, "test", func() bool { return true }, log); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Accept while closing = %v; want ErrServerClosed", err)
	}
}
