// Package daemon runs postkit's long-running servers, the milter and the
// policy daemon, the same way (Run): Postfix-syntax listen addresses
// (unix:/path, inet:host:port), socket ownership, the directories sockets
// may live in, the clients an inet listener serves, the accept loop, the
// chain a server runs and its replacement on SIGHUP (Holder), shutdown on
// SIGTERM, and the log set-up (NewLogger).
package daemon

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// Addr is a listen or connect address written the way Postfix writes milter and
// policy endpoints: "unix:/path/to/socket" or "inet:host:port" (also "host:port").
type Addr struct {
	Network string // "unix" or "tcp"
	Address string // socket path, or host:port
}

// String renders the address in Postfix syntax.
func (a Addr) String() string {
	if a.Network == "unix" {
		return "unix:" + a.Address
	}
	return "inet:" + a.Address
}

// ParseAddr parses "unix:/path", "local:/path" (OpenDKIM's spelling), "inet:host:port"
// or "host:port". A unix path must be absolute.
func ParseAddr(s string) (Addr, error) {
	switch {
	case strings.HasPrefix(s, "unix:"), strings.HasPrefix(s, "local:"):
		p := s[strings.IndexByte(s, ':')+1:]
		if !strings.HasPrefix(p, "/") {
			return Addr{}, fmt.Errorf("daemon: %q: unix socket path must be absolute, e.g. unix:/var/spool/postfix/postkit/milter.sock", s)
		}
		return Addr{Network: "unix", Address: p}, nil
	case strings.HasPrefix(s, "inet:"):
		s = strings.TrimPrefix(s, "inet:")
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return Addr{}, fmt.Errorf("daemon: %q: want unix:/path or inet:host:port: %w", s, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return Addr{}, fmt.Errorf("daemon: %q: port must be a number from 1 to 65535", s)
	}
	return Addr{Network: "tcp", Address: net.JoinHostPort(host, port)}, nil
}

// SocketOpts are the ownership and mode of a unix socket; zero values keep the defaults.
type SocketOpts struct {
	Owner string      // user name or numeric uid, e.g. "postfix"
	Group string      // group name or numeric gid
	Mode  os.FileMode // e.g. 0660; 0 keeps the umask's result
}

// Listen opens the address. For a unix socket, the parent directory is
// created when missing and must be safe (see safeDir), a stale socket file is
// removed first (only if nothing answers on it), and owner, group and mode
// are applied. Daemons call ListenClients, which also guards inet addresses.
func Listen(a Addr, o SocketOpts) (net.Listener, error) {
	if a.Network != "unix" {
		return net.Listen("tcp", a.Address)
	}
	if err := socketDir(dirOf(a.Address), o); err != nil {
		return nil, err
	}
	if _, err := os.Lstat(a.Address); err == nil {
		if c, err := net.Dial("unix", a.Address); err == nil {
			c.Close()
			return nil, fmt.Errorf("daemon: %s: another process is already listening there; stop it first", a.Address)
		}
		if err := os.Remove(a.Address); err != nil {
			return nil, fmt.Errorf("daemon: remove stale socket: %w", err)
		}
	}
	ln, err := net.Listen("unix", a.Address)
	if err != nil {
		return nil, err
	}
	if err := applySocketOpts(a.Address, o); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// socketDir creates a missing socket directory, mode 0750, owned by the
// socket's owner and group, so that only the MTA's group can reach the socket.
// An existing directory is not changed (never create or change Postfix's own
// private/: Postfix wants it postfix-owned, mode 0700, and its master refuses
// to start otherwise), but it must be safe (safeDir).
func socketDir(dir string, o SocketOpts) error {
	if _, err := os.Stat(dir); err != nil {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return fmt.Errorf("daemon: create socket directory: %w", err)
		}
		if err := applySocketOpts(dir, SocketOpts{Owner: o.Owner, Group: o.Group}); err != nil {
			return err
		}
	}
	trusted := []int{0, os.Geteuid()}
	if o.Owner != "" {
		uid, err := LookupUID(o.Owner)
		if err != nil {
			return err
		}
		trusted = append(trusted, uid)
	}
	return safeDir(dir, trusted)
}

// safeDir checks that nobody but the trusted users (root, the daemon's user,
// the socket's owner) can put another socket in the socket's place: while
// the daemon is down, whoever could would receive the MTA's connections and
// with them every message. The directory must belong to a trusted user and be
// writable by no one else; every directory above it must belong to a trusted
// user and be writable by no one else unless it has the sticky bit (as /tmp
// does), which keeps others from renaming what they do not own.
func safeDir(dir string, trusted []int) error {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return fmt.Errorf("daemon: socket directory: %w", err)
	}
	for p, leaf := real, true; ; p, leaf = filepath.Dir(p), false {
		st, err := os.Lstat(p)
		if err != nil {
			return fmt.Errorf("daemon: socket directory: %w", err)
		}
		if !st.IsDir() {
			return fmt.Errorf("daemon: %s is not a directory: put the socket in a directory", p)
		}
		uid := -1
		if sys, ok := st.Sys().(*syscall.Stat_t); ok {
			uid = int(sys.Uid)
		}
		mode := st.Mode()
		openToOthers := mode.Perm()&0o022 != 0 && (leaf || mode&os.ModeSticky == 0)
		if !slices.Contains(trusted, uid) || openToOthers {
			return fmt.Errorf("daemon: socket directory %s: %s (owner uid %d, mode %s) can be written by users other than root and this daemon's user, "+
				"who could replace the socket and receive the MTA's connections: use a directory of the daemon's own, "+
				"such as /var/spool/postfix/postkit (created mode 0750 when missing)", real, p, uid, mode)
		}
		if p == "/" || p == "." {
			return nil
		}
	}
}

func dirOf(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i <= 0 {
		return "/"
	}
	return p[:i]
}

func applySocketOpts(path string, o SocketOpts) error {
	uid, gid := -1, -1
	var err error
	if o.Owner != "" {
		if uid, err = LookupUID(o.Owner); err != nil {
			return err
		}
	}
	if o.Group != "" {
		if gid, err = LookupGID(o.Group); err != nil {
			return err
		}
	}
	if uid != -1 || gid != -1 {
		if err := os.Chown(path, uid, gid); err != nil {
			return fmt.Errorf("daemon: chown %s: %w", path, err)
		}
	}
	if o.Mode != 0 {
		if err := os.Chmod(path, o.Mode); err != nil {
			return fmt.Errorf("daemon: chmod %s: %w", path, err)
		}
	}
	return nil
}

// LookupUID resolves a user name or a numeric uid.
func LookupUID(name string) (int, error) {
	if n, err := strconv.Atoi(name); err == nil {
		return n, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return -1, fmt.Errorf("daemon: unknown user %q: create it or give a numeric uid", name)
	}
	return strconv.Atoi(u.Uid)
}

// LookupGID resolves a group name or a numeric gid.
func LookupGID(name string) (int, error) {
	if n, err := strconv.Atoi(name); err == nil {
		return n, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return -1, fmt.Errorf("daemon: unknown group %q: create it or give a numeric gid", name)
	}
	return strconv.Atoi(g.Gid)
}

// ErrServerClosed is returned by servers' Serve after Shutdown.
var ErrServerClosed = errors.New("server closed")

// ParseMode parses an octal socket mode such as "0660".
func ParseMode(s string) (os.FileMode, error) {
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil || m > 0o777 {
		return 0, fmt.Errorf("daemon: socket mode %q: want an octal mode such as 0660", s)
	}
	return os.FileMode(m), nil
}
