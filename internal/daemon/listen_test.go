package daemon

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseAddr(t *testing.T) {
	tests := []struct {
		in, network, addr, err string
	}{
		{"unix:/var/spool/postfix/private/postkit", "unix", "/var/spool/postfix/private/postkit", ""},
		{"local:/run/opendkim.sock", "unix", "/run/opendkim.sock", ""},
		{"inet:127.0.0.1:8891", "tcp", "127.0.0.1:8891", ""},
		{"127.0.0.1:10040", "tcp", "127.0.0.1:10040", ""},
		{"inet:[::1]:8891", "tcp", "[::1]:8891", ""},
		{"unix:private/postkit", "", "", "must be absolute"},
		{"inet:127.0.0.1", "", "", "want unix:/path or inet:host:port"},
		{"inet:127.0.0.1:0", "", "", "from 1 to 65535"},
		{"inet:127.0.0.1:http", "", "", "from 1 to 65535"},
	}
	for _, tt := range tests {
		a, err := ParseAddr(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseAddr(%q) = %v, %v; want error containing %q", tt.in, a, err, tt.err)
			}
			continue
		}
		if err != nil || a.Network != tt.network || a.Address != tt.addr {
			t.Errorf("ParseAddr(%q) = %+v, %v; want %s %s", tt.in, a, err, tt.network, tt.addr)
		}
		if b, err := ParseAddr(a.String()); err != nil || b != a {
			t.Errorf("ParseAddr(%q.String()) = %+v, %v; want a round trip", tt.in, b, err)
		}
	}
}

func TestListenUnix(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "m.sock")
	a := Addr{Network: "unix", Address: path}
	ln, err := Listen(a, SocketOpts{Mode: 0o660})
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode = %v, %v; want 0660", st.Mode(), err)
	}
	// A live socket is not stolen.
	if _, err := Listen(a, SocketOpts{}); err == nil || !strings.Contains(err.Error(), "already listening") {
		t.Errorf("second Listen = %v; want 'already listening'", err)
	}
	ln.Close()
	// A stale socket file is replaced. (Closing a unix listener removes its
	// file, so leave a dead one behind by hand.)
	l2, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l2.SetUnlinkOnClose(false)
	l2.Close()
	ln, err = Listen(a, SocketOpts{})
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	ln.Close()
	if _, err := Listen(a, SocketOpts{Owner: "no-such-user-postkit"}); err == nil || !strings.Contains(err.Error(), "unknown user") {
		t.Errorf("Listen with unknown owner = %v", err)
	}
}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]os.FileMode{"0660": 0o660, "600": 0o600, "0777": 0o777} {
		if m, err := ParseMode(in); err != nil || m != want {
			t.Errorf("ParseMode(%q) = %v, %v; want %v", in, m, err, want)
		}
	}
	for _, bad := range []string{"", "0999", "1777", "rw-rw----"} {
		if _, err := ParseMode(bad); err == nil || !strings.Contains(err.Error(), "octal") {
			t.Errorf("ParseMode(%q) = %v; want an 'octal' error", bad, err)
		}
	}
}
