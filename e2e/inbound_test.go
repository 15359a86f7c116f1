package e2e

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/emersion/go-smtp"
	"github.com/postkit/postkit/e2e/harness"
)

// Mail from a foreign client (127.0.0.2, outside trusted_networks) to an
// existing user goes smtpd -> cleanup -> LMTP -> Dovecot and lands in the
// user's Maildir, BASE/%d/%n, owned by vmail.
func TestInboundDelivery(t *testing.T) {
	s := harness.Need(t)
	tok := harness.Token()
	c, err := s.SMTP(harness.OutsideIP)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := harness.Send(c, stranger, []string{alice}, harness.Message(stranger, alice, tok)); err != nil {
		t.Fatalf("send from %s to %s: %v", harness.OutsideIP, alice, err)
	}
	m, err := s.WaitMail(ctx(t), alice, "", tok)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(s.Paths.MailBase, harness.Domain, "alice")
	if got := filepath.Dir(filepath.Dir(m.Path)); got != dir {
		t.Errorf("delivered to %s, want Maildir %s", m.Path, dir)
	}
	fi, err := os.Stat(m.Path)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != s.UID || int(st.Gid) != s.GID {
		t.Errorf("%s owned by %d:%d, want vmail %d:%d", m.Path, st.Uid, st.Gid, s.UID, s.GID)
	}
	// Dovecot LMTP (RFC 2033) adds the envelope as Return-Path and Delivered-To.
	if got := m.Header("Return-Path"); got != "<"+stranger+">" {
		t.Errorf("Return-Path = %q, want <%s>", got, stranger)
	}
	if got := m.Header("Delivered-To"); got != alice {
		t.Errorf("Delivered-To = %q, want %s", got, alice)
	}
	// Postfix's Received line (under Dovecot's) names the client address:
	// proof the mail came from outside the trusted network.
	recv := m.Headers("Received")
	if !strings.Contains(strings.Join(recv, "\n"), "["+harness.OutsideIP+"])") {
		t.Errorf("Received = %q, want one naming the client [%s]", recv, harness.OutsideIP)
	}
}

// Aliases are expanded before delivery: a virtual alias (postfix_alias_virtuels)
// and a local alias of the host's own domain (postfix_alias).
func TestAliasDelivery(t *testing.T) {
	s := harness.Need(t)
	tests := []struct {
		name    string
		rcpt    string
		mailbox string
	}{
		{"virtual alias", info, bob},
		{"local alias", postmasterAlias, alice},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := harness.Token()
			c, err := s.SMTP(harness.OutsideIP)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := harness.Send(c, stranger, []string{tt.rcpt}, harness.Message(stranger, tt.rcpt, tok)); err != nil {
				t.Fatalf("send to %s: %v", tt.rcpt, err)
			}
			m, err := s.WaitMail(ctx(t), tt.mailbox, "", tok)
			if err != nil {
				t.Fatalf("mail to %s did not reach %s: %v", tt.rcpt, tt.mailbox, err)
			}
			if got := m.Header("Delivered-To"); got != tt.mailbox {
				t.Errorf("Delivered-To = %q, want %s", got, tt.mailbox)
			}
		})
	}
}

// Refusals happen in the SMTP dialogue (at RCPT, smtpd_delay_reject), with the
// code and text an administrator configured, so the sender gets a bounce from
// its own server and no mail is lost or accepted silently.
func TestRefusedAtRCPT(t *testing.T) {
	s := harness.Need(t)
	tests := []struct {
		name     string
		from, to string
		code     int
		text     string
	}{
		{"unknown recipient", stranger, "nobody@" + harness.Domain, 550, "User unknown"},
		{"disabled user", stranger, carol, 550, "User unknown"},
		{"sender blacklist", spammer, alice, blacklistCode, "Go away, spammer"},
		{"recipient blacklist", stranger, dave, 554, "mailbox closed by its owner"},
		{"relay to outside", stranger, "friend@" + harness.OutsideDomain, 554, "Relay access denied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := s.SMTP(harness.OutsideIP)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Mail(tt.from, nil); err != nil {
				t.Fatalf("MAIL FROM:<%s> refused (want the refusal at RCPT): %v", tt.from, err)
			}
			err = c.Rcpt(tt.to, nil)
			var se *smtp.SMTPError
			if !errors.As(err, &se) {
				t.Fatalf("RCPT TO:<%s> = %v, want %d …%s…", tt.to, err, tt.code, tt.text)
			}
			if se.Code != tt.code || !strings.Contains(se.Message, tt.text) {
				t.Errorf("RCPT TO:<%s> = %d %s, want %d …%s…", tt.to, se.Code, se.Message, tt.code, tt.text)
			}
		})
	}
}
