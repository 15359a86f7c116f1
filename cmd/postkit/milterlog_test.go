package main

import (
	"bytes"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is stderr as the tests see it.
type lockedBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writes++
	return l.b.Write(p)
}

func (l *lockedBuffer) get() (string, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String(), l.writes
}

// The batch writer holds lines until the delay, the size bound or a flush,
// writes them in order in one write, and warnings go out at once.
func TestBatchWriter(t *testing.T) {
	tests := []struct {
		name       string
		delay      time.Duration
		max        int
		do         func(l *slog.Logger, w *batchWriter)
		wantAtOnce string // written right after do
		wantLater  string // written within a second
		maxWrites  int
	}{
		{name: "lines wait for the delay", delay: 30 * time.Millisecond, max: 1 << 20,
			do:         func(l *slog.Logger, _ *batchWriter) { l.Info("one"); l.Info("two") },
			wantAtOnce: "", wantLater: "msg=one\nmsg=two\n", maxWrites: 1},
		{name: "size bound writes at once", delay: time.Hour, max: 16,
			do:         func(l *slog.Logger, _ *batchWriter) { l.Info("a long enough line") },
			wantAtOnce: "msg=\"a long enough line\"\n", wantLater: "msg=\"a long enough line\"\n", maxWrites: 1},
		{name: "a warning takes the pending lines with it", delay: time.Hour, max: 1 << 20,
			do:         func(l *slog.Logger, _ *batchWriter) { l.Info("before"); l.Warn("trouble") },
			wantAtOnce: "msg=before\nmsg=trouble\n", wantLater: "msg=before\nmsg=trouble\n", maxWrites: 1},
		{name: "flush at exit", delay: time.Hour, max: 1 << 20,
			do:         func(l *slog.Logger, w *batchWriter) { l.With("k", "v").Info("last"); w.Flush() },
			wantAtOnce: "msg=last k=v\n", wantLater: "msg=last k=v\n", maxWrites: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := &lockedBuffer{}
			w := newBatchWriter(out, tc.delay, tc.max)
			drop := func(groups []string, a slog.Attr) slog.Attr {
				if a.Key == slog.TimeKey || a.Key == slog.LevelKey {
					return slog.Attr{}
				}
				return a
			}
			l := slog.New(flushingHandler{slog.NewTextHandler(w, &slog.HandlerOptions{ReplaceAttr: drop}), w})
			tc.do(l, w)
			if got, _ := out.get(); got != tc.wantAtOnce {
				t.Errorf("written at once %q, want %q", got, tc.wantAtOnce)
			}
			deadline := time.Now().Add(time.Second)
			for {
				got, n := out.get()
				if got == tc.wantLater {
					if n > tc.maxWrites {
						t.Errorf("%d writes, want at most %d", n, tc.maxWrites)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("written %q, want %q", got, tc.wantLater)
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
}
