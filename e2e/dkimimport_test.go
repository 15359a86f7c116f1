package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/postkit/postkit/e2e/harness"
	"github.com/postkit/postkit/internal/testlib"
)

// Domains of the OpenDKIM migration: the reference's two domains, each with
// its key made by opendkim-genkey as the reference's genClefs.sh does.
const (
	totoDomain  = "toto.test"
	listsDomain = "lists." + harness.Domain // signed with example.test's "lists" key
)

// opendkimKey is one key made by opendkim-genkey: its private key file and
// its TXT record (the text of the zone file it writes).
type opendkimKey struct{ domain, selector, private, record string }

// genkey runs opendkim-genkey as the reference installation does (-r: email
// only; 2048 bits rather than 4096, for time) and reads its SELECTOR.txt.
func genkey(t *testing.T, dir, domain, selector string) opendkimKey {
	t.Helper()
	kd := filepath.Join(dir, "clefs", domain)
	if err := os.MkdirAll(kd, 0o750); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("opendkim-genkey", "-b", "2048", "-D", kd, "-r", "-d", domain, "-s", selector).CombinedOutput()
	if err != nil {
		t.Fatalf("opendkim-genkey: %v: %s", err, out)
	}
	zone, err := os.ReadFile(filepath.Join(kd, selector+".txt"))
	if err != nil {
		t.Fatal(err)
	}
	// mail._domainkey IN TXT ( "v=DKIM1; h=sha256; k=rsa; s=email; " "p=…" "…" ) ; comment
	var rec strings.Builder
	for _, m := range regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(string(zone), -1) {
		rec.WriteString(m[1])
	}
	if !strings.Contains(rec.String(), "p=") {
		t.Fatalf("no key record in %s:\n%s", selector+".txt", zone)
	}
	return opendkimKey{domain, selector, filepath.Join(kd, selector+".private"), rec.String()}
}

