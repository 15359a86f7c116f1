package daemon

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/postkit/postkit/internal/testlib"
)

// The batch writer holds lines until the delay, the size bound or a flush,
// writes them in order in one write, and warnings go out at once.
func TestBatchWriter(t *testing.T) {
	tests := []struct {
		name       string
		delay      time.Duration
		max        int
		do         func(l *slog.Logger, w *BatchWriter)
		wantAtOnce string // written right after do
		wantLater  string // written within a second
		maxWrites  int
	}{
		{name: "lines wait for the delay", delay: 30 * time.Millisecond, max: 1 << 20,
			do:         func(l *slog.Logger, _ *BatchWriter) { l.Info("one"); l.Info("two") },
			wantAtOnce: "", wantLater: "msg=one\nmsg=two\n", maxWrites: 1},
		{name: "size bound writes at once", delay: time.Hour, max: 16,
			do:         func(l *slog.Logger, _ *BatchWriter) { l.Info("a long enough line") },
			wantAtOnce: "msg=\"a long enough line\"\n", wantLater: "msg=\"a long enough line\"\n", maxWrites: 1},
		{name: "a warning takes the pending lines with it", delay: time.Hour, max: 1 << 20,
			do:         func(l *slog.Logger, _ *BatchWriter) { l.Info("before"); l.Warn("trouble") },
			wantAtOnce: "msg=before\nmsg=trouble\n", wantLater: "msg=before\nmsg=trouble\n", maxWrites: 1},
		{name: "flush at exit", delay: time.Hour, max: 1 << 20,
			do:         func(l *slog.Logger, w *BatchWriter) { l.With("k", "v").WithGroup("g").Info("last", "a", 1); w.Flush() },
			wantAtOnce: "msg=last k=v g.a=1\n", wantLater: "msg=last k=v g.a=1\n", maxWrites: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := &testlib.Buffer{}
			w := NewBatchWriter(out, tc.delay, tc.max)
			drop := func(groups []string, a slog.Attr) slog.Attr {
				if a.Key == slog.TimeKey || a.Key == slog.LevelKey {
					return slog.Attr{}
				}
				return a
			}
			l := slog.New(FlushingHandler{slog.NewTextHandler(w, &slog.HandlerOptions{ReplaceAttr: drop}), w})
			tc.do(l, w)
			if got := out.String(); got != tc.wantAtOnce {
				t.Errorf("written at once %q, want %q", got, tc.wantAtOnce)
			}
			testlib.Eventually(t, time.Second, "the batch is written", func() bool { return out.String() == tc.wantLater })
			if n := out.Writes(); n > tc.maxWrites {
				t.Errorf("%d writes, want at most %d", n, tc.maxWrites)
			}
		})
	}
}

// NewLogger drops lines below its level, batches info and writes warnings
// at once.
func TestNewLogger(t *testing.T) {
	out := &testlib.Buffer{}
	log, flush := NewLogger(out, slog.LevelInfo)
	log.Debug("hidden")
	log.Info("queued")
	if out.String() != "" {
		t.Errorf("written before the batch delay: %q", out.String())
	}
	log.Error("now")
	s := out.String()
	if !strings.Contains(s, "level=INFO msg=queued") || !strings.Contains(s, "level=ERROR msg=now") || strings.Contains(s, "hidden") || out.Writes() != 1 {
		t.Errorf("after an error: %q in %d writes; want the info and error lines in one write, no debug", s, out.Writes())
	}
	log.Info("last")
	flush()
	if !strings.Contains(out.String(), "msg=last") {
		t.Errorf("flush did not write the pending line: %q", out.String())
	}
}

func TestParseLevel(t *testing.T) {
	for in, want := range map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "WARN": slog.LevelWarn, "error": slog.LevelError} {
		if got, err := ParseLevel(in); err != nil || got != want {
			t.Errorf("ParseLevel(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseLevel("loud"); err == nil || err.Error() != `log level "loud": want debug, info, warn or error` {
		t.Errorf("ParseLevel(loud) = %v", err)
	}
}
