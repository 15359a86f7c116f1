package header_test

import (
	"bufio"
	"fmt"
	"strings"
	"testing"

	"github.com/postkit/postkit/milter/filter"
	"github.com/postkit/postkit/milter/header"
)

func TestRead(t *testing.T) {
	in := "From: a@b.example\r\nSubject:x\r\n\tcont\r\nX-Empty:\r\n\r\nbody"
	br := bufio.NewReader(strings.NewReader(in))
	hs, err := header.Read(br)
	if err != nil {
		t.Fatal(err)
	}
	want := []filter.Header{{Name: "From", Value: "a@b.example"}, {Name: "Subject", Value: "x\r\n\tcont"}, {Name: "X-Empty", Value: ""}}
	if fmt.Sprint(hs) != fmt.Sprint(want) {
		t.Errorf("Read = %q; want %q", hs, want)
	}
	if rest, _ := br.ReadString(0); rest != "body" {
		t.Errorf("after Read the reader holds %q; want the body", rest)
	}
	for _, bad := range []string{" cont\r\n\r\n", "no colon here\r\n\r\n", ": empty name\r\n\r\n", "X: " + strings.Repeat("a", 102400) + "\r\n\r\n"} {
		if _, err := header.Read(bufio.NewReader(strings.NewReader(bad))); err == nil {
			t.Errorf("Read(%.40q) succeeded", bad)
		}
	}
}

func TestFromDomain(t *testing.T) {
	tests := []struct {
		from, want string
		err        bool
	}{
		{"a@example.org", "example.org", false},
		{"Ann <Ann@Example.Org>", "example.org", false},
		{"\"Doe, John\" <j@sub.example.org>", "sub.example.org", false},
		{"=?utf-8?q?J=C3=B6?= <j@example.org>", "example.org", false},
		{"Jöhn Dœ <j@example.org>", "example.org", false},
		{"Broken \"quote <j@example.org>", "example.org", false},
		{"a@example.org.", "example.org", false},
		{"a@example.org, b@example.net", "", true},
		{"nobody", "", true},
		{"<>", "", true},
		{"x@", "", true},
	}
	for _, tc := range tests {
		got, err := header.FromDomain([]filter.Header{{Name: "From", Value: tc.from}})
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("FromDomain(%q) = %q, %v; want %q, error %v", tc.from, got, err, tc.want, tc.err)
		}
	}
	for _, hs := range [][]filter.Header{nil, {{Name: "From", Value: "a@example.org"}, {Name: "from", Value: "b@example.org"}}} {
		if d, err := header.FromDomain(hs); err == nil {
			t.Errorf("FromDomain(%q) = %q; want an error: no single From field", hs, d)
		}
	}
}

func TestFromAddress(t *testing.T) {
	tests := []struct{ from, want string }{
		{"a@example.org", "a@example.org"},
		{"Ann <Ann@Example.Org>", "Ann@Example.Org"},
		{"\"Doe, John\" <j@sub.example.org>", "j@sub.example.org"},
		{"Jöhn Dœ <j@example.org>", "j@example.org"},
		{"(comment) a@example.org", "a@example.org"},
		{"a@example.org, b@example.net", ""},
		{"nobody", ""},
	}
	for _, tc := range tests {
		got, err := header.FromAddress([]filter.Header{{Name: "From", Value: tc.from}})
		if got != tc.want || (err != nil) != (tc.want == "") {
			t.Errorf("FromAddress(%q) = %q, %v; want %q", tc.from, got, err, tc.want)
		}
	}
}

