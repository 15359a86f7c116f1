package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/postkit/postkit/e2e/harness"
	"github.com/postkit/postkit/internal/procstat"
)

// The spam scenarios run on a stack of their own: the postkit milter with
// its spam filter (milter.spam, shipped rules, a Bayes store under the
// sandbox), the generated Sieve rule that files X-Spam-Flag: YES into Spam,
// and Dovecot's IMAPSieve learning from moves into and out of Spam.
const (
	spamSocket  = "{root}/spool/postfix/postkit/milter.sock"
	spamBlocked = "bulk@" + harness.OutsideDomain // in milter.spam.blacklist_from
	// spamReject is milter.spam.reject_score: above GTUBE's 1000, so that
	// GTUBE is filed into Spam and GTUBE from a blacklisted sender (1100)
	// is refused.
	spamReject = 1050
	// spamSizeLimit lets the 30 MB message in.
	spamSizeLimit = 40 << 20
)

// gtube is the GTUBE test string, split so that this file is not spam.
var gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-" + "ANTI-UBE-TEST-EMAIL*C.34X"

func spamStack(t *testing.T) (*harness.Stack, *harness.Daemon) {
	t.Helper()
	var milter *harness.Daemon
	s := harness.StartT(t, harness.Options{
		MessageSizeLimit: spamSizeLimit,
		Set: map[string]any{
			"milter.enabled":              true,
			"milter.listen":               "unix:" + spamSocket,
			"milter.default_action":       "tempfail",
			"milter.dkim.authserv_id":     harness.Hostname,
			"milter.spam.reject_score":    spamReject,
			"milter.spam.blacklist_from":  []string{spamBlocked},
			"milter.spam.rewrite_subject": "*****SPAM*****",
		},
		Seed: func(s *harness.Stack) error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			for _, u := range []string{alice, bob} {
				if err := s.AddUser(ctx, u, passwords[u]); err != nil {
					return err
				}
			}
			var err error
			milter, err = s.StartDaemon(ctx, harness.DaemonSpec{
				Name:  "milter",
				Args:  []string{"milter", "-c", "{config}", "--log-level", "debug"},
				Ready: "unix:" + spamSocket,
			})
			return err
		},
	})
	return s, milter
}

// sendOutside sends msg from the outside world (127.0.0.2) to rcpt.
func sendOutside(t *testing.T, s *harness.Stack, from, rcpt string, msg []byte) error {
	t.Helper()
	c, err := s.SMTP(harness.OutsideIP)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return harness.Send(c, from, []string{rcpt}, msg)
}

// unfolded joins a field's continuation lines.
func unfolded(v string) string { return strings.Join(strings.Fields(v), " ") }

var scoreRE = regexp.MustCompile(`score=(-?[0-9.]+) `)

