package dkimsign

import (
	"bytes"
	"testing"
)

func canonBody(in string, relaxed bool, chunk int) string {
	var out bytes.Buffer
	c := newBodyCanon(&out, relaxed)
	b := []byte(in)
	if chunk <= 0 {
		chunk = len(b) + 1
	}
	for len(b) > 0 {
		n := min(chunk, len(b))
		c.Write(b[:n])
		b = b[n:]
	}
	c.Close()
	return out.String()
}

func TestBodyCanon(t *testing.T) {
	tests := []struct {
		name, in       string
		simple, relaxd string
	}{
		{"empty", "", "\r\n", ""},
		{"only empty lines", "\r\n\r\n\r\n", "\r\n", ""},
		{"no final CRLF", "abc", "abc\r\n", "abc\r\n"},
		{"trailing empty lines", "a\r\n\r\n\r\n", "a\r\n", "a\r\n"},
		{"inner empty lines kept", "a\r\n\r\nb\r\n", "a\r\n\r\nb\r\n", "a\r\n\r\nb\r\n"},
		// RFC 6376 section 3.4.5 example body.
		{"rfc 3.4.5", " C \r\nD \t E\r\n\r\n\r\n", " C \r\nD \t E\r\n", " C\r\nD E\r\n"},
		{"whitespace-only line at end", "a\r\n \t \r\n", "a\r\n \t \r\n", "a\r\n"},
		{"whitespace-only inner line", "a\r\n  \r\nb", "a\r\n  \r\nb\r\n", "a\r\n\r\nb\r\n"},
		{"bare LF", "a\nb\n\n", "a\r\nb\r\n", "a\r\nb\r\n"},
		{"lone CR is text", "a\rb\r\n", "a\rb\r\n", "a\rb\r\n"},
		{"CR at end", "a\r", "a\r\r\n", "a\r\r\n"},
		{"leading WSP", "\t\tx  y\t\r\n", "\t\tx  y\t\r\n", " x y\r\n"},
		{"dot line", ".\r\n", ".\r\n", ".\r\n"},
	}
	for _, tc := range tests {
		for _, chunk := range []int{0, 1, 2, 3} {
			if got := canonBody(tc.in, false, chunk); got != tc.simple {
				t.Errorf("%s: simple(%q) chunk %d = %q; want %q", tc.name, tc.in, chunk, got, tc.simple)
			}
			if got := canonBody(tc.in, true, chunk); got != tc.relaxd {
				t.Errorf("%s: relaxed(%q) chunk %d = %q; want %q", tc.name, tc.in, chunk, got, tc.relaxd)
			}
		}
	}
}

func TestAppendHeader(t *testing.T) {
	tests := []struct {
		name, value     string
		simple, relaxed string
	}{
		// RFC 6376 section 3.4.5 example headers.
		{"A", "X", "A: X\r\n", "a:X\r\n"},
		{"B ", "Y\t\r\n\tZ  ", "B : Y\t\r\n\tZ  \r\n", "b:Y Z\r\n"},
		{"Subject", "  a  b ", "Subject:   a  b \r\n", "subject:a b\r\n"},
		{"X-Empty", "", "X-Empty: \r\n", "x-empty:\r\n"},
		{"To", "a\n b", "To: a\r\n b\r\n", "to:a b\r\n"},
	}
	for _, tc := range tests {
		if got := string(appendHeader(nil, tc.name, tc.value, false)); got != tc.simple {
			t.Errorf("simple(%q, %q) = %q; want %q", tc.name, tc.value, got, tc.simple)
		}
		if got := string(appendHeader(nil, tc.name, tc.value, true)); got != tc.relaxed {
			t.Errorf("relaxed(%q, %q) = %q; want %q", tc.name, tc.value, got, tc.relaxed)
		}
	}
}

// FuzzBodyCanon checks that chunking never changes the canonical body and
// that the output is well formed (every line ends in CRLF, relaxed lines have
// no trailing WSP).
func FuzzBodyCanon(f *testing.F) {
	for _, s := range []string{"", "a\r\n", " C \r\nD \t E\r\n\r\n\r\n", "a\rb\n\r\r\n", "\t \r\n\r\n x"} {
		f.Add(s, uint8(1))
	}
	f.Fuzz(func(t *testing.T, in string, chunk uint8) {
		for _, relaxed := range []bool{false, true} {
			whole := canonBody(in, relaxed, 0)
			parts := canonBody(in, relaxed, int(chunk))
			if whole != parts {
				t.Fatalf("relaxed=%v: chunk %d gives %q, whole gives %q", relaxed, chunk, parts, whole)
			}
			if whole != "" && !bytes.HasSuffix([]byte(whole), crlf) {
				t.Fatalf("relaxed=%v: %q does not end in CRLF", relaxed, whole)
			}
			if bytes.HasSuffix([]byte(whole), []byte("\r\n\r\n")) {
				t.Fatalf("relaxed=%v: %q ends with an empty line", relaxed, whole)
			}
			if relaxed && (bytes.Contains([]byte(whole), []byte(" \r\n")) || bytes.Contains([]byte(whole), []byte("\t"))) {
				t.Fatalf("relaxed: %q keeps trailing or tab WSP", whole)
			}
		}
	})
}
