// Package multimx runs two MX stacks — each its own Postfix, Dovecot,
// `postkit policyd` and `postkit milter`, on 127.0.0.1 and 127.0.0.2 — sharing one PostgreSQL 15 for
// the daemons' state (state.driver postgresql): greylisting, rate limits
// and Bayes agree across hosts, and an outage of PostgreSQL costs no mail.
// Users come from each host's own SQLite database, seeded alike.
package multimx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/postkit/postkit/e2e/harness"
	"github.com/postkit/postkit/internal/pgtest"
)

// mxIP are the addresses the two MX listen on, as two hosts would.
var mxIP = [2]string{"127.0.0.1", "127.0.0.2"}

const (
	sock    = "{root}/spool/postfix/postkit/"
	delay   = 2 * time.Second // greylisting delay
	limit   = 3               // messages per hour per sender
	greyIP  = "127.0.0.3"     // a greylisted client; harness.OutsideIP is exempt
	limited = "bulk@" + harness.OutsideDomain
	// reporting publishes DMARC p=none with its aggregate reports to
	// alice, whose domain consents to receive them.
	reporting = "reporting.test"
)

var (
	alice    = "alice@" + harness.Domain
	password = "Alice-pw-4711"
	stranger = "someone@" + harness.OutsideDomain
)

func TestMain(m *testing.M) {
	// The package's stack builds the postkit binary both MX reuse.
	os.Exit(harness.Main(m, harness.Options{}))
}

// mxOptions is one MX of the pair, listening on ip, its state in the
// database dsn; onError is its state.on_error.
func mxOptions(ip, dsn, onError string) harness.Options {
	return harness.Options{
		IP: ip,
		Set: map[string]any{
			"state.on_error":                onError,
			"state.driver":                  "postgresql",
			"state.dsn":                     dsn,
			"state.cache_ttl":               "30s",
			"policy.enabled":                true,
			"policy.listen":                 "unix:" + sock + "policy.sock",
			"policy.checks":                 []any{"greylist", "ratelimit"},
			"policy.greylist.delay":         delay.String(),
			"policy.greylist.allow_ips":     []any{harness.OutsideIP + "/32"},
			"policy.ratelimit.limits":       []any{map[string]any{"key": "sender", "count": "messages", "max": limit, "window": "1h"}},
			"milter.enabled":                true,
			"milter.listen":                 "unix:" + sock + "milter.sock",
			"milter.default_action":         "tempfail",
			"milter.dkim.authserv_id":       harness.Hostname,
			"milter.spam.enabled":           true,
			"milter.spam.bayes.enabled":     true,
			"milter.spam.bayes.min_trained": 1,
			"milter.spam.bayes.autolearn":   false,
		},
		Zone: []string{
			reporting + `. 300 IN A 127.0.0.1`,
			`_dmarc.` + reporting + `. 300 IN TXT "v=DMARC1; p=none; rua=mailto:` + alice + `"`,
			reporting + `._report._dmarc.` + harness.Domain + `. 300 IN TXT "v=DMARC1"`,
		},
		Daemons: []harness.DaemonSpec{
			{Name: "policyd", Args: []string{"policyd", "-c", "{config}"}, Ready: "unix:" + sock + "policy.sock"},
			{Name: "milter", Args: []string{"milter", "-c", "{config}"}, Ready: "unix:" + sock + "milter.sock"},
		},
		Seed: func(s *harness.Stack) error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			return s.AddUser(ctx, alice, password)
		},
	}
}

