package e2e

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/postkit/postkit/e2e/harness"
	"github.com/postkit/postkit/internal/testlib"
)

// The policy scenarios run on a stack of their own: the package's shared
// stack keeps the policy daemon off (and the SQL blacklists in Postfix's
// maps), this one runs `postkit policyd -c postkit.yaml` with every check, in
// the order postkit.yaml lists them, and the blacklists owned by the daemon.
const (
	policyGreylistDelay = 2 * time.Second
	policyMessageLimit  = 2 // messages per hour per SASL user

	// greyClient is greylisted; OutsideIP (127.0.0.2) is exempt so that the
	// other scenarios are decided on their own check alone.
	greyClient = "127.0.0.3"
	// listedClient is on the test DNSBL.
	listedClient = "127.0.0.66"

	spfFailDomain = "spf-fail.test"
	spfPassDomain = "spf-pass.test"
	dnsblZone     = "bl.test"
)

func policyOptions(metricsAddr string) harness.Options {
	// Not under the queue's private/: the harness starts daemons before
	// `postfix check`, and a private/ created by root stops Postfix's master
	// from binding its own sockets there (Postfix is not chrooted here).
	sock := "unix:{root}/run/postkit/policy.sock"
	return harness.Options{
		Set: map[string]any{
			"policy.enabled":             true,
			"policy.listen":              sock,
			"policy.checks":              []any{"blacklist", "spf", "dnsbl", "greylist", "ratelimit"},
			"policy.blacklist.owner":     "policy",
			"policy.dnsbl.sites":         []any{dnsblZone + "=127.0.0.2*3"},
			"policy.dnsbl.threshold":     3,
			"policy.dnsbl.check_private": true, // the clients are loopback addresses
			"policy.greylist.delay":      policyGreylistDelay.String(),
			"policy.greylist.allow_ips":  []any{harness.OutsideIP + "/32"},
			"policy.ratelimit.limits":    []any{map[string]any{"key": "sasl_user", "count": "messages", "max": policyMessageLimit, "window": "1h"}},
			"policy.metrics":             metricsAddr,
		},
		Zone: []string{
			spfFailDomain + `. 300 IN TXT "v=spf1 -all"`,
			spfFailDomain + `. 300 IN MX 10 mx.` + harness.OutsideDomain + `.`,
			spfPassDomain + `. 300 IN TXT "v=spf1 ip4:127.0.0.0/8 -all"`,
			spfPassDomain + `. 300 IN MX 10 mx.` + harness.OutsideDomain + `.`,
			// RFC 5782 §2.1: the client's octets reversed under the list's zone.
			"66.0.0.127." + dnsblZone + ". 300 IN A 127.0.0.2",
		},
		Daemons: []harness.DaemonSpec{{Name: "policyd", Args: []string{"policyd", "-c", "{config}"}, Ready: sock}},
		Seed: func(s *harness.Stack) error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			for _, u := range []string{alice, bob} {
				if err := s.AddUser(ctx, u, passwords[u]); err != nil {
					return err
				}
			}
			return s.BlacklistSender(ctx, spammer, blacklistCode, blacklistMessage)
		},
	}
}

// startPolicyStack starts the policy stack with the shared stack's postkit
// binary, or skips like every scenario when there can be no stack.
func startPolicyStack(t *testing.T) (*harness.Stack, string) {
	t.Helper()
	metrics := harness.Addr(testlib.FreePort(t))
	return harness.StartT(t, policyOptions(metrics)), metrics
}

// rcptRefusal runs MAIL and RCPT from client and returns the RCPT refusal.
func rcptRefusal(t *testing.T, s *harness.Stack, client, from, to string) *smtp.SMTPError {
	t.Helper()
	c, err := s.SMTP(client)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Mail(from, nil); err != nil {
		t.Fatalf("MAIL FROM:<%s> from %s refused (want a decision at RCPT): %v", from, client, err)
	}
	err = c.Rcpt(to, nil)
	var se *smtp.SMTPError
	if err != nil && !errors.As(err, &se) {
		t.Fatalf("RCPT TO:<%s>: %v", to, err)
	}
	return se
}

