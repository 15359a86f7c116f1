//go:build !linux

package milterd

import "net"

// quickAckReader is a plain reader where TCP_QUICKACK does not exist.
type quickAckReader struct{ c *net.TCPConn }

func newQuickAckReader(c *net.TCPConn) *quickAckReader { return &quickAckReader{c: c} }

func (q *quickAckReader) Read(p []byte) (int, error) { return q.c.Read(p) }
