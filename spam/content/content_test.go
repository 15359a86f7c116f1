package content

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

func parse(s string) *Message {
	return Parse(context.Background(), []byte(s), Limits{})
}

func TestDecoding(t *testing.T) {
	for _, tt := range []struct {
		name, raw, text string
		faults          []string
	}{
		{"plain LF", "Subject: x\n\nhello world\n", "hello world", nil},
		{"mbox From line", "From a@b Mon Jan 1 00:00:00 2002\nSubject: x\n\nhello\n", "hello", nil},
		{"quoted-printable utf-8", "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nCaf=C3=A9 cr=\r\n=C3=A8me\r\n", "Café crème", nil},
		{"base64 latin-1", "Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: base64\r\n\r\nQ2Fm6SBjcuhtZQ==\r\n", "Café crème", nil},
		{"windows-1252", "Content-Type: text/plain; charset=windows-1252\r\n\r\n\x93quoted\x94\r\n", "“quoted”", nil},
		{"html rendered", "Content-Type: text/html\r\n\r\n<html><head><title>T</title><style>p{}</style></head><body><p>Hello&nbsp;<b>there</b></p><script>x()</script></body></html>", "Hello\u00a0there", nil},
		{"html head never closed", "Content-Type: text/html\r\n\r\n<html><head><title>Letter</title><meta name=x>\r\n<body><p>Issue 4 of the newsletter</p><noscript>enable scripts</noscript><script>document.write('x')</script></body>", "Issue 4 of the newsletter", nil},
		{"html tag left open", "Content-Type: text/html\r\n\r\n<html><body bgcolor=\"#fff\" link=\"#039\"\r\n<TITLE>Announcements</TITLE>\r\n<p>Exclusive offer for members</p>", "Announcements\n\nExclusive offer for members", nil},
		{"multipart alternative", "Content-Type: multipart/alternative; boundary=\"b\"\r\n\r\npreamble\r\n--b\r\nContent-Type: text/plain\r\n\r\nplain part\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>html part</p>\r\n--b--\r\n", "plain part\n\n\nhtml part", nil},
		{"unknown charset", "Content-Type: text/plain; charset=x-nonesuch\r\n\r\nstill text\r\n", "still text", []string{FaultCharset}},
		{"unknown charset, 8-bit", "Content-Type: text/plain; charset=DEFAULT_CHARSET\r\n\r\ncaf\xe9 cr\xe8me\r\n", "café crème", []string{FaultCharset}},
		{"undeclared 8-bit", "Subject: x\r\n\r\n\x93smart\x94 caf\xe9\r\n", "“smart” café", nil},
		{"us-ascii that is not", "Content-Type: text/plain; charset=us-ascii\r\n\r\nna\xefve\r\n", "naïve", nil},
		{"html meta charset", "Content-Type: text/html\r\n\r\n<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=iso-8859-2\"></head><body>\xbf\xf3\xb3w</body></html>", "żółw", nil},
		{"utf-8 that is not", "Content-Type: text/plain; charset=utf-8\r\n\r\ncaf\xc3\xa9 \xff\r\n", "café \ufffd", nil},
		{"bad base64", "Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8gd29ybGQ=\r\n!!!not base64!!!\r\n", "hello world", []string{FaultEncoding}},
		{"no boundary parameter", "Content-Type: multipart/mixed\r\n\r\nbody without parts\r\n", "body without parts", []string{FaultBoundary}},
		{"boundary never seen", "Content-Type: multipart/mixed; boundary=zz\r\n\r\nno parts here\r\n", "", []string{FaultBoundary}},
		{"header line without colon", "Subject: x\r\nthis is not a field\r\n\r\nbody\r\n", "body", []string{FaultHeader}},
	} {
		m := parse(tt.raw)
		if got := strings.TrimSpace(m.Text); got != tt.text {
			t.Errorf("%s: Text = %q; want %q", tt.name, got, tt.text)
		}
		for _, f := range tt.faults {
			if !m.HasFault(f) {
				t.Errorf("%s: faults %v; want %s", tt.name, m.Faults, f)
			}
		}
		if tt.faults == nil && len(m.Faults) > 0 {
			t.Errorf("%s: faults %v; want none", tt.name, m.Faults)
		}
	}
}

