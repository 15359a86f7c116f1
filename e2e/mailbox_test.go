package e2e

import (
	"regexp"
	"strings"
	"testing"

	"github.com/postkit/postkit/e2e/harness"
)

// deliver sends a message from the outside to rcpt and waits until it is in
// folder of mailbox.
func deliver(t *testing.T, s *harness.Stack, rcpt, mailbox, folder, tok string, extra ...string) harness.Delivered {
	t.Helper()
	c, err := s.SMTP(harness.OutsideIP)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := harness.Send(c, stranger, []string{rcpt}, harness.Message(stranger, rcpt, tok, extra...)); err != nil {
		t.Fatalf("send to %s: %v", rcpt, err)
	}
	m, err := s.WaitMail(ctx(t), mailbox, folder, tok)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

var searchRE = regexp.MustCompile(`(?m)^\* SEARCH((?: \d+)*)\r?$`)

// A user logs in over IMAP with the password set by `postkit db` (STARTTLS on
// 143, implicit TLS on 993) and reads the delivered message; wrong or disabled
// credentials are refused.
func TestIMAP(t *testing.T) {
	s := harness.Need(t)
	harness.NeedProgram(t, "curl")
	tok := harness.Token()
	deliver(t, s, alice, alice, "", tok)
	for _, implicit := range []bool{false, true} {
		name := "143 STARTTLS"
		if implicit {
			name = "993 implicit TLS"
		}
		t.Run(name, func(t *testing.T) {
			r, err := s.IMAP(ctx(t), implicit, alice, passwords[alice], "INBOX", `SEARCH SUBJECT "`+tok+`"`)
			if err != nil {
				t.Fatal(err)
			}
			m := searchRE.FindStringSubmatch(r.Stdout)
			if r.Exit != 0 || m == nil || strings.TrimSpace(m[1]) == "" {
				t.Fatalf("SEARCH for %s: exit %d, stdout %q, stderr %q", tok, r.Exit, r.Stdout, r.Stderr)
			}
			seq := strings.Fields(m[1])[0]
			r, err = s.IMAP(ctx(t), implicit, alice, passwords[alice], "INBOX;MAILINDEX="+seq, "")
			if err != nil {
				t.Fatal(err)
			}
			if r.Exit != 0 || !strings.Contains(r.Stdout, "token "+tok) || !strings.Contains(r.Stdout, "Subject: postkit e2e "+tok) {
				t.Fatalf("FETCH %s: exit %d, stderr %q, message:\n%s", seq, r.Exit, r.Stderr, r.Stdout)
			}
		})
	}
	// Each refusal from its own address, in parallel: Dovecot delays a failed
	// login by 2 s, doubling per earlier failure from the same address.
	refused := []struct {
		name, user, password, local string
	}{
		{"wrong password", alice, "not-" + passwords[alice], "127.0.0.3"},
		{"disabled user", carol, passwords[carol], "127.0.0.4"},
		{"unknown user", "nobody@" + harness.Domain, "whatever", "127.0.0.5"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, err := s.IMAPFrom(ctx(t), tt.local, true, tt.user, tt.password, "INBOX", "NOOP")
			if err != nil {
				t.Fatal(err)
			}
			// curl exits 67 when the server refuses the login.
			if r.Exit != 67 {
				t.Errorf("login %s: curl exit %d (stderr %q), want 67 (login denied)", tt.user, r.Exit, r.Stderr)
			}
		})
	}
}

// The global Sieve script files mail flagged X-Spam-Flag: YES into Spam; the
// same mail without the flag stays in INBOX.
func TestSieveSpamFolder(t *testing.T) {
	s := harness.Need(t)
	tests := []struct {
		name   string
		header []string
		folder string
		other  string
	}{
		{"flagged", []string{"X-Spam-Flag: YES", "X-Spam-Status: Yes, score=12.3"}, "Spam", "INBOX"},
		{"not flagged", []string{"X-Spam-Flag: NO"}, "INBOX", "Spam"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := harness.Token()
			deliver(t, s, bob, bob, tt.folder, tok, tt.header...)
			if got := s.FindMail(bob, tt.other, tok); len(got) != 0 {
				t.Errorf("message also in %s: %s", tt.other, got[0].Path)
			}
		})
	}
}
