// Package daemons runs the stack with postkit's own daemons wired into Postfix:
// the milter (smtpd_milters) and the policy service (check_policy_service).
// It is the starting point for their end-to-end scenarios.
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
	milterSock = "unix:{root}/run/postkit/milter.sock"
	policySock = "unix:{root}/run/postkit/policy.sock"
)

var user = "alice@" + harness.Domain

const failDomain = "spf-fail.test"

func TestMain(m *testing.M) {
	os.Exit(harness.Main(m, harness.Options{
		Set: map[string]any{
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
			return s.AddUser(ctx, user, "Alice-pw-4711")
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
