package config

import (
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// The daemons' flags are shorthands for keys of postkit.yaml: each turns
// its values into Overrides, which go through the same decode and
// validation as the file (see Override). So a flag has no default of its
// own: its help shows the key's, from Defaults or the daemon's built-in
// document, and a flag left out leaves the key to the file. --set reaches
// every other key. Two flags are the process's, not postkit.yaml's, and
// are not here: -c/--config (the file) and --log-level.
//
// A repeatable flag either replaces the list (its values together are the
// list: --trusted, --checks, --ratelimit…) or adds to it (--dkim-key, as
// it always did with -c). The overrides apply in the order of the table,
// --set last, whatever the order on the command line: --checks before
// --no-spf, and --set can refine what a shorthand set.

// FlagKind is how a shorthand is given on the command line.
type FlagKind int

const (
	// FlagValue takes one value: --greylist-delay 10m.
	FlagValue FlagKind = iota
	// FlagBool is a switch: --verify, --verify=false.
	FlagBool
	// FlagList takes a value and may be repeated: --trusted A --trusted B.
	FlagList
)

// Shorthand is a daemon flag that stands for a key of postkit.yaml.
type Shorthand struct {
	Flag  string // without the dashes: "greylist-delay"
	Key   string // the key it sets: "policy.greylist.delay"; "" for --set
	Kind  FlagKind
	Usage string // help, naming the key and its default

	expand func(values []string) ([]Override, error)
}

// Overrides turns the values the flag was given into overrides: every
// value in command-line order for a FlagList, the value for a FlagValue,
// "true" or "false" for a FlagBool. A value the flag's syntax refuses is an
// *Error naming the flag as typed.
func (s Shorthand) Overrides(values []string) ([]Override, error) {
	return s.expand(values)
}

// FlagOverrides turns the flags given on a command line into overrides, in
// the order of table: given returns the values of a flag given at least
// once (pflag: Changed, then GetStringArray, or the value's String()). All
// refused values are reported together.
func FlagOverrides(table []Shorthand, given func(flag string) ([]string, bool)) ([]Override, error) {
	var out []Override
	var errs Errors
	for _, s := range table {
		vals, ok := given(s.Flag)
		if !ok {
			continue
		}
		ovs, err := s.Overrides(vals)
		if err != nil {
			var es Errors
			var e *Error
			switch {
			case errors.As(err, &es):
				errs = append(errs, es...)
			case errors.As(err, &e):
				errs = append(errs, e)
			default:
				return nil, err
			}
			continue
		}
		out = append(out, ovs...)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return out, nil
}

// Shorthands returns the flags of the daemon named name ("milter" or
// "policyd"), in the order their overrides apply; nil for another name.
func Shorthands(name string) []Shorthand {
	t := table{}
	if c, _, err := LoadDaemon("", name); err == nil {
		t.defaults = c
	}
	switch name {
	case "milter":
		return []Shorthand{
			{Flag: "listen", Key: "milter.listen", Kind: FlagList, expand: milterListen,
				Usage: "listen address, unix:PATH or inet:127.0.0.1:PORT (repeatable: the first is milter.listen, the others milter.extra_listen; default " + t.def("milter.listen") + ")"},
			t.list("allow-client", "milter.allow_clients", "client network that may connect to an inet listener, CIDR; required for an address other hosts can reach"),
			{Flag: "dkim-key", Key: "milter.dkim.keys", Kind: FlagList, expand: dkimKeys,
				Usage: "DKIM signing key DOMAIN:SELECTOR:KEYFILE (repeatable; added to milter.dkim.keys)"},
			t.list("trusted", "trusted_networks", "client network whose mail is outbound, CIDR"),
			t.list("originating", "milter.originating", "milter_macro_daemon_name whose mail is outbound"),
			t.value("socket-owner", "milter.socket_owner", "owner of unix sockets (user name or uid)"),
			t.value("socket-group", "milter.socket_group", "group of unix sockets, e.g. postfix"),
			t.value("socket-mode", "milter.socket_mode", "mode of unix sockets (octal); with --socket-group postfix, only Postfix may connect"),
			t.value("on-error", "milter.on_error", "verdict when a filter fails: tempfail, accept or reject"),
			t.negate("no-scrub", "milter.scrub.enabled", "do not scrub outbound headers"),
			t.value("canonicalization", "milter.dkim.canonicalization", "DKIM header/body canonicalization"),
			t.value("db", "database.path", "SQLite database whose sender-login map says which From addresses an authenticated login may use"),
			t.value("unowned-from", "milter.dkim.unowned_from", "authenticated mail whose From the login may not use: reject or unsigned"),
			t.flag("verify", "milter.dkim.verify", "verify inbound DKIM signatures and add Authentication-Results"),
			t.flag("spam", "milter.spam.enabled", "score inbound mail for spam and add X-Spam-* fields"),
			t.flag("dmarc", "milter.dmarc.enabled", "evaluate DMARC for inbound mail (with --verify for DKIM) and apply milter.dmarc.action"),
			t.value("authserv-id", "milter.dkim.authserv_id", "authserv-id in Authentication-Results"),
			t.list("dns-server", "dns.servers", "DNS server HOST:PORT for DKIM key lookups"),
			t.value("drain", "milter.drain", "how long SIGTERM waits for messages in flight"),
			t.value("metrics", "milter.metrics", "HOST:PORT serving Prometheus metrics on /metrics; empty: none"),
			t.list("metrics-allow-client", "milter.metrics_allow_clients", "network that may fetch the metrics, CIDR; required for a metrics address other hosts can reach"),
			t.value("log-level", "log.level", "log level: debug, info, warn or error"),
			t.value("log-format", "log.format", "log line format: text or json"),
			t.value("log-target", "log.target", "where lines go: stderr or syslog (facility log.syslog_facility, socket log.syslog_socket)"),
			setFlag,
		}
	case "policyd":
		return []Shorthand{
			t.value("listen", "policy.listen", "listen address: unix:/path or inet:host:port"),
			t.list("allow-client", "policy.allow_clients", "client network that may connect to an inet listener, CIDR; required for an address other hosts can reach"),
			t.list("metrics-allow-client", "policy.metrics_allow_clients", "network that may fetch the metrics, CIDR; required for a metrics address other hosts can reach"),
			{Flag: "checks", Key: "policy.checks", Kind: FlagList, expand: replaceList("checks", "policy.checks", commaSplit),
				Usage: "checks in order, comma-separated: blacklist,spf,dnsbl,greylist,ratelimit (repeatable; policy.checks, default " + t.def("policy.checks") + ")"},
			{Flag: "no-spf", Key: "policy.checks", Kind: FlagBool, expand: removeItem("no-spf", "policy.checks", "spf"),
				Usage: "disable the SPF check (removes spf from policy.checks)"},
			t.list("dns", "dns.servers", "DNS server HOST:PORT"),
			t.value("dns-timeout", "dns.timeout", "timeout of one DNS query to one server"),
			t.value("time-budget", "policy.time_budget", "longest one request may take, all checks together"),
			t.value("spf-mode", "policy.spf.mode", "SPF mode: enforce (reject fail) or header (only add Received-SPF)"),
			t.choice("spf-temperror-defer", "policy.spf.temperror", "defer", "accept", "answer SPF temperror with DEFER_IF_PERMIT 4.7.24 in enforce mode"),
			t.choice("spf-permerror-reject", "policy.spf.permerror", "reject", "accept", "answer SPF permerror with 550 5.7.24 in enforce mode"),
			t.value("hostname", "hostname", "receiver name in Received-SPF and X-Greylist"),
			t.list("trusted", "trusted_networks", "trusted client network, CIDR"),
			t.value("db", "database.path", "SQLite store with the blacklists"),
			t.value("state", "policy.state_file", "greylisting and rate-limit state file"),
			t.list("dnsbl-site", "policy.dnsbl.sites", "DNSBL site, e.g. zen.spamhaus.org=127.0.0.[2..11]*3"),
			t.value("dnsbl-threshold", "policy.dnsbl.threshold", "refuse clients whose summed DNSBL weight reaches this"),
			t.value("greylist-delay", "policy.greylist.delay", "how long greylisting defers a new triplet"),
			t.value("greylist-text", "policy.greylist.text", "text of the greylisting deferral; %s: seconds left, %r: recipient domain"),
			{Flag: "ratelimit", Key: "policy.ratelimit.limits", Kind: FlagList, expand: rateLimits,
				Usage: "rate limit KEY:COUNTER=MAX/WINDOW, e.g. sasl_user:recipients=500/1h (repeatable; the values are policy.ratelimit.limits)"},
			t.value("metrics", "policy.metrics", "HOST:PORT serving Prometheus metrics on /metrics; empty: none"),
			t.value("socket-owner", "policy.socket_owner", "unix socket owner (user name or uid)"),
			t.value("socket-group", "policy.socket_group", "unix socket group (group name or gid)"),
			t.value("socket-mode", "policy.socket_mode", "unix socket mode, octal"),
			t.value("log-level", "log.level", "log level: debug, info, warn or error"),
			t.value("log-format", "log.format", "log line format: text or json"),
			t.value("log-target", "log.target", "where lines go: stderr or syslog (facility log.syslog_facility, socket log.syslog_socket)"),
			setFlag,
		}
	}
	return nil
}

// setFlag is --set KEY=VALUE, for every key.
var setFlag = Shorthand{Flag: "set", Kind: FlagList,
	Usage: "set a key of postkit.yaml: KEY=VALUE, KEY+=VALUE (append to a list) or KEY-=VALUE (remove from it), VALUE written as in the file, e.g. policy.greylist.delay=10m or 'policy.checks=[spf, dnsbl]' (repeatable; applied after the other flags)",
	expand: func(vals []string) ([]Override, error) {
		var out []Override
		var errs Errors
		for _, v := range vals {
			o, err := ParseSet(v)
			var e *Error
			if errors.As(err, &e) {
				errs = append(errs, e)
				continue
			}
			out = append(out, o)
		}
		if len(errs) > 0 {
			return nil, errs
		}
		return out, nil
	}}

// table builds the entries of Shorthands, with the daemon's defaults.
type table struct{ defaults *Config }

// def renders key's default for the help.
func (t table) def(key string) string {
	if key == "hostname" {
		return "this host's name" // os.Hostname, as it is where the help is read
	}
	var s string
	if t.defaults != nil {
		if v, ok := lookup(reflect.ValueOf(t.defaults).Elem(), key); ok {
			s = render(v)
		}
	}
	if s == "" {
		return "none"
	}
	return s
}

func (t table) value(flag, key, usage string) Shorthand {
	return Shorthand{Flag: flag, Key: key, Kind: FlagValue, Usage: usage + " (" + key + ", default " + t.def(key) + ")",
		expand: func(vals []string) ([]Override, error) {
			var out []Override
			for _, v := range vals {
				out = append(out, literal(flag, key, Set, v))
			}
			return out, nil
		}}
}

func (t table) list(flag, key, usage string) Shorthand {
	return Shorthand{Flag: flag, Key: key, Kind: FlagList, Usage: usage + " (repeatable; " + key + ", default " + t.def(key) + ")",
		expand: replaceList(flag, key, nil)}
}

// flag is a switch for a boolean key.
func (t table) flag(flag, key, usage string) Shorthand {
	return t.choice(flag, key, "true", "false", usage)
}

// negate is a switch that turns a boolean key off.
func (t table) negate(flag, key, usage string) Shorthand {
	s := t.choice(flag, key, "false", "true", usage)
	s.Usage = usage + " (" + key + ": false)"
	return s
}

// choice is a switch between two values of a key: on when given.
func (t table) choice(flag, key, on, off, usage string) Shorthand {
	return Shorthand{Flag: flag, Key: key, Kind: FlagBool, Usage: usage + " (" + key + ": " + on + ", default " + t.def(key) + ")",
		expand: func(vals []string) ([]Override, error) {
			var out []Override
			for _, v := range vals {
				b, err := strconv.ParseBool(v)
				if err != nil {
					return nil, &Error{File: "--" + flag + "=" + v, Key: key, Msg: "want true or false", Hint: "write --" + flag + " or --" + flag + "=false"}
				}
				val, src := on, "--"+flag
				if !b {
					val, src = off, "--"+flag+"=false"
				}
				out = append(out, literal(src, key, Set, val))
			}
			return out, nil
		}}
}

// literal is a flag's value for key: text, never YAML.
func literal(src, key string, op Op, v string) Override {
	if !strings.HasPrefix(src, "--") {
		src = "--" + src + " " + v
	}
	return Override{Key: key, Op: op, Value: v, Source: src, node: scalarFor(fieldType(key), v)}
}

// replaceList makes a repeatable flag whose values are the list: the first
// replaces it, the next ones are appended. split, when set, makes several
// items of one value.
func replaceList(flag, key string, split func(string) []string) func([]string) ([]Override, error) {
	elem := fieldType(key + "[0]")
	return func(vals []string) ([]Override, error) {
		var out []Override
		for i, v := range vals {
			items := []string{v}
			if split != nil {
				items = split(v)
			}
			seq := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
			for _, it := range items {
				seq.Content = append(seq.Content, scalarFor(elem, it))
			}
			op := Append
			if i == 0 {
				op = Set
			}
			out = append(out, Override{Key: key, Op: op, Value: "[" + strings.Join(items, ", ") + "]", Source: "--" + flag + " " + v, node: seq})
		}
		return out, nil
	}
}

func commaSplit(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// removeItem is a switch that removes an item from a list.
func removeItem(flag, key, item string) func([]string) ([]Override, error) {
	return func(vals []string) ([]Override, error) {
		var out []Override
		for _, v := range vals {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return nil, &Error{File: "--" + flag + "=" + v, Key: key, Msg: "want true or false", Hint: "write --" + flag}
			}
			if b {
				out = append(out, literal("--"+flag, key, Remove, item))
			}
		}
		return out, nil
	}
}

// milterListen: the first --listen is milter.listen, the others are
// milter.extra_listen.
func milterListen(vals []string) ([]Override, error) {
	if len(vals) == 0 {
		return nil, nil
	}
	out := []Override{literal("listen", "milter.listen", Set, vals[0])}
	more, _ := replaceList("listen", "milter.extra_listen", nil)(vals[1:])
	return append(out, more...), nil
}

// mapping builds a flow mapping of literal values for the item of key.
func mapping(key string, kv ...string) *yaml.Node {
	m := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Style: yaml.FlowStyle}
	for i := 0; i+1 < len(kv); i += 2 {
		m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: kv[i]},
			scalarFor(fieldType(key+"[0]."+kv[i]), kv[i+1]))
	}
	return m
}

