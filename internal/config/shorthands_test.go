package config

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// The flags the daemons documented before they were shorthands: each is a
// shorthand now, but -c and --log-level, which are the process's.
var documentedFlags = map[string][]string{
	"milter": {"config", "listen", "allow-client", "dkim-key", "trusted", "originating", "socket-owner", "socket-group", "socket-mode",
		"on-error", "no-scrub", "canonicalization", "db", "unowned-from", "verify", "spam", "dmarc", "authserv-id", "dns-server", "drain", "metrics", "metrics-allow-client", "log-level", "log-format", "log-target"},
	"policyd": {"config", "listen", "allow-client", "metrics-allow-client", "checks", "dns", "dns-timeout", "time-budget", "spf-mode",
		"no-spf", "spf-temperror-defer", "spf-permerror-reject", "hostname", "trusted", "db", "state", "dnsbl-site", "dnsbl-threshold",
		"greylist-delay", "greylist-text", "ratelimit", "metrics", "socket-owner", "socket-group", "socket-mode", "log-level", "log-format", "log-target"},
}

func TestShorthandsCoverTheFlags(t *testing.T) {
	for daemon, flags := range documentedFlags {
		table := Shorthands(daemon)
		var names []string
		for _, s := range table {
			names = append(names, s.Flag)
			if s.Flag != "set" && fieldType(s.Key) == nil {
				t.Errorf("%s --%s stands for %q, which is not a key of postkit.yaml", daemon, s.Flag, s.Key)
			}
			if s.Usage == "" {
				t.Errorf("%s --%s has no help", daemon, s.Flag)
			}
		}
		for _, f := range flags {
			if !slices.Contains(names, f) && f != "config" {
				t.Errorf("%s --%s is documented but has no shorthand", daemon, f)
			}
		}
		for _, n := range names {
			if !slices.Contains(flags, n) && n != "set" {
				t.Errorf("%s --%s is new: add it to documentedFlags", daemon, n)
			}
		}
		if names[len(names)-1] != "set" {
			t.Errorf("%s: --set is not applied last", daemon)
		}
	}
	if Shorthands("spamd") != nil {
		t.Error("Shorthands(spamd) is not nil")
	}
}

// load runs the daemon's shorthands over the flags given, as `postkit
// DAEMON` does, and loads the daemon's configuration with them.
func load(t *testing.T, daemon, file string, args ...[]string) (*Config, error) {
	t.Helper()
	given := map[string][]string{}
	for _, a := range args {
		given[a[0]] = append(given[a[0]], a[1:]...)
	}
	ovs, err := FlagOverrides(Shorthands(daemon), func(flag string) ([]string, bool) {
		v, ok := given[flag]
		return v, ok
	})
	if err != nil {
		return nil, err
	}
	path := ""
	if file != "" {
		path = writeFile(t, file)
	}
	c, _, err := LoadDaemon(path, daemon, ovs...)
	return c, err
}

