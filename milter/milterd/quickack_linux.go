package milterd

import (
	"net"
	"syscall"
)

// quickAckReader re-arms TCP_QUICKACK after every read: Linux leaves quick-ACK
// mode on its own, and a delayed ACK makes the MTA's next small write wait for
// it (tcp(7)).
type quickAckReader struct {
	c   *net.TCPConn
	raw syscall.RawConn
}

func newQuickAckReader(c *net.TCPConn) *quickAckReader {
	raw, err := c.SyscallConn()
	if err != nil {
		raw = nil
	}
	return &quickAckReader{c: c, raw: raw}
}

func (q *quickAckReader) Read(p []byte) (int, error) {
	n, err := q.c.Read(p)
	if q.raw != nil && n > 0 {
		q.raw.Control(func(fd uintptr) {
			syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
		})
	}
	return n, err
}
