package e2e

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
	"github.com/postkit/postkit/e2e/harness"
)

// sizedMessage returns a message of exactly n bytes (CRLF line ends, lines
// under 78 bytes) carrying tok.
func sizedMessage(t *testing.T, n int, tok string) []byte {
	t.Helper()
	var b bytes.Buffer
	b.Write(harness.Message(stranger, alice, tok))
	line := strings.Repeat("x", 76) + "\r\n"
	for b.Len()+len(line) <= n {
		b.WriteString(line)
	}
	if rest := n - b.Len(); rest >= 2 {
		b.WriteString(strings.Repeat("y", rest-2) + "\r\n")
	}
	if b.Len() != n {
		t.Fatalf("cannot build a message of %d bytes (got %d)", n, b.Len())
	}
	return b.Bytes()
}

// message_size_limit is enforced at both ends of the transaction:
//   - MAIL FROM SIZE= (RFC 1870 §6): exactly the limit is accepted, one byte
//     more is refused with 552 before any data is sent;
//   - the data itself: one byte over the limit is refused at end of DATA.
//
// Postfix counts the queue file, not the bytes the client sent (postconf(5):
// "including envelope information"): its own Received header and the envelope
// records take about 1 KB, so the largest message a client can actually send
// is about 1 KB under the limit. The accepted case sends 2 KiB under it.
func TestMessageSizeLimit(t *testing.T) {
	s := harness.Need(t)
	if s.SizeLimit != sizeLimit {
		t.Fatalf("stack message_size_limit %d, want %d", s.SizeLimit, sizeLimit)
	}
	t.Run("SIZE declared", func(t *testing.T) {
		tests := []struct {
			size int64
			code int // 0: accepted
		}{
			{sizeLimit, 0},
			{sizeLimit + 1, 552},
		}
		for _, tt := range tests {
			c, err := s.SMTP(harness.OutsideIP)
			if err != nil {
				t.Fatal(err)
			}
			if ok, v := c.Extension("SIZE"); !ok || v != strconv.Itoa(sizeLimit) {
				t.Errorf("EHLO SIZE = %v %q, want the limit %d", ok, v, sizeLimit)
			}
			err = c.Mail(stranger, &smtp.MailOptions{Size: tt.size})
			if got := harness.Code(err); got != tt.code || (tt.code == 0 && err != nil) {
				t.Errorf("MAIL FROM SIZE=%d: %v, want code %d", tt.size, err, tt.code)
			}
			c.Close()
		}
	})
	tests := []struct {
		name      string
		size      int
		delivered bool
	}{
		{"one byte over", sizeLimit + 1, false},
		{"2 KiB under", sizeLimit - 2048, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := harness.Token()
			msg := sizedMessage(t, tt.size, tok)
			c, err := s.SMTP(harness.OutsideIP)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			err = harness.Send(c, stranger, []string{alice}, msg)
			if !tt.delivered {
				var se *smtp.SMTPError
				if !errors.As(err, &se) || se.Code != 552 {
					t.Fatalf("%d-byte message: err = %v, want 552", tt.size, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("%d-byte message refused: %v", tt.size, err)
			}
			m, err := s.WaitMail(ctx(t), alice, "", tok)
			if err != nil {
				t.Fatal(err)
			}
			// Maildir stores LF line ends; everything sent must be there.
			sent := bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n"))
			if !bytes.HasSuffix(m.Data, sent[bytes.Index(sent, []byte("\n\n")):]) {
				t.Errorf("delivered message (%d bytes) does not end with the %d-byte body sent", len(m.Data), len(sent))
			}
		})
	}
}
