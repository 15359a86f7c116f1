package config

import (
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"strconv"

	"github.com/postkit/postkit/internal/daemon"
)

// The daemons also run without postkit.yaml, from flags alone (`postkit
// milter --listen … --dkim-key …`, `postkit policyd --listen …`). They then
// start from a built-in document of their own instead of a file, and the
// flags' overrides apply to it as they would to the file: every default
// still comes from Defaults, the document says only where running without
// the rest of the stack differs, and hostname and domains are not required
// (hostname is the host's name).

// builtin are the daemons' documents.
var builtin = map[string]string{
	// The sockets keep the daemon's own group, so that it runs unprivileged;
	// without the database there is no sender-login map and no domains of
	// ours, so own_from is off; DKIM verification and spam scoring are
	// asked for (--verify, --spam, --dmarc).
	"milter": `
database: {path: ""}
milter:
  socket_group: ""
  own_from: "off"
  dkim: {verify: false}
  spam: {enabled: false}
  dmarc: {enabled: false}
`,
	// The SPF check alone, which needs nothing but DNS; the blacklists, when
	// listed, are checked by the daemon, there being no Postfix maps; no
	// domains of ours to guard.
	"policyd": `
policy:
  socket_group: ""
  checks: [spf]
  blacklist: {owner: policy}
  spf: {own_domains: "off"}
`,
}

// BuiltinName is the name errors give a daemon's built-in document, e.g.
// "postkit policyd (no -c)".
func BuiltinName(name string) string { return "postkit " + name + " (no -c)" }

// LoadDaemon loads the configuration of the daemon named name ("milter" or
// "policyd"): postkit.yaml at path with the overrides applied, as Load does;
// or, when path is "", the daemon's built-in document with the overrides
// applied (File.Builtin then reports true). Either is validated whole.
func LoadDaemon(path, name string, overrides ...Override) (*Config, *File, error) {
	doc, ok := builtin[name]
	if !ok {
		return nil, nil, fmt.Errorf("config: no daemon named %q: want milter or policyd", name)
	}
	if path != "" {
		return Load(path, overrides...)
	}
	f := &File{Name: BuiltinName(name), pos: map[string]Pos{}, builtin: true}
	return parse(f, []byte(doc), overrides)
}

// DaemonDefault is the value a key has for the daemon named name when
// neither postkit.yaml nor a flag sets it: its built-in document's value,
// else Default's. It is what a flag's help says.
func DaemonDefault(name, key string) (string, bool) {
	c, _, err := LoadDaemon("", name)
	if err != nil {
		return Default(key)
	}
	v, ok := lookup(reflect.ValueOf(c).Elem(), key)
	if !ok {
		return "", false
	}
	return render(v), true
}

// DaemonListeners are the milter's listen addresses (listen, then extra_listen)
// or the policy daemon's, as daemon.Run opens them.
func (c *Config) DaemonListeners(name string) ([]daemon.Listener, error) {
	var addrs []string
	var sock daemon.SocketOpts
	var allow []CIDR
	var hint string
	switch name {
	case "milter":
		m := c.Milter
		addrs = append([]string{m.Listen}, m.ExtraListen...)
		sock = daemon.SocketOpts{Owner: m.SocketOwner, Group: m.SocketGroup}
		allow, hint = m.AllowClients, "milter.allow_clients in postkit.yaml, --allow-client"
		if err := socketMode(&sock, m.SocketMode, "milter.socket_mode"); err != nil {
			return nil, err
		}
	case "policyd":
		p := c.Policy
		addrs = []string{p.Listen}
		sock = daemon.SocketOpts{Owner: p.SocketOwner, Group: p.SocketGroup}
		allow, hint = p.AllowClients, "policy.allow_clients in postkit.yaml, --allow-client"
		if err := socketMode(&sock, p.SocketMode, "policy.socket_mode"); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("config: no daemon named %q: want milter or policyd", name)
	}
	prefixes, err := Prefixes(allow)
	if err != nil {
		return nil, err
	}
	var out []daemon.Listener
	for i, s := range addrs {
		if s == "" && i == 0 {
			key := map[string]string{"milter": "milter.listen", "policyd": "policy.listen"}[name]
			return nil, fmt.Errorf("config: %s is empty: set unix:/path or inet:127.0.0.1:PORT", key)
		}
		a, err := daemon.ParseAddr(s)
		if err != nil {
			return nil, err
		}
		out = append(out, daemon.Listener{Addr: a, Socket: sock, Allow: prefixes, AllowHint: hint})
	}
	return out, nil
}

