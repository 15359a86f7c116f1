package daemon

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"time"
)

// Logging to syslog. Postfix logs through syslog(3), facility mail, as
// "postfix/smtpd[PID]: ..."; Debian's rsyslog reads /dev/log and writes
// facility mail to /var/log/mail.log. The daemons log the same way, tagged
// "postkit/milter" and "postkit/policyd", so their lines land beside
// Postfix's and the queue id ties them together.
//
// Framing is what glibc's syslog(3) sends on the local socket, the BSD
// format of RFC 3164 §4.1 without the host name (rsyslog's imuxsock and
// journald add it): "<PRI>Mmm dd hh:mm:ss TAG[PID]: MSG", one datagram per
// line, PRI = facility*8 + severity (RFC 5424 §6.2.1 keeps the same codes).
//
// The socket never holds the daemon up: a send waits at most
// SyslogSendTimeout; a socket that is missing, refuses or times out is
// dialled again once, and then the lines go to stderr (the fallback) for
// SyslogRetry before the socket is tried again. The switch is said once on
// stderr, and once in syslog when it answers again.
const (
	SyslogSendTimeout = 50 * time.Millisecond
	SyslogRetry       = 5 * time.Second
)

// Syslog facilities (RFC 5424 §6.2.1) that a daemon may log under.
var syslogFacilities = map[string]int{
	"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
	"uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
	"local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}

// ParseFacility returns the code of a syslog facility name (mail, daemon,
// local0…local7, …).
func ParseFacility(s string) (int, error) {
	if f, ok := syslogFacilities[s]; ok {
		return f, nil
	}
	return 0, fmt.Errorf("syslog facility %q: want mail, daemon, user or local0 to local7", s)
}

// severity maps a slog level onto a syslog severity (RFC 5424 §6.2.1):
// error 3, warning 4, informational 6, debug 7.
func severity(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return 3
	case l >= slog.LevelWarn:
		return 4
	case l >= slog.LevelInfo:
		return 6
	}
	return 7
}

// LogOptions says how and where a daemon logs.
type LogOptions struct {
	Level  slog.Level
	Format string // "text" (default) or "json": the slog handler
	// Syslog, when true, sends the lines to the syslog socket Socket
	// (default /dev/log) under Facility (a code: 2 is mail) and Tag
	// (e.g. "postkit/milter"); stderr is then the fallback.
	Syslog   bool
	Socket   string
	Facility int
	Tag      string
}

// OpenLogger returns a daemon's logger as o says: slog text or JSON lines,
// batched as NewLogger's (warnings and errors at once), on stderr or on the
// syslog socket with stderr as the fallback. Call flush before the process
// exits; it also closes the socket.
func OpenLogger(stderr io.Writer, o LogOptions) (log *slog.Logger, flush func()) {
	if !o.Syslog {
		bw := NewBatchWriter(stderr, LogBatchDelay, LogBatchBytes)
		return slog.New(FlushingHandler{Handler: newHandler(bw, o.Format, o.Level, false), W: bw}), bw.Flush
	}
	sw := NewSyslogWriter(o.Socket, stderr)
	bw := NewBatchWriter(sw, LogBatchDelay, LogBatchBytes)
	fr := &framer{w: bw, facility: o.Facility, tag: o.Tag, pid: os.Getpid()}
	h := &syslogHandler{Handler: newHandler(fr, o.Format, o.Level, true), fr: fr}
	return slog.New(FlushingHandler{Handler: h, W: bw}), func() { bw.Flush(); sw.Close() }
}

// newHandler is the slog handler of a format; syslog lines leave the time
// to the syslog header.
func newHandler(w io.Writer, format string, level slog.Level, noTime bool) slog.Handler {
	opts := &slog.HandlerOptions{Level: level}
	if noTime {
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
	}
	if format == "json" {
		return slog.NewJSONHandler(w, opts)
	}
	return slog.NewTextHandler(w, opts)
}

// framer puts the syslog header before each line a slog handler writes (a
// handler writes one record in one Write). The record's level and time
// reach it through the fields syslogHandler sets under mu.
type framer struct {
	w        io.Writer
	facility int
	tag      string
	pid      int

	mu  sync.Mutex
	sev int
	t   time.Time
	buf []byte
}