func TestPolicyd(t *testing.T) {
	s, metrics := startPolicyStack(t)

	// RFC 7208 §8.4 with RFC 7372 §3.2's enhanced code: an SPF fail is
	// refused at RCPT, permanently.
	t.Run("spf fail refused", func(t *testing.T) {
		se := rcptRefusal(t, s, harness.OutsideIP, "someone@"+spfFailDomain, alice)
		if se == nil || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 7, 23}) {
			t.Fatalf("RCPT = %v, want 550 5.7.23", se)
		}
		if !strings.Contains(se.Message, spfFailDomain) {
			t.Errorf("refusal %q does not name %s", se.Message, spfFailDomain)
		}
	})

	// §9.1: an SPF pass is delivered with its Received-SPF header.
	t.Run("spf pass delivered with header", func(t *testing.T) {
		tok := harness.Token()
		from := "someone@" + spfPassDomain
		c, err := s.SMTP(harness.OutsideIP)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := harness.Send(c, from, []string{alice}, harness.Message(from, alice, tok)); err != nil {
			t.Fatalf("send from %s: %v", from, err)
		}
		m, err := s.WaitMail(ctx(t), alice, "", tok)
		if err != nil {
			t.Fatal(err)
		}
		h := m.Header("Received-SPF")
		for _, want := range []string{"pass ", "client-ip=" + harness.OutsideIP + ";", "envelope-from=" + from + ";", "identity=mailfrom;"} {
			if !strings.Contains(h, want) {
				t.Errorf("Received-SPF = %q, want it to contain %q", h, want)
			}
		}
	})

	// With policy.blacklist.owner: policy, main.cf has no check_sender_access:
	// the refusal, with the table's code and text, is the daemon's.
	t.Run("blacklisted sender refused by the daemon", func(t *testing.T) {
		if mc, err := os.ReadFile(s.Paths.PostfixConfig + "/main.cf"); err != nil {
			t.Fatal(err)
		} else if bytes.Contains(mc, []byte("check_sender_access")) {
			t.Fatal("main.cf still has check_sender_access: the refusal would not prove the daemon's blacklist")
		}
		se := rcptRefusal(t, s, harness.OutsideIP, spammer, alice)
		if se == nil || se.Code != blacklistCode || !strings.Contains(se.Message, "Go away, spammer") {
			t.Fatalf("RCPT = %v, want %d …Go away, spammer", se, blacklistCode)
		}
	})

	// postscreen_dnsbl_sites syntax: weight 3 reaches the threshold 3.
	t.Run("dnsbl-listed client refused", func(t *testing.T) {
		se := rcptRefusal(t, s, listedClient, stranger, alice)
		if se == nil || se.Code != 554 || !strings.Contains(se.Message, "blocked using "+dnsblZone) {
			t.Fatalf("RCPT from %s = %v, want 554 …blocked using %s", listedClient, se, dnsblZone)
		}
		// The control: the same mail from an unlisted client is not refused.
		if se := rcptRefusal(t, s, harness.OutsideIP, stranger, alice); se != nil {
			t.Errorf("RCPT from unlisted %s = %v, want accepted", harness.OutsideIP, se)
		}
	})

	// Greylisting: the first try is deferred (450), the retry after the
	// delay is accepted and delivered.
	t.Run("greylisting defers then accepts", func(t *testing.T) {
		tok := harness.Token()
		msg := harness.Message(stranger, bob, tok)
		c, err := s.SMTP(greyClient)
		if err != nil {
			t.Fatal(err)
		}
		err = harness.Send(c, stranger, []string{bob}, msg)
		c.Close()
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code != 450 || !strings.Contains(se.Message, "Greylisted") {
			t.Fatalf("first try from %s: %v, want 450 …Greylisted", greyClient, err)
		}
		first := time.Now()
		// An early retry is still deferred.
		if c, err = s.SMTP(greyClient); err != nil {
			t.Fatal(err)
		}
		err = harness.Send(c, stranger, []string{bob}, msg)
		c.Close()
		if harness.Code(err) != 450 && time.Since(first) < policyGreylistDelay-200*time.Millisecond {
			t.Fatalf("early retry: %v, want 450", err)
		}
		time.Sleep(time.Until(first.Add(policyGreylistDelay + 500*time.Millisecond)))
		if c, err = s.SMTP(greyClient); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := harness.Send(c, stranger, []string{bob}, msg); err != nil {
			t.Fatalf("retry after %v: %v, want accepted", policyGreylistDelay, err)
		}
		if _, err := s.WaitMail(ctx(t), bob, "", tok); err != nil {
			t.Fatal(err)
		}
	})

	// Rate limits count authenticated users at END-OF-MESSAGE (submission,
	// SASL through Dovecot): the message over the limit gets a 450 at the
	// end of DATA, and nothing is relayed for it.
	t.Run("sasl user over the limit deferred", func(t *testing.T) {
		c, err := s.Submission(harness.OutsideIP, true)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Auth(harness.Plain(alice, passwords[alice])); err != nil {
			t.Fatalf("AUTH PLAIN %s: %v", alice, err)
		}
		to := "friend@" + harness.OutsideDomain
		var toks []string
		for i := range policyMessageLimit + 1 {
			tok := harness.Token()
			toks = append(toks, tok)
			err := harness.Send(c, alice, []string{to}, harness.Message(alice, to, tok))
			if i < policyMessageLimit {
				if err != nil {
					t.Fatalf("message %d of %d allowed: %v", i+1, policyMessageLimit, err)
				}
				continue
			}
			var se *smtp.SMTPError
			if !errors.As(err, &se) || se.Code != 450 || !strings.Contains(se.Message, "Rate limit reached") {
				t.Fatalf("message %d: %v, want 450 …Rate limit reached", i+1, err)
			}
		}
		for _, tok := range toks[:policyMessageLimit] {
			if _, err := s.Sink.Wait(ctx(t), func(m harness.SinkMessage) bool { return bytes.Contains(m.Data, []byte(tok)) }); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(500 * time.Millisecond)
		for _, m := range s.Sink.Messages() {
			if bytes.Contains(m.Data, []byte(toks[policyMessageLimit])) {
				t.Errorf("the message over the limit was relayed")
			}
		}
	})

	// Every check's decisions show in the Prometheus endpoint.
	t.Run("metrics", func(t *testing.T) {
		c := http.Client{Timeout: 10 * time.Second}
		resp, err := c.Get("http://" + metrics + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{
			`check="blacklist",result="reject"`, `check="spf",result="reject"`, `check="spf",result="prepend"`,
			`check="dnsbl",result="reject"`, `check="greylist",result="defer"`, `check="ratelimit",result="defer"`,
		} {
			if !strings.Contains(string(body), want) {
				t.Errorf("metrics lack %s", want)
			}
		}
		if t.Failed() {
			t.Log(string(body))
		}
	})
}
