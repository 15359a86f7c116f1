package harness

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// SinkMessage is one message the outside world received.
type SinkMessage struct {
	From string
	To   []string
	Data []byte
	At   time.Time
}

// Header returns the first value of a header field of the message, or "".
func (m SinkMessage) Header(name string) string { return headerValue(m.Data, name) }

// Sink is the "outside world": an SMTP server (RFC 5321) on loopback that
// accepts every message and records it, in memory and optionally as files.
type Sink struct {
	srv *smtp.Server
	ln  net.Listener
	dir string

	mu      sync.Mutex
	msgs    []SinkMessage
	changed chan struct{} // closed and replaced on every new message
}

// StartSink listens on addr (e.g. "127.0.0.1:0"). If dir is not empty, every
// message is also written there as NNNN.eml.
func StartSink(addr, dir string) (*Sink, error) {
	if dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("harness: sink: %w", err)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("harness: sink: %w", err)
	}
	k := &Sink{ln: ln, dir: dir, changed: make(chan struct{})}
	k.srv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) {
		return &sinkSession{sink: k}, nil
	}))
	k.srv.Domain = "mx.outside.test"
	k.srv.MaxMessageBytes = 64 << 20
	k.srv.ReadTimeout = time.Minute
	k.srv.WriteTimeout = time.Minute
	k.srv.ErrorLog = log.New(io.Discard, "", 0)
	go k.srv.Serve(ln)
	return k, nil
}

// Addr is the sink's "127.0.0.1:port".
func (k *Sink) Addr() string { return k.ln.Addr().String() }

// Messages returns a copy of what was received so far.
func (k *Sink) Messages() []SinkMessage {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]SinkMessage(nil), k.msgs...)
}

// Wait returns the first received message (earlier or later) for which match
// is true, or an error when ctx ends first.
func (k *Sink) Wait(ctx context.Context, match func(SinkMessage) bool) (SinkMessage, error) {
	for {
		k.mu.Lock()
		for _, m := range k.msgs {
			if match(m) {
				k.mu.Unlock()
				return m, nil
			}
		}
		ch := k.changed
		n := len(k.msgs)
		k.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return SinkMessage{}, fmt.Errorf("harness: sink: no matching message among %d received: %w", n, ctx.Err())
		}
	}
}

// Close stops the sink.
func (k *Sink) Close() error { return k.srv.Close() }

func (k *Sink) add(m SinkMessage) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.msgs = append(k.msgs, m)
	if k.dir != "" {
		name := filepath.Join(k.dir, fmt.Sprintf("%04d.eml", len(k.msgs)))
		env := fmt.Sprintf("X-Sink-Envelope-From: <%s>\r\nX-Sink-Envelope-To: <%s>\r\n", m.From, strings.Join(m.To, ">, <"))
		os.WriteFile(name, append([]byte(env), m.Data...), 0o644)
	}
	close(k.changed)
	k.changed = make(chan struct{})
}

type sinkSession struct {
	sink *Sink
	from string
	to   []string
}

func (s *sinkSession) Mail(from string, _ *smtp.MailOptions) error { s.from = from; return nil }
func (s *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error   { s.to = append(s.to, to); return nil }
func (s *sinkSession) Reset()                                      { s.from, s.to = "", nil }
func (s *sinkSession) Logout() error                               { return nil }

func (s *sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.sink.add(SinkMessage{From: s.from, To: append([]string(nil), s.to...), Data: b, At: time.Now()})
	return nil
}

// headerValue returns the unfolded value of the first name: field in the
// header section of msg (RFC 5322 §2.2), or "".
func headerValue(msg []byte, name string) string {
	if v := headerValues(msg, name); len(v) > 0 {
		return v[0]
	}
	return ""
}

// headerValues returns the unfolded values of every name: field in the
// header section of msg, in order. Lines may end in CRLF, LF or a bare CR:
// a value never holds a line break, whatever the message.
func headerValues(msg []byte, name string) []string {
	text := lineEnds.Replace(string(msg))
	if i := strings.Index(text, "\n\n"); i >= 0 {
		text = text[:i]
	}
	var out []string
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if l == "" || l[0] == ' ' || l[0] == '\t' {
			continue
		}
		k, v, ok := strings.Cut(l, ":")
		if !ok || !strings.EqualFold(strings.TrimRight(k, " \t"), name) {
			continue
		}
		v = strings.TrimSpace(v)
		for i+1 < len(lines) && len(lines[i+1]) > 0 && (lines[i+1][0] == ' ' || lines[i+1][0] == '\t') {
			i++
			v += " " + strings.TrimSpace(lines[i])
		}
		out = append(out, strings.TrimSpace(v))
	}
	return out
}

// lineEnds turns CRLF and a bare CR into LF.
var lineEnds = strings.NewReplacer("\r\n", "\n", "\r", "\n")
