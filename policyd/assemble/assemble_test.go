package assemble

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/internal/dnstest"
	"github.com/postkit/postkit/policyd"
	"github.com/postkit/postkit/policyd/ratelimit"
	"github.com/postkit/postkit/policyd/spfcheck"
	"github.com/postkit/postkit/sqlmaps"
)

const yamlBase = `hostname: mx.example.test
domains: [example.test]
trusted_networks: [127.0.0.1/32]
postfix: {chroot: false}
`

func parse(t *testing.T, y string) *config.Config {
	t.Helper()
	c, _, err := config.Parse("postkit.yaml", []byte(yamlBase+y))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}

// The YAML's meanings differ from the checks' in places; the mapping
// translates them, and leaves no default of its own.
func TestConfigMapping(t *testing.T) {
	t.Run("defaults", func(t *testing.T) {
		c := parse(t, "")
		s, err := spfConfig(c, loopback)
		if err != nil {
			t.Fatal(err)
		}
		if s.Mode != spfcheck.Enforce || s.HeloReject != spfcheck.RejectFail || s.MailFromReject != spfcheck.RejectFail || s.HeaderType != spfcheck.ReceivedSPF || !s.TempErrorDefer || s.PermErrorReject || s.Hostname != "mx.example.test" {
			t.Errorf("spf %+v: want enforce, HELO fail refused, temperror deferred, permerror accepted", s)
		}
		if !reflect.DeepEqual(s.Trusted, loopback) || s.Timeout != 8*time.Second {
			t.Errorf("spf trusted %v timeout %v; want trusted_networks, 8s (4/5 of 10s, at most 8s)", s.Trusted, s.Timeout)
		}
		g, err := greylistConfig(c, loopback)
		if err != nil {
			t.Fatal(err)
		}
		if g.Delay != 5*time.Minute || g.RetryWindow != 48*time.Hour || g.MaxAge != 35*24*time.Hour || g.AutoAllowClients != 5 {
			t.Errorf("greylist %+v: want postkit.yaml's defaults", g)
		}
		if !reflect.DeepEqual(g.AllowClients, loopback) {
			t.Errorf("greylist allow %v, want trusted_networks", g.AllowClients)
		}
		if b := blacklistConfig(c); !b.SubdomainsNeedDot || b.RecipientDelimiter != "+" {
			t.Errorf("blacklist %+v", b)
		}
	})
	t.Run("auto_allow 0 means never", func(t *testing.T) {
		g, err := greylistConfig(parse(t, "policy:\n  greylist: {auto_allow: 0, allow_ips: [192.0.2.0/24]}\n"), loopback)
		if err != nil || g.AutoAllowClients != 0 || len(g.AllowClients) != 2 {
			t.Errorf("greylist %+v, %v; want AutoAllowClients 0 (never), allow_ips and trusted", g, err)
		}
	})
	t.Run("postgrey lists text privacy", func(t *testing.T) {
		dir := t.TempDir()
		cf, rf := filepath.Join(dir, "whitelist_clients"), filepath.Join(dir, "whitelist_recipients")
		os.WriteFile(cf, []byte("# postgrey format\nbulk.example\n/^smtp[0-9]+\\.news\\.example$/\n"), 0o600)
		os.WriteFile(rf, []byte("postmaster@\n"), 0o600)
		g, err := greylistConfig(parse(t, "policy:\n  greylist:\n    clients: [192.0.2]\n    client_files: ["+cf+"]\n    recipients: [partners.example]\n    recipient_files: ["+rf+"]\n    text: \"Come back in %s seconds (%r)\"\n    privacy: true\n"), loopback)
		if err != nil {
			t.Fatal(err)
		}
		if g.Clients.Len() != 3 || g.Recipients.Len() != 2 || !g.Privacy || g.Action != "DEFER_IF_PERMIT 4.7.1 Come back in %s seconds (%r)" || g.RecipientDelimiter != "+" {
			t.Errorf("greylist %+v", g)
		}
		if !g.Clients.Match("smtp3.news.example", netip.MustParseAddr("198.51.100.1")) || !g.Recipients.Match("postmaster@x.example", "+") {
			t.Error("lists read from the files do not match")
		}
		os.WriteFile(cf, []byte("ok.example\n/(unclosed/\n"), 0o600)
		if _, err := greylistConfig(parse(t, "policy:\n  greylist:\n    client_files: ["+cf+"]\n"), loopback); err == nil || !strings.Contains(err.Error(), cf+":2:") {
			t.Errorf("bad client file: %v; want file:line", err)
		}
	})
	t.Run("parent_domains", func(t *testing.T) {
		if b := blacklistConfig(parse(t, "policy:\n  blacklist: {owner: policy, parent_domains: true}\n")); b.SubdomainsNeedDot {
			t.Errorf("blacklist %+v, want parent domains matching", b)
		}
	})
	t.Run("spf knobs", func(t *testing.T) {
		s, err := spfConfig(parse(t, "policy:\n  time_budget: 5s\n  spf: {mode: header, helo_reject: false, temperror: accept, permerror: reject, allow_ips: [192.0.2.1], allow_domains: [example.net]}\n"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if s.Mode != spfcheck.Header || s.HeloReject != spfcheck.RejectNever || s.TempErrorDefer || !s.PermErrorReject ||
			len(s.AllowIPs) != 1 || s.AllowIPs[0].String() != "192.0.2.1/32" || s.AllowSenderDomains[0] != "example.net" || s.Timeout != 4*time.Second {
			t.Errorf("spf %+v", s)
		}
		s, err = spfConfig(parse(t, "milter:\n  dkim:\n    authserv_id: ar.example.test\npolicy:\n  spf: {helo_reject: spf_not_pass, mail_from_reject: softfail, reject_not_pass_domains: [example.org], helo_whitelist: [relay.example.net], header_type: ar}\n"), nil)
		if err != nil {
			t.Fatal(err)
		}
		if s.HeloReject != spfcheck.RejectNotPass || s.MailFromReject != spfcheck.RejectSoftfail || s.HeaderType != spfcheck.AuthResults || s.AuthservID != "ar.example.test" ||
			len(s.RejectNotPassDomains) != 1 || s.RejectNotPassDomains[0] != "example.org" || len(s.AllowHelos) != 1 || s.AllowHelos[0] != "relay.example.net" {
			t.Errorf("policyd-spf levels: spf %+v", s)
		}
		if _, err := spfcheck.New(s, net.DefaultResolver); err != nil {
			t.Errorf("spfcheck refuses the mapped config: %v", err)
		}
		for _, bad := range []string{"helo_reject: pass", "mail_from_reject: null", "header_type: both"} {
			if _, _, err := config.Parse("postkit.yaml", []byte("hostname: mx.example.test\ndomains: [example.test]\npolicy:\n  spf:\n    "+bad+"\n")); err == nil {
				t.Errorf("%s accepted", bad)
			}
		}
		if c := parse(t, "policy:\n  spf:\n    helo_reject: null\n"); c.Policy.SPF.HeloReject != "null" {
			t.Errorf("helo_reject: null read as %q", c.Policy.SPF.HeloReject)
		}
		for _, ok := range []string{"helo_reject: true", "helo_reject: False", "mail_from_reject: false", "helo_reject: null"} {
			if _, _, err := config.Parse("postkit.yaml", []byte("hostname: mx.example.test\ndomains: [example.test]\npolicy:\n  spf:\n    "+ok+"\n")); err != nil {
				t.Errorf("%s: %v", ok, err)
			}
		}
	})
	t.Run("rate limits", func(t *testing.T) {
		r, err := rateLimitConfig(parse(t, "policy:\n  ratelimit:\n    limits:\n      - {key: sasl_user, count: recipients, max: 500, window: 1h}\n      - {key: client_ip, max: 10, window: 90s}\n"))
		if err != nil {
			t.Fatal(err)
		}
		want := []ratelimit.Limit{
			{Key: ratelimit.BySASLUser, Counter: ratelimit.Recipients, Max: 500, Window: time.Hour},
			{Key: ratelimit.ByClient, Counter: ratelimit.Messages, Max: 10, Window: 90 * time.Second},
		}
		if !reflect.DeepEqual(r.Limits, want) || r.MessageStage != "END-OF-MESSAGE" || r.RecipientStage != "END-OF-MESSAGE" {
			t.Errorf("rate limits %+v, want %+v counted at END-OF-MESSAGE", r, want)
		}
	})
	t.Run("dnsbl", func(t *testing.T) {
		d, err := dnsblConfig(parse(t, "policy:\n  time_budget: 3s\n  dnsbl: {sites: [bl.test=127.0.0.2*3, wl.test*-2], threshold: 3, check_private: true}\n"), loopback)
		if err != nil {
			t.Fatal(err)
		}
		var sites []string
		for _, s := range d.Sites {
			sites = append(sites, s.String())
		}
		if !reflect.DeepEqual(sites, []string{"bl.test=127.0.0.2*3", "wl.test*-2"}) || d.Threshold != 3 || !d.CheckPrivate ||
			!reflect.DeepEqual(d.SkipClients, loopback) || d.Timeout != 3*time.Second {
			t.Errorf("dnsbl %v %+v", sites, d)
		}
	})
}

// storePath creates a blacklist store the way `postkit db` does.
func storePath(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "postfix.sqlite")
	st, err := sqlmaps.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := st.AddSenderBlacklist(ctx, "spammer@bad.test", 554, "5.7.1 Go away, spammer"); err != nil {
		t.Fatal(err)
	}
	return path
}

// every is a configuration listing every check, over the store at db and
// the DNS server at dnsAddr.
func every(t *testing.T, dir, db, dnsAddr string) *config.Config {
	return parse(t, fmt.Sprintf(`
database: {path: %s}
paths: {postkit_run: %s}
dns: {servers: [%q], timeout: 500ms}
policy:
  time_budget: 3s
  checks: [blacklist, spf, dnsbl, greylist, ratelimit]
  blacklist: {owner: policy}
  dnsbl: {sites: [bl.test=127.0.0.2*3, "wl.test=127.0.[0..255].[1..3]*-2"], threshold: 3}
  greylist: {delay: 1s}
  ratelimit:
    limits:
      - {key: sasl_user, count: messages, max: 2, window: 1h}
`, db, filepath.Join(dir, "run"), dnsAddr))
}

func TestBuild(t *testing.T) {
	dir := t.TempDir()
	db := storePath(t, dir)
	tests := []struct {
		name   string
		mutate func(c *config.Config)
		want   string // check names, or the error's text
		err    bool
	}{
		{"order kept", func(c *config.Config) {
			c.Policy.Checks = []string{"ratelimit", "greylist", "dnsbl", "spf", "blacklist"}
		}, "ratelimit,greylist,dnsbl,spf,blacklist", false},
		{"postfix owns the blacklists", func(c *config.Config) {
			c.Policy.Checks = []string{"blacklist", "spf"}
			c.Policy.Blacklist.Owner = "postfix"
		}, "spf", false},
		{"none", func(c *config.Config) { c.Policy.Checks = nil }, "", false},
		{"bad dnsbl site", func(c *config.Config) {
			c.Policy.Checks = []string{"dnsbl"}
			c.Policy.DNSBL.Sites = []string{"bl.test=999.0.0.1"}
		}, "policy.dnsbl.sites", true},
		{"dnsbl threshold 0", func(c *config.Config) { c.Policy.DNSBL.Threshold = 0 }, "threshold", true},
		{"greylist delay 0", func(c *config.Config) { c.Policy.Greylist.Delay = 0 }, "delay", true},
		{"missing database", func(c *config.Config) {
			c.Policy.Checks = []string{"blacklist"}
			c.Database.Path = filepath.Join(dir, "nope.sqlite")
		}, "postkit db init", true},
		{"unknown check", func(c *config.Config) { c.Policy.Checks = []string{"virus"} }, `unknown check "virus" in policy.checks: want blacklist, dnsbl, greylist, ratelimit or spf`, true},
		{"listed twice", func(c *config.Config) { c.Policy.Checks = []string{"spf", "spf"} }, "twice", true},
		{"no time budget", func(c *config.Config) { c.Policy.TimeBudget = 0 }, "policy.time_budget", true},
		{"bad trusted network", func(c *config.Config) { c.TrustedNetworks = []config.CIDR{"10.0.0.300"} }, "trusted_networks", true},
		{"rate limit of no messages", func(c *config.Config) { c.Policy.RateLimit.Limits[0].Max = 0 }, "policy.ratelimit.limits[0]", true},
		{"rate limit window not whole seconds", func(c *config.Config) {
			c.Policy.RateLimit.Limits[0].Window = config.Duration(1500 * time.Millisecond)
		}, "policy.ratelimit.limits[0]: ratelimit: limit sasl_username:messages=2/1.5s: window must be whole seconds", true},
		{"rate limit key", func(c *config.Config) { c.Policy.RateLimit.Limits[0].Key = "helo" }, `policy.ratelimit.limits[0].key "helo"`, true},
		{"rate limit counter", func(c *config.Config) { c.Policy.RateLimit.Limits[0].Count = "bytes" }, `policy.ratelimit.limits[0].count "bytes"`, true},
		{"ratelimit without limits", func(c *config.Config) { c.Policy.RateLimit.Limits = nil }, "no limits", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := every(t, dir, db, "127.0.0.1:1")
			tt.mutate(c)
			chain, err := New(c, Options{Logger: quiet()})
			if tt.err {
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("err = %v, want one containing %q", err, tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer chain.Close()
			if got := strings.Join(chain.Names(), ","); got != tt.want {
				t.Errorf("checks %s, want %s", got, tt.want)
			}
		})
	}
}

// closer records its Close.
type closer struct {
	name   string
	closed *[]string
}

func (c closer) Close() error { *c.closed = append(*c.closed, c.name); return nil }

// stub is a check that answers a fixed decision.
type stub struct {
	name string
	d    policyd.Decision
}

func (s stub) Name() string { return s.name }
func (s stub) Check(context.Context, *policyd.Request) (policyd.Decision, error) {
	return s.d, nil
}

// A chain that cannot be built leaves nothing open: what the checks built
// before the failure opened is closed.
func TestBuildClosesOnError(t *testing.T) {
	var closed []string
	table := Table{
		"opens": func(b *Builder) (policyd.Check, error) {
			b.OnClose(closer{"opens", &closed})
			return stub{name: "opens"}, nil
		},
		"fails": func(*Builder) (policyd.Check, error) { return nil, errors.New("broken on purpose") },
	}
	c := parse(t, "")
	c.Policy.Checks = []string{"opens", "fails"}
	if _, err := table.Build(c, Options{Logger: quiet()}); err == nil || !strings.Contains(err.Error(), "broken on purpose") {
		t.Fatalf("Build: %v, want the failing check's error", err)
	}
	if !reflect.DeepEqual(closed, []string{"opens"}) {
		t.Errorf("closed %v after a failed build, want [opens]", closed)
	}
	c.Policy.Checks = []string{"opens"}
	chain, err := table.Build(c, Options{Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	closed = nil
	if err := chain.Close(); err != nil || !reflect.DeepEqual(closed, []string{"opens"}) {
		t.Errorf("Close: %v, closed %v; want [opens]", err, closed)
	}
	chain.Close()
	if len(closed) != 1 {
		t.Errorf("second Close closed again: %v", closed)
	}
}

// A check may depend on another through the Builder, whatever their order;
// a check depending on itself is an error, not a hang.
func TestBuilderCheck(t *testing.T) {
	built := 0
	var got policyd.Check
	table := Table{
		"base": func(*Builder) (policyd.Check, error) { built++; return stub{name: "base"}, nil },
		"user": func(b *Builder) (policyd.Check, error) {
			var err error
			got, err = b.Check("base")
			return stub{name: "user"}, err
		},
		"self": func(b *Builder) (policyd.Check, error) { return b.Check("self") },
	}
	c := parse(t, "")
	c.Policy.Checks = []string{"user", "base"}
	chain, err := table.Build(c, Options{Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(chain.Names(), ",") != "user,base" || built != 1 || got == nil || got.Name() != "base" {
		t.Errorf("checks %v, base built %d times, user got %v", chain.Names(), built, got)
	}
	c.Policy.Checks = []string{"user"}
	got = stub{}
	if _, err := table.Build(c, Options{Logger: quiet()}); err != nil || got != nil {
		t.Errorf("base not listed: user got %v, %v; want nil", got, err)
	}
	c.Policy.Checks = []string{"self"}
	if _, err := table.Build(c, Options{Logger: quiet()}); err == nil || !strings.Contains(err.Error(), "depends on itself") {
		t.Errorf("self-dependency: %v", err)
	}
}

// The built checks answer together, over the loopback DNS server: the
// DNSBL's allow list spares a client greylisting even when greylisting runs
// first, and closing the chain closes the state database under them.
func TestChainRuns(t *testing.T) {
	dns, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	if err := dns.SetZone(
		`spf-pass.test. 300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"`,
		`66.2.0.192.bl.test. 300 IN A 127.0.0.2`,
		`77.2.0.192.wl.test. 300 IN A 127.0.10.2`,
	); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	c := every(t, dir, storePath(t, dir), dns.Addr())
	c.Policy.Checks = []string{"greylist", "blacklist", "dnsbl", "spf"}
	chain, err := New(c, Options{Logger: quiet(), NoSeal: true})
	if err != nil {
		t.Fatal(err)
	}
	rcpt := func(client, sender string) *policyd.Request {
		return &policyd.Request{Attrs: map[string]string{"request": "smtpd_access_policy", "protocol_state": "RCPT",
			"client_address": client, "helo_name": "client.test", "sender": sender, "recipient": "a@example.test"}}
	}
	decide := func(r *policyd.Request) []string {
		var reasons []string
		for _, chk := range chain.Checks() {
			d, err := chk.Check(context.Background(), r)
			if err != nil {
				t.Fatalf("%s: %v", chk.Name(), err)
			}
			reasons = append(reasons, d.Reason)
			if d.Final() {
				break
			}
		}
		return reasons
	}
	for _, tt := range []struct {
		client, sender string
		want           []string
	}{
		{"192.0.2.5", "x@spf-pass.test", []string{"greylist=defer"}},
		{"192.0.2.77", "x@spf-pass.test", []string{"greylist=allowlisted", "", "dnsbl=allowlisted", "spf=pass"}},
		{"127.0.0.1", "spammer@bad.test", []string{"greylist=allowlisted", "blacklist=sender"}},
	} {
		if got := decide(rcpt(tt.client, tt.sender)); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s %s: reasons %q, want %q", tt.client, tt.sender, got, tt.want)
		}
	}
	if err := chain.Close(); err != nil {
		t.Fatal(err)
	}
	if got := decide(rcpt("192.0.2.6", "x@spf-pass.test")); len(got) < 2 || !reflect.DeepEqual(got[:2], []string{"greylist=error", "blacklist=error"}) {
		t.Errorf("after Close: reasons %q, want the state database and the store closed", got)
	}
}
