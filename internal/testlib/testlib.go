// Package testlib holds what postkit's tests share: whether the tests that
// need real Debian programs must run, and the helpers that skip or fail
// accordingly, free loopback ports, temporary directories, a discard
// logger, a buffer daemons may log into while the test reads it, and a wait
// for a condition with a bound.
//
// The rule is the same everywhere: `go test -short` skips every test that
// needs a program from outside the module (Postfix, Dovecot, doveadm,
// OpenDKIM, dkimpy, swaks…) or root; without -short such a test skips when
// what it needs is missing, except with POSTKIT_E2E=1 (as CI sets), where a
// missing program or missing root is a failure, so that CI never passes by
// skipping.
package testlib

import (
	"bytes"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Required reports whether POSTKIT_E2E=1 asks for every test to run: a
// reason to skip becomes a failure.
func Required() bool { return os.Getenv("POSTKIT_E2E") == "1" }

// Skip skips t with the reason, or fails it when Required.
func Skip(t testing.TB, format string, args ...any) {
	t.Helper()
	if Required() {
		t.Fatalf(format+" (POSTKIT_E2E=1: run scripts/install-deps.sh as root)", args...)
	}
	t.Skipf(format, args...)
}

// NeedShortSkip skips t under -short: it needs something outside the module.
func NeedShortSkip(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs real Debian programs: skipped with -short")
	}
}

// NeedBinary returns the path of each program (a name looked up in PATH, or an
// absolute path), skipping t under -short or when one is missing (failing
// when Required).
func NeedBinary(t testing.TB, names ...string) []string {
	t.Helper()
	NeedShortSkip(t)
	paths := make([]string, len(names))
	for i, n := range names {
		p, err := lookPath(n)
		if err != nil {
			Skip(t, "%s is not installed", n)
		}
		paths[i] = p
	}
	return paths
}

// NeedProgram is NeedBinary for one program.
func NeedProgram(t testing.TB, name string) string {
	t.Helper()
	return NeedBinary(t, name)[0]
}

// Have reports whether every program is installed, without skipping.
func Have(names ...string) bool {
	for _, n := range names {
		if _, err := lookPath(n); err != nil {
			return false
		}
	}
	return true
}

func lookPath(n string) (string, error) {
	if filepath.IsAbs(n) {
		st, err := os.Stat(n)
		if err != nil {
			return "", err
		}
		if st.IsDir() {
			return "", &os.PathError{Op: "stat", Path: n, Err: os.ErrNotExist}
		}
		return n, nil
	}
	return exec.LookPath(n)
}

// NeedPython skips t (fails when Required) unless Debian's python3 imports
// every module: modules are Python names ("dkim", "nacl"). It returns the
// interpreter, /usr/bin/python3 (Debian's python3-* packages are for it;
// another python3 may come first on PATH).
func NeedPython(t testing.TB, modules ...string) string {
	t.Helper()
	py := NeedProgram(t, "/usr/bin/python3")
	if len(modules) > 0 {
		out, err := exec.Command(py, "-c", "import "+strings.Join(modules, ", ")).CombinedOutput()
		if err != nil {
			Skip(t, "python3 cannot import %s: %v: %s", strings.Join(modules, ", "), err, strings.TrimSpace(string(out)))
		}
	}
	return py
}

// NeedRoot skips t under -short or without root (fails when Required).
func NeedRoot(t testing.TB) {
	t.Helper()
	NeedShortSkip(t)
	if os.Geteuid() != 0 {
		Skip(t, "needs root (it runs daemons that drop privileges to their own users)")
	}
}

// FreePort returns a loopback TCP port that was free a moment ago. It is
// drawn below the kernel's ephemeral range (ip_local_port_range), so that no
// outgoing connection of a concurrent test or daemon takes it as a source
// port before the daemon under test binds it; the draw is random so that
// test packages running at once rarely pick the same one.
func FreePort(t testing.TB) int {
	t.Helper()
	p, err := FreeLoopbackPort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// FreeLoopbackPort is FreePort for code without a testing.TB (the e2e
// harness).
func FreeLoopbackPort() (int, error) {
	low := ephemeralLow()
	handedMu.Lock()
	defer handedMu.Unlock()
	for range 200 {
		p := freePortFloor + rand.IntN(low-freePortFloor)
		if handed[p] {
			continue // given to a caller of this process that may not have bound it yet
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		ln.Close()
		handed[p] = true
		return p, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("no free TCP port on 127.0.0.1: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// handed holds the ports FreeLoopbackPort returned in this process: never
// twice, so that one stack's ports differ and two stacks of a test do not share one.
var (
	handedMu sync.Mutex
	handed   = map[int]bool{}
)

// freePortFloor keeps FreePort above the well-known and registered ports
// that Debian's daemons use.
const freePortFloor = 20000

// ephemeralLow is the first port of the kernel's ephemeral range (32768 on
// Debian), or 32768 when it cannot be read or leaves no room below it.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > freePortFloor+1000 {
				return n
			}
		}
	}
	return 32768
}

// PublicTempDir returns t.TempDir made traversable by other users (postfix,
// dovecot, vmail): t.TempDir makes 0700 directories.
func PublicTempDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for d := dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// Discard returns a logger that writes nothing, for code under test that
// must be given one.
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// Buffer is a bytes.Buffer that goroutines of the code under test may write
// (a log, a server's output) while the test reads it.
type Buffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
}

// Write implements io.Writer.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.writes++
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// Writes returns how many Write calls there were.
func (b *Buffer) Writes() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.writes
}

// Logger returns a text logger writing into b, at debug level, so that a
// test can look for the lines the code under test logs.
func (b *Buffer) Logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Eventually polls cond every 5 ms until it holds, and fails t (naming
// what) when it still does not after timeout.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
