package e2e

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/postkit/postkit/e2e/harness"
	"github.com/postkit/postkit/internal/dkimkey"
	"github.com/postkit/postkit/internal/dnstest"
	"github.com/postkit/postkit/internal/seal"
	"github.com/postkit/postkit/milter/dkimsign"
)

// The own-domain and forged-header scenarios run on a stack of their own,
// with both postkit daemons as `postkit generate` wires them and the
// defaults of policy.spf.own_domains and milter.own_from (enforce):
//
//   - example.test (postkit.yaml) publishes "v=spf1 ip4:127.0.0.3 ~all":
//     127.0.0.3 is our second sending host, OutsideIP (127.0.0.2) a
//     stranger; softfail, so that plain SPF enforcement lets the stranger
//     through and only the own-domain rule refuses it;
//   - stored.test is ours only through the database (postkit db domain
//     add) and publishes no SPF record;
//   - slow.test is ours through the database and its SPF include times out
//     (DNS trouble must defer, never refuse);
//   - the test holds a DKIM key of example.test (selector fwd), as a
//     message our milter signed and a forwarder passes on would carry.
const (
	ownHost      = "127.0.0.3" // listed in example.test's SPF record
	storedDomain = "stored.test"
	slowDomain   = "slow.test"
	newsDomain   = "newsletter.test" // foreign, no SPF record
	fwdSelector  = "fwd"
)

func ownDomainOptions(fwdTXT string) harness.Options {
	milterSock := "unix:{root}/spool/postfix/postkit/milter.sock"
	policySock := "unix:{root}/run/postkit/policy.sock"
	zone := []string{
		harness.Domain + `. 300 IN TXT "v=spf1 ip4:` + ownHost + ` ~all"`,
		harness.OutsideDomain + `. 300 IN TXT "v=spf1 ip4:` + harness.OutsideIP + ` -all"`,
		storedDomain + `. 300 IN A 127.0.0.1`,
		slowDomain + `. 300 IN A 127.0.0.1`,
		newsDomain + `. 300 IN A 127.0.0.1`,
		slowDomain + `. 300 IN TXT "v=spf1 include:_spf.` + slowDomain + ` ~all"`,
		fmt.Sprintf("%s._domainkey.%s. 300 IN TXT %s", fwdSelector, harness.Domain, quoteTXT(fwdTXT)),
	}
	return harness.Options{
		MessageSizeLimit: sizeLimit,
		Set: map[string]any{
			"milter.enabled":          true,
			"milter.listen":           milterSock,
			"milter.dkim.authserv_id": harness.Hostname,
			"policy.enabled":          true,
			"policy.listen":           policySock,
			"dns.timeout":             "500ms",
			// SPF temperror alone is accepted with a header: for our own
			// domains the rule defers it all the same.
			"policy.spf.temperror": "accept",
		},
		Zone: zone,
		Daemons: []harness.DaemonSpec{
			{Name: "policyd", Args: []string{"policyd", "-c", "{config}"}, Ready: policySock},
			{Name: "milter", Args: []string{"milter", "-c", "{config}", "--log-level", "debug"}, Ready: milterSock},
		},
		Seed: func(s *harness.Stack) error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			for _, u := range []string{alice, bob} {
				if err := s.AddUser(ctx, u, passwords[u]); err != nil {
					return err
				}
			}
			for _, d := range []string{storedDomain, slowDomain} {
				if _, err := s.DB(ctx, "", "domain", "add", d); err != nil {
					return err
				}
			}
			// The include of slow.test never answers.
			z, err := dnstest.ParseZone(append(harness.DefaultZone(s.Hostname, s.Domains), zone...)...)
			if err != nil {
				return err
			}
			z.Timeout("_spf." + slowDomain)
			s.DNS.Set(z)
			return nil
		},
	}
}

// startOwnDomainStack starts the stack with the shared stack's binary, or
// skips like every scenario when there can be no stack.
func startOwnDomainStack(t *testing.T, fwdTXT string) *harness.Stack {
	t.Helper()
	return harness.StartT(t, ownDomainOptions(fwdTXT))
}

