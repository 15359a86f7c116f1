package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
)

// The milter protocol and the policy delegation protocol carry no
// authentication: whoever can connect can have mail signed for our domains,
// or query and feed the policy checks. A unix socket is guarded by its mode
// and directory; an inet listener only by who can reach it. So a daemon
// listening where other hosts can connect must name the clients it serves,
// and it closes every other connection as it accepts it.

// ErrExposed is returned by ListenClients for an address other hosts can
// reach when no client network is named.
var ErrExposed = errors.New("can be reached from other hosts and the protocol has no authentication")

// Exposed reports whether a is an inet address other hosts can reach: its
// host is not a loopback address (all interfaces, a LAN address, or a name,
// which is not trusted to resolve to loopback).
func (a Addr) Exposed() bool {
	if a.Network == "unix" {
		return false
	}
	host, _, err := net.SplitHostPort(a.Address)
	if err != nil {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err != nil || !ip.Unmap().IsLoopback()
}

// ListenClients is Listen for a daemon whose protocol has no authentication.
// An exposed inet address (see Addr.Exposed) is refused unless allow names the
// client networks; when allow is not empty, a connection from any other
// address is closed as soon as it is accepted and logged, so that Serve never
// sees it. allow does not apply to unix sockets, whose mode and group decide
// who connects.
func ListenClients(a Addr, o SocketOpts, allow []netip.Prefix, log *slog.Logger) (net.Listener, error) {
	if a.Network == "unix" {
		return Listen(a, o)
	}
	if len(allow) == 0 && a.Exposed() {
		return nil, fmt.Errorf("daemon: %s %w: name the client networks that may connect, or listen on 127.0.0.1 or a unix: socket", a, ErrExposed)
	}
	ln, err := Listen(a, o)
	if err != nil || len(allow) == 0 {
		return ln, err
	}
	if log == nil {
		log = slog.Default()
	}
	return &allowListener{Listener: ln, allow: append([]netip.Prefix(nil), allow...), log: log}, nil
}

// allowListener accepts connections from allowed addresses only.
type allowListener struct {
	net.Listener
	allow []netip.Prefix
	log   *slog.Logger
}

// Accept returns the next connection from an allowed client; others are
// closed and logged here.
func (l *allowListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip, ok := remoteIP(c)
		if ok && Allowed(ip, l.allow) {
			return c, nil
		}
		c.Close()
		l.log.Warn("refused a connection from a client outside allow_clients", "listen", l.Addr().String(), "client", c.RemoteAddr().String())
	}
}

// Allowed reports whether ip is in one of the networks; an IPv4 client on a
// dual-stack listener ([::]) is matched as IPv4.
func Allowed(ip netip.Addr, allow []netip.Prefix) bool {
	ip = ip.Unmap()
	for _, p := range allow {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func remoteIP(c net.Conn) (netip.Addr, bool) {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().WithZone(""), true
	}
	return netip.Addr{}, false
}
