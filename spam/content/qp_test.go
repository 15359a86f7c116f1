package content

import (
	"bytes"
	"context"
	"io"
	"mime/quotedprintable"
	"strings"
	"testing"
	"testing/iotest"
)

func TestQPReader(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"caf=C3=A9\n", "caf\xc3\xa9\n"},
		{"lower =c3=a9 hex\n", "lower \xc3\xa9 hex\n"},
		{"soft=\nbreak\n", "softbreak\n"},
		{"soft= \t\r\nbreak\r\n", "softbreak\r\n"},
		{"trailing blanks  \t\nnext", "trailing blanks\nnext"},
		{"inner  blanks kept\n", "inner  blanks kept\n"},
		// The last "=" of a line of them is a soft line break, as in any decoder.
		{"==============\nafter the rule\n", "=============after the rule\n"},
		{"=ZZ and =4 and = x\n", "=ZZ and =4 and = x\n"},
		{"ends with =", "ends with "},
		{"ends with =4", "ends with =4"},
		{"", ""},
	} {
		got, err := io.ReadAll(newQPReader(strings.NewReader(c.in)))
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
		}
		if string(got) != c.want {
			t.Errorf("%q decoded to %q, want %q", c.in, got, c.want)
		}
		// Byte by byte, lookahead must not depend on read sizes.
		got, err = io.ReadAll(newQPReader(iotest.OneByteReader(strings.NewReader(c.in))))
		if err != nil || string(got) != c.want {
			t.Errorf("%q one byte at a time: %q, %v", c.in, got, err)
		}
	}
}

func TestQPReaderLongBlankRun(t *testing.T) {
	in := "a" + strings.Repeat(" ", 3*qpLookahead) + "b\n"
	got, err := io.ReadAll(newQPReader(strings.NewReader(in)))
	if err != nil || string(got) != in {
		t.Fatalf("a long run of inner blanks changed: %d bytes, %v", len(got), err)
	}
}

// A part that declares quoted-printable but holds a line of "=" is read to
// its end: the text after it reaches the rules and Bayes, and no fault is
// noted.
func TestParseLenientQuotedPrintable(t *testing.T) {
	raw := "From: a@example.org\nSubject: newsletter\nMIME-Version: 1.0\n" +
		"Content-Type: multipart/alternative; boundary=b1\n\n" +
		"--b1\nContent-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\n" +
		"Issue 4\n=============================\nsecond half caf=E9\n" +
		"--b1--\n"
	m := Parse(context.Background(), []byte(raw), Limits{})
	if len(m.Faults) != 0 {
		t.Errorf("faults %v, want none", m.Faults)
	}
	if !strings.Contains(m.Text, "second half café") {
		t.Errorf("text after the line of '=' lost or not decoded: %q", m.Text)
	}
	single := "From: a@example.org\nContent-Type: text/plain\nContent-Transfer-Encoding: Quoted-Printable\n\n== rule ==\nrest=\n of line\n"
	m = Parse(context.Background(), []byte(single), Limits{})
	if len(m.Faults) != 0 || !strings.Contains(m.Text, "rest of line") || !strings.Contains(m.Text, "== rule =") {
		t.Errorf("single part: faults %v, text %q", m.Faults, m.Text)
	}
}

// FuzzQPReader: what a conforming encoder wrote decodes to the original
// bytes, read whole or a byte at a time; anything else decodes without
// error and never grows.
func FuzzQPReader(f *testing.F) {
	f.Add([]byte("caf\xc3\xa9 =\n==\n\t \r\n"))
	f.Add([]byte(strings.Repeat("x", 200) + " \n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var enc bytes.Buffer
		w := quotedprintable.NewWriter(&enc)
		w.Binary = true
		w.Write(data)
		w.Close()
		got, err := io.ReadAll(newQPReader(bytes.NewReader(enc.Bytes())))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("round trip of %q: %q, %v", data, got, err)
		}
		got, err = io.ReadAll(newQPReader(iotest.OneByteReader(bytes.NewReader(enc.Bytes()))))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("round trip of %q a byte at a time: %q, %v", data, got, err)
		}
		raw, err := io.ReadAll(newQPReader(bytes.NewReader(data)))
		if err != nil || len(raw) > len(data) {
			t.Fatalf("decoding %q: %d bytes, %v", data, len(raw), err)
		}
	})
}

// A 10 MB line of blanks decodes in one pass: each blank is looked at a
// bounded number of times.
func BenchmarkQPReaderBlankLine(b *testing.B) {
	in := strings.Repeat(" ", 10<<20) + "x\n"
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		n, err := io.Copy(io.Discard, newQPReader(strings.NewReader(in)))
		if err != nil || n != int64(len(in)) {
			b.Fatalf("%d bytes, %v", n, err)
		}
	}
}
