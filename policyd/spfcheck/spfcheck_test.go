package spfcheck

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postkit/postkit/internal/dnsclient"
	"github.com/postkit/postkit/internal/dnstest"
	"github.com/postkit/postkit/policyd"
)

var testZone = []string{
	`pass.example. 300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"`,
	`fail.example. 300 IN TXT "v=spf1 -all exp=why.fail.example"`,
	`why.fail.example. 300 IN TXT "%{i} may not send for %{d} (sender %{s}, helo %{h}, receiver %{r})"`,
	`plain.example. 300 IN TXT "v=spf1 -all"`,
	`soft.example. 300 IN TXT "v=spf1 ~all"`,
	`neutral.example. 300 IN TXT "v=spf1 ?all"`,
	`perm.example. 300 IN TXT "v=spf1 foo:bar -all"`,
	`multi.example. 300 IN TXT "v=spf1 -all" "  exp=why.fail.example"`,
	`badexp.example. 300 IN TXT "v=spf1 -all exp=nowhere.example"`,
	`redir.example. 300 IN TXT "v=spf1 exp=why.fail.example redirect=target.example"`,
	`target.example. 300 IN TXT "v=spf1 -all exp=why.target.example"`,
	`why.target.example. 300 IN TXT "target says no to %{c}"`,
	`incl.example. 300 IN TXT "v=spf1 include:plain.example -all exp=why.incl.example"`,
	`plainexp.example. 300 IN TXT "v=spf1 -all exp=why.target.example"`,
	`why.incl.example. 300 IN TXT "include's parent explains"`,
	`inject.example. 300 IN TXT "v=spf1 -all exp=why.inject.example"`,
	`why.inject.example. 300 IN TXT "bad) \\ (text"`,
	`helofail.example. 300 IN TXT "v=spf1 -all exp=why.helo.example"`,
	`why.helo.example. 300 IN TXT "helo %{h} refused"`,
	`helopass.example. 300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"`,
	`x.example. 300 IN A 198.51.100.7`,
	`forged.example. 300 IN A 192.0.2.99`,
	`helosoft.example. 300 IN TXT "v=spf1 ~all"`,
	`heloneutral.example. 300 IN TXT "v=spf1 ?all"`,
}

func newTestCheck(t *testing.T, cfg Config, extra ...string) (*Check, *dnstest.Server) {
	t.Helper()
	srv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	z, err := dnstest.ParseZone(append(append([]string{}, testZone...), extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	z.Timeout("slow.example")
	srv.Set(z)
	// One clock for the resolver and the check: cached results expire
	// with the DNS answers they were built from.
	res, err := dnsclient.New(dnsclient.Config{Servers: []string{srv.Addr()}, Timeout: 100 * time.Millisecond, Attempts: 1, Now: cfg.Now})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "mx.receiver.example"
	}
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	c, err := New(cfg, res)
	if err != nil {
		t.Fatal(err)
	}
	return c, srv
}

func request(ip, helo, sender string, extra ...string) *policyd.Request {
	r := &policyd.Request{Attrs: map[string]string{
		"request": "smtpd_access_policy", "protocol_state": "RCPT",
		"client_address": ip, "helo_name": helo, "sender": sender, "recipient": "u@receiver.example",
	}}
	for i := 0; i+1 < len(extra); i += 2 {
		r.Attrs[extra[i]] = extra[i+1]
	}
	return r
}

func TestExplanationInReply(t *testing.T) {
	c, _ := newTestCheck(t, Config{Mode: Enforce})
	tests := []struct {
		name   string
		sender string
		want   string
	}{
		{"exp with macros", "bob@fail.example",
			"550 5.7.23 198.51.100.7 may not send for fail.example (sender bob@fail.example, helo client.example, receiver mx.receiver.example)"},
		{"no exp: default", "bob@plain.example", "550 5.7.23 198.51.100.7 is not allowed to send mail for plain.example"},
		{"multi-string record", "bob@multi.example", "550 5.7.23 198.51.100.7 may not send for multi.example (sender bob@multi.example, helo client.example, receiver mx.receiver.example)"},
		{"exp target missing: default", "bob@badexp.example", "550 5.7.23 198.51.100.7 is not allowed to send mail for badexp.example"},
		{"redirect: target's exp replaces ours", "bob@redir.example", "550 5.7.23 target says no to 198.51.100.7"},
		{"include: parent's exp", "bob@incl.example", "550 5.7.23 include's parent explains"},
		{"empty local part is postmaster", "@fail.example",
			"550 5.7.23 198.51.100.7 may not send for fail.example (sender postmaster@fail.example, helo client.example, receiver mx.receiver.example)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := c.Check(context.Background(), request("198.51.100.7", "client.example", tt.sender))
			if err != nil || d.Action != tt.want {
				t.Errorf("action %q, %v\nwant   %q", d.Action, err, tt.want)
			}
		})
	}
}

