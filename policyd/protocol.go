package policyd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Limits bound what one request may hold. Postfix's own requests are a few
// hundred octets; anything past these limits is answered DUNNO and logged.
type Limits struct {
	MaxLine     int // octets per attribute line, newline excluded. Default 4096.
	MaxRequest  int // octets per request. Default 65536.
	MaxAttrs    int // attribute lines per request. Default 256.
	MaxActionLn int // octets of an action sent back. Default 512.
}

func (l Limits) withDefaults() Limits {
	if l.MaxLine <= 0 {
		l.MaxLine = 4096
	}
	if l.MaxRequest <= 0 {
		l.MaxRequest = 65536
	}
	if l.MaxAttrs <= 0 {
		l.MaxAttrs = 256
	}
	if l.MaxActionLn <= 0 {
		l.MaxActionLn = 512
	}
	return l
}

// Errors of ReadRequest. ErrBadRequest wraps the cases where the request was
// read to its end (the connection is still in sync and gets a DUNNO answer).
var (
	ErrBadRequest = errors.New("policyd: bad request")
)

// ReadRequest reads one request: "name=value" lines up to an empty line
// (SMTPD_POLICY_README "Protocol description"). Unknown attributes are kept.
// A line without "=", an over-long line, or too many attributes do not stop
// the reading: the rest of the request is consumed and an error wrapping
// ErrBadRequest is returned with the attributes read so far, so the caller
// can answer and go on with the next request. io.EOF means the client closed
// the connection cleanly between requests; io.ErrUnexpectedEOF that it closed
// in the middle of one.
func ReadRequest(br *bufio.Reader, lim Limits) (*Request, error) {
	lim = lim.withDefaults()
	r := &Request{Attrs: make(map[string]string, 16)}
	var bad error
	total := 0
	nlines := 0
	for {
		line, long, n, err := readLine(br, lim.MaxLine)
		total += n
		if err != nil {
			if err == io.EOF && total == 0 {
				return nil, io.EOF
			}
			if err == io.EOF {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if total > lim.MaxRequest && bad == nil {
			bad = fmt.Errorf("%w: request longer than %d octets", ErrBadRequest, lim.MaxRequest)
		}
		if line == "" && !long {
			if nlines == 0 && bad == nil {
				// A lone empty line: not a request. Postfix never sends
				// one; answer it anyway so that the client stays in sync.
				bad = fmt.Errorf("%w: empty request", ErrBadRequest)
			}
			return r, bad
		}
		nlines++
		switch {
		case bad != nil:
			// Keep consuming up to the empty line.
		case long:
			bad = fmt.Errorf("%w: attribute line longer than %d octets", ErrBadRequest, lim.MaxLine)
		case nlines > lim.MaxAttrs:
			bad = fmt.Errorf("%w: more than %d attributes", ErrBadRequest, lim.MaxAttrs)
		default:
			name, value, ok := strings.Cut(line, "=")
			if !ok || name == "" {
				bad = fmt.Errorf("%w: line %d is not name=value", ErrBadRequest, nlines)
				continue
			}
			r.Attrs[name] = value
		}
	}
}

// readLine reads up to '\n'. Past max octets the rest of the line is
// discarded and long is true. A trailing '\r' is removed (Postfix sends bare
// '\n'; some test clients send CRLF). n counts the octets consumed.
func readLine(br *bufio.Reader, max int) (line string, long bool, n int, err error) {
	var buf []byte
	for {
		frag, err := br.ReadSlice('\n')
		n += len(frag)
		if !long {
			if len(buf)+len(frag) > max+2 {
				long = true
				buf = nil
			} else {
				buf = append(buf, frag...)
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return "", long, n, err
		}
		break
	}
	s := strings.TrimSuffix(strings.TrimSuffix(string(buf), "\n"), "\r")
	if len(s) > max {
		return "", true, n, nil
	}
	return s, long, n, nil
}

// FormatReply renders a reply: "action=…" and the empty line. The action is
// cut at limit octets and any CR, LF or NUL is replaced by a space, since a
// newline would desynchronise Postfix's reader.
func FormatReply(action string, limit int) []byte {
	if action == "" {
		action = "DUNNO"
	}
	if limit > 0 && len(action) > limit {
		action = action[:limit]
	}
	action = strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == 0 {
			return ' '
		}
		return r
	}, action)
	return []byte("action=" + action + "\n\n")
}
