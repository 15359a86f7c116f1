package daemon

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postkit/postkit/internal/testlib"
)

func TestExposed(t *testing.T) {
	tests := map[string]bool{
		"unix:/run/postkit/milter.sock": false,
		"inet:127.0.0.1:8891":           false,
		"inet:127.0.0.2:8891":           false,
		"inet:[::1]:8891":               false,
		"inet:[::ffff:127.0.0.1]:8891":  false,
		"inet:0.0.0.0:8891":             true,
		"inet:[::]:8891":                true,
		"inet::8891":                    true, // every interface
		"inet:192.168.1.10:8891":        true,
		"inet:[2001:db8::1]:8891":       true,
		"inet:localhost:8891":           true, // a name is not trusted to stay loopback
	}
	for in, want := range tests {
		a, err := ParseAddr(in)
		if err != nil {
			t.Fatalf("ParseAddr(%q): %v", in, err)
		}
		if got := a.Exposed(); got != want {
			t.Errorf("ParseAddr(%q).Exposed() = %v; want %v", in, got, want)
		}
	}
}

func TestAllowed(t *testing.T) {
	allow := []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("2001:db8::/32")}
	tests := map[string]bool{
		"127.0.0.1":        true,
		"127.0.0.2":        false,
		"192.0.2.77":       true,
		"::ffff:192.0.2.1": true, // IPv4 client of a [::] listener
		"198.51.100.1":     false,
		"2001:db8::25":     true,
		"::1":              false,
	}
	for in, want := range tests {
		if got := Allowed(netip.MustParseAddr(in), allow); got != want {
			t.Errorf("Allowed(%s) = %v; want %v", in, got, want)
		}
	}
	if Allowed(netip.MustParseAddr("127.0.0.1"), nil) {
		t.Error("Allowed with an empty list = true")
	}
}

// An exposed address needs an allow list; a listener with one closes
// connections from other addresses before Serve sees them and logs them,
// and hands over the allowed ones.
func TestListenClients(t *testing.T) {
	port := testlib.FreePort(t)
	wide := Addr{Network: "tcp", Address: net.JoinHostPort("0.0.0.0", itoa(port))}
	if ln, err := ListenClients(wide, SocketOpts{}, nil, nil); !errors.Is(err, ErrExposed) {
		if ln != nil {
			ln.Close()
		}
		t.Fatalf("ListenClients(%s, no allow list) = %v; want ErrExposed", wide, err)
	}
	// Loopback alone needs no list.
	lo, err := ListenClients(Addr{Network: "tcp", Address: "127.0.0.1:0"}, SocketOpts{}, nil, nil)
	if err != nil {
		t.Fatalf("ListenClients(loopback): %v", err)
	}
	lo.Close()

	var logs testlib.Buffer
	log := logs.Logger()
	ln, err := ListenClients(wide, SocketOpts{}, []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	dial := func(local string) net.Conn {
		d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
		c, err := d.Dial("tcp", net.JoinHostPort("127.0.0.1", itoa(port)))
		if err != nil {
			t.Fatalf("dial from %s: %v", local, err)
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		return c
	}
	refused := dial("127.0.0.2")
	defer refused.Close()
	if n, err := refused.Read(make([]byte, 1)); n != 0 || (!errors.Is(err, io.EOF) && !isReset(err)) {
		t.Errorf("client 127.0.0.2: read %d bytes, %v; want the connection closed", n, err)
	}
	ok := dial("127.0.0.1")
	defer ok.Close()
	select {
	case c := <-accepted:
		if got := c.RemoteAddr().(*net.TCPAddr).IP.String(); got != "127.0.0.1" {
			t.Errorf("Accept returned a connection from %s; want only 127.0.0.1", got)
		}
		c.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("the allowed client's connection was never accepted")
	}
	if s := logs.String(); !strings.Contains(s, "refused a connection") || !strings.Contains(s, "127.0.0.2") {
		t.Errorf("log %q; want the refused client named", s)
	}
}

func isReset(err error) bool { return err != nil && strings.Contains(err.Error(), "reset") }

func itoa(n int) string { return strconv.Itoa(n) }
