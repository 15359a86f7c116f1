package policyd

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestReadRequest(t *testing.T) {
	long := strings.Repeat("x", 5000)
	tests := []struct {
		name    string
		in      string
		want    map[string]string // nil: no request
		wantErr error
		rest    string // what the reader still holds after the request
	}{
		{"basic", "request=smtpd_access_policy\nsender=a@b\n\n", map[string]string{"request": "smtpd_access_policy", "sender": "a@b"}, nil, ""},
		{"crlf", "request=x\r\nsender=\r\n\r\n", map[string]string{"request": "x", "sender": ""}, nil, ""},
		{"value with =", "ccert_subject=CN=a=b\n\n", map[string]string{"ccert_subject": "CN=a=b"}, nil, ""},
		{"unknown kept", "future_attr=1\n\n", map[string]string{"future_attr": "1"}, nil, ""},
		{"two requests", "a=1\n\nb=2\n\n", map[string]string{"a": "1"}, nil, "b=2\n\n"},
		{"eof between", "", nil, io.EOF, ""},
		{"eof inside", "a=1\n", nil, io.ErrUnexpectedEOF, ""},
		{"eof mid line", "a=1", nil, io.ErrUnexpectedEOF, ""},
		{"no equals", "garbage\nb=2\n\nc=3\n\n", map[string]string{}, ErrBadRequest, "c=3\n\n"},
		{"empty name", "=v\n\n", map[string]string{}, ErrBadRequest, ""},
		{"long line skipped to end", "a=1\nbig=" + long + "\nz=9\n\nnext=1\n\n", map[string]string{"a": "1"}, ErrBadRequest, "next=1\n\n"},
		{"lone empty line", "\na=1\n\n", map[string]string{}, ErrBadRequest, "a=1\n\n"},
		{"too many attributes", strings.Repeat("k=v\n", 300) + "\n", map[string]string{"k": "v"}, ErrBadRequest, ""},
		{"too large", strings.Repeat("k="+strings.Repeat("v", 4000)+"\n", 20) + "\n", map[string]string{"k": strings.Repeat("v", 4000)}, ErrBadRequest, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := bufio.NewReader(strings.NewReader(tt.in))
			r, err := ReadRequest(br, Limits{})
			if !errors.Is(err, tt.wantErr) || (err != nil) != (tt.wantErr != nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.want == nil {
				if r != nil {
					t.Errorf("got request %v, want none", r.Attrs)
				}
				return
			}
			if len(r.Attrs) != len(tt.want) {
				t.Errorf("attrs = %v, want %v", r.Attrs, tt.want)
			}
			for k, v := range tt.want {
				if r.Attrs[k] != v {
					t.Errorf("attr %s = %q, want %q", k, r.Attrs[k], v)
				}
			}
			rest, _ := io.ReadAll(br)
			if string(rest) != tt.rest {
				t.Errorf("rest = %q, want %q", rest, tt.rest)
			}
		})
	}
}

func TestFormatReply(t *testing.T) {
	tests := []struct {
		action string
		limit  int
		want   string
	}{
		{"", 0, "action=DUNNO\n\n"},
		{"REJECT no", 0, "action=REJECT no\n\n"},
		{"550 a\r\nb\x00", 0, "action=550 a  b \n\n"},
		{"PREPEND X: 123456", 12, "action=PREPEND X: 1\n\n"},
	}
	for _, tt := range tests {
		if got := string(FormatReply(tt.action, tt.limit)); got != tt.want {
			t.Errorf("FormatReply(%q, %d) = %q, want %q", tt.action, tt.limit, got, tt.want)
		}
	}
}

func FuzzReadRequest(f *testing.F) {
	for _, s := range []string{
		"request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.1\n\n",
		"a=1\n\nb=2\n\n",
		"garbage\n\n",
		"\n",
		"a=1\r\n\r\n",
		"x=" + strings.Repeat("y", 5000) + "\n\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		br := bufio.NewReader(strings.NewReader(in))
		lim := Limits{MaxLine: 64, MaxRequest: 512, MaxAttrs: 8}
		for i := 0; ; i++ {
			r, err := ReadRequest(br, lim)
			if err != nil && !errors.Is(err, ErrBadRequest) {
				if r != nil {
					t.Fatalf("request %v returned with fatal error %v", r.Attrs, err)
				}
				return
			}
			if len(r.Attrs) > lim.MaxAttrs {
				t.Fatalf("%d attributes, limit %d", len(r.Attrs), lim.MaxAttrs)
			}
			for k, v := range r.Attrs {
				if len(k)+1+len(v) > lim.MaxLine || strings.ContainsAny(k, "=\n") || strings.Contains(v, "\n") {
					t.Fatalf("attribute %q=%q breaks the limits", k, v)
				}
			}
			if i > len(in) {
				t.Fatalf("more requests than input octets")
			}
		}
	})
}

func TestTemporary(t *testing.T) {
	for a, want := range map[string]bool{
		"DEFER_IF_PERMIT 4.3.0 State unavailable": true,
		"defer try later":                         true,
		"DEFER_IF_REJECT":                         true,
		"450 4.3.0 State unavailable":             true,
		"REJECT no":                               false,
		"554 5.7.1 no":                            false,
		"DUNNO":                                   false,
		"4x0 odd":                                 false,
		"":                                        false,
	} {
		if got := Temporary(a); got != want {
			t.Errorf("Temporary(%q) = %v; want %v", a, got, want)
		}
	}
}