// pair starts PostgreSQL and the two MX, with state.on_error onError[i].
func pair(t *testing.T, onError [2]string) (*pgtest.Server, string, [2]*harness.Stack) {
	t.Helper()
	srv := pgtest.Start(t)
	dsn := srv.CreateDatabase("postkit_state")
	var mx [2]*harness.Stack
	for i := range mx {
		mx[i] = harness.StartT(t, mxOptions(mxIP[i], dsn, onError[i]))
	}
	// MX2 answers on its own address only, as a second host would.
	if c, err := net.DialTimeout("tcp", harness.Addr(mx[1].Ports.SMTP), time.Second); err == nil {
		c.Close()
		t.Fatalf("MX2 answers on %s; want it on %s only", harness.Addr(mx[1].Ports.SMTP), mx[1].Addr(mx[1].Ports.SMTP))
	}
	return srv, dsn, mx
}

// send sends one message from client through mx and returns the SMTP
// error, if any.
func send(t *testing.T, mx *harness.Stack, client, from string, msg []byte) error {
	t.Helper()
	c, err := mx.SMTP(client)
	if err != nil {
		return err
	}
	defer c.Close()
	return harness.Send(c, from, []string{alice}, msg)
}

func code(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return harness.Code(err)
}

// wait returns the message tok delivered to alice's INBOX or Spam folder.
func wait(t *testing.T, mx *harness.Stack, tok string) harness.Delivered {
	t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		for _, folder := range []string{"", "Spam"} {
			if m := mx.FindMail(alice, folder, tok); len(m) > 0 {
				return m[0]
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("message %s not delivered to %s within 45s", tok, alice)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// uidOf returns the UID of the message of folder holding token.
func uidOf(t *testing.T, mx *harness.Stack, folder, token string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := mx.IMAP(ctx, true, alice, password, folder, "UID SEARCH BODY "+token)
	if err != nil || r.Exit != 0 {
		t.Fatalf("IMAP UID SEARCH in %s: %v %+v", folder, err, r)
	}
	f := strings.Fields(strings.TrimSpace(r.Stdout))
	if len(f) != 3 || f[1] != "SEARCH" {
		t.Fatalf("IMAP UID SEARCH in %s for %s: %q, want one UID", folder, token, r.Stdout)
	}
	return f[2]
}

// imap runs one command on the selected folder as alice.
func imap(t *testing.T, mx *harness.Stack, folder, cmd string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if r, err := mx.IMAP(ctx, true, alice, password, folder, cmd); err != nil || r.Exit != 0 {
		t.Fatalf("IMAP %s in %s: %v %+v", cmd, folder, err, r)
	}
}

// waitLearned waits until the shared Bayes store counts spam and ham
// learned messages.
func waitLearned(t *testing.T, srv *pgtest.Server, spam, ham int) {
	t.Helper()
	want := fmt.Sprintf("%d|%d", spam, ham)
	var got string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		got = srv.Psql("postkit_state", "SELECT (SELECT value FROM bayes_vars WHERE name = 'spam') || '|' || (SELECT value FROM bayes_vars WHERE name = 'ham')")
		if got == want {
			return
		}
	}
	t.Fatalf("shared Bayes store: spam|ham learned = %q; want %q", got, want)
}

// spamBody is what the spam learned and scored below says: the same words,
// a new message each time.
const spamBody = "Cheap replica watches zorgblat quantuum offer, buy frimblex pills now, " +
	"limited wuzzlebottom discount plonkadoodle megasale snarfwidget.\r\n"

const hamBody = "Hi, the minutes of Thursday's meeting are attached; the budget review " +
	"moves to next week and the release notes need a second reader.\r\n"

func TestSharedState(t *testing.T) {
	srv, _, mx := pair(t, [2]string{"accept", "accept"})
	mx1, mx2 := mx[0], mx[1]

	t.Run("greylisted on MX1, accepted on MX2 after the delay", func(t *testing.T) {
		tok := harness.Token()
		msg := harness.Message(stranger, alice, tok)
		err := send(t, mx1, greyIP, stranger, msg)
		if code(err) != 450 || !strings.Contains(err.Error(), "Greylisted") {
			t.Fatalf("first try on MX1: %v; want 450 Greylisted", err)
		}
		first := time.Now()
		time.Sleep(time.Until(first.Add(delay + 500*time.Millisecond)))
		if err := send(t, mx2, greyIP, stranger, msg); err != nil {
			t.Fatalf("retry on MX2 after %v: %v; want accepted (MX1's triplet is shared)", delay, err)
		}
		wait(t, mx2, tok)
	})

	t.Run("a sender's rate limit counts mail through both", func(t *testing.T) {
		for i := range limit {
			tok := harness.Token()
			if err := send(t, mx[i%2], harness.OutsideIP, limited, harness.Message(limited, alice, tok)); err != nil {
				t.Fatalf("message %d of %d through MX%d: %v; want accepted", i+1, limit, i%2+1, err)
			}
		}
		for i, m := range mx {
			err := send(t, m, harness.OutsideIP, limited, harness.Message(limited, alice, harness.Token()))
			if code(err) != 450 || !strings.Contains(err.Error(), "Rate limit") {
				t.Errorf("message %d through MX%d: %v; want 450 Rate limit (%d already sent through both)", limit+1, i+1, err, limit)
			}
		}
	})

	t.Run("learned through MX1, scored by MX2's Bayes", func(t *testing.T) {
		// Each message its own sender: the rate limit is not what this is about.
		probe := func() string {
			tok := harness.Token()
			from := "p" + strings.ToLower(tok[:8]) + "@" + harness.OutsideDomain
			if err := send(t, mx2, harness.OutsideIP, from, append(harness.Message(from, alice, tok), spamBody...)); err != nil {
				t.Fatalf("probe through MX2: %v", err)
			}
			return strings.Join(strings.Fields(wait(t, mx2, tok).Header("X-Spam-Status")), " ")
		}
		if st := probe(); strings.Contains(st, "BAYES_") {
			t.Fatalf("before any learning MX2 scored with Bayes: %s", st)
		}
		// alice moves a message into Spam over MX1's IMAP (learned as spam
		// by Dovecot's IMAPSieve service, `postkit spam learn --bayes-dsn`),
		// and another into Spam and back out (learned as ham).
		deliver := func(body string) string {
			tok := harness.Token()
			from := "d" + strings.ToLower(tok[:8]) + "@" + harness.OutsideDomain
			if err := send(t, mx1, harness.OutsideIP, from, append(harness.Message(from, alice, tok), body...)); err != nil {
				t.Fatalf("delivery through MX1: %v", err)
			}
			wait(t, mx1, tok)
			return tok
		}
		spamTok, hamTok := deliver(spamBody), deliver(hamBody)
		imap(t, mx1, "INBOX", "UID MOVE "+uidOf(t, mx1, "INBOX", spamTok)+" Spam")
		waitLearned(t, srv, 1, 0)
		imap(t, mx1, "INBOX", "UID MOVE "+uidOf(t, mx1, "INBOX", hamTok)+" Spam")
		waitLearned(t, srv, 2, 0)
		imap(t, mx1, "Spam", "UID MOVE "+uidOf(t, mx1, "Spam", hamTok)+" INBOX")
		waitLearned(t, srv, 1, 1)
		if st := probe(); !strings.Contains(st, "BAYES_9") {
			t.Errorf("after learning on MX1, MX2's X-Spam-Status %q; want a BAYES_9x test", st)
		}
	})
}

// Both MX record their DMARC evaluations in the shared database: either
// host's report shows both, and of the two hosts sending at once only one
// mails the day's report.
func TestSharedDMARCReport(t *testing.T) {
	srv, _, mx := pair(t, [2]string{"accept", "accept"})
	for i, m := range mx {
		tok := harness.Token()
		from := "n" + strings.ToLower(tok[:8]) + "@" + reporting
		if err := send(t, m, harness.OutsideIP, from, harness.Message(from, alice, tok)); err != nil {
			t.Fatalf("through MX%d: %v", i+1, err)
		}
		wait(t, m, tok)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	day := time.Now().UTC().Format(time.DateOnly)
	// The milters write what they queued once a second.
	var out string
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		var err error
		out, err = mx[1].Postkit(ctx, "", "dmarc", "report", "-c", mx[1].Paths.Config, "--day", day, "--print")
		if err == nil && strings.Contains(out, reporting) && strings.Contains(out, "2 messages") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("MX2's report of %s: %v\n%s; want both hosts' 2 messages", day, err, out)
		}
	}
	if n := srv.Psql("postkit_state", "SELECT count(*) FROM dmarc_eval WHERE policy_domain = '"+reporting+"'"); n != "2" {
		t.Errorf("%s rows of %s in PostgreSQL; want 2", n, reporting)
	}
	var wg sync.WaitGroup
	for i, m := range mx {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if out, err := m.Postkit(ctx, "", "dmarc", "report", "-c", m.Paths.Config, "--day", day, "--send"); err != nil {
				t.Errorf("--send on MX%d: %v\n%s", i+1, err, out)
			}
		}()
	}
	wg.Wait()
	subject := "Report Domain: " + reporting
	for deadline := time.Now().Add(45 * time.Second); len(mx[0].FindMail(alice, "", subject))+len(mx[1].FindMail(alice, "", subject)) == 0; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no report of " + reporting + " delivered by either MX within 45s")
		}
	}
	time.Sleep(2 * time.Second)
	if n1, n2 := len(mx[0].FindMail(alice, "", subject)), len(mx[1].FindMail(alice, "", subject)); n1+n2 != 1 {
		t.Errorf("reports of %s: %d through MX1, %d through MX2; want one in all", reporting, n1, n2)
	}
}