// MetricsListener is the policy daemon's metrics endpoint (policy.metrics;
// a bare port listens on 127.0.0.1); ok is false when there is none.
func (c *Config) MetricsListener() (l daemon.Listener, ok bool, err error) {
	return c.DaemonMetrics("policyd")
}

// DaemonMetrics is the metrics endpoint of the daemon named name:
// milter.metrics or policy.metrics (a bare port listens on 127.0.0.1); ok
// is false when there is none.
func (c *Config) DaemonMetrics(name string) (l daemon.Listener, ok bool, err error) {
	addr, cidrs, key := c.Policy.Metrics, c.Policy.MetricsAllowClients, "policy"
	hint := "policy.metrics_allow_clients in postkit.yaml, --metrics-allow-client"
	switch name {
	case "policyd":
	case "milter":
		addr, cidrs, key = c.Milter.Metrics, c.Milter.MetricsAllowClients, "milter"
		hint = "milter.metrics_allow_clients in postkit.yaml, --metrics-allow-client"
	default:
		return l, false, fmt.Errorf("config: no daemon named %q: want milter or policyd", name)
	}
	if addr == "" {
		return l, false, nil
	}
	host, port, err := SplitListen(addr)
	if err != nil {
		return l, false, fmt.Errorf("config: %s.metrics %q: %w; write host:port such as 127.0.0.1:9187", key, addr, err)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	allow, err := Prefixes(cidrs)
	if err != nil {
		return l, false, err
	}
	return daemon.Listener{
		Addr:      daemon.Addr{Network: "tcp", Address: net.JoinHostPort(host, strconv.Itoa(port))},
		Allow:     allow,
		AllowHint: hint,
	}, true, nil
}

// LogOptions are the daemon's log settings (the log section) for
// daemon.OpenLogger; name is "milter" or "policyd", the syslog tag's second
// half.
func (c *Config) LogOptions(name string) (daemon.LogOptions, error) {
	lv, err := daemon.ParseLevel(c.Log.Level)
	if err != nil {
		return daemon.LogOptions{}, fmt.Errorf("config: log.level: %w", err)
	}
	o := daemon.LogOptions{Level: lv, Format: c.Log.Format, Syslog: c.Log.Target == "syslog",
		Socket: c.Log.SyslogSocket, Tag: "postkit/" + name}
	if o.Syslog {
		if o.Facility, err = daemon.ParseFacility(c.Log.SyslogFacility); err != nil {
			return o, fmt.Errorf("config: log.syslog_facility: %w", err)
		}
	}
	return o, nil
}

// LogRestart are the log settings a running daemon keeps until restarted,
// for daemon.Plan.Restart.
func (c *Config) LogRestart() map[string]string {
	l := c.Log
	return map[string]string{"log.level": l.Level, "log.format": l.Format, "log.target": l.Target,
		"log.syslog_facility": l.SyslogFacility, "log.syslog_socket": l.SyslogSocket}
}

// Prefixes parses networks that Validate has passed.
func Prefixes(cidrs []CIDR) ([]netip.Prefix, error) {
	out := []netip.Prefix{}
	for _, n := range cidrs {
		p, err := ParseCIDR(string(n))
		if err != nil {
			return nil, fmt.Errorf("config: %q: %w", n, err)
		}
		out = append(out, p)
	}
	return out, nil
}

func socketMode(o *daemon.SocketOpts, mode, key string) error {
	if mode == "" {
		return nil
	}
	m, err := daemon.ParseMode(mode)
	if err != nil {
		return fmt.Errorf("config: %s: %w", key, err)
	}
	o.Mode = m
	return nil
}