func TestHeaderSafety(t *testing.T) {
	c, _ := newTestCheck(t, Config{Mode: Header})
	d, _ := c.Check(context.Background(), request("198.51.100.7", "client.example", "x@inject.example"))
	if len(d.Prepend) != 1 {
		t.Fatalf("prepend %q, want one header", d.Prepend)
	}
	h := d.Prepend[0]
	want := `Received-SPF: fail (mx.receiver.example: bad\) \\ \(text) client-ip=198.51.100.7; envelope-from=x@inject.example; helo=client.example; receiver=mx.receiver.example; identity=mailfrom;`
	if h != want {
		t.Errorf("header\n %q\nwant\n %q", h, want)
	}
}

func TestDecisions(t *testing.T) {
	cases := []struct {
		name      string
		cfg       Config
		req       *policyd.Request
		action    string // "" = no final action
		header    string // prefix of the prepended header, "" = none
		reasonHas string
	}{
		{"pass header", Config{}, request("192.0.2.10", "client.example", "a@pass.example"), "",
			"Received-SPF: pass (mx.receiver.example: domain of a@pass.example designates 192.0.2.10 as permitted sender) client-ip=192.0.2.10; envelope-from=a@pass.example; helo=client.example;", "spf=pass"},
		{"softfail header", Config{}, request("198.51.100.7", "client.example", "a@soft.example"), "", "Received-SPF: softfail ", "spf=softfail"},
		{"neutral header", Config{}, request("198.51.100.7", "client.example", "a@neutral.example"), "", "Received-SPF: neutral ", "spf=neutral"},
		{"none header", Config{}, request("198.51.100.7", "client.example", "a@nospf.example"), "", "Received-SPF: none ", "spf=none"},
		{"fail rejects", Config{}, request("198.51.100.7", "client.example", "a@plain.example"), "550 5.7.23 ", "", "spf=fail"},
		{"fail in header mode", Config{Mode: Header}, request("198.51.100.7", "client.example", "a@plain.example"), "", "Received-SPF: fail ", "spf=fail"},
		{"permerror default: header", Config{}, request("198.51.100.7", "client.example", "a@perm.example"), "", "Received-SPF: permerror ", "spf=permerror"},
		{"permerror reject", Config{PermErrorReject: true}, request("198.51.100.7", "client.example", "a@perm.example"), "550 5.7.24 ", "", "spf=permerror"},
		{"temperror default: header", Config{}, request("198.51.100.7", "client.example", "a@slow.example"), "", "Received-SPF: temperror ", "spf=temperror"},
		{"temperror defer", Config{TempErrorDefer: true}, request("198.51.100.7", "client.example", "a@slow.example"), "DEFER_IF_PERMIT 4.7.24 ", "", "spf=temperror"},
		{"temperror defer not in header mode", Config{Mode: Header, TempErrorDefer: true}, request("198.51.100.7", "client.example", "a@slow.example"), "", "Received-SPF: temperror ", "spf=temperror"},
		{"helo fail rejects first", Config{}, request("198.51.100.7", "helofail.example", "a@pass.example"), "550 5.7.23 helo helofail.example refused", "", "spf-helo=fail"},
		{"helo fail ignored: mailfrom decides", Config{IgnoreHeloFail: true}, request("192.0.2.10", "helofail.example", "a@pass.example"), "", "Received-SPF: pass ", "spf=pass"},
		{"helo fail ignored: mailfrom fail still rejects", Config{IgnoreHeloFail: true}, request("198.51.100.7", "helofail.example", "a@plain.example"), "550 5.7.23 ", "", "spf=fail"},
		{"null sender with helo fail rejects", Config{}, request("198.51.100.7", "helofail.example", ""), "550 5.7.23 helo helofail.example refused", "", "spf-helo=fail"},
		{"helo fail in header mode: mailfrom header", Config{Mode: Header}, request("192.0.2.10", "helofail.example", "a@pass.example"), "", "Received-SPF: pass ", "spf=pass"},
		{"null sender uses helo", Config{}, request("192.0.2.10", "helopass.example", ""), "",
			"Received-SPF: pass (mx.receiver.example: domain of postmaster@helopass.example designates 192.0.2.10 as permitted sender) client-ip=192.0.2.10; helo=helopass.example; receiver=mx.receiver.example; identity=helo;", "spf-helo=pass"},
		{"sasl skipped", Config{}, request("198.51.100.7", "client.example", "a@plain.example", "sasl_username", "bob"), "", "", "spf=skip(authenticated)"},
		{"sasl checked on request", Config{CheckAuthenticated: true}, request("198.51.100.7", "client.example", "a@plain.example", "sasl_username", "bob"), "550 5.7.23 ", "", "spf=fail"},
		{"loopback trusted when listed", Config{Trusted: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}}, request("127.0.0.5", "client.example", "a@plain.example"), "", "", "spf=skip(trusted)"},
		{"nothing trusted unless listed", Config{}, request("127.0.0.5", "client.example", "a@plain.example"), "550 5.7.23 ", "", "spf=fail"},
		{"trusted network", Config{Trusted: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}}, request("198.51.100.7", "x.example", "a@plain.example"), "", "", "spf=skip(trusted)"},
		{"allow ip", Config{AllowIPs: []netip.Prefix{netip.MustParsePrefix("198.51.100.7/32")}}, request("198.51.100.7", "x.example", "a@plain.example"), "", "", "spf=skip(allow-ip)"},
		{"allow sender domain", Config{AllowSenderDomains: []string{"PLAIN.example"}}, request("198.51.100.7", "x.example", "a@plain.example"), "", "", "spf=skip(allow-sender)"},
		{"allow helo", Config{AllowHelos: []string{"x.example."}}, request("198.51.100.7", "x.example", "a@plain.example"), "", "", "spf=skip(allow-helo)"},
		{"allow helo forged: its A record is another host", Config{AllowHelos: []string{"forged.example"}}, request("198.51.100.7", "forged.example", "a@plain.example"), "550 5.7.23 ", "", "spf=fail"},
		{"no client address", Config{}, request("unknown", "x.example", "a@plain.example"), "", "", "spf=skip(no-client-ip)"},
		{"other stage ignored", Config{}, &policyd.Request{Attrs: map[string]string{"protocol_state": "END-OF-MESSAGE", "client_address": "198.51.100.7", "sender": "a@plain.example"}}, "", "", ""},
		{"ipv4-mapped client", Config{}, request("::ffff:192.0.2.10", "client.example", "a@pass.example"), "", "Received-SPF: pass ", "spf=pass"},
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := newTestCheck(t, tt.cfg)
			d, err := c.Check(context.Background(), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(d.Action, tt.action) || (tt.action == "") != (d.Action == "") {
				t.Errorf("action %q, want prefix %q", d.Action, tt.action)
			}
			switch {
			case tt.header == "" && len(d.Prepend) > 0:
				t.Errorf("prepend %q, want none", d.Prepend)
			case tt.header != "" && (len(d.Prepend) != 1 || !strings.HasPrefix(d.Prepend[0], tt.header)):
				t.Errorf("prepend %q, want prefix %q", d.Prepend, tt.header)
			}
			if d.Reason != tt.reasonHas {
				t.Errorf("reason %q, want %q", d.Reason, tt.reasonHas)
			}
		})
	}
}

