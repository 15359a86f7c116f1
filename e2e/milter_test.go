package e2e

import (
	"github.com/postkit/postkit/internal/testlib"

	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postkit/postkit/e2e/harness"
	"github.com/postkit/postkit/internal/dkimkey"
	"github.com/postkit/postkit/milter/dkimsign"
)

// The milter scenarios run on a stack of their own, with the postkit milter
// enabled and wired into Postfix by `postkit generate`, started by the
// harness as `postkit milter -c postkit.yaml`.
const (
	milterSocket = "{root}/spool/postfix/postkit/milter.sock" // under the queue directory: Postfix gets unix:postkit/milter.sock
	outSelector  = "e2e"                                      // the outside world's signing key
)

// ourKeys are the stack's signing keys, made by `postkit dkim keygen` in
// the seed step: selector → algorithm.
var ourKeys = []struct{ selector, algo, dkimAlgo string }{
	{"rsa1", "rsa", "rsa-sha256"},
	{"ed1", "ed25519", "ed25519-sha256"},
}

// milterStack starts the stack for TestMilter, or skips (fails under
// POSTKIT_E2E=1) like harness.Need. extra sets more postkit.yaml keys.
func milterStack(t *testing.T, outKey crypto.Signer, extra ...map[string]any) (*harness.Stack, *harness.Daemon) {
	t.Helper()
	testlib.NeedPython(t, "dkim", "nacl")
	outTXT, err := dkimkey.Record(outKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	var milter *harness.Daemon
	keys := []any{}
	for _, k := range ourKeys {
		keys = append(keys, map[string]any{"domain": harness.Domain, "selector": k.selector})
	}
	o := harness.Options{
		MessageSizeLimit: sizeLimit,
		Set: map[string]any{
			"milter.enabled":          true,
			"milter.listen":           "unix:" + milterSocket,
			"milter.default_action":   "tempfail",
			"milter.dkim.key_dir":     "{root}/dkimkeys",
			"milter.dkim.keys":        keys,
			"milter.dkim.authserv_id": harness.Hostname,
		},
		Zone: []string{fmt.Sprintf("%s._domainkey.%s. 300 IN TXT %s", outSelector, harness.OutsideDomain, quoteTXT(outTXT))},
		Seed: func(s *harness.Stack) error {
			if err := seed(s); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			for _, k := range ourKeys {
				if _, err := s.Postkit(ctx, "", "dkim", "keygen", "--domain", harness.Domain, "--selector", k.selector,
					"--algo", k.algo, "--dir", filepath.Join(s.Root, "dkimkeys", harness.Domain)); err != nil {
					return err
				}
			}
			// Started here rather than in Options.Daemons to keep its handle.
			milter, err = s.StartDaemon(ctx, milterDaemon)
			return err
		},
	}
	for _, e := range extra {
		for k, v := range e {
			o.Set[k] = v
		}
	}
	s := harness.StartT(t, o)
	return s, milter
}

var milterDaemon = harness.DaemonSpec{
	Name:  "milter",
	Args:  []string{"milter", "-c", "{config}", "--log-level", "debug"},
	Ready: "unix:" + milterSocket,
}

// quoteTXT writes a TXT record's text as 255-byte quoted strings.
func quoteTXT(s string) string {
	var parts []string
	for _, p := range dkimkey.SplitTXT(s, 255) {
		parts = append(parts, `"`+p+`"`)
	}
	return strings.Join(parts, " ")
}

// dkimpyVerify checks every DKIM-Signature of msg with dkimpy (Debian's
// python3-dkim, an implementation independent of postkit's), with records
// maps "selector._domainkey.domain" to its TXT record. It returns "a=ALGO
// s=SELECTOR ok=BOOL" per signature.
func dkimpyVerify(t *testing.T, msg []byte, records map[string]string) []string {
	t.Helper()
	const script = `
import sys, json, dkim
recs = json.loads(sys.argv[1])
msg = sys.stdin.buffer.read()
def dnsfunc(name, timeout=5):
    n = name.decode() if isinstance(name, bytes) else name
    return recs.get(n.rstrip('.').lower(), '').encode()
count = sum(1 for l in msg.split(b'\n') if l.lower().startswith(b'dkim-signature:'))
out = []
for i in range(count):
    d = dkim.DKIM(msg)
    try:
        ok = d.verify(idx=i, dnsfunc=dnsfunc)
    except dkim.DKIMException as e:
        sys.stderr.write('signature %d: %s\n' % (i, e))
        ok = False
    f = d.signature_fields or {}
    out.append('a=%s s=%s ok=%s' % (f.get(b'a', b'').decode(), f.get(b's', b'').decode(), ok))
print(json.dumps(out))
`
	recJSON, _ := json.Marshal(records)
	cmd := exec.Command("/usr/bin/python3", "-c", script, string(recJSON))
	cmd.Stdin = bytes.NewReader(msg)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("dkimpy: %v\n%s", err, stderr)
	}
	var res []string
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("dkimpy output %q: %v", out, err)
	}
	return res
}

