package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postkit/postkit/e2e/harness"
)

// swaks runs swaks against the stack's port 25 from the outside address and
// returns its transcript; failed is whether swaks reported a refusal.
func swaks(t *testing.T, s *harness.Stack, from, to, tok string) (out string, failed bool) {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	cmd := exec.CommandContext(c, "swaks", "--server", "127.0.0.1", "--port", fmt.Sprint(s.Ports.SMTP),
		"--local-interface", harness.OutsideIP, "--helo", "client."+harness.OutsideDomain, "--from", from, "--to", to,
		"--header", "Subject: quota "+tok, "--body", "token "+tok)
	b, err := cmd.CombinedOutput()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("swaks: %v", err)
	}
	return string(b), err != nil
}

// Over quota: mail to a full mailbox is refused at RCPT with 552 5.2.2 by
// Dovecot's quota-status through Postfix (not accepted and bounced later),
// whoever sends it; mail to a mailbox with room, under its domain's default
// limit, is delivered; the policy opens no relay.
func TestQuotaRefusedAtRCPT(t *testing.T) {
	s := harness.Need(t)
	harness.NeedProgram(t, "swaks")
	c := ctx(t)
	full, roomy := "full@"+harness.Domain, "roomy@"+harness.Domain
	for _, u := range []string{full, roomy} {
		if err := s.AddUser(c, u, "Quota-pw-"+u); err != nil {
			t.Fatal(err)
		}
	}
	// The mailbox fills up while it has no limit (mailbox.quota.default
	// is 0)...
	var pad []string
	for i := 0; i < 60; i++ {
		pad = append(pad, "X-Padding: "+strings.Repeat("x", 70))
	}
	deliver(t, s, full, full, "", harness.Token(), pad...)
	// ...then the administrator gives it 1K, and the domain a default.
	for _, args := range [][]string{{"quota", "set", full, "1K"}, {"quota", "set", harness.Domain, "50M"}} {
		if out, err := s.DB(c, "", args...); err != nil {
			t.Fatalf("%v: %v", args, err)
		} else {
			t.Logf("postkit db %s: %s", strings.Join(args, " "), strings.TrimSpace(out))
		}
	}
	t.Cleanup(func() { s.DB(context.Background(), "", "quota", "clear", harness.Domain) })
	out, err := s.DB(c, "", "quota", "show", roomy)
	if err != nil || !strings.Contains(out, "50M") || !strings.Contains(out, "domain") {
		t.Errorf("quota show %s: %v\n%s", roomy, err, out)
	}
	// Dovecot applies both limits (doveadm quota get: KiB).
	conf := filepath.Join(s.Paths.DovecotConfig, "dovecot.conf")
	for u, limit := range map[string]string{full: "1", roomy: fmt.Sprint(50 << 10)} {
		b, err := exec.CommandContext(c, "doveadm", "-c", conf, "quota", "get", "-u", u).CombinedOutput()
		if err != nil {
			t.Errorf("doveadm quota get -u %s: %v\n%s", u, err, b)
		}
		// "User quota STORAGE <used> <limit> <percent>"
		if f := strings.Fields(string(b)); !strings.Contains(" "+strings.Join(f, " ")+" ", " STORAGE ") || !strings.Contains(" "+strings.Join(f, " ")+" ", " "+limit+" ") {
			t.Errorf("doveadm quota get -u %s does not show the limit %s KiB:\n%s", u, limit, b)
		}
	}

	// From the outside: refused at RCPT.
	tok := harness.Token()
	out, failed := swaks(t, s, stranger, full, tok)
	if !failed || !strings.Contains(out, "<** 552 5.2.2") || strings.Contains(out, "DATA") && strings.Contains(out, "<~  354") {
		t.Errorf("swaks to the full mailbox: want 552 5.2.2 at RCPT:\n%s", out)
	}
	// A mailbox with room receives.
	tok2 := harness.Token()
	out, failed = swaks(t, s, stranger, roomy, tok2)
	if failed {
		t.Errorf("swaks to a mailbox with room failed:\n%s", out)
	}
	if _, err := s.WaitMail(c, roomy, "", tok2); err != nil {
		t.Errorf("%v\nswaks said:\n%s", err, out)
	}
	if got := s.FindMail(full, "", tok); len(got) != 0 {
		t.Errorf("the refused message reached the full mailbox: %s", got[0].Path)
	}

	// An authenticated user is refused too: the check comes before
	// permit_sasl_authenticated.
	sub, err := s.Submissions(harness.OutsideIP)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := sub.Auth(harness.Plain(alice, passwords[alice])); err != nil {
		t.Fatal(err)
	}
	if err := sub.Mail(alice, nil); err != nil {
		t.Fatal(err)
	}
	if err := sub.Rcpt(full, nil); harness.Code(err) != 552 {
		t.Errorf("RCPT %s from an authenticated user: %v; want 552", full, err)
	}
	// No relay: quota-status answers nothing for a foreign recipient.
	out, failed = swaks(t, s, stranger, "someone-else@"+harness.OutsideDomain, harness.Token())
	if !failed || !strings.Contains(out, "<** 554 5.7.1") || !strings.Contains(out, "Relay access denied") {
		t.Errorf("relay from the outside: want 554 5.7.1 Relay access denied:\n%s", out)
	}
}