func TestHeader(t *testing.T) {
	m := parse("From: =?utf-8?q?Ren=C3=A9?= <Rene@Exemple.FR>\r\nTo: a@b.example,\r\n  \"C, D\" <c@d.example>\r\nSubject: =?iso-8859-1?q?caf=E9?= ok\r\nX-Dup: 1\r\nX-Dup: 2\r\n\r\n")
	if got := m.Decoded("Subject"); got != "café ok" {
		t.Errorf("Subject = %q", got)
	}
	if got := m.Decoded("x-dup"); got != "1\n2" {
		t.Errorf("X-Dup = %q", got)
	}
	from := m.Addresses("From")
	if len(from) != 1 || from[0].Name != "René" || from[0].Addr != "Rene@exemple.fr" {
		t.Errorf("From = %+v", from)
	}
	if to := m.Addresses("To"); len(to) != 2 || to[1].Addr != "c@d.example" {
		t.Errorf("To = %+v", to)
	}
	bad := parse("From: broken <<<x@y.example> \"\r\n\r\n")
	if a := bad.Addresses("From"); len(a) == 0 || a[0].Addr != "x@y.example" {
		t.Errorf("lenient From = %+v", a)
	}
}

func TestURIs(t *testing.T) {
	m := parse("Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\n\r\nsee http://example.com/a, www.example.org/x.\r\n--b\r\nContent-Type: text/html\r\n\r\n<a href=\"https://user@shop.example:8080/p?q=1\">x</a><img src=\"http://192.0.2.1/i.gif\"><a href=\"mailto:a@b.example\">m</a><a href=\"#top\">t</a>\r\n--b--\r\n")
	want := []string{"https://user@shop.example:8080/p?q=1", "http://192.0.2.1/i.gif", "mailto:a@b.example", "http://example.com/a", "www.example.org/x"}
	if strings.Join(m.URIs, " ") != strings.Join(want, " ") {
		t.Errorf("URIs %q; want %q", m.URIs, want)
	}
	for u, h := range map[string]string{
		"https://user@shop.example:8080/p?q=1": "shop.example",
		"http://192.0.2.1/i.gif":               "192.0.2.1",
		"mailto:a@b.example":                   "b.example",
		"www.example.org/x":                    "www.example.org",
		"http://[2001:db8::1]:80/":             "2001:db8::1",
		"HTTP://Example.COM.":                  "example.com",
	} {
		if got := Host(u); got != h {
			t.Errorf("Host(%q) = %q; want %q", u, got, h)
		}
	}
	if m.HTML.Images != 1 || m.HTML.Parts != 1 {
		t.Errorf("HTML stats %+v", m.HTML)
	}
}

// Hostile messages are read within bounds and quickly: deep nesting, a
// 10 MB line, thousands of parts, a huge header.
func TestBounds(t *testing.T) {
	var nested strings.Builder
	for i := 0; i < 1000; i++ {
		nested.WriteString("Content-Type: multipart/mixed; boundary=\"b" + itoa(i) + "\"\r\n\r\n--b" + itoa(i) + "\r\n")
	}
	nested.WriteString("Content-Type: text/plain\r\n\r\ndeep text\r\n")
	var many strings.Builder
	many.WriteString("Content-Type: multipart/mixed; boundary=x\r\n\r\n")
	for i := 0; i < 5000; i++ {
		many.WriteString("--x\r\nContent-Type: text/plain\r\n\r\npart " + itoa(i) + "\r\n")
	}
	many.WriteString("--x--\r\n")
	longLine := "Subject: long\r\n\r\n" + strings.Repeat("A", 10<<20) + "\r\n"
	bigHeader := "Subject: big\r\n" + strings.Repeat("X-Filler: "+strings.Repeat("y", 70)+"\r\n", 20000) + "\r\nbody\r\n"
	headerLine := "Subject: " + strings.Repeat("z", 10<<20) + "\r\n\r\nbody\r\n"
	multiLine := "Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\nContent-Type: text/plain\r\n\r\n" + strings.Repeat("B", 10<<20) + "\r\n--q\r\nContent-Transfer-Encoding: base64\r\n\r\n" + strings.Repeat("QUJD", 2<<20) + "\r\n--q--\r\n"
	for _, tt := range []struct {
		name, raw string
		fault     string
	}{
		{"1000 nested multiparts", nested.String(), FaultDepth},
		{"5000 parts", many.String(), FaultPartLimit},
		{"10 MB body line", longLine, ""},
		{"huge header", bigHeader, FaultHeader},
		{"10 MB header line", headerLine, FaultHeader},
		{"10 MB line in a part, 8 MB of base64", multiLine, ""},
	} {
		start := time.Now()
		m := Parse(context.Background(), []byte(tt.raw), Limits{})
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s: took %v", tt.name, d)
		}
		if tt.fault != "" && !m.HasFault(tt.fault) {
			t.Errorf("%s: faults %v; want %s", tt.name, m.Faults, tt.fault)
		}
		if len(m.Text) > 256<<10 || len(m.RawText) > 256<<10 {
			t.Errorf("%s: kept %d bytes of text", tt.name, len(m.Text))
		}
		if tt.name != "huge header" && tt.name != "10 MB header line" && !m.Truncated {
			t.Errorf("%s: not marked truncated", tt.name)
		}
	}
}

