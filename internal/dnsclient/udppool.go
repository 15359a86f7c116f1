package dnsclient

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Sockets to servers on loopback are kept and reused: opening a UDP socket
// per query costs a socket, a connect and a close, about a quarter of the CPU
// a query takes here when the server is local. A reused socket keeps its
// source port, which RFC 5452 §9.2 asks to randomise per query so that an
// off-path attacker must guess it along with the ID (§4); nobody off the
// host can inject packets on loopback, so reuse is limited to loopback
// servers, and each socket still serves only maxUses queries. Queries to
// other servers get a fresh socket (and source port) each, as before.
const (
	maxIdlePerServer = 32
	maxUses          = 200
)

type udpPool struct {
	mu     sync.Mutex
	idle   map[string][]*pooledConn
	closed bool // close ran: sockets are no longer kept
	// dialed counts the sockets opened (a seam for tests).
	dialed int
}

type pooledConn struct {
	*dns.Conn
	uses int
}

// isLoopback reports whether a "host:port" server is on loopback.
func isLoopback(srv string) bool {
	host, _, err := net.SplitHostPort(srv)
	if err != nil {
		return false
	}
	a, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil && a.Unmap().IsLoopback()
}

func (p *udpPool) get(ctx context.Context, srv string, size uint16) (*pooledConn, error) {
	p.mu.Lock()
	if l := p.idle[srv]; len(l) > 0 {
		c := l[len(l)-1]
		p.idle[srv] = l[:len(l)-1]
		p.mu.Unlock()
		return c, nil
	}
	p.dialed++
	p.mu.Unlock()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "udp", srv)
	if err != nil {
		return nil, err
	}
	return &pooledConn{Conn: &dns.Conn{Conn: nc, UDPSize: size}}, nil
}

// put keeps c for reuse if it may serve more queries and there is room.
func (p *udpPool) put(srv string, c *pooledConn) {
	c.uses++
	p.mu.Lock()
	if !p.closed && c.uses < maxUses && len(p.idle[srv]) < maxIdlePerServer {
		if p.idle == nil {
			p.idle = map[string][]*pooledConn{}
		}
		p.idle[srv] = append(p.idle[srv], c)
		c = nil
	}
	p.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// close closes the idle sockets and keeps none from now on.
func (p *udpPool) close() error {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	var errs []error
	for _, l := range idle {
		for _, c := range l {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}

// exchangeUDP sends m over a pooled socket and reads until the answer with
// m's ID and question arrives, or ctx ends. A socket that saw an error or a
// timeout is closed, never reused: a late answer could still arrive on it.
func (p *udpPool) exchangeUDP(ctx context.Context, m *dns.Msg, srv string, size uint16) (*dns.Msg, error) {
	c, err := p.get(ctx, srv, size)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if ok {
			p.put(srv, c)
		} else {
			c.Close()
		}
	}()
	if dl, has := ctx.Deadline(); has {
		c.SetDeadline(dl)
	} else {
		c.SetDeadline(time.Time{})
	}
	// Cancellation (not only the deadline) unblocks the read.
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	if err := c.WriteMsg(m); err != nil {
		return nil, err
	}
	for {
		resp, err := c.ReadMsg()
		if err != nil {
			var oe *net.OpError
			if errors.As(err, &oe) || errors.Is(err, net.ErrClosed) || ctx.Err() != nil {
				return nil, err // the socket failed, or the deadline passed
			}
			// A datagram that does not parse: keep waiting for the real
			// answer rather than give up on the first bad packet.
			continue
		}
		// RFC 5452 §4.3: accept only the answer to this query (same ID and
		// question); anything else is stale or forged.
		if resp.Id != m.Id || len(resp.Question) != 1 ||
			!strings.EqualFold(resp.Question[0].Name, m.Question[0].Name) ||
			resp.Question[0].Qtype != m.Question[0].Qtype || resp.Question[0].Qclass != m.Question[0].Qclass {
			continue
		}
		if !stop() {
			// The context ended just now and poisoned the deadline.
			return resp, nil
		}
		ok = true
		return resp, nil
	}
}