// ourSPF checks that d carries exactly one Received-SPF field, our policy
// daemon's, with the result and client wanted and a seal that verifies
// for the transaction (client address and HELO as harness.SMTP sends them;
// the port is not known here, so only the seal's presence and the key
// file's existence are checked, the code itself in internal/seal and
// milter/forged).
func ourSPF(t *testing.T, s *harness.Stack, d harness.Delivered, result, client string) {
	t.Helper()
	got := d.Headers("Received-SPF")
	if len(got) != 1 {
		t.Fatalf("Received-SPF fields %q, want exactly our policy daemon's", got)
	}
	v := strings.Join(strings.Fields(got[0]), " ")
	if !strings.HasPrefix(v, result+" ") || !strings.Contains(v, "client-ip="+client+";") || !strings.Contains(v, "receiver="+s.Hostname+";") {
		t.Errorf("Received-SPF %q, want %s for client-ip=%s by %s", v, result, client, s.Hostname)
	}
	if !strings.Contains(v, " "+seal.Param+"=") {
		t.Errorf("Received-SPF %q carries no seal: not known to be our policy daemon's", v)
	}
	if _, err := seal.Load(s.Paths.PostkitRun + "/seal.key"); err != nil {
		t.Errorf("the policy daemon left no seal key: %v", err)
	}
}

// refusal returns the SMTP refusal carried by err, failing the test when
// err is something else.
func refusal(t *testing.T, err error) *smtp.SMTPError {
	t.Helper()
	var se *smtp.SMTPError
	if err != nil && !errors.As(err, &se) {
		t.Fatalf("not an SMTP refusal: %v", err)
	}
	return se
}

// sendFrom sends msg from client with envelope sender from to alice and
// returns the error (an *smtp.SMTPError for a refusal).
func sendFrom(t *testing.T, s *harness.Stack, client, from string, msg []byte) error {
	t.Helper()
	c, err := s.SMTP(client)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return harness.Send(c, from, []string{alice}, msg)
}

