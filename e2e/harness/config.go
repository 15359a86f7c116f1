package harness

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// baseConfig is the sandbox's postkit.yaml as a tree of maps: every path under
// the root, every listener on 127.0.0.1, outbound mail to the sink. Keys not
// set here keep config.Defaults.
func (s *Stack) baseConfig() map[string]any {
	p := s.Paths
	domains := make([]any, len(s.Domains))
	for i, d := range s.Domains {
		domains[i] = d
	}
	return map[string]any{
		"hostname": s.Hostname,
		"domains":  domains,
		// Only the host itself is trusted: clients bound to 127.0.0.2 are the
		// "outside world".
		"trusted_networks":   []any{"127.0.0.1/32"},
		"message_size_limit": s.SizeLimit,
		"inet_protocols":     "ipv4",
		"tls": map[string]any{
			"cert":           p.Cert,
			"key":            p.Key,
			"inbound_level":  "may",
			"outbound_level": "may",
		},
		"database": s.databaseConfig(),
		"mailbox": map[string]any{"base_dir": p.MailBase, "uid": s.UID, "gid": s.GID, "user": s.vmailUser().Name,
			"quota": map[string]any{"status": "unix:" + p.QuotaStatus}},
		"listeners": map[string]any{
			"smtp":        s.Addr(s.Ports.SMTP),
			"submission":  s.Addr(s.Ports.Submission),
			"submissions": s.Addr(s.Ports.Submissions),
			"imap":        s.Addr(s.Ports.IMAP),
			"imaps":       s.Addr(s.Ports.IMAPS),
			"lmtp":        p.LMTP,
			"auth":        p.Auth,
		},
		"paths": map[string]any{
			"postfix_config": p.PostfixConfig,
			"postfix_queue":  p.PostfixQueue,
			"postfix_data":   p.PostfixData,
			"dovecot_config": p.DovecotConfig,
			"dovecot_base":   p.DovecotBase,
			"dovecot_state":  p.DovecotState,
			"postfix_log":    p.PostfixLog,
			"dovecot_log":    p.DovecotLog,
			"postkit_run":    p.PostkitRun,
			"systemd_units":  p.Units,
			// What the services generated for Dovecot run: this sandbox's
			// binary.
			"postkit": s.PostkitBin,
		},
		"postfix": map[string]any{
			"chroot":              false,
			"relayhost":           "[127.0.0.1]:" + portOf(s.Sink.Addr()),
			"disable_dns_lookups": true,
		},
		// The sandbox's daemons run as root: so does Dovecot's service
		// that learns from moves into and out of the spam folder, which
		// writes the milter's Bayes store.
		"milter": map[string]any{"enabled": false, "spam": map[string]any{"learn": map[string]any{"user": "root"}}},
		"policy": map[string]any{"enabled": false},
		"sieve": map[string]any{"enabled": true, "dir": p.SieveDir, "spam_folder": "Spam",
			"managesieve": s.Addr(s.Ports.ManageSieve)},
		"dns": map[string]any{"servers": []any{s.DNS.Addr()}, "timeout": "2s"},
	}
}

// databaseConfig is the SQLite file of the sandbox, or the PostgreSQL
// database of Options.PostgresDSN.
func (s *Stack) databaseConfig() map[string]any {
	if s.Opts.PostgresDSN == "" {
		return map[string]any{"path": s.Paths.Database}
	}
	db := map[string]any{"driver": "postgresql", "dsn": s.Opts.PostgresDSN}
	if s.Opts.PostgresPasswordFile != "" {
		db["password_file"] = s.Opts.PostgresPasswordFile
	}
	return db
}

func portOf(hostport string) string {
	i := strings.LastIndexByte(hostport, ':')
	return hostport[i+1:]
}

// writeConfig writes postkit.yaml: baseConfig with Options.Set applied.
func (s *Stack) writeConfig() error {
	doc := s.baseConfig()
	keys := make([]string, 0, len(s.Opts.Set))
	for k := range s.Opts.Set {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := SetKey(doc, k, s.expand(s.Opts.Set[k])); err != nil {
			return err
		}
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		return fmt.Errorf("harness: render postkit.yaml: %w", err)
	}
	hdr := "# postkit.yaml of a sandboxed stack, written by the end-to-end harness.\n"
	return os.WriteFile(s.Paths.Config, append([]byte(hdr), out...), 0o644)
}

// expand replaces {root}, {dns} and {sink} in strings, also inside lists.
func (s *Stack) expand(v any) any {
	switch x := v.(type) {
	case string:
		r := strings.NewReplacer("{root}", s.Root, "{dns}", s.DNS.Addr(), "{sink}", s.Sink.Addr())
		return r.Replace(x)
	case []string:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = s.expand(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = s.expand(e)
		}
		return out
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = s.expand(e)
		}
		return out
	}
	return v
}

// SetKey sets a dotted key ("milter.dkim.sign") in a tree of maps, creating
// intermediate maps. A nil value deletes the key.
func SetKey(doc map[string]any, key string, v any) error {
	parts := strings.Split(key, ".")
	m := doc
	for i, p := range parts[:len(parts)-1] {
		if p == "" {
			return fmt.Errorf("harness: key %q has an empty part", key)
		}
		next, ok := m[p]
		if !ok {
			n := map[string]any{}
			m[p] = n
			m = n
			continue
		}
		n, ok := next.(map[string]any)
		if !ok {
			return fmt.Errorf("harness: key %q: %s is a value, not a section", key, strings.Join(parts[:i+1], "."))
		}
		m = n
	}
	last := parts[len(parts)-1]
	if last == "" {
		return fmt.Errorf("harness: key %q has an empty part", key)
	}
	if v == nil {
		delete(m, last)
		return nil
	}
	m[last] = v
	return nil
}
