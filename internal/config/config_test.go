package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
)

const minimal = "hostname: mail.exemple.fr\ndomains: [exemple.fr]\n"

func TestParseMinimal(t *testing.T) {
	cfg, _, err := Parse("m.yaml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Origin != "mail.exemple.fr" || cfg.Postmaster != "postmaster@exemple.fr" || cfg.Milter.DKIM.AuthservID != "mail.exemple.fr" {
		t.Errorf("derived values: origin %q postmaster %q authserv %q", cfg.Origin, cfg.Postmaster, cfg.Milter.DKIM.AuthservID)
	}
	if cfg.MessageSizeLimit != 31457280 || cfg.Mailbox.UID != 3000 {
		t.Errorf("defaults not applied: %d %d", cfg.MessageSizeLimit, cfg.Mailbox.UID)
	}
}

// Every malformed file gets a message naming the position and what to do.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string // substrings of the error
	}{
		{"empty", "", []string{"x.yaml: file is empty"}},
		{"not yaml", "hostname: [a\n", []string{"x.yaml:", "not valid YAML"}},
		{"unknown key", minimal + "trusted_netwrks: []\n", []string{"x.yaml:3:1:", `unknown key "trusted_netwrks"`, `did you mean "trusted_networks"?`}},
		{"unknown nested key", minimal + "tls:\n  certfile: /x\n", []string{"x.yaml:4:3:", "tls.certfile", "unknown key"}},
		{"duplicate key", minimal + "hostname: a.b.c\n", []string{"x.yaml:3:1:", "given twice"}},
		{"wrong type int", minimal + "message_size_limit: 30M\n", []string{"x.yaml:3:21:", "want a whole number"}},
		{"wrong type bool", minimal + "sieve:\n  enabled: \"yes\"\n", []string{"x.yaml:4:12:", "want true or false"}},
		{"list for string", minimal + "origin: [a]\n", []string{"x.yaml:3:9:", "want a string, got a list"}},
		{"mapping for list", minimal + "trusted_networks: {a: b}\n", []string{"x.yaml:3:19:", "want a list"}},
		{"bad duration", minimal + "policy:\n  time_budget: 10 seconds\n", []string{"x.yaml:4:16:", "not a duration"}},
		{"missing hostname", "domains: [exemple.fr]\n", []string{"hostname: is required"}},
		{"bad hostname", "hostname: mail_x\ndomains: [exemple.fr]\n", []string{"x.yaml:1:11:", "not a valid host name"}},
		{"bad domain", "hostname: mail.exemple.fr\ndomains: [exemple.fr, \"http://x.org\"]\n", []string{"x.yaml:2:23:", "domains[1]", "not a valid domain"}},
		{"duplicate domain", "hostname: mail.exemple.fr\ndomains: [exemple.fr, exemple.fr]\n", []string{"listed twice"}},
		{"hostname is a mail domain", "hostname: exemple.fr\ndomains: [exemple.fr]\n", []string{"hostname", "also a mail domain"}},
		{"bad cidr", minimal + "trusted_networks: [10.0.0.0/33]\n", []string{"x.yaml:3:20:", "trusted_networks[0]"}},
		{"host bits", minimal + "trusted_networks: [10.0.0.1/8]\n", []string{"did you mean 10.0.0.0/8?"}},
		{"bad port", minimal + "listeners:\n  smtp: \"70000\"\n", []string{"x.yaml:4:9:", "listeners.smtp", "out of range"}},
		{"bad listen host", minimal + "listeners:\n  imap: localhost:143\n", []string{"listeners.imap", "must be an IP address"}},
		{"relative path", minimal + "database:\n  path: postfix.sqlite\n", []string{"x.yaml:4:9:", "database.path", "not an absolute path"}},
		{"bad enum", minimal + "tls:\n  inbound_level: must\n", []string{"x.yaml:4:18:", "one of: may, encrypt"}},
		{"bad milter addr", minimal + "milter:\n  listen: /run/m.sock\n", []string{"milter.listen", "must start with unix: or inet:"}},
		{"socket outside chroot", minimal + "milter:\n  enabled: true\n  listen: unix:/run/postkit/m.sock\n", []string{"milter.listen", "outside the Postfix chroot"}},
		{"lmtp outside chroot", minimal + "listeners:\n  lmtp: /run/dovecot/lmtp\n", []string{"listeners.lmtp", "outside the Postfix chroot"}},
		{"bad regexp", minimal + "milter:\n  scrub:\n    rules:\n      - {header: X-Mailer, match: \"(\"}\n", []string{"milter.scrub.rules[0].match", "bad regular expression"}},
		{"scrub rule without header", minimal + "milter:\n  scrub:\n    rules:\n      - {action: delete}\n", []string{"milter.scrub.rules[0].header: is required"}},
		{"bad selector", minimal + "milter:\n  dkim:\n    keys:\n      - {domain: exemple.fr, selector: \"a b\"}\n", []string{"milter.dkim.keys[0].selector", "not a valid selector"}},
		{"bad socket mode", minimal + "policy:\n  socket_mode: \"999\"\n", []string{"policy.socket_mode", "octal"}},
		{"bad check name", minimal + "policy:\n  checks: [spf, virus]\n", []string{"policy.checks[1]", `"virus" is not allowed`}},
		{"bad layout", minimal + "mailbox:\n  layout: mail\n", []string{"mailbox.layout", "every user would share"}},
		{"check listed twice", minimal + "policy:\n  checks: [spf, blacklist, spf]\n", []string{"policy.checks[2]", "listed twice"}},
		{"dnsbl without sites", minimal + "policy:\n  checks: [dnsbl]\n", []string{"policy.dnsbl.sites", "needs at least one site"}},
		{"dnsbl threshold", minimal + "policy:\n  checks: [dnsbl]\n  dnsbl:\n    sites: [bl.example]\n    threshold: 0\n", []string{"policy.dnsbl.threshold", "at least 1"}},
		{"greylist windows", minimal + "policy:\n  checks: [greylist]\n  greylist:\n    delay: 1h\n    retry_window: 30m\n", []string{"policy.greylist", "want 0 < delay (1h0m0s) < retry_window (30m0s)"}},
		{"greylist auto_allow", minimal + "policy:\n  checks: [greylist]\n  greylist:\n    auto_allow: -1\n", []string{"policy.greylist.auto_allow", "must not be negative"}},
		{"ratelimit without limits", minimal + "policy:\n  checks: [ratelimit]\n", []string{"policy.ratelimit.limits", "needs at least one limit"}},
		{"ratelimit zero max", minimal + "policy:\n  ratelimit:\n    limits:\n      - {key: sasl_user, max: 0, window: 1h}\n", []string{"policy.ratelimit.limits[0].max"}},
		{"ratelimit short window", minimal + "policy:\n  ratelimit:\n    limits:\n      - {key: sasl_user, max: 5, window: 10ms}\n", []string{"policy.ratelimit.limits[0].window", "must be whole seconds from 1s to 366 days (8784h), not 10ms"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Parse("x.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatalf("Parse(%q) = nil error; want one containing %q", tt.yaml, tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Parse error = %q; want it to contain %q", err, w)
				}
			}
		})
	}
}