// headerValues returns every value of a header field, unfolded, in order.
func headerValues(msg []byte, name string) []string {
	// Maildir files have LF line ends, the sink's copy CRLF.
	hdr, _, _ := strings.Cut(strings.ReplaceAll(string(msg), "\r\n", "\n"), "\n\n")
	var out []string
	lines := strings.Split(hdr, "\n")
	for i := 0; i < len(lines); i++ {
		k, v, ok := strings.Cut(lines[i], ":")
		if !ok || !strings.EqualFold(k, name) {
			continue
		}
		for i+1 < len(lines) && (strings.HasPrefix(lines[i+1], " ") || strings.HasPrefix(lines[i+1], "\t")) {
			i++
			v += " " + lines[i]
		}
		out = append(out, strings.Join(strings.Fields(v), " "))
	}
	return out
}

// TestMilter drives mail through the real Postfix with the postkit milter:
// outbound submissions are scrubbed and signed (RSA and Ed25519, checked by
// dkimpy), inbound mail gets Authentication-Results, and a stopped milter
// defers mail instead of losing it. The steps share one stack and run in order.
func TestMilter(t *testing.T) {
	outKey, err := dkimkey.Generate(dkimkey.Ed25519, 0, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, milter := milterStack(t, outKey)
	records := map[string]string{}
	for _, k := range ourKeys {
		key, err := dkimkey.LoadPrivateKey(filepath.Join(s.Root, "dkimkeys", harness.Domain, k.selector+".private"))
		if err != nil {
			t.Fatal(err)
		}
		if records[k.selector+"._domainkey."+harness.Domain], err = dkimkey.Record(key.Public()); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("submission scrubbed and signed", func(t *testing.T) {
		tok := harness.Token()
		to := "friend@" + harness.OutsideDomain
		c, err := s.Submission(harness.OutsideIP, true)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Auth(harness.Plain(alice, passwords[alice])); err != nil {
			t.Fatalf("AUTH PLAIN %s: %v", alice, err)
		}
		// A message as a webmail relays it: its own Received line naming
		// the user's address, and the MUA's revealing headers.
		msg := harness.Message(alice, to, tok,
			"Received: from [192.0.2.77] (laptop.home.test [192.0.2.77]) by webmail.example.test with ESMTPSA id 4711; Mon, 1 Jan 2024 10:00:00 +0000",
			"X-Mailer: Thunderbird 115.0", "User-Agent: Mutt/2.2", "X-Originating-IP: [192.0.2.77]")
		if err := harness.Send(c, alice, []string{to}, msg); err != nil {
			t.Fatalf("submission: %v", err)
		}
		m, err := s.Sink.Wait(ctx(t), func(m harness.SinkMessage) bool { return bytes.Contains(m.Data, []byte(tok)) })
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range []string{"X-Mailer", "User-Agent", "X-Originating-IP"} {
			if v := headerValues(m.Data, h); len(v) > 0 {
				t.Errorf("%s not scrubbed: %q", h, v)
			}
		}
		recv := headerValues(m.Data, "Received")
		if len(recv) < 2 {
			t.Errorf("Received lines %q, want Postfix's and the webmail's (rewritten, not deleted)", recv)
		}
		for _, r := range recv {
			for _, leak := range []string{"192.0.2.77", harness.OutsideIP, "client." + harness.OutsideDomain, "laptop.home.test"} {
				if strings.Contains(r, leak) {
					t.Errorf("Received line leaks the client (%s): %q", leak, r)
				}
			}
		}
		if bytes.Contains(m.Data, []byte("\r\r")) {
			t.Errorf("bare CR in the relayed message (a milter value folded with CRLF):\n%q", m.Data)
		}
		sigs := headerValues(m.Data, "DKIM-Signature")
		if len(sigs) != len(ourKeys) {
			t.Fatalf("%d DKIM-Signature fields, want %d (one per key):\n%s", len(sigs), len(ourKeys), m.Data)
		}
		os.WriteFile(filepath.Join(s.Root, "submitted.eml"), m.Data, 0o644) // for a failure's post-mortem
		got := dkimpyVerify(t, m.Data, records)
		for _, k := range ourKeys {
			want := fmt.Sprintf("a=%s s=%s ok=True", k.dkimAlgo, k.selector)
			found := false
			for _, g := range got {
				found = found || g == want
			}
			if !found {
				t.Errorf("dkimpy results %q, want %q", got, want)
			}
		}
		// The control: the same check fails once the body changes.
		tampered := bytes.Replace(m.Data, []byte("token "+tok), []byte("token "+tok+"!"), 1)
		for _, g := range dkimpyVerify(t, tampered, records) {
			if strings.HasSuffix(g, "ok=True") {
				t.Errorf("dkimpy accepts a tampered copy: %q", g)
			}
		}
	})

	t.Run("inbound verified", func(t *testing.T) {
		sender := "carol@" + harness.OutsideDomain
		forged := "Authentication-Results: " + harness.Hostname + "; dkim=pass header.d=bank.test"
		tests := []struct {
			name   string
			canon  string
			tamper bool
			want   string
		}{
			{"intact signature", "relaxed/relaxed", false, "dkim=pass"},
			// Simple header canonicalization hashes folded lines byte for
			// byte (RFC 6376 section 3.4.1), and Postfix hands them to the
			// milter with bare LFs: the CRLFs must be restored.
			{"intact signature, simple/simple, folded fields", "simple/simple", false, "dkim=pass"},
			{"tampered body", "relaxed/simple", true, "dkim=fail"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				signer, err := dkimsign.New(dkimsign.Config{
					Keys:             []dkimsign.Key{{Domain: harness.OutsideDomain, Selector: outSelector, Signer: outKey}},
					Canonicalization: tt.canon,
					Headers:          append([]string{"X-Folded"}, dkimsign.DefaultHeaders...),
				})
				if err != nil {
					t.Fatal(err)
				}
				tok := harness.Token()
				msg := harness.Message(sender, alice, tok, forged, "X-Folded: first line\r\n\tsecond line\r\n third  line")
				vals, err := signer.Sign(bytes.NewReader(msg))
				if err != nil || len(vals) != 1 {
					t.Fatalf("signing the outside message: %v %v", vals, err)
				}
				msg = append([]byte("DKIM-Signature: "+vals[0]+"\r\n"), msg...)
				if tt.tamper {
					msg = bytes.Replace(msg, []byte("Hello from"), []byte("Hullo from"), 1)
				}
				c, err := s.SMTP(harness.OutsideIP)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if err := harness.Send(c, sender, []string{alice}, msg); err != nil {
					t.Fatalf("send: %v", err)
				}
				d, err := s.WaitMail(ctx(t), alice, "", tok)
				if err != nil {
					t.Fatal(err)
				}
				ars := headerValues(d.Data, "Authentication-Results")
				if len(ars) != 1 {
					t.Fatalf("Authentication-Results %q, want exactly one (the forged one removed)", ars)
				}
				want := harness.Hostname + "; " + tt.want
				if !strings.HasPrefix(ars[0], want) || !strings.Contains(ars[0], "header.d="+harness.OutsideDomain) {
					t.Errorf("Authentication-Results %q, want %q… header.d=%s", ars[0], want, harness.OutsideDomain)
				}
			})
		}
	})

	t.Run("milter down defers, then delivers", func(t *testing.T) {
		if !milter.Running() {
			t.Fatal("the milter daemon is not running")
		}
		if err := s.StopDaemon(milter); err != nil {
			t.Fatal(err)
		}
		tok := harness.Token()
		msg := harness.Message(stranger, alice, tok)
		c, err := s.SMTP(harness.OutsideIP)
		if err != nil {
			t.Fatal(err)
		}
		err = harness.Send(c, stranger, []string{alice}, msg)
		c.Close()
		if code := harness.Code(err); code < 400 || code > 499 {
			t.Fatalf("with the milter down: err = %v, want a temporary refusal (4xx, milter_default_action = tempfail)", err)
		}
		// Refused, so not queued: nothing may show up later either.
		time.Sleep(time.Second)
		if m := s.FindMail(alice, "", tok); len(m) > 0 {
			t.Fatalf("message delivered although it was refused: %s", m[0].Path)
		}
		// The sender retries once the milter is back: delivered, verified.
		if _, err := s.StartDaemon(ctx(t), milterDaemon); err != nil {
			t.Fatal(err)
		}
		c, err = s.SMTP(harness.OutsideIP)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := harness.Send(c, stranger, []string{alice}, msg); err != nil {
			t.Fatalf("retry with the milter back: %v", err)
		}
		got, err := s.WaitMail(ctx(t), alice, "", tok)
		if err != nil {
			t.Fatal(err)
		}
		if ars := headerValues(got.Data, "Authentication-Results"); len(ars) != 1 || !strings.HasPrefix(ars[0], harness.Hostname+"; dkim=none") {
			t.Errorf("Authentication-Results %q, want %s; dkim=none (went through the milter)", ars, harness.Hostname)
		}
	})
}
