package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"gopkg.in/yaml.v3"

	"github.com/postkit/postkit/e2e/harness"
	"github.com/postkit/postkit/internal/dkimkey"
)

// submitAs logs in as login on a submission service and runs one
// transaction with envelope sender from and the message msg. stage says
// where the server answered: "mail", "rcpt", "data" or "" when accepted.
func submitAs(t *testing.T, dial func() (*smtp.Client, error), login, from, to string, msg []byte) (stage string, err error) {
	t.Helper()
	c, err := dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(harness.Plain(login, passwords[login])); err != nil {
		t.Fatalf("AUTH PLAIN %s: %v", login, err)
	}
	if err := c.Mail(from, nil); err != nil {
		return "mail", err
	}
	if err := c.Rcpt(to, nil); err != nil {
		return "rcpt", err
	}
	w, err := c.Data()
	if err != nil {
		return "data", err
	}
	w.Write(msg)
	if err := w.Close(); err != nil {
		return "data", err
	}
	return "", nil
}

// On the submission services (587 and 465) a login may use as envelope
// sender its own address, with any extension, and the virtual aliases that
// deliver to it; anything else is refused at MAIL FROM with 553 5.7.1
// (reject_authenticated_sender_login_mismatch over the sender-login map).
// The trusted network still relays on port 25 without a login.
func TestSenderLogin(t *testing.T) {
	s := harness.Need(t)
	services := []struct {
		name string
		dial func() (*smtp.Client, error)
	}{
		{"587", func() (*smtp.Client, error) { return s.Submission(harness.OutsideIP, true) }},
		{"465", func() (*smtp.Client, error) { return s.Submissions(harness.OutsideIP) }},
	}
	tests := []struct {
		name, login, from string
		ok                bool
	}{
		{"own address", alice, alice, true},
		{"own address with an extension", alice, "alice+news@" + harness.Domain, true},
		{"alias that delivers to the user", bob, info, true},
		{"address with no such alias", alice, "billing@" + harness.Domain, false},
		{"another user's address", alice, bob, false},
		{"an alias that delivers to someone else", alice, info, false},
		{"foreign address", alice, stranger, false},
	}
	for _, svc := range services {
		for _, tt := range tests {
			t.Run(svc.name+"/"+tt.name, func(t *testing.T) {
				tok := harness.Token()
				to := "friend-" + tok + "@" + harness.OutsideDomain
				stage, err := submitAs(t, svc.dial, tt.login, tt.from, to, harness.Message(tt.from, to, tok))
				if tt.ok {
					if err != nil {
						t.Fatalf("%s as %s: refused at %s: %v", tt.login, tt.from, stage, err)
					}
					m, err := s.Sink.Wait(ctx(t), func(m harness.SinkMessage) bool { return bytes.Contains(m.Data, []byte(tok)) })
					if err != nil {
						t.Fatal(err)
					}
					if m.From != tt.from {
						t.Errorf("relayed with MAIL FROM:<%s>, want <%s>", m.From, tt.from)
					}
					return
				}
				var se *smtp.SMTPError
				if stage != "mail" || !errors.As(err, &se) || se.Code != 553 || se.EnhancedCode != (smtp.EnhancedCode{5, 7, 1}) ||
					!strings.Contains(se.Message, "not owned by user "+tt.login) {
					t.Fatalf("%s as %s: stage %q, err %v; want 553 5.7.1 \"… not owned by user %s\" at MAIL FROM", tt.login, tt.from, stage, err, tt.login)
				}
				time.Sleep(200 * time.Millisecond)
				for _, m := range s.Sink.Messages() {
					if bytes.Contains(m.Data, []byte(tok)) {
						t.Fatalf("refused message relayed anyway")
					}
				}
			})
		}
	}
	// The SQL sender blacklist still applies to addresses a login owns.
	t.Run("blacklisted address the login may use", func(t *testing.T) {
		sales := "sales-" + harness.Token() + "@" + harness.Domain
		c, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.AddVirtualAlias(c, sales, alice); err != nil {
			t.Fatal(err)
		}
		if err := s.BlacklistSender(c, sales, 554, "5.7.1 This address is closed"); err != nil {
			t.Fatal(err)
		}
		tok := harness.Token()
		to := "friend-" + tok + "@" + harness.OutsideDomain
		stage, err := submitAs(t, services[0].dial, alice, sales, to, harness.Message(sales, to, tok))
		var se *smtp.SMTPError
		if stage != "mail" || !errors.As(err, &se) || se.Code != 554 || !strings.Contains(se.Message, "This address is closed") {
			t.Fatalf("stage %q, err %v; want the blacklist's 554 at MAIL FROM", stage, err)
		}
	})
	t.Run("trusted network, no login", func(t *testing.T) {
		tok := harness.Token()
		to := "friend-" + tok + "@" + harness.OutsideDomain
		from := "billing@" + harness.Domain // a local script's own address
		c, err := s.SMTP("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := harness.Send(c, from, []string{to}, harness.Message(from, to, tok)); err != nil {
			t.Fatalf("relay from the trusted host: %v", err)
		}
		if _, err := s.Sink.Wait(ctx(t), func(m harness.SinkMessage) bool { return bytes.Contains(m.Data, []byte(tok)) }); err != nil {
			t.Fatal(err)
		}
	})
}