// TestPostgreSQLOutage: PostgreSQL stopped during a bounded load through
// both MX, then started. MX1 lets mail through while its state is out of
// reach (state.on_error accept), MX2 defers it (defer). Every message
// accepted with 250 is delivered (or still queued), none is refused with
// 5xx, and the daemons use PostgreSQL again without being restarted.
func TestPostgreSQLOutage(t *testing.T) {
	srv, _, mx := pair(t, [2]string{"accept", "defer"})
	const total = 40
	type sent struct {
		tok    string
		mx     int
		code   int
		err    error
		outage bool
		sender string
	}
	var pids []int
	for _, m := range mx {
		pids = append(pids, m.Daemon("policyd").Pid(), m.Daemon("milter").Pid())
	}
	down := false
	var (
		mu      sync.Mutex
		results []sent
	)
	load := func(from, to int, pace time.Duration) {
		for i := from; i < to; i++ {
			tok := harness.Token()
			n := i % 2
			// Each message its own sender, so that no limit is reached:
			// what the outage may cost is the state, not the mail.
			sender := fmt.Sprintf("load%d-%s@%s", i, strings.ToLower(tok[:6]), harness.OutsideDomain)
			err := send(t, mx[n], harness.OutsideIP, sender, append(harness.Message(sender, alice, tok), hamBody...))
			c := 250
			if err != nil {
				c = code(err)
			}
			mu.Lock()
			results = append(results, sent{tok, n, c, err, down, sender})
			mu.Unlock()
			time.Sleep(pace)
		}
	}
	load(0, total/4, 50*time.Millisecond)
	srv.Stop()
	outage := time.Now()
	down = true
	load(total/4, 3*total/4, 200*time.Millisecond)
	// A new triplet while the state is unreachable: let through (greylisting
	// fails open), never refused.
	if err := send(t, mx[0], greyIP, stranger, harness.Message(stranger, alice, harness.Token())); err != nil && code(err) >= 500 {
		t.Errorf("new triplet during the outage: %v; want accepted or 4xx, never 5xx", err)
	}
	srv.Restart()
	down = false
	t.Logf("PostgreSQL down for %v", time.Since(outage).Round(time.Millisecond))
	load(3*total/4, total, 50*time.Millisecond)

	accepted, deferred := 0, 0
	for _, r := range results {
		switch {
		case r.code >= 500:
			t.Errorf("message %s through MX%d refused with %d during the outage: %v", r.tok, r.mx+1, r.code, r.err)
		case r.code == 250:
			accepted++
		case r.mx == 1 && r.outage && r.code/100 == 4:
			deferred++ // MX2 defers while its state is out of reach
		default:
			t.Errorf("message %s through MX%d (outage %v): %d %v; want 250", r.tok, r.mx+1, r.outage, r.code, r.err)
		}
	}
	if deferred == 0 {
		t.Error("MX2 (state.on_error defer) deferred no message during the outage")
	}
	// The clients of the deferred messages retry, as an MTA does: accepted
	// now that the state is back.
	for i := range results {
		r := &results[i]
		if r.code/100 != 4 {
			continue
		}
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
			r.err = send(t, mx[r.mx], harness.OutsideIP, r.sender, append(harness.Message(r.sender, alice, r.tok), hamBody...))
			if r.err == nil {
				r.code = 250
				break
			}
			r.code = code(r.err)
		}
		if r.code != 250 {
			t.Errorf("deferred message %s retried on MX%d after the outage: %v; want accepted", r.tok, r.mx+1, r.err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	delivered, queued, noBayes := 0, 0, 0
	for _, r := range results {
		if r.code != 250 {
			continue
		}
		m := mx[r.mx]
		for {
			if got := append(m.FindMail(alice, "", r.tok), m.FindMail(alice, "Spam", r.tok)...); len(got) > 0 {
				delivered++
				if r.outage && strings.Contains(got[0].Header("X-Spam-Status"), "POSTKIT_BAYES_DOWN") {
					noBayes++
				}
				break
			}
			if ctx.Err() != nil {
				q, _ := m.Queue(context.Background())
				found := false
				for _, e := range q {
					if strings.Contains(e.MessageID, r.tok) {
						found = true
					}
				}
				if !found {
					t.Errorf("message %s accepted by MX%d is neither delivered nor queued", r.tok, r.mx+1)
				} else {
					queued++
				}
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	t.Logf("%d sent: %d accepted with 250 at once, %d deferred by MX2 and accepted on retry; %d delivered, %d still queued; %d scored without Bayes during the outage",
		len(results), accepted, deferred, delivered, queued, noBayes)
	if noBayes == 0 {
		t.Error("no message delivered during the outage says POSTKIT_BAYES_DOWN in X-Spam-Status")
	}
	for i, m := range mx {
		for j, name := range []string{"policyd", "milter"} {
			if d := m.Daemon(name); !d.Running() || d.Pid() != pids[2*i+j] {
				t.Errorf("MX%d's %s was restarted or stopped (pid %d, was %d): it must recover by itself", i+1, name, d.Pid(), pids[2*i+j])
			}
		}
	}

	// The daemons came back by themselves: a new triplet is greylisted
	// again (the state is read and written), through either MX.
	for i, m := range mx {
		var err error
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(500 * time.Millisecond) {
			err = send(t, m, greyIP, stranger, harness.Message(stranger, alice, harness.Token()))
			if code(err) == 450 {
				break
			}
		}
		if code(err) != 450 {
			t.Errorf("MX%d after PostgreSQL came back: %v; want 450 Greylisted (state in use again)", i+1, err)
		}
	}
	// And the spam filter scores with its store again: no POSTKIT_BAYES_DOWN.
	tok := harness.Token()
	if err := send(t, mx[1], harness.OutsideIP, stranger, append(harness.Message(stranger, alice, tok), hamBody...)); err != nil {
		t.Fatal(err)
	}
	if st := wait(t, mx[1], tok).Header("X-Spam-Status"); strings.Contains(st, "POSTKIT_BAYES_DOWN") {
		t.Errorf("after PostgreSQL came back MX2 still scores without Bayes: %s", st)
	}
}
