//go:build !linux

package milterd

import (
	"io"
	"net"
)

// newSocketIO returns the connection itself as reader and writer; the raw
// socket calls of rawio_linux.go are a Linux measurement.
func newSocketIO(c net.Conn) (io.Reader, io.Writer) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true) // the MTA waits for each reply
	}
	return c, c
}
