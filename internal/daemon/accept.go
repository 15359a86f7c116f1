package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"syscall"
	"time"
)

// Accept accepts the next connection on ln for a server named name. A
// temporary failure (a timeout, or running out of file descriptors) is logged
// and retried after a delay that doubles from 5 ms up to 1 s, so that a
// descriptor shortage does not spin the CPU. Once closed reports true, any
// accept error is ErrServerClosed; another error is returned wrapped.
func Accept(ln net.Listener, name string, closed func() bool, log *slog.Logger) (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err == nil {
			return c, nil
		}
		if closed() {
			return nil, ErrServerClosed
		}
		if !temporary(err) {
			return nil, fmt.Errorf("%s: accept: %w", name, err)
		}
		delay = min(max(2*delay, 5*time.Millisecond), time.Second)
		log.Warn(name+": accept failed; retrying", "err", err, "delay", delay)
		time.Sleep(delay)
	}
}

func temporary(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var t interface{ Temporary() bool }
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || (errors.As(err, &t) && t.Temporary())
}
