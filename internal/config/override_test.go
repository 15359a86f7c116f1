package config

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func sets(t *testing.T, args ...string) []Override {
	t.Helper()
	var out []Override
	for _, a := range args {
		o, err := ParseSet(a)
		if err != nil {
			t.Fatalf("ParseSet(%q): %v", a, err)
		}
		out = append(out, o)
	}
	return out
}

func TestParseSet(t *testing.T) {
	tests := []struct {
		in   string
		want Override
		err  string
	}{
		{in: "policy.greylist.delay=10m", want: Override{Key: "policy.greylist.delay", Op: Set, Value: "10m"}},
		{in: "policy.checks+=greylist", want: Override{Key: "policy.checks", Op: Append, Value: "greylist"}},
		{in: "policy.checks-=spf", want: Override{Key: "policy.checks", Op: Remove, Value: "spf"}},
		{in: "policy.dnsbl.sites+=zen.spamhaus.org=127.0.0.2", want: Override{Key: "policy.dnsbl.sites", Op: Append, Value: "zen.spamhaus.org=127.0.0.2"}},
		{in: "milter.dkim.keys[0].selector=s1", want: Override{Key: "milter.dkim.keys[0].selector", Value: "s1"}},
		{in: "policy.metrics=", want: Override{Key: "policy.metrics", Value: ""}},
		{in: "hostname", err: "--set hostname: no '=' between the key and the value (" + setHint + ")"},
		{in: "=x", err: "--set =x: no key before '=' (" + setHint + ")"},
		{in: "policy..checks=x", err: `--set policy..checks=x: "policy..checks" is not a key path (` + setHint + ")"},
		{in: "milter.dkim.keys[x]=1", err: `--set milter.dkim.keys[x]=1: "milter.dkim.keys[x]" is not a key path (` + setHint + ")"},
	}
	for _, tt := range tests {
		got, err := ParseSet(tt.in)
		if tt.err != "" {
			if err == nil || err.Error() != tt.err {
				t.Errorf("ParseSet(%q) error = %v;\nwant %s", tt.in, err, tt.err)
			}
			continue
		}
		tt.want.Source = "--set " + tt.in
		if err != nil || got != tt.want {
			t.Errorf("ParseSet(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

// Overrides change the file's node tree before the decode: every key can
// be reached, lists replaced, appended to, emptied of an item, addressed by
// index, and what the file does not write starts from its default.
func TestOverrides(t *testing.T) {
	file := minimal + "policy:\n  checks: [blacklist, spf, greylist]\nmilter:\n  dkim:\n    keys:\n      - {domain: exemple.fr, selector: a}\n"
	tests := []struct {
		name string
		file string
		set  []string
		get  func(*Config) any
		want any
	}{
		{"scalar", minimal, []string{"policy.greylist.delay=10m"}, func(c *Config) any { return c.Policy.Greylist.Delay.D() }, 10 * time.Minute},
		{"last wins", minimal, []string{"policy.greylist.delay=10m", "policy.greylist.delay=1h"}, func(c *Config) any { return c.Policy.Greylist.Delay.D() }, time.Hour},
		{"top-level key", minimal, []string{"hostname=mx.exemple.fr"}, func(c *Config) any { return c.Origin }, "mx.exemple.fr"},
		{"flow list", minimal, []string{"policy.checks=[spf, dnsbl]", "policy.dnsbl.sites=[bl.example]"}, func(c *Config) any { return c.Policy.Checks }, []string{"spf", "dnsbl"}},
		{"flow mapping list", minimal, []string{"policy.ratelimit.limits=[{key: sasl_user, max: 10, window: 1m}]"},
			func(c *Config) any { return c.Policy.RateLimit.Limits }, []Limit{{Key: "sasl_user", Max: 10, Window: Duration(time.Minute)}}},
		{"replaces the file's list", file, []string{"policy.checks=[spf]"}, func(c *Config) any { return c.Policy.Checks }, []string{"spf"}},
		{"append to the file's list", file, []string{"policy.checks+=ratelimit", "policy.ratelimit.limits+={key: sender, max: 5, window: 1h}"},
			func(c *Config) any { return c.Policy.Checks }, []string{"blacklist", "spf", "greylist", "ratelimit"}},
		{"append to the default", minimal, []string{"policy.checks+=greylist"}, func(c *Config) any { return c.Policy.Checks }, []string{"blacklist", "spf", "greylist"}},
		{"append a list", minimal, []string{"policy.checks+=[greylist, dnsbl]", "policy.dnsbl.sites=[bl.example]"}, func(c *Config) any { return c.Policy.Checks }, []string{"blacklist", "spf", "greylist", "dnsbl"}},
		{"remove from the file's list", file, []string{"policy.checks-=spf"}, func(c *Config) any { return c.Policy.Checks }, []string{"blacklist", "greylist"}},
		{"remove from the default", minimal, []string{"policy.checks-=blacklist"}, func(c *Config) any { return c.Policy.Checks }, []string{"spf"}},
		{"remove what is not there", minimal, []string{"policy.checks-=dnsbl"}, func(c *Config) any { return c.Policy.Checks }, []string{"blacklist", "spf"}},
		{"item by index", file, []string{"milter.dkim.keys[0].selector=s1"}, func(c *Config) any { return c.Milter.DKIM.Keys }, []DKIMKey{{Domain: "exemple.fr", Selector: "s1"}}},
		{"index at the end adds", file, []string{"milter.dkim.keys[1]={domain: exemple.fr, selector: b}", "milter.dkim.keys[1].disabled=true"},
			func(c *Config) any { return c.Milter.DKIM.Keys }, []DKIMKey{{Domain: "exemple.fr", Selector: "a"}, {Domain: "exemple.fr", Selector: "b", Disabled: true}}},
		{"item of a new list", minimal, []string{"milter.dkim.keys[0].domain=exemple.fr", "milter.dkim.keys[0].selector=s"},
			func(c *Config) any { return c.Milter.DKIM.Keys }, []DKIMKey{{Domain: "exemple.fr", Selector: "s"}}},
		{"empty value", minimal, []string{"milter.socket_group="}, func(c *Config) any { return c.Milter.SocketGroup }, ""},
		{"null section", minimal + "policy:\n", []string{"policy.metrics=9187"}, func(c *Config) any { return c.Policy.Metrics }, "9187"},
		{"quoted value", minimal, []string{`milter.scrub.rules=[{header: Received, action: replace, with: "from a: b"}]`},
			func(c *Config) any { return c.Milter.Scrub.Rules[0].With }, "from a: b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _, err := Parse("x.yaml", []byte(tt.file), sets(t, tt.set...)...)
			if err != nil {
				t.Fatalf("Parse with %q: %v", tt.set, err)
			}
			if got := tt.get(c); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("with %q: %#v; want %#v", tt.set, got, tt.want)
			}
		})
	}
}

// An override is validated as the file is: the same messages, with the
// override as typed instead of a line of the file.
func TestOverrideErrors(t *testing.T) {
	tests := []struct {
		name string
		file string
		set  []string
		want string
	}{
		{"bad duration", minimal, []string{"policy.greylist.delay=10x"},
			`--set policy.greylist.delay=10x: policy.greylist.delay: "10x" is not a duration (write a duration like 300s, 5m or 24h)`},
		{"unknown key", minimal, []string{"policy.greylst.delay=10m"},
			`--set policy.greylst.delay=10m: policy.greylst: unknown key "greylst" (did you mean "greylist"?)`},
		{"unknown top key", minimal, []string{"hostnme=a.b"},
			`--set hostnme=a.b: hostnme: unknown key "hostnme" (did you mean "hostname"?)`},
		{"item of a flow list", minimal, []string{"policy.ratelimit.limits=[{key: sasl_user, max: -1, window: 1m}]"},
			`--set policy.ratelimit.limits=[{key: sasl_user, max: -1, window: 1m}]: policy.ratelimit.limits[0].max: must be at least 1 (e.g. 500)`},
		{"bad enum in a list", minimal, []string{"policy.checks+=virus"},
			`--set policy.checks+=virus: policy.checks[2]: "virus" is not allowed (one of: blacklist, spf, dnsbl, greylist, ratelimit)`},
		{"what the override enables", minimal, []string{"policy.checks=[dnsbl]"},
			`--set policy.checks=[dnsbl]: policy.dnsbl.sites: the dnsbl check needs at least one site (e.g. [zen.spamhaus.org=127.0.0.[2..11]*3], or remove dnsbl from policy.checks)`},
		{"missing field of a new item", minimal, []string{"milter.dkim.keys[0].selector=s1"},
			`--set milter.dkim.keys[0].selector=s1: milter.dkim.keys[0].domain: is required (see 'postkit config example')`},
		{"index past the end", minimal, []string{"milter.dkim.keys[1].selector=s1"},
			`--set milter.dkim.keys[1].selector=s1: milter.dkim.keys: index 1 is past the end of the list, which has 0 items (use [0] to add an item, or milter.dkim.keys+=VALUE)`},
		{"not valid YAML", minimal, []string{"hostname=[a"},
			`--set hostname=[a: hostname: not valid YAML: did not find expected ',' or ']' (quote the value as in the file, e.g. --set 'key="a: b"')`},
		{"list for a string", minimal, []string{"hostname=[a]"},
			`--set hostname=[a]: hostname: want a string, got a list (give a single value)`},
		{"key under a list", minimal, []string{"policy.checks.x=1"},
			`--set policy.checks.x=1: policy.checks: want a list, got a mapping (write a list: one '- item' per line, or [a, b])`},
		{"key under a value of the file", minimal, []string{"hostname.x=1"},
			`--set hostname.x=1: hostname: is a value "mail.exemple.fr" in x.yaml:1:11, not a section of keys (fix the file first)`},
		{"append to a value", minimal, []string{"hostname+=x"},
			`--set hostname+=x: hostname: is a value "mail.exemple.fr" in x.yaml:1:11, not a list: += works on lists (use = to replace it)`},
		{"remove a mapping", minimal, []string{"policy.checks-={a: b}"},
			`--set policy.checks-={a: b}: policy.checks: -= removes values, not a mapping (name the value to remove, e.g. --set policy.checks-=spf)`},
		{"unknown key, no close one", minimal, []string{`milter.authserv_id="a\nb"`},
			`--set milter.authserv_id="a\nb": milter.authserv_id: unknown key "authserv_id" (known keys here: allow_clients, default_action, dkim, dmarc, drain, enabled, extra_listen, listen, metrics, metrics_allow_clients, on_error, originating, own_from, scrub, socket_group, socket_mode, socket_owner, spam)`},
		{"control character", minimal, []string{`milter.dkim.authserv_id="a\nb"`},
			`--set milter.dkim.authserv_id="a\nb": milter.dkim.authserv_id: "a\nb" holds a line break (U+000A): postkit writes values into Postfix and Dovecot files, where it would start a line of its own (write the value on one line, without control characters)`},
		{"the file's error stays the file's", minimal + "tls:\n  inbound_level: must\n", []string{"policy.greylist.delay=1m"},
			`x.yaml:4:18: tls.inbound_level: "must" is not allowed (one of: may, encrypt)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Parse("x.yaml", []byte(tt.file), sets(t, tt.set...)...)
			if err == nil || err.Error() != tt.want {
				t.Errorf("Parse with %q = %v;\nwant %s", tt.set, err, tt.want)
			}
		})
	}
}

// A check's settings are validated whether or not the check is listed.
func TestValidateWholeModel(t *testing.T) {
	tests := []struct {
		set  string
		want string
	}{
		{"policy.dnsbl.sites=['!!']", `--set policy.dnsbl.sites=['!!']: policy.dnsbl.sites[0]: "!!" is not a DNS list site (e.g. zen.spamhaus.org=127.0.0.[2..11]*3 or list.dnswl.org=127.0.[0..255].[1..3]*-2)`},
		{"policy.dnsbl.threshold=0", `--set policy.dnsbl.threshold=0: policy.dnsbl.threshold: must be at least 1 (e.g. 3)`},
		{"policy.ratelimit.limits=[{key: user, max: 1, window: 1h}]", `--set policy.ratelimit.limits=[{key: user, max: 1, window: 1h}]: policy.ratelimit.limits[0].key: "user" is not allowed (one of: sasl_user, sender, client_ip)`},
		{"policy.ratelimit.limits=[{key: sender, max: 1, window: 9000h}]", `--set policy.ratelimit.limits=[{key: sender, max: 1, window: 9000h}]: policy.ratelimit.limits[0].window: must be whole seconds from 1s to 366 days (8784h), not 9000h0m0s (e.g. 1m, 1h or 24h)`},
		{"policy.ratelimit.limits=[{key: sender, max: 1, window: 1500ms}]", `--set policy.ratelimit.limits=[{key: sender, max: 1, window: 1500ms}]: policy.ratelimit.limits[0].window: must be whole seconds from 1s to 366 days (8784h), not 1.5s (e.g. 1m, 1h or 24h)`},
		{"policy.greylist.delay=72h", `--set policy.greylist.delay=72h: policy.greylist.delay: want 0 < delay (72h0m0s) < retry_window (48h0m0s) <= max_age (840h0m0s) (e.g. delay 5m, retry_window 48h, max_age 35d (840h))`},
		{"policy.greylist.auto_allow=-1", `--set policy.greylist.auto_allow=-1: policy.greylist.auto_allow: must not be negative (0 never allows a client outright)`},
		{"policy.time_budget=0s", `--set policy.time_budget=0s: policy.time_budget: must be positive (e.g. 10s)`},
		{"milter.drain=0s", `--set milter.drain=0s: milter.drain: must be positive (e.g. 30s)`},
		{"milter.extra_listen=[inet:0.0.0.0:8891]", `--set milter.extra_listen=[inet:0.0.0.0:8891]: milter.extra_listen[0]: "inet:0.0.0.0:8891" can be reached from other hosts and the milter protocol has no authentication: any client could have mail signed for your domains (list the MTAs that may connect in milter.allow_clients, e.g. [192.0.2.25/32], or listen on inet:127.0.0.1:PORT or a unix: socket)`},
	}
	for _, tt := range tests {
		_, _, err := Parse("x.yaml", []byte(minimal), sets(t, tt.set)...)
		if err == nil || err.Error() != tt.want {
			t.Errorf("Parse with --set %s = %v;\nwant %s", tt.set, err, tt.want)
		}
	}
}

func TestDefault(t *testing.T) {
	for key, want := range map[string]string{
		"policy.greylist.delay": "5m", "policy.time_budget": "10s", "dns.timeout": "2s", "policy.greylist.max_age": "840h",
		"policy.dnsbl.threshold": "3", "policy.checks": "blacklist,spf", "milter.socket_mode": "0660", "milter.dkim.verify": "true",
		"trusted_networks": "127.0.0.0/8,::1/128", "milter.drain": "30s", "dns.servers": "", "policy.state_file": "",
	} {
		if got, ok := Default(key); !ok || got != want {
			t.Errorf("Default(%q) = %q, %v; want %q", key, got, ok, want)
		}
	}
	if _, ok := Default("policy.greylst"); ok {
		t.Error("Default of an unknown key: ok")
	}
	if got, _ := DaemonDefault("policyd", "policy.checks"); got != "spf" {
		t.Errorf("DaemonDefault(policyd, policy.checks) = %q; want spf", got)
	}
	if got, _ := DaemonDefault("policyd", "policy.state_file"); got != "/var/lib/postkit/policyd.sqlite" {
		t.Errorf("DaemonDefault(policyd, policy.state_file) = %q", got)
	}
}

func TestOverrideErrorsAreErrors(t *testing.T) {
	_, _, err := Parse("x.yaml", []byte(minimal), sets(t, "policy.greylist.delay=10x", "hostnme=a")...)
	var es Errors
	if !errors.As(err, &es) || len(es) != 2 || es[0].File != "--set policy.greylist.delay=10x" || es[0].Key != "policy.greylist.delay" || es[1].File != "--set hostnme=a" {
		t.Errorf("errors = %#v; want one *Error per override, naming it", err)
	}
}

// No --set argument panics or escapes the error types; every refusal names
// the argument.
func FuzzSet(f *testing.F) {
	for _, s := range []string{"policy.greylist.delay=10m", "policy.checks+=[a, b]", "milter.dkim.keys[0].selector=s", "a[3][2].b-=x",
		"policy.ratelimit.limits=[{key: sasl_user, max: 10, window: 1m}]", "hostname=&a *a", "policy=", "x.y.z={a: [b, {c: d}]}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, arg string) {
		o, err := ParseSet(arg)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "--set "+arg+": ") {
				t.Fatalf("ParseSet(%q) = %v; want the argument named", arg, err)
			}
			return
		}
		_, _, err = Parse("x.yaml", []byte(minimal+"policy:\n  checks: [spf]\nmilter:\n  dkim:\n    keys: [{domain: a.example, selector: s}]\n"), o)
		var es Errors
		var e *Error
		if err != nil && !errors.As(err, &es) && !errors.As(err, &e) {
			t.Fatalf("Parse with %q: %T %v; want config errors", arg, err, err)
		}
	})
}
