package dkimsign

import "io"

// NewBodyCanonicalizer returns a writer that canonicalizes a message body
// streamed in chunks of any size (RFC 6376 section 3.4.3 simple, 3.4.4
// relaxed) into w. Close ends the body (trailing empty lines dropped). The
// verifier uses it for signatures postkit checks itself (l=).
func NewBodyCanonicalizer(w io.Writer, relaxed bool) io.WriteCloser {
	return newBodyCanon(w, relaxed)
}

// AppendCanonicalHeader appends one header field in canonical form with its
// CRLF (RFC 6376 section 3.4.1 simple, 3.4.2 relaxed); value is the text
// after the colon and its single leading space, as the MTA gives it.
func AppendCanonicalHeader(dst []byte, name, value string, relaxed bool) []byte {
	return appendHeader(dst, name, value, relaxed)
}