// TestSpam: the spam filter end to end, through real Postfix and Dovecot.
func TestSpam(t *testing.T) {
	s, milter := spamStack(t)
	bg := context.Background()

	t.Run("GTUBE is flagged and filed into Spam", func(t *testing.T) {
		tok := harness.Token()
		msg := harness.Message(stranger, alice, tok)
		msg = append(msg, []byte(gtube+"\r\n")...)
		if err := sendOutside(t, s, stranger, alice, msg); err != nil {
			t.Fatalf("send: %v", err)
		}
		m, err := s.WaitMail(ctx(t), alice, "Spam", tok)
		if err != nil {
			t.Fatalf("%v (in INBOX: %d)", err, len(s.FindMail(alice, "", tok)))
		}
		if got := m.Headers("X-Spam-Flag"); len(got) != 1 || got[0] != "YES" {
			t.Errorf("X-Spam-Flag %q, want exactly one YES", got)
		}
		st := unfolded(m.Header("X-Spam-Status"))
		if !strings.HasPrefix(st, "Yes, score=") || !strings.Contains(st, "GTUBE") || !strings.Contains(st, "required=5.0") || !strings.Contains(st, "version=") {
			t.Errorf("X-Spam-Status %q", st)
		}
		if got := m.Header("X-Spam-Level"); got != strings.Repeat("*", 50) {
			t.Errorf("X-Spam-Level %q, want 50 stars", got)
		}
		if got := m.Header("X-Spam-Checker-Version"); !strings.Contains(got, "on "+harness.Hostname) {
			t.Errorf("X-Spam-Checker-Version %q", got)
		}
		if got := m.Header("Subject"); got != "*****SPAM***** postkit e2e "+tok {
			t.Errorf("Subject %q, want it rewritten", got)
		}
		if got := len(s.FindMail(alice, "", tok)); got != 0 {
			t.Errorf("%d copies in INBOX too", got)
		}
	})

	t.Run("a normal message lands in INBOX with X-Spam-Status: No", func(t *testing.T) {
		tok := harness.Token()
		if err := sendOutside(t, s, stranger, alice, harness.Message(stranger, alice, tok)); err != nil {
			t.Fatalf("send: %v", err)
		}
		m, err := s.WaitMail(ctx(t), alice, "", tok)
		if err != nil {
			t.Fatal(err)
		}
		st := unfolded(m.Header("X-Spam-Status"))
		if !strings.HasPrefix(st, "No, score=") {
			t.Errorf("X-Spam-Status %q, want No", st)
		}
		if len(m.Headers("X-Spam-Flag")) != 0 {
			t.Errorf("ham carries X-Spam-Flag %q", m.Headers("X-Spam-Flag"))
		}
		if got := m.Header("Subject"); got != "postkit e2e "+tok {
			t.Errorf("Subject %q, want it unchanged", got)
		}
	})

	t.Run("over the reject threshold: 550", func(t *testing.T) {
		tok := harness.Token()
		msg := append(harness.Message(spamBlocked, alice, tok), []byte(gtube+"\r\n")...)
		err := sendOutside(t, s, spamBlocked, alice, msg)
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 7, 1}) || !strings.Contains(se.Message, "spam") {
			t.Fatalf("send: %v, want 550 5.7.1 naming spam", err)
		}
		time.Sleep(500 * time.Millisecond)
		if n := len(s.FindMail(alice, "", tok)) + len(s.FindMail(alice, "Spam", tok)); n != 0 {
			t.Errorf("a refused message was delivered %d times", n)
		}
	})

	t.Run("forged X-Spam fields from outside are gone", func(t *testing.T) {
		tok := harness.Token()
		msg := harness.Message(stranger, alice, tok, "X-Spam-Flag: YES", "X-Spam-Status: Yes, score=99.0 required=5.0 tests=FORGED", "X-Spam-Level: ***************")
		if err := sendOutside(t, s, stranger, alice, msg); err != nil {
			t.Fatalf("send: %v", err)
		}
		// The forged flag would have filed it into Spam.
		m, err := s.WaitMail(ctx(t), alice, "", tok)
		if err != nil {
			t.Fatalf("%v (in Spam: %d)", err, len(s.FindMail(alice, "Spam", tok)))
		}
		if got := m.Headers("X-Spam-Flag"); len(got) != 0 {
			t.Errorf("X-Spam-Flag %q survived", got)
		}
		st := m.Headers("X-Spam-Status")
		if len(st) != 1 || strings.Contains(st[0], "FORGED") || !strings.HasPrefix(unfolded(st[0]), "No, score=") {
			t.Errorf("X-Spam-Status %q, want only ours", st)
		}
		// Ours has a star per point of a score below 5 (No): never the 15 forged.
		if lv := m.Headers("X-Spam-Level"); len(lv) != 1 || len(lv[0]) >= 5 {
			t.Errorf("X-Spam-Level %q, want only ours", lv)
		}
	})

	// Learning from what users do: a move into Spam over IMAP is learned
	// as spam, a move out of it as ham, through Dovecot's IMAPSieve and
	// `postkit spam learn`.
	t.Run("moving into Spam over IMAP learns spam", func(t *testing.T) {
		harness.NeedProgram(t, "curl")
		tok := harness.Token()
		if err := sendOutside(t, s, stranger, bob, harness.Message(stranger, bob, tok)); err != nil {
			t.Fatalf("send: %v", err)
		}
		m, err := s.WaitMail(ctx(t), bob, "", tok)
		if err != nil {
			t.Fatal(err)
		}
		// The milter may have learned it as ham already (autolearn): a
		// message learned again the other way is moved, not counted twice.
		auto := 0
		if strings.Contains(unfolded(m.Header("X-Spam-Status")), "autolearn=ham") {
			auto = 1
		}
		spam0, ham0 := learned(t, s)
		uid := imapSearch(t, s, bob, "INBOX", tok)
		imapCommand(t, s, bob, "INBOX", "UID MOVE "+uid+" Spam")
		waitLearned(t, s, spam0+1, ham0-auto)
		if n := len(s.FindMail(bob, "Spam", tok)); n != 1 {
			t.Errorf("the moved message is in Spam %d times, want once", n)
		}
		// And out again: ham.
		uid = imapSearch(t, s, bob, "Spam", tok)
		imapCommand(t, s, bob, "Spam", "UID MOVE "+uid+" INBOX")
		waitLearned(t, s, spam0, ham0-auto+1)
		// Into Trash from Spam is not a verdict.
		imapCommand(t, s, bob, "INBOX", "UID MOVE "+imapSearch(t, s, bob, "INBOX", tok)+" Spam")
		waitLearned(t, s, spam0+1, ham0-auto)
		imapCommand(t, s, bob, "Spam", "UID MOVE "+imapSearch(t, s, bob, "Spam", tok)+" Trash")
		time.Sleep(time.Second)
		if sp, h := learned(t, s); sp != spam0+1 || h != ham0-auto {
			t.Errorf("after a move from Spam to Trash: %d spam, %d ham learned; want %d, %d", sp, h, spam0+1, ham0-auto)
		}
	})

	t.Run("a 30 MB message goes through, the milter's memory bounded", func(t *testing.T) {
		tok := harness.Token()
		var b bytes.Buffer
		b.Write(harness.Message(stranger, alice, tok))
		line := strings.Repeat("0123456789", 7) + "abcdefgh\r\n" // 80 bytes
		lines := 0
		for b.Len() < 30<<20 {
			b.WriteString(line)
			lines++
		}
		_, peak0 := procMem(t, milter.Pid())
		if err := sendOutside(t, s, stranger, alice, b.Bytes()); err != nil {
			t.Fatalf("send: %v", err)
		}
		c, cancel := context.WithTimeout(bg, 2*time.Minute)
		defer cancel()
		m, err := s.WaitMail(c, alice, "", tok)
		if err != nil {
			t.Fatal(err)
		}
		// Dovecot stores lines with LF: count them.
		if got := bytes.Count(m.Data, []byte(strings.TrimSuffix(line, "\r\n")+"\n")); got != lines {
			t.Errorf("delivered %d bytes with %d of the %d body lines, want every one", len(m.Data), got, lines)
		}
		if st := unfolded(m.Header("X-Spam-Status")); !strings.HasPrefix(st, "No, score=") {
			t.Errorf("X-Spam-Status %q", st)
		}
		_, peak1 := procMem(t, milter.Pid())
		t.Logf("milter peak RSS %d kB → %d kB", peak0>>10, peak1>>10)
		if peak1-peak0 >= 16<<20 {
			t.Errorf("the milter's peak RSS grew by %d kB for a 30 MB message, want < 16 MB", (peak1-peak0)>>10)
		}
	})

	t.Run("malformed MIME is scored and delivered", func(t *testing.T) {
		for _, tc := range malformed() {
			t.Run(tc.name, func(t *testing.T) {
				tok := harness.Token()
				hdr := fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: malformed %s\r\nMessage-ID: <%s@outside.test>\r\nMIME-Version: 1.0\r\n", stranger, alice, tok, tok)
				t0 := time.Now()
				if err := sendOutside(t, s, stranger, alice, []byte(hdr+tc.raw)); err != nil {
					t.Fatalf("send: %v", err)
				}
				c, cancel := context.WithTimeout(bg, time.Minute)
				defer cancel()
				var m harness.Delivered
				for {
					found := append(s.FindMail(alice, "", tok), s.FindMail(alice, "Spam", tok)...)
					if len(found) > 0 {
						m = found[0]
						break
					}
					if c.Err() != nil {
						t.Fatalf("not delivered: %v", c.Err())
					}
					time.Sleep(100 * time.Millisecond)
				}
				st := unfolded(m.Header("X-Spam-Status"))
				if !strings.Contains(st, "score=") {
					t.Errorf("X-Spam-Status %q", st)
				}
				t.Logf("%s: %d bytes delivered in %v, X-Spam-Status %s", tc.name, len(m.Data), time.Since(t0).Round(time.Millisecond), st)
			})
		}
		if !milter.Running() {
			t.Fatal("the milter exited")
		}
	})
}

