package milterd

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// rawIO reads and writes a connection's socket with raw read(2) and
// send(2) calls made through the connection's syscall.RawConn, which keeps
// the net package's poller, deadlines and Close semantics.
//
// Why not net.Conn's own Read and Write: each of them enters the Go
// scheduler's system-call state, and when the process was idle (every
// goroutine waiting for the MTA, the common case between two packets) that
// wakes the runtime's monitor thread, which then polls every 20 µs before it
// goes back to sleep. A milter connection wakes up three or four times per
// message, so that monitor thread cost more CPU than the protocol itself
// (measured with perf on the full path, BENCHMARKS.md). A read or write on a
// non-blocking socket never blocks, so it does not need that state.
type rawIO struct {
	rc       syscall.RawConn
	quickAck bool // TCP: re-arm TCP_QUICKACK after each read (tcp(7))

	// Arguments and results of the callbacks below, which are built once
	// so that a call allocates nothing; reading and writing each have
	// their own, as a net.Conn may be read and written concurrently.
	rd, wr       func(fd uintptr) bool
	rbuf, wbuf   []byte
	rn, wn       int
	rerrno, werr syscall.Errno
}

// newSocketIO returns the reader and writer of a session's connection: raw
// system calls where the connection exposes its socket, the connection
// itself otherwise (net.Pipe in tests, wrapped connections).
func newSocketIO(c net.Conn) (io.Reader, io.Writer) {
	if tc, ok := c.(*net.TCPConn); ok {
		// The MTA waits for each reply: do not let Nagle hold small packets
		// (Go's default, made explicit).
		tc.SetNoDelay(true)
	}
	sc, ok := c.(syscall.Conn)
	if !ok || !rawSocketIO {
		return c, c
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c, c
	}
	r := &rawIO{rc: rc}
	if _, ok := c.(*net.TCPConn); ok {
		// Do not delay our ACKs either, or the MTA's own small writes
		// wait ~40 ms for them (tcp(7) TCP_QUICKACK).
		r.quickAck = true
	}
	r.rd = r.readFD
	r.wr = r.writeFD
	return r, r
}

func (r *rawIO) readFD(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&r.rbuf[0])), uintptr(len(r.rbuf)))
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // wait for the poller
		}
		r.rn, r.rerrno = int(n), e
		if e == 0 && r.quickAck {
			one := int32(1)
			syscall.RawSyscall6(syscall.SYS_SETSOCKOPT, fd, syscall.IPPROTO_TCP, syscall.TCP_QUICKACK,
				uintptr(unsafe.Pointer(&one)), unsafe.Sizeof(one), 0)
		}
		return true
	}
}

// Read implements io.Reader.
func (r *rawIO) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.rbuf, r.rn, r.rerrno = p, 0, 0
	err := r.rc.Read(r.rd)
	r.rbuf = nil
	switch {
	case err != nil: // deadline, closed: already the net package's errors
		return 0, err
	case r.rerrno != 0:
		return 0, os.NewSyscallError("read", r.rerrno)
	case r.rn == 0:
		return 0, io.EOF
	}
	return r.rn, nil
}

func (r *rawIO) writeFD(fd uintptr) bool {
	for len(r.wbuf) > 0 {
		// send(2) with MSG_NOSIGNAL: a peer gone away is EPIPE, not SIGPIPE.
		n, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&r.wbuf[0])), uintptr(len(r.wbuf)),
			syscall.MSG_NOSIGNAL, 0, 0)
		switch e {
		case 0:
			r.wn += int(n)
			r.wbuf = r.wbuf[n:]
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false // socket buffer full: wait for the poller
		default:
			r.werr = e
			return true
		}
	}
	return true
}

// Write implements io.Writer: all of p, or an error.
func (r *rawIO) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.wbuf, r.wn, r.werr = p, 0, 0
	err := r.rc.Write(r.wr)
	r.wbuf = nil
	if err == nil && r.werr != 0 {
		err = os.NewSyscallError("write", r.werr)
	}
	return r.wn, err
}
