package testlib

import (
	"fmt"
	"os"
	"runtime"
	"testing"
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