func TestOpenRelay(t *testing.T) {
	var all4 []string // 256 separate /8 networks: all of IPv4 (less loopback: 4278190080 addresses)
	for i := 0; i < 256; i++ {
		all4 = append(all4, fmt.Sprintf("%d.0.0.0/8", i))
	}
	for _, tt := range []struct {
		nets string
		open bool
		want string // substring of the error
	}{
		{"[127.0.0.0/8, 192.168.0.0/16]", false, ""},
		// Loopback is not counted: no other host connects from it.
		{"[127.0.0.0/8, \"::1\", 10.0.0.0/8, \"::ffff:127.0.0.1\"]", false, ""},
		{"[127.0.0.0/8, 10.0.0.0/8, 172.16.0.0/12]", true, "cover 17825792 IPv4 addresses"},
		{"[126.0.0.0/7]", true, "126.0.0.0/7 makes"}, // too large alone, as before
		{"[0.0.0.0/0]", true, "trusted_networks[0]: 0.0.0.0/0 makes this server an open relay"},
		{"[127.0.0.0/8, 0.0.0.0/1]", true, "trusted_networks[1]: 0.0.0.0/1"},
		{"[\"::/0\"]", true, "::/0 makes"},
		{"[\"2001:db8::/32\"]", false, ""},
		// The union is judged, not each entry.
		{"[" + strings.Join(all4, ", ") + "]", true, "x.yaml:3:19: trusted_networks: together these networks cover 4278190080 IPv4 addresses, more than a /8"},
		{"[10.0.0.0/8, 11.0.0.0/8]", true, "cover 33554432 IPv4 addresses"},
		{"[10.0.0.0/9, 10.128.0.0/9]", false, ""},                      // exactly a /8
		{"[10.0.0.0/8, 10.1.0.0/16, 10.0.0.0/8, 10.2.3.4]", false, ""}, // overlaps count once
		{"[10.0.0.0/8, 11.0.0.0/9]", true, "cover 25165824 IPv4"},
		{"[\"2001::/17\", \"2001:8000::/17\"]", false, ""}, // exactly a /16
		{"[\"2001::/17\", \"2001:8000::/17\", \"2002::/17\"]", true, "IPv6 addresses, more than a /16"},
		// IPv4-mapped IPv6 counts as IPv4.
		{"[\"::ffff:0.0.0.0/96\"]", true, "trusted_networks[0]: ::ffff:0.0.0.0/96 covers 4278190080 IPv4 addresses"},
		{"[\"::ffff:10.0.0.0/104\"]", false, ""},
		{"[\"::ffff:10.0.0.0/104\", 11.0.0.0/8]", true, "cover 33554432 IPv4"},
		{"[\"::ffff:10.0.0.0/104\", 10.0.0.0/8]", false, ""},
		{"[\"::/80\"]", true, "::/80 covers 4278190080 IPv4"}, // holds ::ffff:0:0/96
		{"[]", false, ""},
	} {
		cfg, f, err := Parse("x.yaml", []byte(minimal+"trusted_networks: "+tt.nets+"\n"))
		if err != nil {
			t.Fatal(err)
		}
		err = cfg.OpenRelay(f)
		if (err != nil) != tt.open || (err != nil && !errors.Is(err, ErrOpenRelay)) {
			t.Errorf("OpenRelay(%.60s) = %v; want open=%v", tt.nets, err, tt.open)
		}
		if err != nil && (!strings.Contains(err.Error(), "x.yaml:3:") || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), "--i-know-this-is-an-open-relay")) {
			t.Errorf("OpenRelay(%.60s) error %q; want a position, %q and the way out", tt.nets, err, tt.want)
		}
	}
}