func TestFromAddresses(t *testing.T) {
	tests := []struct {
		value string
		want  string
	}{
		{"Alice <alice@example.test>", "alice@example.test"},
		{"=?utf-8?q?Al=C3=AFce?= <alice@example.test>, bob@outside.test", "alice@example.test,bob@outside.test"},
		{"undisclosed-recipients:;", ""},
		{"\"a@b.test\" <c@d.test>", "c@d.test"},
		{"alice@example.test (Alice)\r\n\t", "alice@example.test"},
		{"broken <alice@example.test", "alice@example.test"},
	}
	for _, tt := range tests {
		got := header.FromAddresses([]filter.Header{{Name: "From", Value: tt.value}})
		if strings.Join(got, ",") != tt.want {
			t.Errorf("FromAddresses(%q) = %v, want %s", tt.value, got, tt.want)
		}
	}
	two := []filter.Header{{Name: "From", Value: "a@one.test"}, {Name: "To", Value: "x@y.test"}, {Name: " from", Value: "b@two.test"}}
	if got := header.FromAddresses(two); strings.Join(got, ",") != "a@one.test,b@two.test" {
		t.Errorf("FromAddresses of two From fields = %v; want both addresses", got)
	}
}

// Whatever a From field holds, every address found has a domain part, and
// an address written plainly is always found (a forger gets no pass by
// surrounding it with junk).
func FuzzFromAddresses(f *testing.F) {
	for _, s := range []string{"a@b.test", "\"x@y\" <a@b.test>", "a@b.test <<", "=?utf-8?q?x?= <a@b.test>", "(c@d) e@f.test", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, junk string) {
		for _, v := range []string{junk, junk + " billing@example.test", "billing@example.test " + junk} {
			got := header.FromAddresses([]filter.Header{{Name: "From", Value: v}})
			for _, a := range got {
				if !strings.Contains(a, "@") {
					t.Fatalf("FromAddresses(%q) returned %q without a domain", v, a)
				}
			}
		}
	})
}

func TestServID(t *testing.T) {
	tests := []struct{ in, want string }{
		{"mx.example.net; dkim=pass", "mx.example.net"},
		{"  mx.example.net 1; none", "mx.example.net"},
		{"(a (nested) comment) mx.example.net\r\n\t; spf=pass", "mx.example.net"},
		{"mx.example.net", "mx.example.net"},
		{"", ""},
		{"(unclosed mx.example.net; x", ""},
		{"\"quoted(not comment)\"; x", "\"quoted(not"},
	}
	for _, tc := range tests {
		if got := header.ServID(tc.in); got != tc.want {
			t.Errorf("ServID(%q) = %q; want %q", tc.in, got, tc.want)
		}
	}
}

func FuzzServID(f *testing.F) {
	f.Add("mx.example.net; dkim=pass")
	f.Add("(\\)) x;")
	f.Fuzz(func(t *testing.T, s string) {
		id := header.ServID(s)
		if strings.ContainsAny(id, " \t\r\n;") {
			t.Fatalf("ServID(%q) = %q contains a separator", s, id)
		}
	})
}

func TestStripComments(t *testing.T) {
	tests := []struct{ in, want string }{
		{"a (b) c", "a  c"},
		{"a (b (nested) c) d", "a  d"},
		{`a (b \) c) d`, "a  d"},
		{`"in (quotes)" x`, `"in (quotes)" x`},
		{`"esc \" (q)" (c)`, `"esc \" (q)" `},
		{"one\r\n\ttwo", "one  \ttwo"},
		{"unclosed (comment", "unclosed "},
	}
	for _, tc := range tests {
		if got := header.StripComments(tc.in); got != tc.want {
			t.Errorf("StripComments(%q) = %q; want %q", tc.in, got, tc.want)
		}
	}
}

func ExampleFromDomain() {
	hs := []filter.Header{
		{Name: "From", Value: `"Doe, Ann" <Ann@Mail.Example.ORG>`},
		{Name: "Subject", Value: "hello"},
	}
	d, err := header.FromDomain(hs)
	fmt.Println(d, err)
	_, err = header.FromDomain(append(hs, filter.Header{Name: "From", Value: "b@example.net"}))
	fmt.Println(err)
	// Output:
	// mail.example.org <nil>
	// header: 2 From headers
}

func ExampleServID() {
	fmt.Println(header.ServID("(ours) mx.example.org 1;\r\n\tdkim=pass header.d=example.org"))
	// Output: mx.example.org
}
