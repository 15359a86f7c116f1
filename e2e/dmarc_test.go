package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/postkit/postkit/e2e/harness"
	"github.com/postkit/postkit/internal/testlib"
)

// The DMARC scenarios run on a stack of their own: the postkit milter with
// its default chain (DKIM verification, DMARC with action reject, spam
// scoring), the generated Sieve rule that files the quarantine field into
// Spam, and these zones:
//
//   - rejecting.test publishes p=reject with rua= to alice, whose domain
//     (example.test) consents to receive its reports (RFC 7489 section
//     7.1); its SPF record lists dmarcHost only;
//   - quarantining.test publishes p=quarantine;
//   - dmarcForwarder is in milter.dmarc.trusted_forwarders.
const (
	dmarcSocket    = "{root}/spool/postfix/postkit/milter.sock"
	rejecting      = "rejecting.test"
	quarantining   = "quarantining.test"
	dmarcHost      = "127.0.0.5" // in rejecting.test's SPF record
	dmarcForwarder = "127.0.0.4"
)

func dmarcSpec(extra ...string) harness.DaemonSpec {
	return harness.DaemonSpec{
		Name:  "milter",
		Args:  append([]string{"milter", "-c", "{config}", "--log-level", "debug"}, extra...),
		Ready: "unix:" + dmarcSocket,
	}
}

func dmarcStack(t *testing.T) (*harness.Stack, *harness.Daemon) {
	t.Helper()
	var milter *harness.Daemon
	s := harness.StartT(t, harness.Options{
		Set: map[string]any{
			"milter.enabled":                  true,
			"milter.listen":                   "unix:" + dmarcSocket,
			"milter.dkim.authserv_id":         harness.Hostname,
			"milter.dmarc.trusted_forwarders": []string{dmarcForwarder + "/32"},
		},
		Zone: []string{
			rejecting + `. 300 IN A 127.0.0.1`,
			quarantining + `. 300 IN A 127.0.0.1`,
			rejecting + `. 300 IN TXT "v=spf1 ip4:` + dmarcHost + ` -all"`,
			`_dmarc.` + rejecting + `. 300 IN TXT "v=DMARC1; p=reject; rua=mailto:` + alice + `"`,
			rejecting + `._report._dmarc.` + harness.Domain + `. 300 IN TXT "v=DMARC1"`,
			`_dmarc.` + quarantining + `. 300 IN TXT "v=DMARC1; p=quarantine"`,
		},
		Seed: func(s *harness.Stack) error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := s.AddUser(ctx, alice, passwords[alice]); err != nil {
				return err
			}
			var err error
			milter, err = s.StartDaemon(ctx, dmarcSpec())
			return err
		},
	})
	return s, milter
}

// ourAR returns the Authentication-Results fields of our authserv-id.
func ourAR(d harness.Delivered) []string {
	var out []string
	for _, v := range d.Headers("Authentication-Results") {
		if strings.HasPrefix(strings.TrimSpace(v), harness.Hostname) {
			out = append(out, strings.Join(strings.Fields(v), " "))
		}
	}
	return out
}