// examples/postkit.yaml must be exactly what `postkit config example` prints,
// so it lists every key with its current default.
func TestExampleInStep(t *testing.T) {
	got := Example()
	if _, _, err := Parse("example", got); err != nil {
		t.Fatalf("the example does not parse: %v", err)
	}
	want, err := os.ReadFile("../../examples/postkit.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("examples/postkit.yaml is stale: run `go run ./cmd/postkit config example > examples/postkit.yaml`")
	}
	if _, _, err := Load("../../examples/minimal.yaml"); err != nil {
		t.Errorf("examples/minimal.yaml: %v", err)
	}
}

func TestSchemaCoversEveryKey(t *testing.T) {
	s := Schema()
	props := s["properties"].(map[string]any)
	for _, k := range []string{"hostname", "tls", "milter", "policy", "sieve", "dns"} {
		if _, ok := props[k]; !ok {
			t.Errorf("schema lacks %q", k)
		}
	}
	milter := props["milter"].(map[string]any)["properties"].(map[string]any)
	if milter["default_action"].(map[string]any)["default"] != "tempfail" {
		t.Errorf("schema default of milter.default_action = %v", milter["default_action"])
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(minimal))
	f.Add(Example())
	f.Add([]byte("hostname: [\n"))
	f.Add([]byte(minimal + "postfix: {transport_maps: \"inline:{ a=b }\\nmynetworks = 0.0.0.0/0\"}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, _, err := Parse("fuzz.yaml", data)
		if err != nil {
			return
		}
		if cfg.Hostname == "" {
			t.Fatal("accepted a config without hostname")
		}
		// No accepted string can carry a line into a generated file.
		eachString(reflect.ValueOf(cfg).Elem(), "", func(key, s string, _ reflect.StructField) {
			if r, bad := badRune(s); bad {
				t.Fatalf("accepted %s = %q, which holds %U", key, s, r)
			}
		})
	})
}