// malformed are bodies (after MIME-Version) that break MIME in the ways
// the engine must survive.
func malformed() []struct{ name, raw string } {
	var nested strings.Builder
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(&nested, "Content-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n--b%d\r\n", i, i)
	}
	nested.WriteString("Content-Type: text/plain\r\n\r\ndeep\r\n")
	for i := 999; i >= 0; i-- {
		fmt.Fprintf(&nested, "--b%d--\r\n", i)
	}
	long := strings.Repeat("x", 10<<20)
	bad64 := base64.StdEncoding.EncodeToString([]byte(strings.Repeat("hello ", 1000)))
	return []struct{ name, raw string }{
		{"broken boundaries", "Content-Type: multipart/mixed; boundary=\"abc\"\r\n\r\n--abc\r\nContent-Type: text/plain\r\n\r\nfirst part\r\n--abd\r\nContent-Type: text/html\r\n\r\n<p>never closed\r\n"},
		{"bad base64", "Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n" + bad64[:500] + "!!!***%%%\r\n" + bad64[500:1000] + "=\r\n==ab\r\n"},
		{"1000 nested parts", nested.String()},
		{"a 10 MB line", "Content-Type: text/plain\r\n\r\n" + long + "\r\n"},
	}
}

// procMem returns a process's VmRSS and VmHWM in bytes.
func procMem(t *testing.T, pid int) (cur, peak int64) {
	t.Helper()
	cur, peak, err := procstat.Mem(pid)
	if err != nil {
		t.Fatal(err)
	}
	return cur, peak
}

