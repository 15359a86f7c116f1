package content

import (
	"bufio"
	"io"
	"strings"

	"github.com/emersion/go-message"
)

// decodeEntity is message.New with a forgiving quoted-printable decoder.
// Mailers that declare quoted-printable and then write a line of "====" or a
// bare "=" are common; a strict decoder stops at the first such byte and the
// rest of the part is lost to the rules and to Bayes. RFC 2045 section 6.7
// asks decoders to be robust: an "=" that starts neither an escape nor a
// soft line break is kept as it is.
func decodeEntity(h message.Header, body io.Reader) (*message.Entity, error) {
	mt, _, _ := h.ContentType()
	if !strings.HasPrefix(strings.ToLower(mt), "multipart/") &&
		strings.EqualFold(strings.TrimSpace(h.Get("Content-Transfer-Encoding")), "quoted-printable") {
		hc := h.Copy()
		hc.Del("Content-Transfer-Encoding")
		return message.New(hc, newQPReader(body))
	}
	return message.New(h, body)
}

// qpReader decodes quoted-printable: "=XX" (hex digits in either case) is
// the byte XX, "=" followed by blanks and the end of the line joins the
// line to the next, any other "=" is itself, and blanks at the end of a
// line (added in transit) are dropped.
type qpReader struct {
	br *bufio.Reader
}

// qpLookahead bounds how far a run of blanks is looked through; a longer
// run is passed on as it is.
const qpLookahead = 256

func newQPReader(r io.Reader) *qpReader {
	return &qpReader{br: bufio.NewReaderSize(r, 4096)}
}

func isHex(b byte) bool {
	return '0' <= b && b <= '9' || 'a' <= b && b <= 'f' || 'A' <= b && b <= 'F'
}

func unhex(b byte) byte {
	switch {
	case b <= '9':
		return b - '0'
	case b >= 'a':
		return b - 'a' + 10
	}
	return b - 'A' + 10
}

// blanksToEOL reports how many blanks start look and whether they run to
// the end of the line (a CR LF, an LF, or the end of the input).
func blanksToEOL(look []byte, atEOF bool) (int, bool) {
	n := 0
	for n < len(look) && (look[n] == ' ' || look[n] == '\t') {
		n++
	}
	if n == len(look) {
		return n, atEOF
	}
	if look[n] == '\n' || look[n] == '\r' && n+1 < len(look) && look[n+1] == '\n' {
		return n, true
	}
	return n, false
}

func (q *qpReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		b, err := q.br.ReadByte()
		if err != nil {
			if n > 0 {
				return n, nil
			}
			return 0, err
		}
		switch b {
		case '=':
			look, perr := q.br.Peek(2)
			if len(look) == 2 && isHex(look[0]) && isHex(look[1]) {
				p[n] = unhex(look[0])<<4 | unhex(look[1])
				n++
				q.br.Discard(2)
				continue
			}
			look, perr = q.br.Peek(qpLookahead)
			if k, eol := blanksToEOL(look, perr != nil); eol {
				// Soft line break: drop the blanks and the line end.
				q.br.Discard(k)
				if k < len(look) && look[k] == '\r' {
					q.br.Discard(1)
				}
				q.br.Discard(1) // the LF; nothing at the end of the input
				continue
			}
			p[n] = '='
			n++
		case ' ', '\t':
			look, perr := q.br.Peek(qpLookahead)
			k, eol := blanksToEOL(look, perr != nil)
			if eol {
				q.br.Discard(k)
				continue
			}
			p[n] = b
			n++
			// The blanks that follow are inside the line too: pass them
			// on at once rather than looking ahead again for each. A run
			// that fills the lookahead keeps its last blank for the next
			// look.
			if k == len(look) && perr == nil {
				k--
			}
			m := copy(p[n:], look[:k])
			n += m
			q.br.Discard(m)
		default:
			p[n] = b
			n++
		}
	}
	return n, nil
}
