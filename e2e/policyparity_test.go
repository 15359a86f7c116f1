package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/postkit/postkit/e2e/harness"
)

// The postfix-policyd-spf-python and postgrey settings, through the real
// Postfix and the real policy daemon, with the milter behind them.
const (
	// parityListed is on the postgrey-format client list; parityGrey is not.
	parityListed = "127.0.0.4"
	parityGrey   = "127.0.0.5"

	softDomain    = "soft.test"      // v=spf1 ~all
	neutralDomain = "neutral.test"   // v=spf1 ?all, in reject_not_pass_domains
	openDomain    = "open.test"      // v=spf1 ?all, not listed
	heloSoft      = "helo-soft.test" // a HELO name whose SPF record is ~all
	greyText      = "Greylisted by postkit, come back in %s seconds (%r)"
)

// clientsFile is a list in postgrey's whitelist_clients format: comments,
// names, a /regexp/, an address.
const clientsFile = `# postgrey whitelist for mail client hostnames
# 2024-01-10: bulk sender that never retries
bulk.example
/^smtp[0-9]+\.news\.example$/
# the relay of a partner, by address
` + parityListed + `
`

// recipientsFile is a list in postgrey's whitelist_recipients format.
const recipientsFile = `# postgrey whitelist for envelope recipients
postmaster@
abuse@
` + "bob@" + harness.Domain + `
`

