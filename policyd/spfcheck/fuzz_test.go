package spfcheck

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestValidateRecord(t *testing.T) {
	tests := []struct {
		rec string
		ok  bool
	}{
		{"v=spf1", true},
		{"v=spf1 -all", true},
		{"v=spf1  a  mx:example.com/24//64 ip4:192.0.2.0/24 ip6:2001:db8::/32 ~all", true},
		{"v=spf1 include:_spf.example.com exists:%{i}.%{l1r-}.example.com redirect=%{d2}", true},
		{"v=spf1 a:foo:bar/baz.example.com", true},
		{"v=spf1 moo.cow-far_out=man:dog/cat ip4:1.2.3.4 -all", true},
		{"v=spf1 -all exp=%{c}.example.com", false}, // c only in explanations
		{"v=spf1 -all exp=a.example.com exp=b.example.com", false},
		{"v=spf1 redirect=a.example.com redirect=b.example.com", false},
		{"v=spf1 ip4:1.2.3.4/032 -all", false},
		{"v=spf1 ip4:1.2.3.4/33", false},
		{"v=spf1 -all ip6", false},
		{"v=spf1 ip6:1.2.3.4 -all", false},
		{"v=spf1 a:example.123 -all", false},
		{"v=spf1 a:foo-bar -all", false},
		{"v=spf1 ptr/0 -all", false},
		{"v=spf1 include: -all", false},
		{"v=spf1 a:%{x}.example.com", false},
		{"v=spf1 a:%{d0}.example.com", false},
		{"v=spf1 a:\xef\xbb\xbfgarbage.example.net -all", false},
		{"v=spf1 a:ctrl.example.com\rptr -all", false},
		{"v=spf1 -all foo", false},
		{"v=spf1 -all:x", false},
		{"v=spf1 a:mail.example.com%", false},
	}
	for _, tt := range tests {
		if err := validateRecord(tt.rec); (err == nil) != tt.ok {
			t.Errorf("validateRecord(%q) = %v, want ok=%v", tt.rec, err, tt.ok)
		}
	}
}

func TestExpand(t *testing.T) {
	env := &macroEnv{
		ip: netip.MustParseAddr("192.0.2.3"), sender: "strong-bad@email.example.com",
		helo: "mx.example.org", receiver: "rx.example", now: time.Unix(1000, 0),
		ptr: func() string { return "mx.example.org" },
	}
	// RFC 7208 §7.4 examples.
	tests := []struct {
		in   string
		exp  bool
		want string
	}{
		{"%{s}", false, "strong-bad@email.example.com"},
		{"%{o}", false, "email.example.com"},
		{"%{d}", false, "email.example.com"},
		{"%{d4}", false, "email.example.com"},
		{"%{d3}", false, "email.example.com"},
		{"%{d2}", false, "example.com"},
		{"%{d1}", false, "com"},
		{"%{dr}", false, "com.example.email"},
		{"%{d2r}", false, "example.email"},
		{"%{l}", false, "strong-bad"},
		{"%{l-}", false, "strong.bad"},
		{"%{lr}", false, "strong-bad"},
		{"%{lr-}", false, "bad.strong"},
		{"%{l1r-}", false, "strong"},
		{"%{ir}.%{v}._spf.%{d2}", false, "3.2.0.192.in-addr._spf.example.com"},
		{"%{lr-}.lp._spf.%{d2}", false, "bad.strong.lp._spf.example.com"},
		{"%{d2}.trusted-domains.example.net", false, "example.com.trusted-domains.example.net"},
		{"%%%_%-", false, "% %20"},
		{"%{S}", false, "strong-bad%40email.example.com"},
		{"%{c} at %{t} to %{r} via %{p}", true, "192.0.2.3 at 1000 to rx.example via mx.example.org"},
	}
	for _, tt := range tests {
		got, err := env.expand(tt.in, "email.example.com", tt.exp)
		if err != nil || got != tt.want {
			t.Errorf("expand(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"%{c}", "%{x}", "%", "%{d", "%{d0}", "%a", "with space"} {
		if got, err := env.expand(bad, "example.com", false); err == nil {
			t.Errorf("expand(%q) = %q, want an error", bad, got)
		}
	}
	v6 := &macroEnv{ip: netip.MustParseAddr("2001:db8::cb01")}
	if got, _ := v6.expand("%{ir}.%{v}", "", false); got != "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6" {
		t.Errorf("ipv6 %%{ir}.%%{v} = %q", got)
	}
}

func FuzzValidateRecord(f *testing.F) {
	for _, s := range []string{"v=spf1 -all", "v=spf1 a:%{d2}/24//64 exp=x.%{o}", "v=spf1 ip6:::1/128 redirect=a.b", "v=spf1 %{", "v=spf1 a//"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rec string) {
		if validateRecord(rec) == nil {
			for i := 0; i < len(rec); i++ {
				if rec[i] < 0x20 || rec[i] >= 0x7f {
					t.Fatalf("accepted a record with octet 0x%02x", rec[i])
				}
			}
		}
	})
}

func FuzzExpand(f *testing.F) {
	for _, s := range []string{"%{ir}.%{v}._spf.%{d2}", "%{l1r-}", "%%%_%-", "%{S}", "%{p}", "%{d999999999999999999999}"} {
		f.Add(s, true)
	}
	env := &macroEnv{ip: netip.MustParseAddr("2001:db8::1"), sender: "a@b.example", helo: "h.example", now: time.Unix(0, 0)}
	f.Fuzz(func(t *testing.T, s string, exp bool) {
		out, err := env.expand(s, "d.example", exp)
		if err == nil && !strings.Contains(s, "%") && out != s {
			t.Fatalf("expand(%q) = %q: literal text changed", s, out)
		}
	})
}
