package spam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/postkit/postkit/internal/dnsclient"
	"github.com/postkit/postkit/internal/dnstest"
	"github.com/postkit/postkit/spam/bayes"
)

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newTestEngine(t *testing.T, cfg Config) *Engine {
	t.Helper()
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func hitNames(r Result) string {
	var n []string
	for _, h := range r.Hits {
		n = append(n, h.Name)
	}
	return strings.Join(n, ",")
}

// GTUBE scores at least 1000 with the shipped rules and an untrained Bayes
// store; a plain message stays far below the required score.
func TestGTUBEAndPlain(t *testing.T) {
	e := newTestEngine(t, Config{Store: bayes.NewMemStore()})
	ctx := context.Background()
	r, err := e.Score(ctx, Input{Raw: readTestdata(t, "gtube.eml")})
	if err != nil {
		t.Fatal(err)
	}
	if r.Score < 1000 || !r.Spam() || !strings.Contains(hitNames(r), "GTUBE") {
		t.Errorf("GTUBE: score %.1f, hits %s; want >= 1000 with GTUBE", r.Score, hitNames(r))
	}
	r, err = e.Score(ctx, Input{Raw: readTestdata(t, "plain.eml")})
	if err != nil {
		t.Fatal(err)
	}
	if r.Score >= 1 || r.Spam() {
		t.Errorf("plain: score %.1f, hits %s; want < 1", r.Score, hitNames(r))
	}
	if r.Bayes != -1 || !strings.Contains(r.BayesNote, "not enough training") {
		t.Errorf("untrained Bayes voted: %v %q", r.Bayes, r.BayesNote)
	}
}

func plainWith(header string) []byte {
	return []byte(header + "Subject: lunch\r\nMessage-ID: <l1@example.org>\r\nDate: Tue, 01 Dec 2026 10:12:00 +0100\r\n\r\nSee you at noon at the usual place.\r\n")
}

func hasHit(r Result, name string) bool {
	for _, h := range r.Hits {
		if h.Name == name {
			return true
		}
	}
	return false
}

// Sender lists: whitelist_from and blacklist_from match the From address
// and the envelope sender, unauthenticated as in SpamAssassin; the
// database's allow list is asked only for an authenticated From domain.
func TestSenderLists(t *testing.T) {
	var asked []string
	e := newTestEngine(t, Config{
		WhitelistFrom: []string{"*@exemple.fr"},
		BlacklistFrom: []string{"boss@spam.example"},
		AuthServID:    "mx.exemple.fr",
		AllowDomain: func(_ context.Context, d string) (bool, error) {
			asked = append(asked, d)
			return d == "partner.example", nil
		},
	})
	ctx := context.Background()
	for _, tt := range []struct {
		name   string
		in     Input
		hit    string
		asked  string
		absent []string
	}{
		{"whitelisted From", Input{Raw: plainWith("From: a@Exemple.FR\r\n")}, "ALLOWLIST_FROM", "", nil},
		{"whitelisted envelope", Input{Raw: plainWith("From: x@other.example\r\n"), MailFrom: "bounce@exemple.fr"}, "ALLOWLIST_FROM", "", nil},
		{"blacklisted", Input{Raw: plainWith("From: boss@spam.example\r\n")}, "BLOCKLIST_FROM", "", nil},
		{"allowed domain, DKIM", Input{Raw: plainWith("Authentication-Results: mx.exemple.fr; dkim=pass header.d=partner.example header.s=s1\r\nFrom: news@partner.example\r\n")}, "ALLOWLIST_DOMAIN", "partner.example", nil},
		{"allowed domain, SPF", Input{Raw: plainWith("Received-SPF: pass (mx: domain of partner.example designates 192.0.2.1 as permitted sender)\r\nFrom: news@partner.example\r\n"), MailFrom: "bounces@mail.partner.example"}, "ALLOWLIST_DOMAIN", "partner.example", nil},
		{"forged From, no authentication", Input{Raw: plainWith("From: news@partner.example\r\n")}, "", "", []string{"ALLOWLIST_DOMAIN"}},
		{"results of another server", Input{Raw: plainWith("Authentication-Results: evil.example; dkim=pass header.d=partner.example\r\nFrom: news@partner.example\r\n")}, "", "", []string{"ALLOWLIST_DOMAIN", "AUTH_DKIM_FROM"}},
		{"SPF for another domain", Input{Raw: plainWith("Received-SPF: pass\r\nFrom: news@partner.example\r\n"), MailFrom: "x@elsewhere.example"}, "AUTH_SPF_PASS", "", []string{"ALLOWLIST_DOMAIN"}},
	} {
		asked = nil
		r, err := e.Score(ctx, tt.in)
		if err != nil {
			t.Fatal(err)
		}
		if tt.hit != "" && !hasHit(r, tt.hit) {
			t.Errorf("%s: hits %s; want %s", tt.name, hitNames(r), tt.hit)
		}
		for _, n := range tt.absent {
			if hasHit(r, n) {
				t.Errorf("%s: hits %s; want no %s", tt.name, hitNames(r), n)
			}
		}
		if got := strings.Join(asked, ","); got != tt.asked {
			t.Errorf("%s: allow list asked for %q; want %q", tt.name, got, tt.asked)
		}
	}
	if _, err := New(Config{WhitelistFrom: []string{"[bad"}}); err == nil {
		t.Error("a malformed whitelist_from pattern was accepted")
	}
}

// Autolearn learns clear spam and clear ham, and says so.
func TestAutolearn(t *testing.T) {
	st := bayes.NewMemStore()
	e := newTestEngine(t, Config{Store: st, Autolearn: true, AutolearnSpam: 12})
	ctx := context.Background()
	r, err := e.Score(ctx, Input{Raw: readTestdata(t, "gtube.eml")})
	if err != nil || r.Autolearn != "spam" {
		t.Fatalf("GTUBE autolearn = %q, %v; want spam", r.Autolearn, err)
	}
	r, err = e.Score(ctx, Input{Raw: readTestdata(t, "plain.eml")})
	if err != nil || r.Autolearn != "ham" {
		t.Fatalf("plain autolearn = %q (score %.1f, %s), %v; want ham", r.Autolearn, r.Score, hitNames(r), err)
	}
	if s, h, _ := st.Totals(ctx); s != 1 || h != 1 {
		t.Errorf("store has %d spam %d ham; want 1 and 1", s, h)
	}
	r, _ = e.Score(ctx, Input{Raw: readTestdata(t, "gtube.eml")})
	if s, _, _ := st.Totals(ctx); s != 1 {
		t.Errorf("scoring GTUBE again learned it again: %d spam", s)
	}
	off := newTestEngine(t, Config{Store: bayes.NewMemStore()})
	if r, _ := off.Score(ctx, Input{Raw: readTestdata(t, "gtube.eml")}); r.Autolearn != "no" {
		t.Errorf("autolearn off: %q; want no", r.Autolearn)
	}
}

// Learn is idempotent across delivery changes: the copy a mail client
// moves into the Spam folder carries delivery fields and our X-Spam-*
// fields, and is still the same message.
func TestLearnIdempotent(t *testing.T) {
	e := newTestEngine(t, Config{BayesPath: t.TempDir() + "/bayes.sqlite"})
	ctx := context.Background()
	raw := readTestdata(t, "plain.eml")
	delivered := append([]byte("Return-Path: <alice@example.org>\r\nDelivered-To: bob@exemple.fr\r\nX-Spam-Status: No, score=0.0\r\n"), raw...)
	for i, step := range []struct {
		raw     []byte
		spam    bool
		forget  bool
		changed bool
		spamN   int64
		hamN    int64
	}{
		{raw, true, false, true, 1, 0},
		{raw, true, false, false, 1, 0},
		{delivered, true, false, false, 1, 0},
		{delivered, false, false, true, 0, 1},
		{raw, false, true, true, 0, 0},
		{raw, false, true, false, 0, 0},
	} {
		var ch bool
		var err error
		if step.forget {
			ch, err = e.Forget(ctx, step.raw)
		} else {
			ch, err = e.Learn(ctx, step.raw, step.spam)
		}
		if err != nil || ch != step.changed {
			t.Fatalf("step %d: changed %v, %v; want %v", i, ch, err, step.changed)
		}
		st, _ := e.Stats(ctx)
		if st.Spam != step.spamN || st.Ham != step.hamN {
			t.Fatalf("step %d: %d spam %d ham; want %d, %d", i, st.Spam, st.Ham, step.spamN, step.hamN)
		}
	}
}

// Expiry runs at most once a day after a learning, by the engine's clock.
func TestExpiryClock(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	st := bayes.NewMemStore()
	e := newTestEngine(t, Config{Store: st, TokenTTL: 30 * 24 * time.Hour, Now: func() time.Time { return now }})
	ctx := context.Background()
	if _, err := e.Learn(ctx, readTestdata(t, "plain.eml"), false); err != nil {
		t.Fatal(err)
	}
	now = now.Add(60 * 24 * time.Hour)
	if _, err := e.Learn(ctx, readTestdata(t, "gtube.eml"), true); err != nil {
		t.Fatal(err)
	}
	stats, _ := st.Stats(ctx)
	if stats.ExpiredTotal == 0 || !stats.OldestAtime.Equal(now) {
		t.Errorf("after 60 days: %+v; want the plain message's tokens expired", stats)
	}
}

func TestDNSLists(t *testing.T) {
	srv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if err := srv.SetZone(
		"2.0.0.192.zen.test. 60 IN A 127.0.0.2",
		"3.0.0.192.zen.test. 60 IN A 127.0.0.99",
		"shop.example.dbl.test. 60 IN A 127.0.1.2",
	); err != nil {
		t.Fatal(err)
	}
	res, err := dnsclient.New(dnsclient.Config{Servers: []string{srv.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	e := newTestEngine(t, Config{
		Resolver: res,
		DNSBL:    []DNSList{{Name: "RCVD_IN_ZEN", Zone: "zen.test=127.0.0.[2..11]", Score: 2.5, Description: "listed"}},
		URIBL:    []DNSList{{Name: "URIBL_DBL", Zone: "dbl.test", Score: 1.5}},
	})
	ctx := context.Background()
	body := func(link string) []byte {
		return []byte("From: a@b.example\r\nSubject: x\r\n\r\nvisit " + link + " today\r\n")
	}
	for _, tt := range []struct {
		client string
		link   string
		want   string
	}{
		{"192.0.0.2", "http://nothing.example/", "RCVD_IN_ZEN"},
		{"192.0.0.3", "http://nothing.example/", ""}, // answer outside the filter
		{"192.0.0.4", "http://www.shop.example/buy", "URIBL_DBL"},
		{"127.0.0.2", "http://nothing.example/", ""}, // loopback clients are not looked up
	} {
		r, err := e.Score(ctx, Input{Raw: body(tt.link), Client: netip.MustParseAddr(tt.client)})
		if err != nil {
			t.Fatal(err)
		}
		got := ""
		for _, h := range r.Hits {
			if h.Name == "RCVD_IN_ZEN" || h.Name == "URIBL_DBL" {
				got += h.Name
			}
		}
		if got != tt.want {
			t.Errorf("client %s link %s: DNS hits %q; want %q", tt.client, tt.link, got, tt.want)
		}
	}
	if _, err := New(Config{DNSBL: []DNSList{{Name: "X", Zone: "zen.test"}}}); err == nil {
		t.Error("DNS lists without a resolver were accepted")
	}
	if _, err := New(Config{Resolver: res, DNSBL: []DNSList{{Name: "X", Zone: "zen.test=300.0.0.1"}}}); err == nil {
		t.Error("a bad answer filter was accepted")
	}
}

// A DNS list that never answers costs at most the DNS budget.
func TestDNSBudget(t *testing.T) {
	srv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	z := dnstest.NewZone()
	z.Timeout("2.0.0.192.slow.test")
	srv.Set(z)
	res, err := dnsclient.New(dnsclient.Config{Servers: []string{srv.Addr()}, Timeout: 5 * time.Second, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	e := newTestEngine(t, Config{Resolver: res, DNSTimeout: 200 * time.Millisecond,
		DNSBL: []DNSList{{Name: "SLOW", Zone: "slow.test", Score: 1}}})
	start := time.Now()
	r, err := e.Score(context.Background(), Input{Raw: plainWith("From: a@b.example\r\n"), Client: netip.MustParseAddr("192.0.0.2")})
	if d := time.Since(start); err != nil || d > 2*time.Second || hasHit(r, "SLOW") {
		t.Errorf("Score took %v, err %v, hits %s; want within the DNS budget, no hit", d, err, hitNames(r))
	}
}

// Malformed MIME is scored within the time budget, and a budget that runs
// out yields POSTKIT_TIMEOUT and ErrTimeout, never a lost result.
func TestMalformedWithinBudget(t *testing.T) {
	var nested strings.Builder
	nested.WriteString("Subject: deep\r\n")
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(&nested, "Content-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n--b%d\r\n", i, i)
	}
	nested.WriteString("Content-Type: text/plain\r\n\r\nXJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n")
	cases := map[string][]byte{
		"1000 nested parts": []byte(nested.String()),
		"10 MB line":        []byte("Subject: l\r\n\r\n" + strings.Repeat("spam ", 2<<20) + "\r\n"),
		"bad base64":        []byte("Subject: b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n@@@@ not base64 at all ####\r\n"),
		"broken boundary":   []byte("Subject: m\r\nContent-Type: multipart/mixed; boundary=\"abc\"\r\n\r\n--abd\r\nContent-Type: text/html\r\n\r\n<p>unterminated\r\n--ab"),
	}
	e := newTestEngine(t, Config{Store: bayes.NewMemStore(), Timeout: 5 * time.Second})
	for name, raw := range cases {
		start := time.Now()
		r, err := e.Score(context.Background(), Input{Raw: raw})
		if d := time.Since(start); d > 5*time.Second+time.Second {
			t.Errorf("%s: scored in %v; want within the 5s budget", name, d)
		}
		if err != nil && !errors.Is(err, ErrTimeout) {
			t.Errorf("%s: %v", name, err)
		}
		if name == "1000 nested parts" && !hasHit(r, "MIME_TOO_DEEP") {
			t.Errorf("%s: hits %s; want MIME_TOO_DEEP", name, hitNames(r))
		}
		if name == "broken boundary" && !hasHit(r, "MIME_BROKEN") {
			t.Errorf("%s: hits %s; want MIME_BROKEN", name, hitNames(r))
		}
	}
	// A budget too small for anything: the result names the timeout.
	tiny := newTestEngine(t, Config{Timeout: time.Nanosecond})
	r, err := tiny.Score(context.Background(), Input{Raw: cases["10 MB line"]})
	if !errors.Is(err, ErrTimeout) || !hasHit(r, HitTimeout) {
		t.Errorf("tiny budget: %v, hits %s; want ErrTimeout and %s", err, hitNames(r), HitTimeout)
	}
	if !strings.Contains(Status(r), "tests="+HitTimeout) {
		t.Errorf("Status = %q", Status(r))
	}
}

func TestRulesDirErrors(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(dir+"/local.rules", []byte("body BROKEN /(/\n"), 0o644)
	if _, err := New(Config{RulesDirs: []string{dir}}); err == nil || !strings.Contains(err.Error(), "local.rules:1:") {
		t.Errorf("New = %v; want the file and line of the error", err)
	}
}

// Scoring, autolearn and learning run concurrently on one engine and one
// SQLite store (the milter's sessions and `postkit spam learn`).
func TestConcurrent(t *testing.T) {
	e := newTestEngine(t, Config{BayesPath: t.TempDir() + "/bayes.sqlite", Autolearn: true, MinSpam: 1, MinHam: 1})
	ctx := context.Background()
	gtube, plain := readTestdata(t, "gtube.eml"), readTestdata(t, "plain.eml")
	errs := make(chan error, 16)
	for i := 0; i < 8; i++ {
		go func() {
			for j := 0; j < 20; j++ {
				raw := plain
				if j%2 == 0 {
					raw = gtube
				}
				if _, err := e.Score(ctx, Input{Raw: raw}); err != nil {
					errs <- err
					return
				}
				if _, err := e.Learn(ctx, []byte(fmt.Sprintf("Message-ID: <%d.%d@x>\r\nSubject: s\r\n\r\nword%d\r\n", i, j, j)), j%3 == 0); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for i := 0; i < 8; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	st, err := e.Stats(ctx)
	if err != nil || st.Spam+st.Ham != 160+2 {
		t.Errorf("stats %+v, %v; want 160 learned plus 2 autolearned", st, err)
	}
}