func TestDMARC(t *testing.T) {
	s, milter := dmarcStack(t)
	ceo := "ceo@" + rejecting
	// A forged verdict with our authserv-id must not count.
	forgedAR := "Authentication-Results: " + harness.Hostname + "; dkim=pass header.d=" + rejecting + "; dmarc=pass header.from=" + rejecting

	t.Run("p=reject, unaligned: refused at end of data", func(t *testing.T) {
		err := sendFrom(t, s, harness.OutsideIP, stranger, harness.Message(ceo, alice, harness.Token(), forgedAR))
		se := refusal(t, err)
		if se == nil || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 7, 1}) || !strings.Contains(se.Message, "DMARC policy of "+rejecting) {
			t.Fatalf("send = %v; want 550 5.7.1 DMARC policy of %s", err, rejecting)
		}
	})
	t.Run("p=reject, SPF aligned: delivered with one Authentication-Results", func(t *testing.T) {
		tok := harness.Token()
		if err := sendFrom(t, s, dmarcHost, "news@"+rejecting, harness.Message("news@"+rejecting, alice, tok, forgedAR)); err != nil {
			t.Fatal(err)
		}
		d, err := s.WaitMail(ctx(t), alice, "", tok)
		if err != nil {
			t.Fatal(err)
		}
		ar := ourAR(d)
		if len(ar) != 1 || !strings.Contains(ar[0], "dkim=none") || !strings.Contains(ar[0], "spf=pass smtp.mailfrom=news@"+rejecting) ||
			!strings.Contains(ar[0], "dmarc=pass") || !strings.Contains(ar[0], "header.from="+rejecting) || !strings.Contains(ar[0], "policy.dmarc=reject") {
			t.Errorf("our Authentication-Results %q; want one field with dkim, spf=pass and dmarc=pass", ar)
		}
	})
	t.Run("p=quarantine: filed into Spam and scored", func(t *testing.T) {
		tok := harness.Token()
		if err := sendFrom(t, s, harness.OutsideIP, stranger, harness.Message("boss@"+quarantining, alice, tok)); err != nil {
			t.Fatal(err)
		}
		d, err := s.WaitMail(ctx(t), alice, "Spam", tok)
		if err != nil {
			t.Fatal(err)
		}
		if q := d.Header("X-Postkit-DMARC"); !strings.HasPrefix(q, "quarantine") {
			t.Errorf("X-Postkit-DMARC %q; want quarantine", q)
		}
		if st := strings.Join(strings.Fields(d.Header("X-Spam-Status")), " "); !strings.Contains(st, "DMARC_QUARANTINE") {
			t.Errorf("X-Spam-Status %q; want the DMARC_QUARANTINE rule hit", st)
		}
	})
	t.Run("trusted forwarder: delivered to the inbox", func(t *testing.T) {
		tok := harness.Token()
		if err := sendFrom(t, s, dmarcForwarder, "fwd@"+harness.OutsideDomain, harness.Message(ceo, alice, tok)); err != nil {
			t.Fatalf("forwarded message refused: %v", err)
		}
		d, err := s.WaitMail(ctx(t), alice, "", tok)
		if err != nil {
			t.Fatal(err)
		}
		if ar := ourAR(d); len(ar) != 1 || !strings.Contains(ar[0], "dmarc=fail (p=reject dis=none)") {
			t.Errorf("our Authentication-Results %q; want dmarc=fail with disposition none", ar)
		}
	})
	t.Run("action quarantine: p=reject lands in Spam", func(t *testing.T) {
		if err := s.StopDaemon(milter); err != nil {
			t.Fatal(err)
		}
		m, err := s.StartDaemon(ctx(t), dmarcSpec("--set", "milter.dmarc.action=quarantine"))
		if err != nil {
			t.Fatal(err)
		}
		milter = m
		tok := harness.Token()
		if err := sendFrom(t, s, harness.OutsideIP, stranger, harness.Message(ceo, alice, tok)); err != nil {
			t.Fatalf("with action quarantine: %v; want accepted", err)
		}
		d, err := s.WaitMail(ctx(t), alice, "Spam", tok)
		if err != nil {
			t.Fatal(err)
		}
		if ar := ourAR(d); len(ar) != 1 || !strings.Contains(ar[0], "dmarc=fail (p=reject dis=quarantine)") {
			t.Errorf("our Authentication-Results %q; want dmarc=fail, disposition quarantine", ar)
		}
	})
	t.Run("daily report reaches the rua mailbox and validates", func(t *testing.T) {
		xmllint := testlib.NeedBinary(t, "xmllint")[0]
		day := time.Now().UTC().Format(time.DateOnly)
		// The milter writes the rows it queued once a second: --print
		// (for humans) shows the last evaluation, the quarantined one, once
		// it is written.
		testlib.Eventually(t, 10*time.Second, "the evaluations recorded", func() bool {
			out, err := s.Postkit(ctx(t), "", "dmarc", "report", "-c", s.Paths.Config, "--day", day, "--print")
			return err == nil && strings.Contains(out, rejecting) && strings.Contains(out, " quarantine ") && strings.Contains(out, "trusted_forwarder")
		})
		out, err := s.Postkit(ctx(t), "", "dmarc", "report", "-c", s.Paths.Config, "--day", day, "--send")
		if err != nil {
			t.Fatal(err)
		}
		d, err := s.WaitMail(ctx(t), alice, "", "Report Domain: "+rejecting)
		if err != nil {
			t.Fatalf("%v (report: %s)", err, out)
		}
		x := reportXML(t, d.Data)
		for _, want := range []string{"<domain>" + rejecting + "</domain>", "<p>reject</p>", "<disposition>reject</disposition>",
			"<disposition>quarantine</disposition>", "<type>trusted_forwarder</type>", "<source_ip>" + dmarcHost + "</source_ip>"} {
			if !bytes.Contains(x, []byte(want)) {
				t.Errorf("report lacks %s:\n%s", want, x)
			}
		}
		p := filepath.Join(t.TempDir(), "report.xml")
		if err := os.WriteFile(p, x, 0o644); err != nil {
			t.Fatal(err)
		}
		schema, _ := filepath.Abs("../milter/dmarc/report/testdata/rfc7489.xsd")
		if o, err := exec.Command(xmllint, "--noout", "--schema", schema, p).CombinedOutput(); err != nil {
			t.Errorf("report does not validate against RFC 7489's schema: %v\n%s\n%s", err, o, x)
		}
		// Sent once.
		if _, err := s.Postkit(ctx(t), "", "dmarc", "report", "-c", s.Paths.Config, "--day", day, "--send"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Second)
		if n := len(s.FindMail(alice, "", "Report Domain: "+rejecting)); n != 1 {
			t.Errorf("%d reports in the mailbox after a second run; want 1", n)
		}
	})
}

// reportXML returns the gunzipped report attached to a report message.
func reportXML(t *testing.T, raw []byte) []byte {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	_, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err != nil {
			t.Fatalf("no .xml.gz attachment: %v", err)
		}
		if strings.HasSuffix(p.FileName(), ".xml.gz") && strings.Contains(p.FileName(), "!"+rejecting+"!") {
			gz, err := gzip.NewReader(base64.NewDecoder(base64.StdEncoding, p))
			if err != nil {
				t.Fatal(err)
			}
			x, err := io.ReadAll(gz)
			if err != nil {
				t.Fatal(err)
			}
			return x
		}
	}
}
