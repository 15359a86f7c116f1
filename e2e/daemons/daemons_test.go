// Package daemons runs the stack as Debian runs Postfix, chrooted in its queue
// directory, with postkit's own daemons wired into it: the milter
// (smtpd_milters) and the policy service (check_policy_service), both on unix
// sockets under the queue directory that main.cf names relative to it. It
// proves the generated chrooted configuration: SQLite maps, LMTP, SASL and
// both daemons reached from inside the jail.
package daemons

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/postkit/postkit/e2e/harness"
)

const (
	milterSock = "unix:{root}/spool/postfix/postkit/milter.sock"
	policySock = "unix:{root}/spool/postfix/postkit/policy.sock"
)

var user = "alice@" + harness.Domain

const userPassword = "Alice-pw-4711"

const failDomain = "spf-fail.test"

func TestMain(m *testing.M) {
	os.Exit(harness.Main(m, harness.Options{
		Set: map[string]any{
			// Inside the jail there is no resolv.conf: no DNS checks.
			"postfix.chroot":       true,
			"postfix.dns_checks":   false,
			"milter.enabled":       true,
			"milter.listen":        milterSock,
			"milter.dkim.sign":     false,
			"milter.dkim.verify":   true,
			"policy.enabled":       true,
			"policy.listen":        policySock,
			"policy.checks":        []any{"blacklist", "spf"},
			"policy.spf.mode":      "header",
			"policy.spf.allow_ips": []any{},
		},
		Zone: []string{
			harness.OutsideDomain + `. 300 IN TXT "v=spf1 ip4:127.0.0.2 -all"`,
			// A domain whose SPF record excludes the foreign client; with an
			// A record so that Postfix's reject_unknown_sender_domain passes.
			failDomain + `. 300 IN A 192.0.2.1`,
			failDomain + `. 300 IN TXT "v=spf1 ip4:192.0.2.1 -all"`,
		},
		Daemons: []harness.DaemonSpec{
			{Name: "milter", Args: []string{"milter", "-c", "{config}"}, Ready: milterSock},
			{Name: "policyd", Args: []string{"policyd", "-c", "{config}"}, Ready: policySock},
		},
		Seed: func(s *harness.Stack) error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			return s.AddUser(ctx, user, userPassword)
		},
	}))
}

// Inbound mail passes through the policy service (SPF in header mode:
// Received-SPF, never a refusal) and the milter (DKIM verification:
// Authentication-Results) and is delivered with what each added.
func TestInboundThroughDaemons(t *testing.T) {
	s := harness.Need(t)
	tests := []struct {
		from string
		spf  string
	}{
		{"someone@" + harness.OutsideDomain, "pass"},
		{"someone@" + failDomain, "fail"},
	}
	for _, tt := range tests {
		t.Run(tt.spf, func(t *testing.T) {
			tok := harness.Token()
			c, err := s.SMTP(harness.OutsideIP)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := harness.Send(c, tt.from, []string{user}, harness.Message(tt.from, user, tok)); err != nil {
				t.Fatalf("send from %s: %v", tt.from, err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			m, err := s.WaitMail(ctx, user, "", tok)
			if err != nil {
				t.Fatal(err)
			}
			if got := m.Header("Received-SPF"); !strings.HasPrefix(got, tt.spf+" ") || !strings.Contains(got, "client-ip="+harness.OutsideIP) {
				t.Errorf("Received-SPF = %q, want %s for client-ip=%s", got, tt.spf, harness.OutsideIP)
			}
			if got := m.Header("Authentication-Results"); !strings.HasPrefix(got, s.Hostname+";") || !strings.Contains(got, "dkim=") {
				t.Errorf("Authentication-Results = %q, want %s; dkim=…", got, s.Hostname)
			}
		})
	}
}

// A user submits on 587 through the chrooted smtpd (SASL over private/auth)
// and the submission-cleanup service: the relayed copy's Received line for the
// submission keeps "by … with ESMTPSA" but no longer names the client.
func TestChrootedSubmission(t *testing.T) {
	s := harness.Need(t)
	tok := harness.Token()
	to := "friend@" + harness.OutsideDomain
	c, err := s.Submission(harness.OutsideIP, true)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(harness.Plain(user, userPassword)); err != nil {
		t.Fatalf("AUTH PLAIN through the chroot: %v", err)
	}
	if err := harness.Send(c, user, []string{to}, harness.Message(user, to, tok)); err != nil {
		t.Fatalf("send: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := s.Sink.Wait(ctx, func(m harness.SinkMessage) bool { return strings.Contains(string(m.Data), tok) })
	if err != nil {
		t.Fatal(err)
	}
	head := string(m.Data)
	if i := strings.Index(head, "\r\n\r\n"); i >= 0 {
		head = head[:i]
	}
	if !strings.Contains(head, "with ESMTPSA") {
		t.Errorf("no Received line of the submission in:\n%s", head)
	}
	if strings.Contains(head, "["+harness.OutsideIP+"]") {
		t.Errorf("the relayed headers still name the client %s:\n%s", harness.OutsideIP, head)
	}
}