// TestOpenDKIMMigration: an installation signing with OpenDKIM, its tables
// written the reference's way (plain KeyTable and SigningTable, one key per
// domain) and the other way OpenDKIM is commonly set up (refile: patterns:
// one user with a key of their own, sub-domains signed by the parent's
// key), is switched to postkit with `postkit dkim import`; `postkit dkim
// testkey` finds every published key matching; mail sent through the real
// Postfix is signed for the same addresses with the same keys, as dkimpy
// verifies against the records opendkim-genkey wrote.
func TestOpenDKIMMigration(t *testing.T) {
	testlib.NeedBinary(t, "opendkim-genkey")
	testlib.NeedPython(t, "dkim")
	dir := t.TempDir()
	keys := []opendkimKey{
		genkey(t, dir, harness.Domain, "mail"),
		genkey(t, dir, totoDomain, "mail"),
		genkey(t, dir, harness.Domain, "ceo"),
		genkey(t, dir, harness.Domain, "lists"),
	}
	var kt, st strings.Builder
	for _, k := range keys[:2] { // genClefs.sh's lines
		fmt.Fprintf(&kt, "%s._domainkey.%s %s:%s:%s\n", k.selector, k.domain, k.domain, k.selector, k.private)
		fmt.Fprintf(&st, "%s %s._domainkey.%s\n", k.domain, k.selector, k.domain)
	}
	plainKT, plainST := filepath.Join(dir, "TableClefs"), filepath.Join(dir, "TableSignatures")
	os.WriteFile(plainKT, []byte(kt.String()), 0o640)
	os.WriteFile(plainST, []byte(st.String()), 0o640)
	refileKT, refileST := filepath.Join(dir, "key.table"), filepath.Join(dir, "signing.table")
	os.WriteFile(refileKT, []byte(fmt.Sprintf("ceo %s:ceo:%s\nlists %s:lists:%s\n", harness.Domain, keys[2].private, harness.Domain, keys[3].private)), 0o640)
	os.WriteFile(refileST, []byte("# first match wins\nceo@"+harness.Domain+" ceo\n*@*."+harness.Domain+" lists\n"), 0o640)

	records := map[string]string{}
	var zone []string
	for _, k := range keys {
		name := k.selector + "._domainkey." + k.domain
		records[name] = k.record
		zone = append(zone, name+". 300 IN TXT "+quoteTXT(k.record))
	}
	zone = append(zone, listsDomain+". 300 IN A 127.0.0.1")

	var imported []any
	o := harness.Options{
		Domains: []string{harness.Domain, totoDomain},
		Set: map[string]any{
			"milter.enabled":          true,
			"milter.listen":           "unix:" + milterSocket,
			"milter.default_action":   "tempfail",
			"milter.spam.enabled":     false,
			"milter.dkim.authserv_id": harness.Hostname,
		},
		Zone: zone,
		Seed: func(s *harness.Stack) error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			for _, tables := range [][2]string{{plainKT, plainST}, {"file:" + refileKT, "refile:" + refileST}} {
				out, err := s.Postkit(ctx, "", "dkim", "import", "--keytable", tables[0], "--signingtable", tables[1])
				if err != nil {
					return err
				}
				var doc struct {
					Milter struct {
						DKIM struct {
							Keys []map[string]any `yaml:"keys"`
						} `yaml:"dkim"`
					} `yaml:"milter"`
				}
				if err := yaml.Unmarshal([]byte(out), &doc); err != nil {
					return fmt.Errorf("dkim import output: %v\n%s", err, out)
				}
				for _, k := range doc.Milter.DKIM.Keys {
					imported = append(imported, k)
				}
			}
			data, err := os.ReadFile(s.Paths.Config)
			if err != nil {
				return err
			}
			var cfg map[string]any
			if err := yaml.Unmarshal(data, &cfg); err != nil {
				return err
			}
			if err := harness.SetKey(cfg, "milter.dkim.keys", imported); err != nil {
				return err
			}
			if data, err = yaml.Marshal(cfg); err != nil {
				return err
			}
			if err := os.WriteFile(s.Paths.Config, data, 0o644); err != nil {
				return err
			}
			_, err = s.StartDaemon(ctx, milterDaemon)
			return err
		},
	}
	s := harness.StartT(t, o)

	t.Run("imported keys", func(t *testing.T) {
		got := fmt.Sprint(imported)
		for _, want := range []string{
			"domain:" + harness.Domain + " key_file:" + keys[0].private + " selector:mail]",
			"domain:" + totoDomain + " key_file:" + keys[1].private + " selector:mail]",
			"from:[ceo@" + harness.Domain + "]",
			"from:[*@*." + harness.Domain + "]",
		} {
			if !strings.Contains(got, want) {
				t.Errorf("imported %s; want …%s…", got, want)
			}
		}
	})

	t.Run("testkey", func(t *testing.T) {
		out, err := s.Postkit(ctx(t), "", "dkim", "testkey", "-c", s.Paths.Config)
		if err != nil {
			t.Fatalf("dkim testkey: %v", err)
		}
		for _, k := range keys {
			if !strings.Contains(out, k.selector+"._domainkey."+k.domain+"\tok") {
				t.Errorf("testkey output lacks %s ok:\n%s", k.selector+"._domainkey."+k.domain, out)
			}
		}
		// A key whose record is another key's: refused, exit status 1.
		out, err = s.Postkit(ctx(t), "", "dkim", "testkey", "--dns", s.DNS.Addr(), "--key", totoDomain+":mail:"+keys[0].private)
		if err == nil || !strings.Contains(out, "mail._domainkey."+totoDomain+"\tmismatch") {
			t.Errorf("mismatched key: %v\n%s", err, out)
		}
	})

	for _, c := range []struct {
		from, want string // want: "d/s" of the one signature, "" for none
	}{
		{"alice@" + harness.Domain, harness.Domain + "/mail"},
		{"someone@" + totoDomain, totoDomain + "/mail"},
		{"ceo@" + harness.Domain, harness.Domain + "/ceo"},
		{"news@" + listsDomain, harness.Domain + "/lists"},
	} {
		t.Run("signed "+c.from, func(t *testing.T) {
			tok := harness.Token()
			to := "friend@" + harness.OutsideDomain
			cl, err := s.SMTP("127.0.0.1") // trusted_networks: the host's own mail, signed
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			if err := harness.Send(cl, c.from, []string{to}, harness.Message(c.from, to, tok)); err != nil {
				t.Fatalf("send: %v", err)
			}
			m, err := s.Sink.Wait(ctx(t), func(m harness.SinkMessage) bool { return strings.Contains(string(m.Data), tok) })
			if err != nil {
				t.Fatal(err)
			}
			sigs := headerValues(m.Data, "DKIM-Signature")
			if len(sigs) != 1 {
				t.Fatalf("%d DKIM-Signature fields; want 1:\n%s", len(sigs), m.Data)
			}
			d, sel := tagOf(sigs[0], "d"), tagOf(sigs[0], "s")
			if d+"/"+sel != c.want {
				t.Errorf("signed d=%s s=%s; want %s", d, sel, c.want)
			}
			if got := dkimpyVerify(t, m.Data, records); len(got) != 1 || !strings.HasSuffix(got[0], "ok=True") {
				t.Errorf("dkimpy: %q; want the signature verified with the key opendkim-genkey published", got)
			}
		})
	}
}

// tagOf returns a tag's value from a DKIM-Signature value.
func tagOf(sig, name string) string {
	for _, p := range strings.Split(sig, ";") {
		n, v, ok := strings.Cut(p, "=")
		if ok && strings.TrimSpace(n) == name {
			return strings.Join(strings.Fields(v), "")
		}
	}
	return ""
}
