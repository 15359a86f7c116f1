package spfcheck

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/postkit/postkit/policyd"
)

// ours is the test's set of our own domains; "broken.example" makes the
// lookup fail as a database error would.
func ours(ctx context.Context, d string) (bool, error) {
	switch d {
	case "soft.example", "neutral.example", "pass.example", "fail.example", "nospf.example", "slow.example", "perm.example":
		return true, nil
	case "broken.example":
		return false, errors.New("database is locked")
	}
	return false, nil
}

// Mail from outside claiming one of our domains in MAIL FROM is refused
// unless SPF passes, whatever the SPF mode; DNS or database trouble defers.
func TestOwnDomainSender(t *testing.T) {
	tests := []struct {
		name   string
		mode   Mode
		ip     string
		sender string
		extra  []string
		want   string // prefix of the action; "" = no final action
	}{
		{"softfail refused", Enforce, "198.51.100.1", "billing@soft.example", nil, "550 5.7.1 soft.example is a domain of this server"},
		{"neutral refused", Enforce, "198.51.100.1", "billing@neutral.example", nil, "550 5.7.1 neutral.example"},
		{"no record refused", Enforce, "198.51.100.1", "billing@nospf.example", nil, "550 5.7.1 nospf.example"},
		{"permerror refused", Enforce, "198.51.100.1", "billing@perm.example", nil, "550 5.7.1 perm.example"},
		{"fail refused as SPF fail", Header, "198.51.100.1", "billing@fail.example", nil, "550 5.7.23"},
		{"header mode still refuses", Header, "198.51.100.1", "billing@soft.example", nil, "550 5.7.1"},
		{"temperror defers", Enforce, "198.51.100.1", "billing@slow.example", nil, "DEFER_IF_PERMIT 4.7.24"},
		{"database error defers", Enforce, "198.51.100.1", "billing@broken.example", nil, "DEFER_IF_PERMIT 4.3.0"},
		{"listed host passes", Enforce, "192.0.2.10", "billing@pass.example", nil, ""},
		{"case of the domain", Enforce, "198.51.100.1", "billing@SOFT.Example", nil, "550 5.7.1"},
		{"foreign softfail kept as header", Enforce, "198.51.100.1", "x@other-soft.example", nil, ""},
		{"null sender not ours", Enforce, "198.51.100.1", "", nil, ""},
		{"authenticated exempt", Enforce, "198.51.100.1", "billing@soft.example", []string{"sasl_username", "billing"}, ""},
		{"trusted exempt", Enforce, "127.0.0.1", "billing@soft.example", nil, ""},
		{"allowed client exempt", Enforce, "203.0.113.5", "billing@soft.example", nil, ""},
		// The client chooses its HELO and sender: neither lifts the rule.
		{"allowed helo not exempt", Enforce, "198.51.100.1", "billing@soft.example", []string{"helo_name", "friendly.example"}, "550 5.7.1"},
		{"allowed sender domain not exempt", Enforce, "198.51.100.1", "billing@neutral.example", nil, "550 5.7.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := newTestCheck(t, Config{
				Mode:               tt.mode,
				OwnDomain:          ours,
				Trusted:            []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
				AllowIPs:           []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")},
				AllowHelos:         []string{"friendly.example"},
				AllowSenderDomains: []string{"neutral.example"},
			}, `other-soft.example. 300 IN TXT "v=spf1 ~all"`)
			r := request(tt.ip, "client.example", tt.sender, tt.extra...)
			d, err := c.Check(context.Background(), r)
			if err != nil {
				t.Fatal(err)
			}
			if tt.want == "" {
				if d.Final() {
					t.Fatalf("action %q, want none", d.Action)
				}
				return
			}
			if !strings.HasPrefix(d.Action, tt.want) {
				t.Fatalf("action %q, want %q…", d.Action, tt.want)
			}
			if strings.HasPrefix(tt.want, "550") && !strings.HasPrefix(d.Reason, "own-domain") {
				t.Errorf("reason %q, want own-domain…", d.Reason)
			}
		})
	}
}

// Without OwnDomain the check behaves as before: softfail is a header.
func TestOwnDomainOff(t *testing.T) {
	c, _ := newTestCheck(t, Config{Mode: Enforce})
	d, err := c.Check(context.Background(), request("198.51.100.1", "client.example", "billing@soft.example"))
	if err != nil || d.Final() || len(d.Prepend) != 1 {
		t.Fatalf("decision %+v %v, want a Received-SPF header only", d, err)
	}
}

// A domain that becomes ours (postkit db domain add) is judged by the rule
// at once, even with a decision for the same client and sender cached.
func TestOwnDomainNotCached(t *testing.T) {
	isOurs := false
	c, _ := newTestCheck(t, Config{Mode: Enforce, OwnDomain: func(context.Context, string) (bool, error) { return isOurs, nil }})
	r := request("198.51.100.1", "client.example", "billing@soft.example")
	if d, _ := c.Check(context.Background(), r); d.Final() {
		t.Fatalf("foreign: %q", d.Action)
	}
	isOurs = true
	if d, _ := c.Check(context.Background(), r); !strings.HasPrefix(d.Action, "550 5.7.1") {
		t.Fatalf("after the domain became ours: %q, want 550 5.7.1", d.Action)
	}
}

// Seal rewrites the Received-SPF line of each answer for its own request,
// also when the decision comes from the cache, and leaves the cache alone.
func TestSealPerRequest(t *testing.T) {
	c, _ := newTestCheck(t, Config{Mode: Enforce, Seal: func(r *policyd.Request, line string) string {
		return line + " x-port=" + r.Get("client_port") + ";"
	}})
	for _, port := range []string{"1001", "1002"} {
		d, err := c.Check(context.Background(), request("192.0.2.10", "client.example", "a@pass.example", "client_port", port))
		if err != nil {
			t.Fatal(err)
		}
		if len(d.Prepend) != 1 || !strings.HasPrefix(d.Prepend[0], "Received-SPF: pass") || !strings.HasSuffix(d.Prepend[0], " x-port="+port+";") {
			t.Fatalf("port %s: prepend %q, want one sealed for this request", port, d.Prepend)
		}
		if strings.Count(d.Prepend[0], "x-port=") != 1 {
			t.Fatalf("port %s: sealed twice: %q", port, d.Prepend[0])
		}
	}
}

// CheckHost evaluates the given sender's domain alone, for the milter.
func TestCheckHost(t *testing.T) {
	c, _ := newTestCheck(t, Config{})
	tests := []struct {
		ip, sender string
		want       Result
	}{
		{"192.0.2.10", "billing@pass.example", Pass},
		{"198.51.100.1", "billing@pass.example", Fail},
		{"198.51.100.1", "billing@soft.example", SoftFail},
		{"198.51.100.1", "@soft.example", SoftFail},
		{"198.51.100.1", "billing@slow.example", TempError},
	}
	for _, tt := range tests {
		o := c.CheckHost(context.Background(), netip.MustParseAddr(tt.ip), "client.example", tt.sender)
		if o.Result != tt.want {
			t.Errorf("CheckHost(%s, %s) = %s, want %s", tt.ip, tt.sender, o.Result, tt.want)
		}
	}
}
