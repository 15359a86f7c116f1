package dkimsign

import (
	"io"
	"strings"
)

var crlf = []byte("\r\n")

// bodyCanon canonicalizes a body streamed in arbitrary chunks (RFC 6376
// section 3.4.3 simple, 3.4.4 relaxed) and writes the result to w, usually a
// hash. It holds back only what it cannot decide yet: a CR that may start a
// CRLF, a run of white space (relaxed) and empty lines that may end the body.
// A bare LF ends a line as CRLF would (Postfix sends CRLF; peers such as
// OpenDKIM and dkimpy treat a bare LF the same way).
type bodyCanon struct {
	w         io.Writer
	relaxed   bool
	cr        bool // a CR is held
	wsp       bool // relaxed: a run of SP/HTAB is held
	lineStart bool // nothing of the current line written yet
	crlfs     int  // empty lines held: dropped if the body ends here
	any       bool // some line was written
}

func newBodyCanon(w io.Writer, relaxed bool) *bodyCanon {
	return &bodyCanon{w: w, relaxed: relaxed, lineStart: true}
}

var crByte = []byte{'\r'}

// Write canonicalizes p; it never fails unless w does (hashes never do).
func (c *bodyCanon) Write(p []byte) (int, error) {
	start := 0
	for i := 0; i < len(p); i++ {
		b := p[i]
		if c.cr {
			c.cr = false
			if b == '\n' {
				c.endLine()
				start = i + 1
				continue
			}
			c.content(crByte) // a CR not followed by LF is text
		}
		switch {
		case b == '\r':
			c.content(p[start:i])
			c.cr = true
			start = i + 1
		case b == '\n':
			c.content(p[start:i])
			c.endLine()
			start = i + 1
		case c.relaxed && (b == ' ' || b == '\t'):
			// RFC 6376 section 3.4.4 (b): a run of WSP becomes one SP,
			// and (a): none at the end of a line.
			c.content(p[start:i])
			c.wsp = true
			start = i + 1
		}
	}
	c.content(p[start:])
	return len(p), nil
}

func (c *bodyCanon) content(seg []byte) {
	if len(seg) == 0 {
		return
	}
	if c.lineStart {
		// Empty lines followed by text are kept (sections 3.4.3 and 3.4.4 (c)
		// drop only those at the end of the body).
		for ; c.crlfs > 0; c.crlfs-- {
			c.w.Write(crlf)
		}
		c.lineStart = false
		c.any = true
	}
	if c.wsp {
		c.w.Write(sp)
		c.wsp = false
	}
	c.w.Write(seg)
}

var sp = []byte{' '}

func (c *bodyCanon) endLine() {
	c.wsp = false
	if c.lineStart {
		c.crlfs++
		return
	}
	c.w.Write(crlf)
	c.lineStart = true
}

// Close ends the body: trailing empty lines are dropped, a last line without
// CRLF gets one, and an empty body is CRLF under simple (section 3.4.3) and
// nothing under relaxed (section 3.4.4).
func (c *bodyCanon) Close() error {
	if c.cr {
		c.cr = false
		c.content(crByte)
	}
	if !c.lineStart {
		c.w.Write(crlf)
		c.lineStart = true
	}
	if !c.relaxed && !c.any {
		c.w.Write(crlf)
	}
	c.crlfs = 0
	return nil
}

// appendHeader appends one header field in canonical form with its CRLF
// (RFC 6376 section 3.4.1 simple, 3.4.2 relaxed). value is the text after the
// colon without the single leading space, as the MTA gives it; the simple form
// rebuilds "Name: value" (what Postfix writes and passes to milters).
func appendHeader(dst []byte, name, value string, relaxed bool) []byte {
	if !relaxed {
		dst = append(dst, name...)
		dst = append(dst, ':', ' ')
		dst = appendCRLFValue(dst, value)
		return append(dst, '\r', '\n')
	}
	// Section 3.4.2: lowercase name, no WSP around the colon, unfolded value
	// with WSP runs reduced to one SP and none at either end.
	name = strings.TrimRight(name, " \t")
	for i := 0; i < len(name); i++ {
		b := name[i]
		if 'A' <= b && b <= 'Z' {
			b += 'a' - 'A'
		}
		dst = append(dst, b)
	}
	dst = append(dst, ':')
	wsp, started := false, false
	for i := 0; i < len(value); i++ {
		b := value[i]
		switch b {
		case '\r', '\n':
			continue
		case ' ', '\t':
			wsp = true
			continue
		}
		if wsp && started {
			dst = append(dst, ' ')
		}
		wsp, started = false, true
		dst = append(dst, b)
	}
	return append(dst, '\r', '\n')
}

// appendCRLFValue appends a header value, turning a bare LF into CRLF.
func appendCRLFValue(dst []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		if v[i] == '\n' && (i == 0 || v[i-1] != '\r') {
			dst = append(dst, '\r')
		}
		dst = append(dst, v[i])
	}
	return dst
}
