package access

import (
	"reflect"
	"strings"
	"testing"

	"github.com/postkit/postkit/policyd"
)

func TestKeys(t *testing.T) {
	tests := []struct {
		addr   string
		delims string
		dot    bool
		want   []string
	}{
		{"user@example.com", "", false, []string{"user@example.com", "example.com", "com", "user@"}},
		{"User+Tag@Sub.Example.COM", "+", false, []string{
			"user+tag@sub.example.com", "user@sub.example.com", "sub.example.com", "example.com", "com", "user+tag@", "user@"}},
		{"user+tag@sub.example.com", "+", true, []string{
			"user+tag@sub.example.com", "user@sub.example.com", "sub.example.com", ".example.com", ".com", "user+tag@", "user@"}},
		{"user-tag@example.com", "+-", false, []string{"user-tag@example.com", "user@example.com", "example.com", "com", "user-tag@", "user@"}},
		// A delimiter in first position is not an extension.
		{"+tag@example.com", "+", false, []string{"+tag@example.com", "example.com", "com", "+tag@"}},
		{"user+tag@example.com", "", false, []string{"user+tag@example.com", "example.com", "com", "user+tag@"}},
		{"<a@example.com.>", "", false, []string{"a@example.com", "example.com", "com", "a@"}},
		{"root@[192.0.2.1]", "", false, []string{"root@[192.0.2.1]", "[192.0.2.1]", "root@"}},
		{"postmaster", "+", false, []string{"postmaster"}},
		{"a@b@example.org", "", false, []string{"a@b@example.org", "example.org", "org", "a@b@"}},
		{"", "+", false, nil},
	}
	for _, tt := range tests {
		got := Keys(tt.addr, tt.delims, tt.dot)
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Keys(%q, %q, %v) = %q; want %q", tt.addr, tt.delims, tt.dot, got, tt.want)
		}
	}
}

func TestParseAction(t *testing.T) {
	tests := []struct {
		in      string
		want    policyd.Decision
		wantErr bool
	}{
		{"REJECT", policyd.Decision{Action: "REJECT"}, false},
		{"reject go away", policyd.Decision{Action: "reject go away"}, false},
		{"  DISCARD ", policyd.Decision{Action: "DISCARD"}, false},
		{"OK", policyd.Decision{Action: "OK"}, false},
		{"550 go away", policyd.Decision{Action: "550 go away"}, false},
		{"450 4.7.1 later", policyd.Decision{Action: "450 4.7.1 later"}, false},
		{"12345", policyd.Decision{Action: "OK"}, false},
		{"550", policyd.Decision{Action: "OK"}, false}, // all-numerical, as in access(5)
		{"250 fine", policyd.Decision{}, true},
		{"DUNNO", policyd.Decision{Reason: "dunno"}, false},
		{"WARN look at this", policyd.Decision{Reason: "warn"}, false},
		{"PREPEND X-Blacklist: yes", policyd.Decision{Prepend: []string{"X-Blacklist: yes"}}, false},
		{"PREPEND nonsense", policyd.Decision{}, true},
		{"REDIRECT abuse@example.com", policyd.Decision{Action: "REDIRECT abuse@example.com"}, false},
		{"REDIRECT", policyd.Decision{}, true},
		{"FILTER smtp:[127.0.0.1]:10025", policyd.Decision{Action: "FILTER smtp:[127.0.0.1]:10025"}, false},
		{"permit_mynetworks", policyd.Decision{}, true},
		{"", policyd.Decision{}, true},
		{"REJECT a\nb", policyd.Decision{}, true},
		{"garbage", policyd.Decision{}, true},
	}
	for _, tt := range tests {
		got, err := ParseAction(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseAction(%q) error = %v; want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseAction(%q) = %+v; want %+v", tt.in, got, tt.want)
		}
	}
}

func FuzzParseAction(f *testing.F) {
	for _, s := range []string{"REJECT", "550 x", "PREPEND A: b", "123", "REDIRECT a@b", "DUNNO", "\n", "FILTER x:y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseAction(s)
		if err != nil {
			if d.Final() {
				t.Fatalf("ParseAction(%q) = %+v with error %v", s, d, err)
			}
			return
		}
		if strings.ContainsAny(d.Action, "\r\n") {
			t.Fatalf("ParseAction(%q) action %q contains a line break", s, d.Action)
		}
		if c := d.Action; len(c) >= 3 && isAllDigits(c[:3]) && c != "OK" && c[0] != '4' && c[0] != '5' {
			t.Fatalf("ParseAction(%q) passes code %q", s, c)
		}
	})
}

func FuzzKeys(f *testing.F) {
	for _, s := range []string{"a+b@c.d", "@", "a@", "@b", "<>", "a@[1.2.3.4]", "x@.", "a@b..c"} {
		f.Add(s, "+")
	}
	f.Fuzz(func(t *testing.T, addr, delims string) {
		keys := Keys(addr, delims, false)
		for _, k := range keys {
			if k == "" {
				t.Fatalf("Keys(%q, %q) has an empty key: %q", addr, delims, keys)
			}
		}
		if len(keys) > 0 && keys[0] != strings.TrimSuffix(strings.ToLower(strings.TrimSpace(addr)), ".") && !strings.ContainsAny(addr, "<>@.") {
			t.Fatalf("Keys(%q) first key %q is not the address", addr, keys[0])
		}
	})
}

func TestIsRefusalCode(t *testing.T) {
	for in, want := range map[string]bool{
		"554 5.7.1": true, "450 4.7.1": true, "550": true,
		"250 ok": false, "55": false, "": false, "5x4 text": false, "REJECT": false,
	} {
		if got := IsRefusalCode(in); got != want {
			t.Errorf("IsRefusalCode(%q) = %v; want %v", in, got, want)
		}
	}
}
