package testlib

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is a testing.TB that records Skip and Fatal instead of acting on
// the real test, and stops the calling goroutine as they do.
type recorder struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (r *recorder) Helper() {}
func (r *recorder) Skipf(f string, a ...any) {
	r.skipped, r.msg = true, fmt.Sprintf(f, a...)
	runtime.Goexit()
}
func (r *recorder) Skip(a ...any) {
	r.skipped, r.msg = true, fmt.Sprint(a...)
	runtime.Goexit()
}
func (r *recorder) Fatalf(f string, a ...any) {
	r.failed, r.msg = true, fmt.Sprintf(f, a...)
	runtime.Goexit()
}

func call(t *testing.T, fn func(testing.TB)) *recorder {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(r)
	}()
	<-done
	return r
}

func TestNeedBinary(t *testing.T) {
	const missing = "/nonexistent/postkit-no-such-program"
	tests := []struct {
		name          string
		e2e           string
		program       string
		skip, fail    bool
		skipWithShort bool
	}{
		{"present", "", "/bin/sh", false, false, true},
		{"missing", "", missing, true, false, true},
		{"missing under POSTKIT_E2E=1", "1", missing, false, true, true},
		{"present under POSTKIT_E2E=1", "1", "sh", false, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("POSTKIT_E2E", tt.e2e)
			r := call(t, func(tb testing.TB) { NeedBinary(tb, tt.program) })
			wantSkip, wantFail := tt.skip, tt.fail
			if testing.Short() {
				wantSkip, wantFail = tt.skipWithShort, false
			}
			if r.skipped != wantSkip || r.failed != wantFail {
				t.Errorf("NeedBinary(%q) with POSTKIT_E2E=%q short=%v: skipped=%v failed=%v (%s); want skipped=%v failed=%v",
					tt.program, tt.e2e, testing.Short(), r.skipped, r.failed, r.msg, wantSkip, wantFail)
			}
		})
	}
}

func TestPublicTempDir(t *testing.T) {
	d := PublicTempDir(t)
	st, err := os.Stat(d)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o755 {
		t.Errorf("PublicTempDir mode = %v; want 0755", st.Mode().Perm())
	}
}

// Goroutines write the buffer while the test reads it; every write is kept.
func TestBuffer(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				fmt.Fprintf(&b, "%d\n", i)
				_ = b.String()
			}
		}()
	}
	wg.Wait()
	if n := strings.Count(b.String(), "\n"); n != 800 || b.Writes() != 800 {
		t.Errorf("%d lines in %d writes; want 800, 800", n, b.Writes())
	}
}

func TestEventually(t *testing.T) {
	n := 0
	r := call(t, func(tb testing.TB) { Eventually(tb, time.Second, "n reaches 3", func() bool { n++; return n == 3 }) })
	if r.failed || n != 3 {
		t.Errorf("Eventually on a condition that becomes true: failed=%v after %d polls", r.failed, n)
	}
	start := time.Now()
	r = call(t, func(tb testing.TB) { Eventually(tb, 50*time.Millisecond, "never", func() bool { return false }) })
	if !r.failed || r.msg != "after 50ms: never" || time.Since(start) < 50*time.Millisecond {
		t.Errorf("Eventually on a false condition: failed=%v %q after %v; want a failure after 50ms", r.failed, r.msg, time.Since(start))
	}
}

func ExampleBuffer() {
	var b Buffer
	log := b.Logger()
	log.Info("reloaded", "checks", "spf,greylist")
	line := b.String()
	fmt.Println(strings.Contains(line, `level=INFO msg=reloaded checks=spf,greylist`))
	Discard().Error("not written anywhere")
	// Output: true
}

func TestFreePortBelowEphemeral(t *testing.T) {
	low := ephemeralLow()
	for range 20 {
		p := FreePort(t)
		if p < freePortFloor || p >= low {
			t.Fatalf("FreePort = %d; want it in [%d, %d), below the ephemeral range", p, freePortFloor, low)
		}
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("port %d from FreePort cannot be bound: %v", p, err)
		}
		ln.Close()
	}
}
