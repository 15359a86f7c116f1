package filter

import (
	"context"
	"io"
	"sync/atomic"
	"time"
)

// Aborter is implemented by a Body that holds resources beyond the message
// (a goroutine, a pending DNS lookup). The daemon calls Abort once for every
// such Body whose End will never be called: the MTA aborted the message
// (SMFIC_ABORT, a new MAIL, QUIT), the connection dropped, or an earlier
// filter refused or failed the message.
type Aborter interface {
	Abort()
}

// Stream hands a message, written chunk by chunk as the daemon receives it,
// to a consumer that reads an io.Reader (a verifier or a parser written for
// whole messages) running in its own goroutine, so that the message is never
// held whole in memory. A Body built on it calls Write for each chunk, Close
// at End, and Abort from its own Abort (Aborter).
type Stream struct {
	pw        *io.PipeWriter
	done      chan struct{}
	timer     *time.Timer
	cancel    context.CancelFunc
	failed    bool // writing stopped: the consumer is gone
	abandoned atomic.Bool
}

// NewStream starts consume on what the Stream is written. The context
// consume gets ends when the message is abandoned (Abort, or timeout passed
// before Close: a message whose end never comes, such as on a connection
// that dropped without the daemon noticing) and once Close has returned.
// What consume leaves unread is read and dropped, so that writing never
// blocks on a consumer that returned early.
func NewStream(ctx context.Context, timeout time.Duration, consume func(ctx context.Context, r io.Reader)) *Stream {
	s := &Stream{done: make(chan struct{})}
	ctx, s.cancel = context.WithTimeout(ctx, timeout)
	pr, pw := io.Pipe()
	s.pw = pw
	s.timer = time.AfterFunc(timeout, s.Abort)
	go func() {
		defer close(s.done)
		consume(ctx, pr)
		io.Copy(io.Discard, pr)
		pr.Close()
	}()
	return s
}

// Write passes p to the consumer. It never fails: once the consumer is gone
// (abandoned), the rest of the message is dropped.
func (s *Stream) Write(p []byte) (int, error) {
	if !s.failed {
		if _, err := s.pw.Write(p); err != nil {
			s.failed = true
		}
	}
	return len(p), nil
}

// Close ends the message and waits for the consumer to return. It reports
// false when the message was abandoned first (Abort or the timeout): what
// the consumer found then covers only part of the message.
func (s *Stream) Close() bool {
	s.pw.Close()
	<-s.done
	s.timer.Stop()
	s.cancel()
	return !s.abandoned.Load()
}

// Abort abandons a message that will not be completed: the consumer reads
// the end of its input and its context ends (lookups in progress stop). The
// input ends with EOF rather than an error, because a reader that fails can
// leave a consumer's own goroutines blocked (go-msgauth's parallel
// verification does) where EOF lets it finish. Abort may be called more
// than once, and from any goroutine.
func (s *Stream) Abort() {
	s.abandoned.Store(true)
	s.pw.Close()
	s.cancel()
}