// The milter signs authenticated mail only when the From header is an
// address the login may use, by the rule of the envelope check (the same
// query on the same database): a From of another user is refused by
// default, or passed unsigned with milter.dkim.unowned_from: unsigned, and
// the milter's log says why. Own address, an alias that delivers to the
// user and a sender_logins grant are signed; mail from the trusted network
// without a login is signed as before.
func TestSenderSigning(t *testing.T) {
	outKey, err := dkimkey.Generate(dkimkey.Ed25519, 0, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	news := "news@" + harness.Domain // no row in the database: granted to alice in postkit.yaml
	s, milter := milterStack(t, outKey, map[string]any{
		"sender_logins": []any{map[string]any{"sender": news, "logins": []any{alice}}},
	})
	to := "friend@" + harness.OutsideDomain
	dial := func() (*smtp.Client, error) { return s.Submission(harness.OutsideIP, true) }
	relayed := func(t *testing.T, tok string) harness.SinkMessage {
		t.Helper()
		m, err := s.Sink.Wait(ctx(t), func(m harness.SinkMessage) bool { return bytes.Contains(m.Data, []byte(tok)) })
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	signed := func(t *testing.T, m harness.SinkMessage) {
		t.Helper()
		if sigs := headerValues(m.Data, "DKIM-Signature"); len(sigs) != len(ourKeys) {
			t.Errorf("%d DKIM-Signature fields, want %d:\n%s", len(sigs), len(ourKeys), m.Data)
		}
		for _, sig := range headerValues(m.Data, "DKIM-Signature") {
			if !strings.Contains(sig, "d="+harness.Domain+";") {
				t.Errorf("signature not by %s: %s", harness.Domain, sig)
			}
		}
	}
	milterLog := func() string { b, _ := os.ReadFile(milter.Log); return string(b) }
	waitLog := func(t *testing.T, want ...string) string {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second) // the daemon writes its log in batches
		for {
			log := milterLog()
			missing := ""
			for _, w := range want {
				if !strings.Contains(log, w) {
					missing = w
				}
			}
			if missing == "" {
				return log
			}
			if time.Now().After(deadline) {
				t.Fatalf("the milter's log lacks %q:\n%s", missing, log)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	for _, tt := range []struct{ name, login, from string }{
		{"own address", alice, alice},
		{"alias that delivers to the user", bob, info},
		{"sender_logins grant", alice, news},
	} {
		t.Run(tt.name+": signed", func(t *testing.T) {
			tok := harness.Token()
			if stage, err := submitAs(t, dial, tt.login, tt.from, to, harness.Message(tt.from, to, tok)); err != nil {
				t.Fatalf("%s as %s: refused at %s: %v", tt.login, tt.from, stage, err)
			}
			signed(t, relayed(t, tok))
		})
	}

	t.Run("From of another user: refused", func(t *testing.T) {
		tok := harness.Token()
		stage, err := submitAs(t, dial, alice, alice, to, harness.Message(bob, to, tok))
		var se *smtp.SMTPError
		if stage != "data" || !errors.As(err, &se) || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 7, 1}) ||
			!strings.Contains(se.Message, "<"+bob+">: From address not owned by user "+alice) {
			t.Fatalf("stage %q, err %v; want 550 5.7.1 \"<%s>: From address not owned by user %s\" at end of data", stage, err, bob, alice)
		}
		waitLog(t, `msg="dkimsign: refused: From not owned by the login"`, "sasl_username="+alice+" from="+bob)
		time.Sleep(200 * time.Millisecond)
		for _, m := range s.Sink.Messages() {
			if bytes.Contains(m.Data, []byte(tok)) {
				t.Fatal("refused message relayed anyway")
			}
		}
	})

	t.Run("trusted network without login: signed as before", func(t *testing.T) {
		tok := harness.Token()
		from := "billing@" + harness.Domain
		c, err := s.SMTP("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := harness.Send(c, from, []string{to}, harness.Message(from, to, tok)); err != nil {
			t.Fatal(err)
		}
		signed(t, relayed(t, tok))
	})

	t.Run("From of another user with unowned_from unsigned: passed unsigned", func(t *testing.T) {
		setYAML(t, s, "milter.dkim.unowned_from", "unsigned")
		reloads := strings.Count(milterLog(), `msg="milter reloaded"`)
		if err := syscall.Kill(milter.Pid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for strings.Count(milterLog(), `msg="milter reloaded"`) == reloads {
			if time.Now().After(deadline) {
				t.Fatalf("no reload logged after SIGHUP:\n%s", milterLog())
			}
			time.Sleep(100 * time.Millisecond)
		}
		tok := harness.Token()
		if stage, err := submitAs(t, dial, alice, alice, to, harness.Message(bob, to, tok)); err != nil {
			t.Fatalf("refused at %s: %v; want accepted unsigned", stage, err)
		}
		m := relayed(t, tok)
		if sigs := headerValues(m.Data, "DKIM-Signature"); len(sigs) != 0 {
			t.Errorf("signed although the From belongs to another user: %q", sigs)
		}
		waitLog(t, `msg="dkimsign: not signed: From not owned by the login"`, "sasl_username="+alice+" from="+bob,
			`reason="From address `+bob+` is not one login `+alice+` may use"`)
	})
}

// setYAML changes one key of the stack's postkit.yaml.
func setYAML(t *testing.T, s *harness.Stack, key string, v any) {
	t.Helper()
	data, err := os.ReadFile(s.Paths.Config)
	if err != nil {
		t.Fatal(err)
	}
	doc := map[string]any{}
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	if err := harness.SetKey(doc, key, v); err != nil {
		t.Fatal(err)
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.Paths.Config, out, 0o644); err != nil {
		t.Fatal(err)
	}
}
