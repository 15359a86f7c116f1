package daemon

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postkit/postkit/internal/testlib"
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

// An existing socket directory is used only if nobody but root, the daemon's
// user and the socket's owner can put something in the socket's place.
func TestListenSocketDirectory(t *testing.T) {
	base := t.TempDir() // 0700, ours, under the sticky /tmp
	tests := []struct {
		name string
		dir  string
		mode os.FileMode // of dir, and of its parent when parent is set
		sub  bool        // socket in dir/sub (0750) rather than dir
		ok   bool
	}{
		{"own 0750", "a", 0o750, false, true},
		{"own 0700", "b", 0o700, false, true},
		{"world-writable", "c", 0o777, false, false},
		{"group-writable", "d", 0o770, false, false},
		{"sticky but shared", "e", 0o777 | os.ModeSticky, false, false},
		{"under a world-writable parent", "f", 0o777, true, false},
		{"under a sticky parent", "g", 0o777 | os.ModeSticky, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(base, tt.dir)
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, tt.mode); err != nil {
				t.Fatal(err)
			}
			sockDir := dir
			if tt.sub {
				sockDir = filepath.Join(dir, "sub")
				if err := os.Mkdir(sockDir, 0o750); err != nil {
					t.Fatal(err)
				}
			}
			ln, err := Listen(Addr{Network: "unix", Address: filepath.Join(sockDir, "m.sock")}, SocketOpts{Mode: 0o660})
			if ln != nil {
				ln.Close()
			}
			if tt.ok && err != nil {
				t.Errorf("Listen in %s (mode %v): %v", sockDir, tt.mode, err)
			}
			if !tt.ok && (err == nil || !strings.Contains(err.Error(), "can be written by users other than")) {
				t.Errorf("Listen in %s (mode %v) = %v; want a refusal", sockDir, tt.mode, err)
			}
		})
	}
}

// A directory of another user is refused, unless that user owns the socket.
func TestListenForeignDirectory(t *testing.T) {
	testlib.NeedRoot(t)
	dir := filepath.Join(testlib.PublicTempDir(t), "nobody")
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 65534, -1); err != nil {
		t.Fatal(err)
	}
	a := Addr{Network: "unix", Address: filepath.Join(dir, "m.sock")}
	if ln, err := Listen(a, SocketOpts{}); err == nil || !strings.Contains(err.Error(), "owner uid 65534") {
		if ln != nil {
			ln.Close()
		}
		t.Errorf("Listen in a directory of uid 65534 = %v; want a refusal", err)
	}
	ln, err := Listen(a, SocketOpts{Owner: "65534", Mode: 0o660})
	if err != nil {
		t.Fatalf("Listen with the directory's owner as socket owner: %v", err)
	}
	ln.Close()
}