func TestContextStopsParsing(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	m := Parse(ctx, []byte("Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\na\r\n--x--\r\n"), Limits{})
	if !m.Partial {
		t.Error("Partial not set after the context ended")
	}
}

func itoa(i int) string {
	var b [20]byte
	n := len(b)
	for {
		n--
		b[n] = byte('0' + i%10)
		i /= 10
		if i == 0 {
			return string(b[n:])
		}
	}
}

// FuzzParse: any input parses without panicking, within the limits, and
// yields valid UTF-8 text.
func FuzzParse(f *testing.F) {
	f.Add([]byte("Subject: x\r\n\r\nhello"))
	f.Add([]byte("Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Transfer-Encoding: base64\r\n\r\n%%%\r\n--b--\r\n--a--"))
	f.Add([]byte("Content-Type: text/html; charset=big5\n\n<a href='http://x'>\xff\xfe</a><img src=y>"))
	f.Add([]byte("Content-Type: message/rfc822\n\nContent-Type: message/rfc822\n\nSubject: inner\n\ntext"))
	f.Add([]byte("Content-Type: text/plain\nContent-Transfer-Encoding: quoted-printable\n\n====\n=ZZ caf=e9 = \n=4"))
	lim := Limits{MaxText: 4096, MaxParts: 20, MaxDepth: 5, MaxURIs: 10}
	f.Fuzz(func(t *testing.T, raw []byte) {
		m := Parse(context.Background(), raw, lim)
		if len(m.Text) > lim.MaxText || len(m.RawText) > lim.MaxText {
			t.Fatalf("text %d/%d bytes over %d", len(m.Text), len(m.RawText), lim.MaxText)
		}
		if len(m.Parts) > lim.MaxParts+1 || len(m.URIs) > lim.MaxURIs {
			t.Fatalf("%d parts, %d URIs", len(m.Parts), len(m.URIs))
		}
		if !bytes.Equal([]byte(strings.ToValidUTF8(m.Text, "")), []byte(m.Text)) {
			t.Fatal("text is not valid UTF-8")
		}
	})
}

// FuzzFindURIs: reading only the lines that may hold a link finds what the
// regexp finds over the whole text.
func FuzzFindURIs(f *testing.F) {
	f.Add("see http://a.example/x and WWW.b.example.\nno link here\nftp://c.example, www.d")
	f.Add("wwW.x.y\r\nhttps://[::1]/z")
	f.Fuzz(func(t *testing.T, text string) {
		want := uriRE.FindAllString(text, maxURIs)
		for i, u := range want {
			want[i] = strings.TrimRight(u, ".,;:!?*")
		}
		got := findURIs(text)
		if strings.Join(got, "\x00") != strings.Join(want, "\x00") || len(got) != len(want) {
			t.Fatalf("findURIs(%q) = %q; the regexp over the whole text finds %q", text, got, want)
		}
	})
}