func TestShorthands(t *testing.T) {
	tests := []struct {
		name, daemon, file string
		args               [][]string
		get                func(*Config) any
		want               any
	}{
		{"listen repeated", "milter", "", [][]string{{"listen", "unix:/run/a.sock", "inet:127.0.0.1:8891", "unix:/run/c.sock"}},
			func(c *Config) any { return append([]string{c.Milter.Listen}, c.Milter.ExtraListen...) }, []string{"unix:/run/a.sock", "inet:127.0.0.1:8891", "unix:/run/c.sock"}},
		{"dkim-key adds to the file's keys", "milter", minimal + "milter:\n  dkim:\n    keys: [{domain: exemple.fr, selector: a}]\n",
			[][]string{{"dkim-key", "exemple.org:mail:/k/mail.private", "Exemple.net:ed:/k/ed.private"}},
			func(c *Config) any { return c.Milter.DKIM.Keys }, []DKIMKey{{Domain: "exemple.fr", Selector: "a"},
				{Domain: "exemple.org", Selector: "mail", KeyFile: "/k/mail.private"}, {Domain: "exemple.net", Selector: "ed", KeyFile: "/k/ed.private"}}},
		{"trusted replaces the file's list", "milter", minimal + "trusted_networks: [10.0.0.0/8]\n", [][]string{{"trusted", "192.0.2.0/24", "::1"}},
			func(c *Config) any { return c.TrustedNetworks }, []CIDR{"192.0.2.0/24", "::1"}},
		{"no-scrub", "milter", "", [][]string{{"no-scrub", "true"}}, func(c *Config) any { return c.Milter.Scrub.Enabled }, false},
		{"no-scrub=false", "milter", minimal + "milter:\n  scrub: {enabled: false}\n", [][]string{{"no-scrub", "false"}}, func(c *Config) any { return c.Milter.Scrub.Enabled }, true},
		{"verify", "milter", "", [][]string{{"verify", "true"}}, func(c *Config) any { return c.Milter.DKIM.Verify }, true},
		{"verify=false", "milter", minimal, [][]string{{"verify", "false"}}, func(c *Config) any { return c.Milter.DKIM.Verify }, false},
		{"socket-mode stays text", "milter", "", [][]string{{"socket-mode", "0600"}}, func(c *Config) any { return c.Milter.SocketMode }, "0600"},
		{"socket-owner true is a name", "milter", "", [][]string{{"socket-owner", "true"}}, func(c *Config) any { return c.Milter.SocketOwner }, "true"},
		{"drain", "milter", "", [][]string{{"drain", "5s"}}, func(c *Config) any { return c.Milter.Drain.D() }, 5 * time.Second},
		{"checks, commas and repeats", "policyd", "", [][]string{{"checks", "spf, dnsbl", "greylist"}, {"dnsbl-site", "bl.example"}},
			func(c *Config) any { return c.Policy.Checks }, []string{"spf", "dnsbl", "greylist"}},
		{"no-spf after checks", "policyd", "", [][]string{{"no-spf", "true"}, {"checks", "spf,greylist"}},
			func(c *Config) any { return c.Policy.Checks }, []string{"greylist"}},
		{"no-spf from the file's list", "policyd", minimal + "policy:\n  checks: [blacklist, spf]\n", [][]string{{"no-spf", "true"}},
			func(c *Config) any { return c.Policy.Checks }, []string{"blacklist"}},
		{"spf switches", "policyd", "", [][]string{{"spf-temperror-defer", "false"}, {"spf-permerror-reject", "true"}},
			func(c *Config) any { return c.Policy.SPF.TempError + "," + c.Policy.SPF.PermError }, "accept,reject"},
		{"ratelimit", "policyd", minimal + "policy:\n  ratelimit:\n    limits: [{key: sender, max: 1, window: 1m}]\n",
			[][]string{{"ratelimit", "sasl_username:recipients=500/1h", "client:messages=100/7d", "sender:MESSAGES=5/day", "sasl:messages=9/90s"}},
			func(c *Config) any { return c.Policy.RateLimit.Limits }, []Limit{
				{Key: "sasl_user", Count: "recipients", Max: 500, Window: Duration(time.Hour)},
				{Key: "client_ip", Count: "messages", Max: 100, Window: Duration(7 * 24 * time.Hour)},
				{Key: "sender", Count: "messages", Max: 5, Window: Duration(24 * time.Hour)},
				{Key: "sasl_user", Count: "messages", Max: 9, Window: Duration(90 * time.Second)}}},
		{"state", "policyd", "", [][]string{{"state", "/srv/pk/state.sqlite"}}, func(c *Config) any { return c.Policy.StateFile }, "/srv/pk/state.sqlite"},
		{"state follows postkit_run", "policyd", minimal + "paths:\n  postkit_run: /srv/pk\n", nil, func(c *Config) any { return c.Policy.StateFile }, "/srv/pk/policyd.sqlite"},
		{"set refines a shorthand", "policyd", "", [][]string{{"greylist-delay", "1m"}, {"set", "policy.greylist.delay=2m"}},
			func(c *Config) any { return c.Policy.Greylist.Delay.D() }, 2 * time.Minute},
		{"metrics", "policyd", "", [][]string{{"metrics", "127.0.0.1:9187"}, {"metrics-allow-client", "127.0.0.1"}},
			func(c *Config) any { return string(c.Policy.MetricsAllowClients[0]) + " " + c.Policy.Metrics }, "127.0.0.1 127.0.0.1:9187"},
		{"hostname", "policyd", "", [][]string{{"hostname", "Receiver.Example."}}, func(c *Config) any { return c.Hostname }, "receiver.example"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := load(t, tt.daemon, tt.file, tt.args...)
			if err != nil {
				t.Fatalf("%s %q: %v", tt.daemon, tt.args, err)
			}
			if got := tt.get(c); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("%s %q: %#v; want %#v", tt.daemon, tt.args, got, tt.want)
			}
		})
	}
}

