package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/internal/dkimkey"
	"github.com/postkit/postkit/internal/dnstest"
	"github.com/postkit/postkit/milter/dkimsign"
	"github.com/postkit/postkit/milter/miltertest"
	"github.com/postkit/postkit/sqlmaps"
)

const milterYAMLBase = `hostname: mx.example.test
domains: [example.test]
trusted_networks: [127.0.0.1/32]
postfix: {chroot: false}
`

// writeKey writes an Ed25519 key as `postkit dkim keygen` lays it out
// (DIR/DOMAIN/SELECTOR.private) and returns its TXT record.
func writeKey(t *testing.T, dir, domain, selector string) (file, txt string) {
	t.Helper()
	k, err := dkimkey.Generate(dkimkey.Ed25519, 0, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	file, _, err = dkimkey.WriteKeyFiles(filepath.Join(dir, domain), selector, domain, k)
	if err != nil {
		t.Fatal(err)
	}
	txt, err = dkimkey.Record(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return file, txt
}

func loadYAML(t *testing.T, y string) *config.Config {
	t.Helper()
	p := filepath.Join(t.TempDir(), "postkit.yaml")
	if err := os.WriteFile(p, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	c, _, err := config.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// signedBy returns the s= of each DKIM-Signature that go-msgauth verifies
// against the given selector → TXT records.
func verifiedSelectors(t *testing.T, msg []byte, txts map[string]string) []string {
	t.Helper()
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(msg), &dkim.VerifyOptions{LookupTXT: func(name string) ([]string, error) {
		sel, _, _ := strings.Cut(name, "._domainkey.")
		if txt, ok := txts[sel]; ok {
			return []string{txt}, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	}})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, v := range vs {
		if v.Err != nil {
			t.Errorf("signature d=%s: %v", v.Domain, v.Err)
			continue
		}
		out = append(out, v.Domain)
	}
	return out
}

// The daemon as `postkit milter -c` runs it: chain from the YAML, outbound
// mail scrubbed and signed, inbound verified, SIGHUP re-reads the YAML and
// keys, and keeps the old chain when the new file is broken.
func TestRunMilterFromYAML(t *testing.T) {
	dir := miltertest.PublicTempDir(t)
	keyDir := filepath.Join(dir, "keys")
	_, txt1 := writeKey(t, keyDir, "example.test", "ed1")
	_, txt2 := writeKey(t, keyDir, "example.test", "ed2")
	// The outside world's key, served by the test DNS server.
	outKey, err := dkimkey.Generate(dkimkey.Ed25519, 0, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	outTXT, _ := dkimkey.Record(outKey.Public())
	dnsSrv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer dnsSrv.Close()
	if err := dnsSrv.SetZone(fmt.Sprintf("out._domainkey.outside.test. 300 IN TXT %q", outTXT)); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "milter.sock")
	cfgPath := filepath.Join(dir, "postkit.yaml")
	dbPath := filepath.Join(dir, "postfix.sqlite")
	st, err := sqlmaps.Open(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := st.AddDomain(context.Background(), "stored.test", false); err != nil {
		t.Fatal(err)
	}
	st.Close()
	writeCfg := func(keys string) {
		y := milterYAMLBase + fmt.Sprintf(`dns: {servers: [%q], timeout: 2s}
database: {path: %s}
paths: {postkit_run: %s}
milter:
  enabled: true
  listen: unix:%s
  socket_mode: "0666"
  dkim:
    authserv_id: mx.example.test
    key_dir: %s
    keys: %s
`, dnsSrv.Addr(), dbPath, filepath.Join(dir, "run"), sock, keyDir, keys)
		if err := os.WriteFile(cfgPath, []byte(y), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeCfg("[{domain: example.test, selector: ed1}]")
	d := startDaemon(t, "milter", "-c", cfgPath)
	srv := &miltertest.Server{Network: "unix", Address: sock}

	outbound := func(t *testing.T) []byte {
		t.Helper()
		raw := "From: <alice@example.test>\r\nTo: <bob@outside.test>\r\nSubject: hi\r\nX-Mailer: Mutt\r\n\r\nbody\r\n"
		res, err := srv.Send(&miltertest.Message{From: "alice@example.test", Rcpts: []string{"bob@outside.test"}, Raw: []byte(raw)})
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(res.Final, []byte("X-Mailer")) {
			t.Errorf("X-Mailer not scrubbed:\n%s", res.Final)
		}
		if bytes.Contains(res.Final, []byte("Authentication-Results")) {
			t.Errorf("outbound mail got Authentication-Results:\n%s", res.Final)
		}
		return res.Final
	}
	txts := map[string]string{"ed1": txt1, "ed2": txt2}
	t.Run("outbound signed with the YAML key", func(t *testing.T) {
		if got := verifiedSelectors(t, outbound(t), txts); len(got) != 1 {
			t.Errorf("%d valid signatures, want 1", len(got))
		}
	})
	t.Run("inbound verified", func(t *testing.T) {
		signer, err := dkimsign.New(dkimsign.Config{Keys: []dkimsign.Key{{Domain: "outside.test", Selector: "out", Signer: outKey}}})
		if err != nil {
			t.Fatal(err)
		}
		body := "From: <carol@outside.test>\r\nTo: <alice@example.test>\r\nSubject: in\r\n" +
			"Authentication-Results: mx.example.test; dkim=pass header.d=forged.test\r\n\r\nhello\r\n"
		sigs, err := signer.Sign(strings.NewReader(body))
		if err != nil || len(sigs) != 1 {
			t.Fatalf("sign: %v %v", sigs, err)
		}
		for _, tc := range []struct{ name, raw, want string }{
			{"intact", "DKIM-Signature: " + sigs[0] + "\r\n" + body, "mx.example.test; dkim=pass"},
			{"tampered", "DKIM-Signature: " + sigs[0] + "\r\n" + strings.Replace(body, "hello", "hellO", 1), "mx.example.test; dkim=fail"},
		} {
			cl, err := srv.Dial(miltertest.ConnInfo{Hostname: "mx.outside.test", Addr: "192.0.2.1", Port: 25, Helo: "mx.outside.test"})
			if err != nil {
				t.Fatal(err)
			}
			res, err := cl.Send(&miltertest.Message{From: "carol@outside.test", Rcpts: []string{"alice@example.test"}, Raw: []byte(tc.raw)})
			cl.Close()
			if err != nil {
				t.Fatal(err)
			}
			ars := miltertest.Headers(res.Final)
			var got []string
			for _, h := range ars {
				if strings.EqualFold(h.Name, "Authentication-Results") {
					got = append(got, strings.Join(strings.Fields(h.Value), " ")) // unfolded
				}
			}
			if len(got) != 1 || !strings.HasPrefix(got[0], tc.want) {
				t.Errorf("%s: Authentication-Results %q, want exactly one starting %q (the forged one removed)", tc.name, got, tc.want)
			}
		}
	})
	// With -c the chain knows our domains (the YAML's and the database's):
	// a stranger using them in From is refused (no SPF record, no DKIM), and
	// verdict fields it brings are removed from what is accepted.
	t.Run("inbound guards", func(t *testing.T) {
		for _, tc := range []struct{ from, want string }{
			{"billing@example.test", "550 5.7.1"},
			{"billing@stored.test", "550 5.7.1"},
			{"carol@outside.test", "accept"},
		} {
			cl, err := srv.Dial(miltertest.ConnInfo{Hostname: "mx.outside.test", Addr: "192.0.2.1", Port: 25, Helo: "mx.outside.test"})
			if err != nil {
				t.Fatal(err)
			}
			raw := "From: <" + tc.from + ">\r\nTo: <alice@example.test>\r\nSubject: in\r\nX-Spam-Flag: YES\r\n" +
				"Received-SPF: pass (mx.example.test: forged)\r\n\r\nhello\r\n"
			res, err := cl.Send(&miltertest.Message{From: "carol@outside.test", Rcpts: []string{"alice@example.test"}, Raw: []byte(raw)})
			cl.Close()
			if err != nil {
				t.Fatal(err)
			}
			got := "accept"
			if res.Final == nil {
				got = fmt.Sprintf("%d %s", res.Action.SMTPCode, res.Action.SMTPText)
			}
			if !strings.HasPrefix(got, tc.want) {
				t.Errorf("From %s: %s, want %s", tc.from, got, tc.want)
			}
			if res.Final != nil && (bytes.Contains(res.Final, []byte("X-Spam-Flag")) || bytes.Contains(res.Final, []byte("Received-SPF"))) {
				t.Errorf("From %s: forged fields kept:\n%s", tc.from, res.Final)
			}
		}
	})
	t.Run("SIGHUP reloads YAML and keys", func(t *testing.T) {
		// The chain read the database for the messages above (our
		// domains; the spam filter's per-domain allow lists, asked for
		// the DKIM-verified outside.test); the one a reload replaces
		// closes it.
		if n := openFiles(t, dbPath); n != 2 {
			t.Errorf("%d descriptors on the database before the reload; want 2 (the domain set, the spam allow lists)", n)
		}
		writeCfg("[{domain: example.test, selector: ed1}, {domain: example.test, selector: ed2}]")
		if err := d.reload(t); err != nil {
			t.Fatalf("reload: %v", err)
		}
		if n := openFiles(t, dbPath); n != 0 {
			t.Errorf("%d descriptors on the database after the reload; want 0: the old chain's handle is closed, the new chain opens its own on first use", n)
		}
		if got := verifiedSelectors(t, outbound(t), txts); len(got) != 2 {
			t.Errorf("%d valid signatures after adding ed2, want 2", len(got))
		}
		writeCfg("[{domain: example.test, selector: missing}]")
		if err := d.reload(t); err == nil || !strings.Contains(err.Error(), "missing") {
			t.Fatalf("reload with a missing key file: %v; want a failure naming the key", err)
		}
		if got := verifiedSelectors(t, outbound(t), txts); len(got) != 2 {
			t.Errorf("%d valid signatures after a failed reload, want the old 2", len(got))
		}
		if !strings.Contains(d.log.String(), "the running chain stays") {
			t.Errorf("failed reload not logged:\n%s", d.log.String())
		}
	})
}
