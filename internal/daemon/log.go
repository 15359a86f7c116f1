package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"
)

// The daemons' log lines (one per message or request at info) are written
// to stderr in batches: each write(2) on stderr is a system call that, when
// the daemon was idle between packets, also wakes the Go runtime's monitor
// thread, and at info level the milter's two lines per message cost half as
// much CPU again as its own work (BENCHMARKS.md). A line waits at most
// LogBatchDelay; warnings and errors are written at once, with everything
// before them.
const (
	LogBatchDelay = 50 * time.Millisecond
	LogBatchBytes = 32 << 10
)

// ParseLevel parses a log level: debug, info, warn or error.
func ParseLevel(s string) (slog.Level, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("log level %q: want debug, info, warn or error", s)
	}
	return lv, nil
}

// NewLogger returns the daemons' logger: text lines on w (stderr, which
// journald reads), batched as described above, at level and above. Call
// flush before the process exits.
func NewLogger(w io.Writer, level slog.Level) (log *slog.Logger, flush func()) {
	bw := NewBatchWriter(w, LogBatchDelay, LogBatchBytes)
	h := slog.NewTextHandler(bw, &slog.HandlerOptions{Level: level})
	return slog.New(FlushingHandler{Handler: h, W: bw}), bw.Flush
}

// BatchWriter collects writes and passes them on to w in one write when
// delay has passed since the first pending one, when max bytes are pending,
// or on Flush.
type BatchWriter struct {
	w     io.Writer
	delay time.Duration
	max   int

	mu    sync.Mutex
	buf   []byte
	timer *time.Timer // armed while buf holds lines
}

// NewBatchWriter returns a BatchWriter writing to w.
func NewBatchWriter(w io.Writer, delay time.Duration, max int) *BatchWriter {
	return &BatchWriter{w: w, delay: delay, max: max}
}

// Write implements io.Writer; it copies p and never fails (a failing
// stderr has nowhere to report to).
func (b *BatchWriter) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	switch {
	case len(b.buf) >= b.max:
		b.flushLocked()
	case b.timer == nil:
		b.timer = time.AfterFunc(b.delay, b.Flush)
	}
	return len(p), nil
}

// Flush writes what is pending.
func (b *BatchWriter) Flush() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.flushLocked()
}

func (b *BatchWriter) flushLocked() {
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	if len(b.buf) == 0 {
		return
	}
	b.w.Write(b.buf)
	if cap(b.buf) > 4*b.max {
		b.buf = nil // one huge line: do not keep its buffer
	} else {
		b.buf = b.buf[:0]
	}
}

// FlushingHandler writes warnings and errors out at once: only info and
// debug lines wait in W's batch.
type FlushingHandler struct {
	slog.Handler
	W *BatchWriter
}

// Handle implements slog.Handler.
func (h FlushingHandler) Handle(ctx context.Context, r slog.Record) error {
	err := h.Handler.Handle(ctx, r)
	if r.Level >= slog.LevelWarn {
		h.W.Flush()
	}
	return err
}

// WithAttrs implements slog.Handler.
func (h FlushingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return FlushingHandler{h.Handler.WithAttrs(as), h.W}
}

// WithGroup implements slog.Handler.
func (h FlushingHandler) WithGroup(name string) slog.Handler {
	return FlushingHandler{h.Handler.WithGroup(name), h.W}
}