func parityOptions(dir string) harness.Options {
	sock := "unix:{root}/run/postkit/policy.sock"
	cf, rf := filepath.Join(dir, "whitelist_clients"), filepath.Join(dir, "whitelist_recipients")
	os.WriteFile(cf, []byte(clientsFile), 0o644)
	os.WriteFile(rf, []byte(recipientsFile), 0o644)
	spf := func(d, rec string) []string {
		return []string{d + `. 300 IN TXT "` + rec + `"`, d + `. 300 IN MX 10 mx.` + harness.OutsideDomain + `.`}
	}
	var zone []string
	for _, z := range [][]string{spf(softDomain, "v=spf1 ~all"), spf(neutralDomain, "v=spf1 ?all"), spf(openDomain, "v=spf1 ?all"),
		spf(spfPassDomain, "v=spf1 ip4:127.0.0.0/8 -all"), spf(heloSoft, "v=spf1 ~all")} {
		zone = append(zone, z...)
	}
	return harness.Options{
		Set: map[string]any{
			"policy.enabled":                     true,
			"policy.listen":                      sock,
			"policy.checks":                      []any{"spf", "greylist"},
			"policy.spf.helo_reject":             "softfail",
			"policy.spf.mail_from_reject":        "softfail",
			"policy.spf.reject_not_pass_domains": []any{neutralDomain},
			"policy.spf.header_type":             "ar",
			"policy.greylist.delay":              "1h",
			"policy.greylist.client_files":       []any{cf},
			"policy.greylist.recipient_files":    []any{rf},
			"policy.greylist.text":               greyText,
			"policy.greylist.privacy":            true,
			"milter.enabled":                     true,
			"milter.listen":                      "unix:" + milterSocket,
			"milter.default_action":              "tempfail",
			"milter.dkim.authserv_id":            harness.Hostname,
		},
		Zone: zone,
		Daemons: []harness.DaemonSpec{
			{Name: "policyd", Args: []string{"policyd", "-c", "{config}"}, Ready: sock},
			milterDaemon,
		},
		Seed: func(s *harness.Stack) error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			for _, u := range []string{alice, bob} {
				if err := s.AddUser(ctx, u, passwords[u]); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

// dialHelo opens an SMTP session to port 25 from local, greeting with helo.
func dialHelo(t *testing.T, s *harness.Stack, local, helo string) *smtp.Client {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 10 * time.Second}
	conn, err := d.Dial("tcp", harness.Addr(s.Ports.SMTP))
	if err != nil {
		t.Fatal(err)
	}
	c := smtp.NewClient(conn)
	t.Cleanup(func() { c.Close() })
	if err := c.Hello(helo); err != nil {
		t.Fatal(err)
	}
	return c
}

// rcpt runs MAIL and RCPT and returns the RCPT refusal, nil when accepted.
func rcpt(t *testing.T, c *smtp.Client, from, to string) *smtp.SMTPError {
	t.Helper()
	if err := c.Mail(from, nil); err != nil {
		t.Fatalf("MAIL FROM:<%s>: %v", from, err)
	}
	err := c.Rcpt(to, nil)
	var se *smtp.SMTPError
	if err != nil && !errors.As(err, &se) {
		t.Fatalf("RCPT TO:<%s>: %v", to, err)
	}
	return se
}

func TestPolicyParity(t *testing.T) {
	s := harness.StartT(t, parityOptions(t.TempDir()))

	t.Run("helo softfail refused at helo_reject softfail", func(t *testing.T) {
		c := dialHelo(t, s, parityListed, heloSoft)
		se := rcpt(t, c, "someone@"+spfPassDomain, alice)
		if se == nil || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 7, 23}) || !strings.Contains(se.Message, "HELO "+heloSoft) {
			t.Fatalf("RCPT = %v; want 550 5.7.23 naming HELO %s", se, heloSoft)
		}
	})
	t.Run("mail from softfail refused at mail_from_reject softfail", func(t *testing.T) {
		se := rcpt(t, dialHelo(t, s, parityListed, "client."+harness.OutsideDomain), "someone@"+softDomain, alice)
		if se == nil || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 7, 23}) || !strings.Contains(se.Message, "SPF softfail for someone@"+softDomain) {
			t.Fatalf("RCPT = %v; want 550 5.7.23 SPF softfail", se)
		}
	})
	t.Run("neutral refused for a reject_not_pass_domains domain only", func(t *testing.T) {
		se := rcpt(t, dialHelo(t, s, parityListed, "client."+harness.OutsideDomain), "someone@"+neutralDomain, alice)
		if se == nil || se.Code != 550 || !strings.Contains(se.Message, neutralDomain) {
			t.Fatalf("RCPT from %s = %v; want 550", neutralDomain, se)
		}
		if se := rcpt(t, dialHelo(t, s, parityListed, "client."+harness.OutsideDomain), "someone@"+openDomain, alice); se != nil {
			t.Fatalf("RCPT from %s = %v; want accepted (listed client, neutral not refused)", openDomain, se)
		}
	})
	t.Run("greylisted with the configured text", func(t *testing.T) {
		se := rcpt(t, dialHelo(t, s, parityGrey, "client."+harness.OutsideDomain), "someone@"+spfPassDomain, alice)
		want := strings.NewReplacer("%s", "3600", "%r", harness.Domain).Replace(greyText)
		if se == nil || se.Code != 450 || !strings.Contains(se.Message, want) {
			t.Fatalf("RCPT = %v; want 450 …%s", se, want)
		}
	})
	t.Run("postgrey recipient list", func(t *testing.T) {
		if se := rcpt(t, dialHelo(t, s, parityGrey, "client."+harness.OutsideDomain), "someone@"+spfPassDomain, bob); se != nil {
			t.Fatalf("RCPT to %s (whitelist_recipients) = %v; want accepted", bob, se)
		}
	})
	t.Run("privacy: no address in the state file", func(t *testing.T) {
		data, _ := os.ReadFile(filepath.Join(s.Paths.PostkitRun, "policyd.sqlite"))
		wal, _ := os.ReadFile(filepath.Join(s.Paths.PostkitRun, "policyd.sqlite-wal"))
		all := string(data) + string(wal)
		if !strings.Contains(all, "127.0.0.0/24") {
			t.Fatalf("state file holds no triplet of the greylisted client (%d bytes)", len(all))
		}
		if strings.Contains(all, spfPassDomain) || strings.Contains(all, alice) {
			t.Error("the state file holds addresses despite policy.greylist.privacy")
		}
	})
	// header_type ar: the result is an Authentication-Results field with
	// our authserv-id, sealed; the milter keeps it (and removes a copy the
	// client wrote), and the spam filter reads SPF from it.
	t.Run("Authentication-Results kept by the milter, read by the spam filter", func(t *testing.T) {
		tok := harness.Token()
		from := "someone@" + spfPassDomain
		c := dialHelo(t, s, parityListed, "client."+harness.OutsideDomain)
		forged := fmt.Sprintf("Authentication-Results: %s; spf=pass smtp.mailfrom=ceo@bank.test", harness.Hostname)
		if err := harness.Send(c, from, []string{alice}, harness.Message(from, alice, tok, forged)); err != nil {
			t.Fatalf("send: %v", err)
		}
		m, err := s.WaitMail(ctx(t), alice, "", tok)
		if err != nil {
			t.Fatal(err)
		}
		if v := m.Headers("Received-SPF"); len(v) != 0 {
			t.Errorf("Received-SPF %q with header_type ar", v)
		}
		var spf []string
		for _, v := range m.Headers("Authentication-Results") {
			if strings.Contains(v, "spf=") {
				spf = append(spf, v)
			}
		}
		if len(spf) != 1 || !strings.HasPrefix(spf[0], harness.Hostname+"; spf=pass") || !strings.Contains(spf[0], "smtp.mailfrom="+from) || !strings.Contains(spf[0], "x-postkit-seal=") {
			t.Errorf("SPF Authentication-Results %q; want only the policy daemon's sealed spf=pass", spf)
		}
		if st := m.Header("X-Spam-Status"); !strings.Contains(st, "AUTH_SPF_PASS") {
			t.Errorf("X-Spam-Status %q; want AUTH_SPF_PASS read from the Authentication-Results", st)
		}
	})
}