func TestResultCache(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	c, srv := newTestCheck(t, Config{Now: func() time.Time { return now }})
	ask := func() policyd.Decision {
		d, err := c.Check(context.Background(), request("198.51.100.7", "client.example", "a@soft.example"))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	first := ask()
	q := srv.Queries()
	for range 5 { // the other RCPTs of the message
		if d := ask(); d.Prepend[0] != first.Prepend[0] {
			t.Fatalf("cached answer %q differs from %q", d.Prepend, first.Prepend)
		}
	}
	if got := srv.Queries(); got != q {
		t.Errorf("%d DNS queries for cached RCPTs, want 0", got-q)
	}
	if q == 0 {
		t.Error("first check made no DNS query")
	}
}

func TestTimeBudget(t *testing.T) {
	c, _ := newTestCheck(t, Config{Timeout: 150 * time.Millisecond},
		`chain.example. 300 IN TXT "v=spf1 a:slow.example a:slow.example a:slow.example a:slow.example -all"`)
	start := time.Now()
	d, _ := c.Check(context.Background(), request("198.51.100.7", "client.example", "a@chain.example"))
	if el := time.Since(start); el > time.Second {
		t.Errorf("took %v, want about the 150ms budget", el)
	}
	if d.Reason != "spf=temperror" {
		t.Errorf("reason %q, want spf=temperror", d.Reason)
	}
}

func TestNewErrors(t *testing.T) {
	res, _ := dnsclient.New(dnsclient.Config{Servers: []string{"127.0.0.1:1"}})
	if _, err := New(Config{Mode: "loud"}, res); err == nil || !strings.Contains(err.Error(), "enforce or header") {
		t.Errorf("bad mode: err = %v", err)
	}
	if _, err := New(Config{}, nil); err == nil {
		t.Error("nil resolver accepted")
	}
	if _, err := New(Config{Timeout: -time.Second}, res); err == nil {
		t.Error("negative timeout accepted")
	}
}

// HELO and MAIL FROM are evaluated at once: two identities that each wait
// for one DNS timeout cost one timeout, not two.
func TestIdentitiesInParallel(t *testing.T) {
	srv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	z, err := dnstest.ParseZone(
		`slowhelo.example. 300 IN TXT "v=spf1 a:slow1.example -all"`,
		`slowmf.example. 300 IN TXT "v=spf1 a:slow2.example -all"`)
	if err != nil {
		t.Fatal(err)
	}
	z.Timeout("slow1.example")
	z.Timeout("slow2.example")
	srv.Set(z)
	const timeout = 400 * time.Millisecond
	res, err := dnsclient.New(dnsclient.Config{Servers: []string{srv.Addr()}, Timeout: timeout, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{Hostname: "mx.receiver.example", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, res)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	v := c.Evaluate(context.Background(), netip.MustParseAddr("198.51.100.7"), "slowhelo.example", "a@slowmf.example")
	el := time.Since(start)
	if v.Helo.Result != TempError || v.MailFrom.Result != TempError {
		t.Fatalf("results helo %q mailfrom %q, want temperror for both", v.Helo.Result, v.MailFrom.Result)
	}
	if el < timeout || el >= 2*timeout {
		t.Errorf("took %v, want one DNS timeout (%v..%v): the identities ran one after the other", el, timeout, 2*timeout)
	}
}

// §5.3: the a mechanism asks for the connection's address type: A alone for
// an IPv4 client, A and AAAA for an IPv6 one (exists needs A records).
func TestAddressLookupsByFamily(t *testing.T) {
	extra := []string{
		`fam.example. 300 IN TXT "v=spf1 a -all"`,
		`fam.example. 300 IN A 192.0.2.10`,
		`fam.example. 300 IN AAAA 2001:db8::10`,
	}
	tests := []struct {
		ip          string
		result      Result
		wantQueries int64
	}{
		{"192.0.2.10", Pass, 2},        // TXT, A
		{"198.51.100.1", Fail, 2},      // TXT, A
		{"2001:db8::10", Pass, 3},      // TXT, A, AAAA
		{"::ffff:192.0.2.10", Pass, 2}, // an IPv4-mapped client is IPv4
	}
	for _, tt := range tests {
		t.Run(tt.ip, func(t *testing.T) {
			c, srv := newTestCheck(t, Config{CacheSize: -1}, extra...)
			v := c.Evaluate(context.Background(), netip.MustParseAddr(tt.ip), "", "a@fam.example")
			if v.MailFrom.Result != tt.result {
				t.Errorf("result %q, want %q", v.MailFrom.Result, tt.result)
			}
			if q := srv.Queries(); q != tt.wantQueries {
				t.Errorf("%d DNS queries, want %d", q, tt.wantQueries)
			}
		})
	}
}

// check_host() results are reused across messages per (identity, client,
// HELO, domain), unless a record used the local part (%{l}, %{s}) or the
// result was a temporary error; headers still name each message's sender.
func TestIdentityCache(t *testing.T) {
	extra := []string{
		`bulk.example. 300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"`,
		`helo.example. 300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"`,
		`perlocal.example. 300 IN TXT "v=spf1 exists:%{l}.allow.example -all"`,
		`alice.allow.example. 300 IN A 127.0.0.2`,
		`bysender.example. 300 IN TXT "v=spf1 exists:%{S}.ok.example -all"`,
	}
	type step struct {
		helo, sender string
		result       Result
		queries      int64 // DNS queries this step makes
		header       string
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"same domain, other local parts", []step{
			{"", "a@bulk.example", Pass, 1, "envelope-from=a@bulk.example;"},
			{"", "b@bulk.example", Pass, 0, "envelope-from=b@bulk.example;"},
			{"", "c@BULK.example", Pass, 0, "envelope-from=c@BULK.example;"},
		}},
		{"HELO reused across sender domains", []step{
			{"helo.example", "a@bulk.example", Pass, 2, "identity=mailfrom;"},
			{"helo.example", "x@nospf.example", None, 1, "envelope-from=x@nospf.example;"}, // the TXT of nospf.example only
		}},
		{"local part in the record: not reused", []step{
			{"", "alice@perlocal.example", Pass, 2, "envelope-from=alice@perlocal.example;"},
			{"", "bob@perlocal.example", Fail, 1, "envelope-from=bob@perlocal.example;"},
			{"", "alice@perlocal.example", Pass, 0, ""}, // the DNS cache answers, the outcome is evaluated
		}},
		{"sender macro: not reused", []step{
			{"", "x@bysender.example", Fail, 2, ""},
			{"", "y@bysender.example", Fail, 1, ""},
		}},
		{"temperror: asked again", []step{
			{"", "a@slow.example", TempError, 1, ""},
			{"", "b@slow.example", TempError, 1, ""},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, srv := newTestCheck(t, Config{}, extra...)
			for i, s := range tt.steps {
				before := srv.Queries()
				v := c.Evaluate(context.Background(), netip.MustParseAddr("192.0.2.10"), s.helo, s.sender)
				if v.MailFrom.Result != s.result {
					t.Errorf("step %d (%s): result %q, want %q", i, s.sender, v.MailFrom.Result, s.result)
				}
				if s.header != "" && !strings.Contains(v.MailFrom.Header, s.header) {
					t.Errorf("step %d: header %q lacks %q", i, v.MailFrom.Header, s.header)
				}
				if q := srv.Queries() - before; q != s.queries {
					t.Errorf("step %d (%s): %d DNS queries, want %d", i, s.sender, q, s.queries)
				}
			}
		})
	}
}

// Cached decisions and identity results live exactly as long as the first
// DNS answer they were built from: the record's TTL, 0 included, and the
// RFC 2308 negative TTL of a name that did not exist. The clock is a seam;
// the zone changes between steps and the answers must follow.
func TestCacheFollowsTTL(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	now := t0
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	c, srv := newTestCheck(t, Config{Mode: Header, Now: clock})
	zone := func(inc, zero string, nx bool) *dnstest.Zone {
		recs := []string{
			`ttl.example. 300 IN TXT "v=spf1 include:inc.ttl.example -all"`,
			`inc.ttl.example. 30 IN TXT "v=spf1 ` + inc + ` -all"`,
			`zero.example. 0 IN TXT "v=spf1 ` + zero + `"`,
		}
		if nx {
			recs = append(recs, `nx.example. 300 IN TXT "v=spf1 -all"`)
		}
		z, err := dnstest.ParseZone(recs...)
		if err != nil {
			t.Fatal(err)
		}
		z.NegativeTTL = 20
		return z
	}
	const (
		other = "ip4:192.0.2.0/24"
		ours  = "ip4:198.51.100.0/24"
	)
	steps := []struct {
		name   string
		at     time.Duration // since t0
		zone   *dnstest.Zone // nil: unchanged
		sender string
		want   string
		cached bool // answered without a DNS query
	}{
		{"first", 0, zone(other, "-all", false), "a@ttl.example", "spf=fail", false},
		{"record changed, decision cached", 1 * time.Second, zone(ours, "-all", false), "a@ttl.example", "spf=fail", true},
		{"other local part: identity cached", 29 * time.Second, nil, "b@ttl.example", "spf=fail", true},
		{"include's TTL (30s) over", 30 * time.Second, nil, "a@ttl.example", "spf=pass", false},
		{"TTL 0", 30 * time.Second, nil, "c@zero.example", "spf=fail", false},
		{"TTL 0: changed at once", 30 * time.Second, zone(ours, "+all", false), "c@zero.example", "spf=pass", false},
		{"TTL 0: identity neither", 30 * time.Second, zone(ours, "-all", false), "d@zero.example", "spf=fail", false},
		{"no such domain", 30 * time.Second, nil, "e@nx.example", "spf=none", false},
		{"created: negative answer cached", 31 * time.Second, zone(ours, "-all", true), "e@nx.example", "spf=none", true},
		{"negative, identity cached", 49 * time.Second, nil, "f@nx.example", "spf=none", true},
		{"negative TTL (20s) over", 50 * time.Second, nil, "e@nx.example", "spf=fail", false},
	}
	for _, s := range steps {
		mu.Lock()
		now = t0.Add(s.at)
		mu.Unlock()
		if s.zone != nil {
			srv.Set(s.zone)
		}
		q := srv.Queries()
		// An address-literal HELO is not checked (§2.3): only the MAIL FROM
		// identity's answers count.
		d, err := c.Check(context.Background(), request("198.51.100.7", "[198.51.100.7]", s.sender))
		if err != nil {
			t.Fatal(err)
		}
		if d.Reason != s.want {
			t.Errorf("t0+%v %s: %s, want %s", s.at, s.name, d.Reason, s.want)
		}
		if queried := srv.Queries() > q; queried == s.cached {
			t.Errorf("t0+%v %s: DNS queried %v, want %v", s.at, s.name, queried, !s.cached)
		}
	}
}

// noExpiry hides the resolver's expiry reports, as a resolver that knows no
// TTLs (net.Resolver) would.
type noExpiry struct{ Resolver }

func (n noExpiry) LookupTXT(_ context.Context, name string) ([]string, error) {
	return n.Resolver.LookupTXT(context.Background(), name)
}

// Without expiries nothing is cached: the check cannot know for how long
// a result would stay true.
func TestNoExpiryNoCache(t *testing.T) {
	c, srv := newTestCheck(t, Config{Mode: Header})
	c.res = noExpiry{c.res}
	for i := range 3 {
		d, _ := c.Check(context.Background(), request("198.51.100.7", "[198.51.100.7]", "a@soft.example"))
		if d.Reason != "spf=softfail" {
			t.Errorf("request %d: %s, want softfail", i, d.Reason)
		}
	}
	if srv.Queries() == 0 {
		t.Error("no DNS query made")
	}
	if n := c.cache.Len() + c.idCache.Len(); n != 0 {
		t.Errorf("%d cached entries, want 0", n)
	}
}