func TestOwnDomains(t *testing.T) {
	fwdKey, err := dkimkey.Generate(dkimkey.Ed25519, 0, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	fwdTXT, err := dkimkey.Record(fwdKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	s := startOwnDomainStack(t, fwdTXT)
	billing := "billing@" + harness.Domain

	// policy.spf.own_domains: the envelope sender is judged at RCPT.
	t.Run("envelope sender of our domain from a stranger refused", func(t *testing.T) {
		for _, from := range []string{billing, "billing@" + storedDomain, "Billing@" + strings.ToUpper(harness.Domain)} {
			se := rcptRefusal(t, s, harness.OutsideIP, from, alice)
			if se == nil || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 7, 1}) || !strings.Contains(se.Message, "is a domain of this server") {
				t.Errorf("MAIL FROM:<%s> from %s: RCPT = %v, want 550 5.7.1 …is a domain of this server", from, harness.OutsideIP, se)
			}
		}
	})
	t.Run("envelope sender of our domain with DNS trouble deferred", func(t *testing.T) {
		se := rcptRefusal(t, s, harness.OutsideIP, "billing@"+slowDomain, alice)
		if se == nil || se.Code/100 != 4 || se.EnhancedCode != (smtp.EnhancedCode{4, 7, 24}) {
			t.Errorf("RCPT = %v, want 4xx 4.7.24 (never 5xx on DNS trouble)", se)
		}
	})
	t.Run("our second host, listed in our SPF record, delivered", func(t *testing.T) {
		tok := harness.Token()
		if err := sendFrom(t, s, ownHost, billing, harness.Message(billing, alice, tok)); err != nil {
			t.Fatalf("send from %s: %v", ownHost, err)
		}
		d, err := s.WaitMail(ctx(t), alice, "", tok)
		if err != nil {
			t.Fatal(err)
		}
		ourSPF(t, s, d, "pass", ownHost)
	})

	// milter.own_from: the header From is judged at end of data.
	t.Run("header From of our domain from a stranger refused", func(t *testing.T) {
		for _, from := range []string{billing, "billing@" + storedDomain} {
			err := sendFrom(t, s, harness.OutsideIP, stranger, harness.Message(from, alice, harness.Token()))
			se := refusal(t, err)
			if se == nil || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 7, 1}) || !strings.Contains(se.Message, "From: header names our domain") {
				t.Errorf("From: %s with MAIL FROM:<%s> (SPF pass): %v, want 550 5.7.1 at end of data", from, stranger, se)
			}
		}
	})
	t.Run("header From of our domain with DNS trouble deferred", func(t *testing.T) {
		se := refusal(t, sendFrom(t, s, harness.OutsideIP, stranger, harness.Message("billing@"+slowDomain, alice, harness.Token())))
		if se == nil || se.Code != 451 || se.EnhancedCode != (smtp.EnhancedCode{4, 7, 24}) {
			t.Errorf("end of data = %v, want 451 4.7.24", se)
		}
	})
	t.Run("header From of our domain from our second host delivered", func(t *testing.T) {
		tok := harness.Token()
		// A newsletter service: its own envelope (SPF none, not ours), our
		// From, and the client listed in the From domain's SPF record.
		if err := sendFrom(t, s, ownHost, "bounces@"+newsDomain, harness.Message(billing, alice, tok)); err != nil {
			t.Fatalf("send: %v", err)
		}
		d, err := s.WaitMail(ctx(t), alice, "", tok)
		if err != nil {
			t.Fatal(err)
		}
		if got := d.Header("From"); got != "<"+billing+">" {
			t.Errorf("From = %q", got)
		}
		ourSPF(t, s, d, "none", ownHost)
	})
	t.Run("header From of our domain signed by us, through a forwarder, delivered", func(t *testing.T) {
		tok := harness.Token()
		msg := signAs(t, fwdKey, harness.Message(billing, alice, tok))
		// An SRS forwarder: its own envelope, SPF pass for its own domain.
		srs := "SRS0=abcd=XY=" + harness.Domain + "=billing@" + harness.OutsideDomain
		if err := sendFrom(t, s, harness.OutsideIP, srs, msg); err != nil {
			t.Fatalf("send: %v", err)
		}
		d, err := s.WaitMail(ctx(t), alice, "", tok)
		if err != nil {
			t.Fatal(err)
		}
		ars := d.Headers("Authentication-Results")
		if len(ars) != 1 || !strings.Contains(ars[0], "dkim=pass") || !strings.Contains(ars[0], "header.d="+harness.Domain) {
			t.Errorf("Authentication-Results %q, want our dkim=pass header.d=%s", ars, harness.Domain)
		}
		ourSPF(t, s, d, "pass", harness.OutsideIP)
		// The control: the same message with its body changed is refused.
		tampered := bytes.Replace(signAs(t, fwdKey, harness.Message(billing, alice, harness.Token())), []byte("Hello from"), []byte("Hullo from"), 1)
		if se := refusal(t, sendFrom(t, s, harness.OutsideIP, srs, tampered)); se == nil || se.Code != 550 {
			t.Errorf("a tampered copy: %v, want 550", se)
		}
	})

	// milter/forged: verdict and trace fields that came with the message.
	t.Run("forged verdict fields removed, our Received-SPF kept", func(t *testing.T) {
		tok := harness.Token()
		msg := harness.Message(stranger, alice, tok,
			"X-Spam-Flag: YES",
			"X-Spam-Status: Yes, score=99.0 required=5.0",
			"Received-SPF: pass ("+s.Hostname+": domain of "+stranger+" designates "+harness.OutsideIP+" as permitted sender) client-ip="+harness.OutsideIP+"; envelope-from="+stranger+"; receiver="+s.Hostname+"; identity=mailfrom; "+seal.Param+"=AAAAAAAAAAAAAAAAAAAAAA;",
			"Authentication-Results: "+s.Hostname+"; dkim=pass header.d=bank.test; spf=pass smtp.mailfrom=bank.test",
			"Authentication-Results: relay.outside.test; spf=pass smtp.mailfrom="+harness.OutsideDomain,
			"X-Spam-Report: looks fine")
		// Forged Received-SPF also at the very top, where ours goes.
		msg = append([]byte("Received-SPF: pass (forged on top) client-ip="+harness.OutsideIP+";\r\n"), msg...)
		if err := sendFrom(t, s, harness.OutsideIP, stranger, msg); err != nil {
			t.Fatalf("send: %v", err)
		}
		d, err := s.WaitMail(ctx(t), alice, "", tok)
		if err != nil {
			t.Fatalf("not in INBOX (the Sieve rule acts on X-Spam-Flag: YES): %v", err)
		}
		if spam := s.FindMail(alice, "Spam", tok); len(spam) > 0 {
			t.Errorf("filed into Spam by a forged X-Spam-Flag: %s", spam[0].Path)
		}
		for _, h := range []string{"X-Spam-Flag", "X-Spam-Report"} {
			if v := d.Headers(h); len(v) > 0 {
				t.Errorf("%s kept: %q", h, v)
			}
		}
		// The only X-Spam-Status is the spam filter's own verdict, which
		// read our policy daemon's sealed Received-SPF (pass; our
		// verifier's Authentication-Results has no SPF result).
		if v := d.Headers("X-Spam-Status"); len(v) != 1 || strings.Contains(v[0], "score=99.0") || !strings.HasPrefix(v[0], "No, score=") ||
			!strings.Contains(v[0], "AUTH_SPF_PASS") {
			t.Errorf("X-Spam-Status %q, want only the spam filter's, with SPF pass from our Received-SPF", v)
		}
		ourSPF(t, s, d, "pass", harness.OutsideIP)
		if v := d.Header("Received-SPF"); strings.Contains(v, "forged") || strings.Contains(v, "AAAAAAAA") {
			t.Errorf("the Received-SPF kept is a forged one: %q", v)
		}
		ars := d.Headers("Authentication-Results")
		if len(ars) != 2 || !strings.HasPrefix(ars[0], s.Hostname+"; dkim=none") || !strings.HasPrefix(ars[1], "relay.outside.test;") {
			t.Errorf("Authentication-Results %q, want our verifier's (dkim=none) and relay.outside.test's", ars)
		}
	})
	t.Run("forged Authentication-Results removed from submitted mail", func(t *testing.T) {
		tok := harness.Token()
		to := "friend@" + harness.OutsideDomain
		c, err := s.Submission(harness.OutsideIP, true)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Auth(harness.Plain(alice, passwords[alice])); err != nil {
			t.Fatal(err)
		}
		msg := harness.Message(alice, to, tok,
			"Authentication-Results: "+s.Hostname+"; dkim=pass header.d=bank.test",
			"X-Spam-Flag: NO", "Received-SPF: pass (vouched for by nobody)")
		if err := harness.Send(c, alice, []string{to}, msg); err != nil {
			t.Fatalf("submission: %v", err)
		}
		m, err := s.Sink.Wait(ctx(t), func(m harness.SinkMessage) bool { return bytes.Contains(m.Data, []byte(tok)) })
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range []string{"Authentication-Results", "X-Spam-Flag", "Received-SPF"} {
			if v := headerValues(m.Data, h); len(v) > 0 {
				t.Errorf("%s relayed: %q", h, v)
			}
		}
	})
}

// signAs adds a DKIM-Signature of example.test (selector fwd) to msg.
func signAs(t *testing.T, key crypto.Signer, msg []byte) []byte {
	t.Helper()
	signer, err := dkimsign.New(dkimsign.Config{Keys: []dkimsign.Key{{Domain: harness.Domain, Selector: fwdSelector, Signer: key}}})
	if err != nil {
		t.Fatal(err)
	}
	vals, err := signer.Sign(bytes.NewReader(msg))
	if err != nil || len(vals) != 1 {
		t.Fatalf("signing: %v %v", vals, err)
	}
	return append([]byte("DKIM-Signature: "+vals[0]+"\r\n"), msg...)
}