// learned reads `postkit spam stats` on the milter's Bayes store
// (milter.spam.bayes.path): messages learned as spam and ham.
func learned(t *testing.T, s *harness.Stack) (spamN, hamN int) {
	t.Helper()
	out, err := s.Postkit(ctx(t), "", "spam", "stats", "--bayes", filepath.Join(s.Paths.PostkitRun, "bayes.sqlite"))
	if err != nil {
		if strings.Contains(err.Error(), "learn something first") {
			return 0, 0 // no store yet
		}
		t.Fatal(err)
	}
	read := func(label string) int {
		m := regexp.MustCompile(`(?m)^` + label + `:\s+(\d+)$`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("postkit spam stats: no %q line in\n%s", label, out)
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
	return read("spam learned"), read("ham learned")
}

// waitLearned waits until the store counts spam and ham learned messages.
func waitLearned(t *testing.T, s *harness.Stack, spamN, hamN int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		sp, h := learned(t, s)
		if sp == spamN && h == hamN {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the store counts %d spam and %d ham learned; want %d and %d", sp, h, spamN, hamN)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// imapSearch returns the UID of the message of folder holding token.
func imapSearch(t *testing.T, s *harness.Stack, user, folder, token string) string {
	t.Helper()
	r, err := s.IMAP(ctx(t), true, user, passwords[user], folder, "UID SEARCH BODY "+token)
	if err != nil || r.Exit != 0 {
		t.Fatalf("IMAP UID SEARCH in %s: %v %+v", folder, err, r)
	}
	f := strings.Fields(strings.TrimSpace(r.Stdout))
	if len(f) != 3 || f[1] != "SEARCH" {
		t.Fatalf("IMAP UID SEARCH in %s for %s: %q, want one UID", folder, token, r.Stdout)
	}
	return f[2]
}

// imapCommand runs one command on the selected folder.
func imapCommand(t *testing.T, s *harness.Stack, user, folder, cmd string) {
	t.Helper()
	r, err := s.IMAP(ctx(t), true, user, passwords[user], folder, cmd)
	if err != nil || r.Exit != 0 {
		t.Fatalf("IMAP %s in %s: %v %+v", cmd, folder, err, r)
	}
}
