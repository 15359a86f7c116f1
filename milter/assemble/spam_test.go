package assemble_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postkit/postkit/internal/daemon"
	"github.com/postkit/postkit/internal/dkimkey"
	"github.com/postkit/postkit/internal/dnstest"
	"github.com/postkit/postkit/milter/assemble"
	"github.com/postkit/postkit/milter/dkimsign"
	"github.com/postkit/postkit/milter/milterd"
	"github.com/postkit/postkit/milter/miltertest"
	"github.com/postkit/postkit/spam"
	"github.com/postkit/postkit/sqlmaps"
)

// milter.spam onto the engine's Config: what the milter and `postkit spam
// -c` read the same way.
func TestSpamConfig(t *testing.T) {
	run := t.TempDir()
	c := loadYAML(t, yamlBase+`paths: {postkit_run: `+run+`/state}
database: {path: /nonexistent/postfix.sqlite}
dns: {servers: ["127.0.0.1:53"]}
milter:
  dkim: {authserv_id: mx.example.test}
  spam:
    required_score: 6.5
    rules_dir: /etc/postkit/spam.d
    whitelist_from: ["*@friend.test"]
    blacklist_from: ["*@foe.test"]
    time_budget: 4s
    dns_budget: 1s
    dnsbl: [{name: RCVD_IN_TEST, zone: "bl.test=127.0.0.2", score: 2.5}]
    bayes: {min_trained: 50, autolearn_spam: 10, autolearn_ham: -1, expiry: 0s}
`)
	sc, cl, err := assemble.SpamConfig(c, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if sc.Required != 6.5 || len(sc.RulesDirs) != 1 || sc.RulesDirs[0] != "/etc/postkit/spam.d" ||
		sc.WhitelistFrom[0] != "*@friend.test" || sc.BlacklistFrom[0] != "*@foe.test" || sc.AuthServID != "mx.example.test" {
		t.Errorf("thresholds, rules and lists: %+v", sc)
	}
	if sc.BayesPath != run+"/state/bayes.sqlite" || sc.MinSpam != 50 || sc.MinHam != 50 || !sc.Autolearn ||
		sc.AutolearnSpam != 10 || sc.AutolearnHam != -1 || sc.TokenTTL >= 0 {
		t.Errorf("bayes: path %q min %d/%d autolearn %v %v/%v ttl %v", sc.BayesPath, sc.MinSpam, sc.MinHam, sc.Autolearn, sc.AutolearnSpam, sc.AutolearnHam, sc.TokenTTL)
	}
	if fi, err := os.Stat(run + "/state"); err != nil || !fi.IsDir() {
		t.Errorf("the store's directory was not created: %v", err)
	}
	if sc.Timeout <= 3*time.Second || sc.Timeout >= 4*time.Second || sc.DNSTimeout != time.Second {
		t.Errorf("budgets: engine %v (want a little under 4s), DNS %v", sc.Timeout, sc.DNSTimeout)
	}
	if len(sc.DNSBL) != 1 || sc.DNSBL[0] != (spam.DNSList{Name: "RCVD_IN_TEST", Zone: "bl.test=127.0.0.2", Score: 2.5}) || sc.Resolver == nil {
		t.Errorf("DNS lists: %+v, resolver %v", sc.DNSBL, sc.Resolver)
	}
	if sc.AllowDomain == nil {
		t.Error("no per-domain allow list with a database")
	}
	c.Milter.Spam.Bayes.Enabled, c.Milter.Spam.DomainAllowLists = false, false
	sc, cl2, err := assemble.SpamConfig(c, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer cl2.Close()
	if sc.BayesPath != "" || sc.AllowDomain != nil {
		t.Errorf("bayes and allow lists off: path %q, allow %v", sc.BayesPath, sc.AllowDomain != nil)
	}
}

// The chain scores inbound mail with the shipped rules: GTUBE is spam, a
// plain message is not, and a sender domain the recipients' domain allows
// (in the database) passes when this pass's DKIM verification vouches for
// it, for that domain's recipients only.
func TestSpamChain(t *testing.T) {
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "postfix.sqlite")
	st, err := sqlmaps.Open(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := st.AddSpamAllow(ctx, "example.test", "partner.test"); err != nil {
		t.Fatal(err)
	}
	st.Close()
	// partner.test signs its mail; the chain's verifier checks it.
	key, err := dkimkey.Generate(dkimkey.Ed25519, 0, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	txt, _ := dkimkey.Record(key.Public())
	dnsSrv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer dnsSrv.Close()
	if err := dnsSrv.SetZone(fmt.Sprintf("s1._domainkey.partner.test. 300 IN TXT %q", txt)); err != nil {
		t.Fatal(err)
	}
	c := loadYAML(t, yamlBase+fmt.Sprintf("dns: {servers: [%q]}\ndatabase: {path: %s}\nmilter:\n  own_from: off\n  dkim: {authserv_id: mx.example.test}\n", dnsSrv.Addr(), dbPath))
	ch, err := assemble.New(c, assemble.Options{Logger: quiet, NoSeal: true})
	if err != nil {
		t.Fatal(err)
	}
	h := daemon.NewHolder(ch)
	srv := miltertest.Serve(t, "unix", milterd.NewServer(h))
	t.Cleanup(func() { <-h.Close() })
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join("..", "..", "spam", "testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		return strings.ReplaceAll(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n", "\r\n")
	}
	// A client from outside: not in trusted_networks (127.0.0.1/32).
	conn := miltertest.ConnInfo{Hostname: "mx.outside.test", Addr: "192.0.2.9", Port: 40000, Helo: "mx.outside.test"}
	send := func(raw string, rcpt string) string {
		t.Helper()
		cl, err := srv.Dial(conn)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		res, err := cl.Send(&miltertest.Message{From: "sender@outside.test", Rcpts: []string{rcpt}, Raw: []byte(raw)})
		if err != nil {
			t.Fatal(err)
		}
		return string(res.Final)
	}
	status := func(msg string) string {
		for _, h := range miltertest.Headers([]byte(msg)) {
			if h.Name == "X-Spam-Status" {
				return strings.Join(strings.Fields(h.Value), " ")
			}
		}
		return ""
	}
	got := send(read("gtube.eml"), "user@example.test")
	if !strings.Contains(got, "X-Spam-Flag: YES\r\n") || !strings.HasPrefix(status(got), "Yes, score=1") || !strings.Contains(status(got), "GTUBE") {
		t.Errorf("GTUBE: X-Spam-Status %q\n%s", status(got), got)
	}
	got = send(read("plain.eml"), "user@example.test")
	if strings.Contains(got, "X-Spam-Flag") || !strings.HasPrefix(status(got), "No, score=") {
		t.Errorf("plain: X-Spam-Status %q\n%s", status(got), got)
	}
	signer, err := dkimsign.New(dkimsign.Config{Keys: []dkimsign.Key{{Domain: "partner.test", Selector: "s1", Signer: key}}})
	if err != nil {
		t.Fatal(err)
	}
	// A copy of our Authentication-Results from outside does not count:
	// forged removes it.
	forgedAR := "Authentication-Results: mx.example.test; dkim=pass header.d=partner.test\r\n"
	fromPartner := strings.Replace(read("plain.eml"), "alice@example.org", "alice@partner.test", 1)
	sigs, err := signer.Sign(strings.NewReader(fromPartner))
	if err != nil || len(sigs) != 1 {
		t.Fatalf("sign: %v %v", sigs, err)
	}
	signed := "DKIM-Signature: " + sigs[0] + "\r\n" + fromPartner
	if got := send(forgedAR+fromPartner, "user@example.test"); strings.Contains(status(got), "ALLOWLIST_DOMAIN") {
		t.Errorf("unsigned, with a forged Authentication-Results: X-Spam-Status %q", status(got))
	}
	for _, tc := range []struct {
		rcpt  string
		allow bool
	}{{"user@example.test", true}, {"user@other.test", false}} {
		got = send(signed, tc.rcpt)
		if strings.Contains(status(got), "ALLOWLIST_DOMAIN") != tc.allow {
			t.Errorf("partner.test to %s: X-Spam-Status %q, want ALLOWLIST_DOMAIN %v", tc.rcpt, status(got), tc.allow)
		}
	}
}
