package daemon

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/postkit/postkit/internal/testlib"
)

// listenSyslog is a syslog socket as rsyslog's imuxsock opens /dev/log.
func listenSyslog(t *testing.T, path string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readDatagrams reads n datagrams, each within a second.
func readDatagrams(t *testing.T, c *net.UnixConn, n int) []string {
	t.Helper()
	var out []string
	buf := make([]byte, 64<<10)
	for len(out) < n {
		c.SetReadDeadline(time.Now().Add(time.Second))
		k, err := c.Read(buf)
		if err != nil {
			t.Fatalf("after %d datagrams %q: %v", len(out), out, err)
		}
		out = append(out, string(buf[:k]))
	}
	return out
}

// Lines reach the socket one datagram each, framed as syslog(3) frames
// them: <facility*8+severity>, the time, tag[pid]: and the slog line
// without its own time.
func TestSyslogFraming(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "log")
			c := listenSyslog(t, path)
			stderr := &testlib.Buffer{}
			log, flush := OpenLogger(stderr, LogOptions{Level: slog.LevelInfo, Format: format, Syslog: true, Socket: path, Facility: 2, Tag: "postkit/milter"})
			log.Debug("hidden")
			log.Info("milter message", "queue_id", "4ABC", "client", "192.0.2.1")
			log.With("k", "v").Warn("trouble\nsecond line")
			log.Error("broken", "err", "x")
			got := readDatagrams(t, c, 3) // the warning took the info line with it
			flush()
			head := fmt.Sprintf(`^<%%d>[A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d postkit/milter\[%d\]: `, os.Getpid())
			want := []struct {
				pri  int
				body string
			}{
				{22, `level=INFO msg="milter message" queue_id=4ABC client=192.0.2.1$`},
				{20, `level=WARN msg="trouble\\nsecond line" k=v$`},
				{19, `level=ERROR msg=broken err=x$`},
			}
			if format == "json" {
				want[0].body = `\{"level":"INFO","msg":"milter message","queue_id":"4ABC","client":"192.0.2.1"\}$`
				want[1].body = `\{"level":"WARN","msg":"trouble\\nsecond line","k":"v"\}$`
				want[2].body = `\{"level":"ERROR","msg":"broken","err":"x"\}$`
			}
			for i, w := range want {
				re := regexp.MustCompile(fmt.Sprintf(head, w.pri) + w.body)
				if !re.MatchString(got[i]) {
					t.Errorf("datagram %d = %q; want %s", i, got[i], re)
				}
			}
			if s := stderr.String(); s != "" {
				t.Errorf("stderr got %q with the socket answering", s)
			}
		})
	}
}

// A missing socket sends the lines to stderr, said once, without waiting;
// once the socket exists and the retry delay has passed, lines go there
// again, the first one saying so.
func TestSyslogFallback(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	stderr := &testlib.Buffer{}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.Local)
	sw := NewSyslogWriter(path, stderr)
	sw.now = func() time.Time { return now }
	frame := func(msg string) []byte { return []byte("<22>Jan  2 03:04:05 postkit/policyd[7]: " + msg + "\n") }

	start := time.Now()
	sw.Write(frame("one"))
	sw.Write(append(frame("two"), frame("three")...))
	if d := time.Since(start); d > time.Second {
		t.Errorf("writing to a missing socket took %s", d)
	}
	out := stderr.String()
	if strings.Count(out, "does not answer") != 1 || !strings.Contains(out, "Jan  2 03:04:05 postkit/policyd[7]: one\n") ||
		!strings.Contains(out, "postkit/policyd[7]: three\n") || strings.Contains(out, "<22>") {
		t.Errorf("stderr = %q; want the notice once and the three lines without <PRI>", out)
	}

	c := listenSyslog(t, path)
	sw.Write(frame("still within the retry delay"))
	if !strings.Contains(stderr.String(), "still within the retry delay") {
		t.Errorf("a line within the retry delay did not go to stderr")
	}
	now = now.Add(SyslogRetry)
	sw.Write(frame("back"))
	got := readDatagrams(t, c, 2)
	if got[0] != "<22>Jan  2 03:04:05 postkit/policyd[7]: back" || !strings.HasSuffix(got[1], "postkit/policyd[7]: postkit: syslog socket answers again; logging here") {
		t.Errorf("after the retry delay: %q", got)
	}

	// The socket goes away (rsyslog stops): lines go to stderr again,
	// said once more.
	c.Close()
	os.Remove(path)
	sw.Write(frame("gone"))
	if out := stderr.String(); strings.Count(out, "does not answer") != 2 || !strings.HasSuffix(out, "postkit/policyd[7]: gone\n") {
		t.Errorf("after the socket went away, stderr = %q", out)
	}
	sw.Close()
}

// A socket that stops reading (its queue full) costs each line at most the
// send timeout, and only until the writer falls back: the daemon is never
// held up.
func TestSyslogFullSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	listenSyslog(t, path) // never read
	stderr := &testlib.Buffer{}
	sw := NewSyslogWriter(path, stderr)
	defer sw.Close()
	line := []byte("<22>Jan  2 03:04:05 postkit/milter[7]: " + strings.Repeat("x", 1000) + "\n")
	start := time.Now()
	for range 5000 {
		sw.Write(line)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("5000 lines to a full socket took %s", d)
	}
	if !strings.Contains(stderr.String(), "does not answer") {
		t.Errorf("the full socket was not noticed: %d bytes on stderr", len(stderr.String()))
	}
}

func TestParseFacility(t *testing.T) {
	for in, want := range map[string]int{"mail": 2, "daemon": 3, "local7": 23} {
		if got, err := ParseFacility(in); err != nil || got != want {
			t.Errorf("ParseFacility(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := ParseFacility("postfix"); err == nil {
		t.Error("ParseFacility(postfix) did not fail")
	}
}

// On stderr, json gives one object per line, with its time, batched like
// text: warnings at once.
func TestOpenLoggerJSON(t *testing.T) {
	out := &testlib.Buffer{}
	log, flush := OpenLogger(out, LogOptions{Level: slog.LevelInfo, Format: "json"})
	log.Info("policy", "queue_id", "4ABC")
	if out.String() != "" {
		t.Errorf("written before the batch delay: %q", out.String())
	}
	log.Warn("trouble")
	flush()
	re := regexp.MustCompile(`^\{"time":"[^"]+","level":"INFO","msg":"policy","queue_id":"4ABC"\}\n\{"time":"[^"]+","level":"WARN","msg":"trouble"\}\n$`)
	if !re.MatchString(out.String()) || out.Writes() != 1 {
		t.Errorf("stderr %q in %d writes; want two JSON lines in one write", out.String(), out.Writes())
	}
}