// Every malformed flag stops the daemon with the flag as typed, the key and
// the file's message, whether or not its check is enabled.
func TestShorthandErrors(t *testing.T) {
	tests := []struct {
		name, daemon string
		args         [][]string
		want         string
	}{
		{"ratelimit syntax", "policyd", [][]string{{"ratelimit", "foo"}},
			`--ratelimit foo: policy.ratelimit.limits: "foo" is not KEY:COUNTER=MAX/WINDOW (e.g. sasl_user:recipients=500/1h; KEY is sasl_user, sender or client_ip, COUNTER messages or recipients)`},
		{"ratelimit key", "policyd", [][]string{{"ratelimit", "user:messages=1/1h"}},
			`--ratelimit user:messages=1/1h: policy.ratelimit.limits[0].key: "user" is not allowed (one of: sasl_user, sender, client_ip)`},
		{"ratelimit second value", "policyd", [][]string{{"ratelimit", "sender:messages=1/1h", "sender:letters=1/1h"}},
			`--ratelimit sender:letters=1/1h: policy.ratelimit.limits[1].count: "letters" is not allowed (one of: messages, recipients)`},
		{"ratelimit max", "policyd", [][]string{{"ratelimit", "sender:messages=0/1h"}},
			`--ratelimit sender:messages=0/1h: policy.ratelimit.limits[0].max: must be at least 1 (e.g. 500)`},
		{"ratelimit max not a number", "policyd", [][]string{{"ratelimit", "sender:messages=many/1h"}},
			`--ratelimit sender:messages=many/1h: policy.ratelimit.limits[0].max: want a whole number, got "many" (write a whole number without quotes or units)`},
		{"ratelimit window", "policyd", [][]string{{"ratelimit", "sender:messages=1/fortnight"}},
			`--ratelimit sender:messages=1/fortnight: policy.ratelimit.limits[0].window: "fortnight" is not a duration (write a duration like 300s, 5m or 24h)`},
		{"ratelimit window too long", "policyd", [][]string{{"ratelimit", "sender:messages=1/400d"}},
			`--ratelimit sender:messages=1/400d: policy.ratelimit.limits[0].window: must be whole seconds from 1s to 366 days (8784h), not 9600h0m0s (e.g. 1m, 1h or 24h)`},
		{"dnsbl site, check not enabled", "policyd", [][]string{{"dnsbl-site", "!!"}},
			`--dnsbl-site !!: policy.dnsbl.sites[0]: "!!" is not a DNS list site (e.g. zen.spamhaus.org=127.0.0.[2..11]*3 or list.dnswl.org=127.0.[0..255].[1..3]*-2)`},
		{"greylist delay", "policyd", [][]string{{"greylist-delay", "10x"}},
			`--greylist-delay 10x: policy.greylist.delay: "10x" is not a duration (write a duration like 300s, 5m or 24h)`},
		{"threshold", "policyd", [][]string{{"dnsbl-threshold", "three"}},
			`--dnsbl-threshold three: policy.dnsbl.threshold: want a whole number, got "three" (write a whole number without quotes or units)`},
		{"time budget", "policyd", [][]string{{"time-budget", "0s"}}, `--time-budget 0s: policy.time_budget: must be positive (e.g. 10s)`},
		{"unknown check", "policyd", [][]string{{"checks", "spf,virus"}},
			`--checks spf,virus: policy.checks[1]: "virus" is not allowed (one of: blacklist, spf, dnsbl, greylist, ratelimit)`},
		{"dnsbl without sites", "policyd", [][]string{{"checks", "dnsbl"}},
			`postkit policyd (no -c): policy.dnsbl.sites: the dnsbl check needs at least one site (e.g. [zen.spamhaus.org=127.0.0.[2..11]*3], or remove dnsbl from policy.checks)`},
		{"spf mode", "policyd", [][]string{{"spf-mode", "strict"}}, `--spf-mode strict: policy.spf.mode: "strict" is not allowed (one of: enforce, header)`},
		{"bool", "policyd", [][]string{{"spf-permerror-reject", "maybe"}}, `--spf-permerror-reject=maybe: policy.spf.permerror: want true or false (write --spf-permerror-reject or --spf-permerror-reject=false)`},
		{"allow-client", "policyd", [][]string{{"allow-client", "10.0.0.1/8"}},
			`--allow-client 10.0.0.1/8: policy.allow_clients[0]: "10.0.0.1/8": host bits set: did you mean 10.0.0.0/8? (write a network such as 192.168.0.0/16 or an address)`},
		{"exposed listen", "policyd", [][]string{{"listen", "inet:0.0.0.0:10040"}},
			`--listen inet:0.0.0.0:10040: policy.listen: "inet:0.0.0.0:10040" can be reached from other hosts and the policy protocol has no authentication (list the MTAs that may connect in policy.allow_clients, e.g. [192.0.2.25/32], or listen on inet:127.0.0.1:PORT or a unix: socket)`},
		{"exposed metrics", "policyd", [][]string{{"metrics", "0.0.0.0:9187"}},
			`--metrics 0.0.0.0:9187: policy.metrics: "0.0.0.0:9187" can be reached from other hosts and the metrics endpoint has no authentication (list the scrapers that may connect in policy.metrics_allow_clients, e.g. [192.0.2.9/32], or listen on 127.0.0.1:PORT)`},
		{"relative socket", "policyd", [][]string{{"listen", "unix:policy.sock"}},
			`--listen unix:policy.sock: policy.listen: "unix:policy.sock": unix socket path must be absolute (write unix:/absolute/path or inet:127.0.0.1:PORT)`},
		{"hostname", "policyd", [][]string{{"hostname", "receiver"}},
			`--hostname receiver: hostname: "receiver" is not a valid host name (a fully qualified name such as mail.example.org)`},
		{"several at once", "policyd", [][]string{{"ratelimit", "foo"}, {"set", "policy.greylist"}},
			`--ratelimit foo: policy.ratelimit.limits: "foo" is not KEY:COUNTER=MAX/WINDOW (e.g. sasl_user:recipients=500/1h; KEY is sasl_user, sender or client_ip, COUNTER messages or recipients)` + "\n" +
				`--set policy.greylist: no '=' between the key and the value (` + setHint + ")"},
		{"dkim-key", "milter", [][]string{{"dkim-key", "exemple.org:mail"}},
			`--dkim-key exemple.org:mail: milter.dkim.keys: "exemple.org:mail" is not DOMAIN:SELECTOR:KEYFILE (e.g. example.org:mail:/etc/dkimkeys/example.org/mail.private)`},
		{"dkim-key domain", "milter", [][]string{{"dkim-key", "exemple:mail:/k"}},
			`--dkim-key exemple:mail:/k: milter.dkim.keys[0].domain: "exemple" is not a valid domain (a domain such as example.org, without @ or scheme)`},
		{"dkim-key file", "milter", [][]string{{"dkim-key", "exemple.org:mail:k.pem"}},
			`--dkim-key exemple.org:mail:k.pem: milter.dkim.keys[0].key_file: "k.pem" is not an absolute path (write the full path, starting with /, using letters, digits and / . _ - + @ ~)`},
		{"second listen exposed", "milter", [][]string{{"listen", "unix:/run/m.sock", "inet:[::]:8891"}},
			`--listen inet:[::]:8891: milter.extra_listen[0]: "inet:[::]:8891" can be reached from other hosts and the milter protocol has no authentication: any client could have mail signed for your domains (list the MTAs that may connect in milter.allow_clients, e.g. [192.0.2.25/32], or listen on inet:127.0.0.1:PORT or a unix: socket)`},
		{"on-error", "milter", [][]string{{"on-error", "drop"}}, `--on-error drop: milter.on_error: "drop" is not allowed (one of: tempfail, accept, reject)`},
		{"drain", "milter", [][]string{{"drain", "-1s"}}, `--drain -1s: milter.drain: "-1s" is not a duration (write a duration like 300s, 5m or 24h)`},
		{"verify", "milter", [][]string{{"verify", "yes please"}}, `--verify=yes please: milter.dkim.verify: want true or false (write --verify or --verify=false)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load(t, tt.daemon, "", tt.args...)
			if err == nil || err.Error() != tt.want {
				t.Errorf("%s %q = %v;\nwant %s", tt.daemon, tt.args, err, tt.want)
			}
		})
	}
}

// A flag has no default of its own: its help shows the key's, and that
// default given as the flag's value changes nothing.
func TestShorthandDefaults(t *testing.T) {
	for _, daemon := range []string{"milter", "policyd"} {
		base, err := load(t, daemon, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range Shorthands(daemon) {
			if s.Kind != FlagValue {
				continue
			}
			if s.Key == "hostname" {
				if want := "receiver name in Received-SPF and X-Greylist (hostname, default this host's name)"; s.Usage != want {
					t.Errorf("--hostname help %q; want %q", s.Usage, want)
				}
				continue
			}
			def, ok := DaemonDefault(daemon, s.Key)
			if !ok {
				t.Errorf("%s --%s: no default for %s", daemon, s.Flag, s.Key)
				continue
			}
			shown := def
			if shown == "" {
				shown = "none"
			}
			if !strings.HasSuffix(s.Usage, "("+s.Key+", default "+shown+")") {
				t.Errorf("%s --%s help %q; want it to end with (%s, default %s)", daemon, s.Flag, s.Usage, s.Key, shown)
			}
			if def == "" {
				continue
			}
			c, err := load(t, daemon, "", []string{s.Flag, def})
			if err != nil {
				t.Errorf("%s --%s %s (its default): %v", daemon, s.Flag, def, err)
				continue
			}
			if !reflect.DeepEqual(c, base) {
				t.Errorf("%s --%s %s (its default) changes the configuration", daemon, s.Flag, def)
			}
		}
	}
	want := map[string]string{
		"greylist-delay": "how long greylisting defers a new triplet (policy.greylist.delay, default 5m)",
		"time-budget":    "longest one request may take, all checks together (policy.time_budget, default 10s)",
		"checks":         "checks in order, comma-separated: blacklist,spf,dnsbl,greylist,ratelimit (repeatable; policy.checks, default spf)",
		"socket-group":   "unix socket group (group name or gid) (policy.socket_group, default none)",
	}
	for _, s := range Shorthands("policyd") {
		if w, ok := want[s.Flag]; ok && s.Usage != w {
			t.Errorf("--%s help %q; want %q", s.Flag, s.Usage, w)
		}
	}
}
