package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/postkit/postkit/e2e/harness"
)

// No client may relay to a foreign domain without authenticating, on any
// port; only the trusted host itself may, on port 25 (mynetworks).
func TestNoOpenRelay(t *testing.T) {
	s := harness.Need(t)
	dial := map[string]func(local string) (*smtp.Client, error){
		"smtp":        s.SMTP,
		"submission":  func(l string) (*smtp.Client, error) { return s.Submission(l, true) },
		"submissions": s.Submissions,
	}
	tests := []struct {
		service string
		local   string
		relayed bool
	}{
		{"smtp", harness.OutsideIP, false},
		{"submission", harness.OutsideIP, false},
		{"submissions", harness.OutsideIP, false},
		// Submission requires authentication even from the trusted host.
		{"submission", "127.0.0.1", false},
		// The positive control: mynetworks relays, so the refusals above
		// are the policy, not a broken relay path.
		{"smtp", "127.0.0.1", true},
	}
	for _, tt := range tests {
		t.Run(tt.service+" from "+tt.local, func(t *testing.T) {
			tok := harness.Token()
			to := "friend-" + tok + "@" + harness.OutsideDomain
			c, err := dial[tt.service](tt.local)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			err = harness.Send(c, stranger, []string{to}, harness.Message(stranger, to, tok))
			if !tt.relayed {
				if code := harness.Code(err); code < 500 {
					t.Fatalf("unauthenticated relay to %s: err = %v, want a permanent refusal (5xx)", to, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("relay from the trusted host: %v", err)
			}
			if _, err := s.Sink.Wait(ctx(t), func(m harness.SinkMessage) bool { return bytes.Contains(m.Data, []byte(tok)) }); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// An authenticated user relays to the outside world over submission, with
// STARTTLS on 587 and implicit TLS on 465 (RFC 8314), through Dovecot's SASL.
func TestSubmissionRelays(t *testing.T) {
	s := harness.Need(t)
	tests := []struct {
		name string
		dial func() (*smtp.Client, error)
	}{
		{"587 STARTTLS", func() (*smtp.Client, error) { return s.Submission(harness.OutsideIP, true) }},
		{"465 implicit TLS", func() (*smtp.Client, error) { return s.Submissions(harness.OutsideIP) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := harness.Token()
			to := "friend@" + harness.OutsideDomain
			c, err := tt.dial()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if ok, _ := c.Extension("AUTH"); !ok {
				t.Fatal("AUTH not offered over TLS")
			}
			if err := c.Auth(harness.Plain(alice, passwords[alice])); err != nil {
				t.Fatalf("AUTH PLAIN %s: %v", alice, err)
			}
			if err := harness.Send(c, alice, []string{to}, harness.Message(alice, to, tok)); err != nil {
				t.Fatalf("send to %s: %v", to, err)
			}
			m, err := s.Sink.Wait(ctx(t), func(m harness.SinkMessage) bool { return bytes.Contains(m.Data, []byte(tok)) })
			if err != nil {
				t.Fatal(err)
			}
			if m.From != alice || len(m.To) != 1 || m.To[0] != to {
				t.Errorf("sink got MAIL FROM:<%s> RCPT TO:%v, want <%s> [%s]", m.From, m.To, alice, to)
			}
		})
	}
}

// swaks, the tool administrators use, submits over implicit TLS with AUTH.
func TestSubmissionSwaks(t *testing.T) {
	s := harness.Need(t)
	harness.NeedProgram(t, "swaks")
	tok := harness.Token()
	to := "swaks-friend@" + harness.OutsideDomain
	c, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	cmd := exec.CommandContext(c, "swaks", "--server", "127.0.0.1", "--port", fmt.Sprint(s.Ports.Submissions),
		"--tls-on-connect", "--local-interface", harness.OutsideIP,
		"--auth", "PLAIN", "--auth-user", bob, "--auth-password", passwords[bob],
		"--from", bob, "--to", to, "--header", "Subject: swaks "+tok, "--body", "token "+tok)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	if _, err := s.Sink.Wait(ctx(t), func(m harness.SinkMessage) bool { return bytes.Contains(m.Data, []byte(tok)) }); err != nil {
		t.Fatalf("%v\nswaks said:\n%s", err, out)
	}
}

// Passwords never cross the network in clear: before STARTTLS, port 587
// neither offers nor accepts AUTH. A wrong password is refused over TLS.
func TestAuthRefused(t *testing.T) {
	s := harness.Need(t)
	t.Run("plaintext", func(t *testing.T) {
		c, err := s.Submission(harness.OutsideIP, false)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if ok, _ := c.Extension("AUTH"); ok {
			t.Error("AUTH offered before STARTTLS")
		}
		err = c.Auth(harness.Plain(alice, passwords[alice]))
		if code := harness.Code(err); code < 500 {
			t.Errorf("AUTH before STARTTLS: err = %v, want a 5xx refusal", err)
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		c, err := s.Submission(harness.OutsideIP, true)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		err = c.Auth(harness.Plain(alice, "not-"+passwords[alice]))
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code != 535 {
			t.Errorf("AUTH with a wrong password: err = %v, want 535", err)
		}
	})
}
