package harness

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/postkit/postkit/internal/testlib"
)

// RequiredByEnv reports whether the end-to-end suite must run: POSTKIT_E2E=1 turns
// every reason to skip (not root, a missing program) into a failure, so that CI
// never passes by skipping.
func RequiredByEnv() bool { return testlib.Required() }

// shared is the stack of the test package, set by Main.
var shared struct {
	stack *Stack
	err   error // why there is no stack
	skip  bool  // err is a reason to skip, not to fail
}

// Main starts one stack for a whole test package, runs the tests and stops it:
//
//	func TestMain(m *testing.M) { os.Exit(harness.Main(m, harness.Options{Seed: seed})) }
//	func TestX(t *testing.T) { s := harness.Need(t); … }
//
// Without root or Postfix/Dovecot, or with -short, the tests skip, unless
// POSTKIT_E2E=1, when they fail. Root defaults to a new directory under
// $TMPDIR, removed at the end unless POSTKIT_E2E_KEEP=1. The logs' tails are
// printed when a test fails.
func Main(m *testing.M, o Options) int {
	// m.Run parses the flags too late for -short and -v: parse them now.
	if !flag.Parsed() {
		flag.Parse()
	}
	if err := Check(); err != nil {
		shared.err, shared.skip = err, !RequiredByEnv()
		return m.Run()
	}
	if testing.Short() && !RequiredByEnv() {
		shared.err, shared.skip = fmt.Errorf("harness: end-to-end tests skipped in -short mode"), true
		return m.Run()
	}
	keep := os.Getenv("POSTKIT_E2E_KEEP") == "1"
	if o.Root == "" {
		dir, err := os.MkdirTemp("", "postkit-e2e-")
		if err != nil {
			shared.err = err
			return m.Run()
		}
		o.Root = dir
		if !keep {
			defer os.RemoveAll(dir)
		}
	}
	if o.Log == nil && testing.Verbose() {
		o.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	s, err := Start(ctx, o)
	cancel()
	if err != nil {
		shared.err = err
		fmt.Fprintln(os.Stderr, err)
		return m.Run()
	}
	shared.stack = s
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "end-to-end stack in %s\n%s", s.Root, s.Tails(50))
	}
	if err := s.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping the stack:", err)
		if code == 0 {
			code = 1
		}
	}
	if keep {
		fmt.Fprintf(os.Stderr, "sandbox kept in %s (POSTKIT_E2E_KEEP=1)\n", s.Root)
	}
	return code
}

// Need returns the package's shared stack, or skips (fails under
// POSTKIT_E2E=1) the test when there is none. If the test fails, the lines
// each log gained during it are printed.
func Need(t testing.TB) *Stack {
	t.Helper()
	if shared.stack == nil {
		switch {
		case shared.err == nil:
			t.Fatal("harness: no stack: call harness.Main from TestMain")
		case shared.skip:
			t.Skip(shared.err)
		default:
			t.Fatal(shared.err)
		}
	}
	s := shared.stack
	off := s.Offsets()
	t.Cleanup(func() {
		if t.Failed() {
			time.Sleep(300 * time.Millisecond) // postlogd writes asynchronously
			t.Logf("logs during %s:\n%s", t.Name(), s.TailsSince(off, 50))
		}
	})
	return s
}

// NeedProgram skips (fails under POSTKIT_E2E=1) when a program is missing.
func NeedProgram(t testing.TB, names ...string) {
	t.Helper()
	testlib.NeedBinary(t, names...)
}

// StartT starts a stack of its own for t, for a test that needs one shaped
// unlike its package's (other keys, zones or daemons), and stops it when t
// ends:
//
//	s := harness.StartT(t, harness.Options{Set: map[string]any{"policy.checks": []string{"greylist"}}})
//
// It skips t, or fails it under POSTKIT_E2E=1, when there can be no stack,
// as Need does. o.Root defaults to a new directory under $TMPDIR, removed at
// the end unless POSTKIT_E2E_KEEP=1; o.Postkit to the binary of the
// package's shared stack (Main), when there is one, else one is built. If
// the stack does not start, or t fails, the logs' tails are printed.
func StartT(t testing.TB, o Options) *Stack {
	t.Helper()
	if err := Check(); err != nil {
		testlib.Skip(t, "%v", err)
	}
	if testing.Short() && !RequiredByEnv() {
		t.Skip("harness: end-to-end tests skipped in -short mode")
	}
	if o.Postkit == "" && shared.stack != nil {
		o.Postkit = shared.stack.PostkitBin
	}
	keep := os.Getenv("POSTKIT_E2E_KEEP") == "1"
	if o.Root == "" {
		name := unsafeChars.ReplaceAllString(t.Name(), "-")
		if len(name) > 24 { // unix socket paths under it must stay short (108 bytes)
			name = name[:24]
		}
		dir, err := os.MkdirTemp("", "postkit-e2e-"+name+"-")
		if err != nil {
			t.Fatal(err)
		}
		o.Root = dir
		if !keep {
			t.Cleanup(func() { os.RemoveAll(dir) })
		}
	}
	if o.Log == nil && testing.Verbose() {
		o.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s, err := Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			time.Sleep(300 * time.Millisecond) // postlogd writes asynchronously
			t.Logf("stack of %s in %s:\n%s", t.Name(), s.Root, s.Tails(60))
		}
		if err := s.Stop(); err != nil {
			t.Errorf("stopping the stack of %s: %v", t.Name(), err)
		}
		if keep {
			t.Logf("sandbox kept in %s (POSTKIT_E2E_KEEP=1)", s.Root)
		}
	})
	return s
}

// unsafeChars are what a test name holds that a directory name should not.
var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9_.-]+`)