func flow(n *yaml.Node) string {
	b, err := yaml.Marshal(n)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// dkimKeys: each --dkim-key DOMAIN:SELECTOR:KEYFILE adds a key.
func dkimKeys(vals []string) ([]Override, error) {
	const key = "milter.dkim.keys"
	var out []Override
	var errs Errors
	for _, v := range vals {
		src := "--dkim-key " + v
		parts := strings.SplitN(v, ":", 3)
		if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
			errs = append(errs, &Error{File: src, Key: key, Msg: fmt.Sprintf("%q is not DOMAIN:SELECTOR:KEYFILE", v),
				Hint: "e.g. example.org:mail:/etc/dkimkeys/example.org/mail.private"})
			continue
		}
		n := mapping(key, "domain", parts[0], "selector", parts[1], "key_file", parts[2])
		out = append(out, Override{Key: key, Op: Append, Value: flow(n), Source: src, node: n})
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return out, nil
}

// rateLimits: the --ratelimit values, KEY:COUNTER=MAX/WINDOW, are the
// limits. KEY and COUNTER take the policy daemon's names too
// (sasl_username, client_address); WINDOW is a duration, or s, m, h, d, or
// a number of days such as 7d. Each part is then checked as the file's is.
func rateLimits(vals []string) ([]Override, error) {
	const key = "policy.ratelimit.limits"
	var out []Override
	var errs Errors
	for i, v := range vals {
		src := "--ratelimit " + v
		k, rest, ok1 := strings.Cut(strings.TrimSpace(v), ":")
		counter, rest, ok2 := strings.Cut(rest, "=")
		max, window, ok3 := strings.Cut(rest, "/")
		if !ok1 || !ok2 || !ok3 {
			errs = append(errs, &Error{File: src, Key: key, Msg: fmt.Sprintf("%q is not KEY:COUNTER=MAX/WINDOW", v),
				Hint: "e.g. sasl_user:recipients=500/1h; KEY is sasl_user, sender or client_ip, COUNTER messages or recipients"})
			continue
		}
		switch strings.ToLower(k) {
		case "sasl_username", "sasl_user", "sasl":
			k = "sasl_user"
		case "client_address", "client_ip", "client":
			k = "client_ip"
		case "sender":
			k = "sender"
		}
		n := mapping(key, "key", k, "count", strings.ToLower(counter), "max", max, "window", windowDuration(window))
		op := Append
		if i == 0 {
			op = Set
			n = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Style: yaml.FlowStyle, Content: []*yaml.Node{n}}
		}
		out = append(out, Override{Key: key, Op: op, Value: flow(n), Source: src, node: n})
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return out, nil
}

// windowDuration writes a rate-limit window of the flag's syntax as a
// duration; what it does not know is left for the decode to refuse.
func windowDuration(s string) string {
	var d time.Duration
	switch s {
	case "second", "s":
		d = time.Second
	case "minute", "min", "m":
		d = time.Minute
	case "hour", "h":
		d = time.Hour
	case "day", "d":
		d = 24 * time.Hour
	default:
		days, ok := strings.CutSuffix(s, "d")
		n, err := strconv.Atoi(days)
		if !ok || err != nil || n < 1 {
			return s
		}
		d = time.Duration(n) * 24 * time.Hour
	}
	return fmtDuration(d)
}