func (f *framer) Write(p []byte) (int, error) {
	b := f.buf[:0]
	b = append(b, '<')
	b = strconv.AppendInt(b, int64(f.facility*8+f.sev), 10)
	b = append(b, '>')
	b = f.t.AppendFormat(b, time.Stamp) // RFC 3164 §4.1.2: "Mmm dd hh:mm:ss", local time
	b = append(b, ' ')
	b = append(b, f.tag...)
	b = append(b, '[')
	b = strconv.AppendInt(b, int64(f.pid), 10)
	b = append(b, "]: "...)
	b = append(b, p...)
	f.buf = b
	f.w.Write(b)
	return len(p), nil
}

// syslogHandler passes each record to the inner handler with its severity
// and time set on the framer.
type syslogHandler struct {
	slog.Handler
	fr *framer
}

func (h *syslogHandler) Handle(ctx context.Context, r slog.Record) error {
	h.fr.mu.Lock()
	defer h.fr.mu.Unlock()
	h.fr.sev = severity(r.Level)
	h.fr.t = r.Time
	if h.fr.t.IsZero() {
		h.fr.t = time.Now()
	}
	return h.Handler.Handle(ctx, r)
}

func (h *syslogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &syslogHandler{h.Handler.WithAttrs(as), h.fr}
}

func (h *syslogHandler) WithGroup(name string) slog.Handler {
	return &syslogHandler{h.Handler.WithGroup(name), h.fr}
}

// SyslogWriter sends framed lines ("<PRI>header: msg\n", several to a
// Write) to a unix datagram syslog socket, one datagram per line, and
// writes them to the fallback while the socket does not answer (see the
// constants above).
type SyslogWriter struct {
	path     string
	fallback io.Writer
	now      func() time.Time

	mu       sync.Mutex
	conn     net.Conn
	down     bool      // lines go to the fallback
	nextDial time.Time // while down
}

// NewSyslogWriter returns a writer to the socket at path ("" is /dev/log).
// It dials on first use.
func NewSyslogWriter(path string, fallback io.Writer) *SyslogWriter {
	if path == "" {
		path = "/dev/log"
	}
	return &SyslogWriter{path: path, fallback: fallback, now: time.Now}
}

// Write implements io.Writer; it never fails.
func (s *SyslogWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rest := p
	for len(rest) > 0 {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line, rest = rest[:i], rest[i+1:]
		} else {
			rest = nil
		}
		if len(line) == 0 {
			continue
		}
		s.sendLocked(line)
	}
	return len(p), nil
}

func (s *SyslogWriter) sendLocked(line []byte) {
	if s.down && s.now().Before(s.nextDial) {
		s.fallbackLocked(line)
		return
	}
	err := s.trySend(line)
	if err != nil && s.conn != nil {
		// The socket went away (rsyslog restarted): dial it again once.
		s.conn.Close()
		s.conn = nil
		err = s.trySend(line)
	}
	if err != nil {
		if s.conn != nil {
			s.conn.Close()
			s.conn = nil
		}
		if !s.down {
			fmt.Fprintf(s.fallback, "postkit: syslog socket %s does not answer (%v); logging to stderr, trying it again every %s\n", s.path, err, SyslogRetry)
		}
		s.down = true
		s.nextDial = s.now().Add(SyslogRetry)
		s.fallbackLocked(line)
		return
	}
	if s.down {
		s.down = false
		s.trySend(append(headerOf(line), "postkit: syslog socket answers again; logging here"...))
	}
}

// trySend dials when needed and sends one datagram within SyslogSendTimeout.
func (s *SyslogWriter) trySend(b []byte) error {
	if s.conn == nil {
		c, err := net.DialTimeout("unixgram", s.path, SyslogSendTimeout)
		if err != nil {
			return err
		}
		s.conn = c
	}
	s.conn.SetWriteDeadline(time.Now().Add(SyslogSendTimeout))
	_, err := s.conn.Write(b)
	return err
}

// fallbackLocked writes a line without its <PRI>, as a syslog file shows it.
func (s *SyslogWriter) fallbackLocked(line []byte) {
	if len(line) > 0 && line[0] == '<' {
		if i := bytes.IndexByte(line, '>'); i > 0 {
			line = line[i+1:]
		}
	}
	out := make([]byte, 0, len(line)+1)
	s.fallback.Write(append(append(out, line...), '\n'))
}

// Close closes the socket.
func (s *SyslogWriter) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn = nil
	return err
}

// headerOf returns a copy of line up to and including the ": " that ends
// its syslog header.
func headerOf(line []byte) []byte {
	for i := 0; i+1 < len(line); i++ {
		if line[i] == ']' && line[i+1] == ':' {
			return append([]byte(nil), line[:min(i+3, len(line))]...)
		}
	}
	return nil
}
