package dkimkey

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseKeyTable(t *testing.T) {
	tests := []struct {
		name, in string
		want     string // fmt of the keys, or the error substring after "err:"
	}{
		{"seed line", "mail._domainkey.exemple.fr exemple.fr:mail:/etc/dkimkeys/clefs/exemple.fr/mail.private\n",
			"[{mail._domainkey.exemple.fr exemple.fr mail /etc/dkimkeys/clefs/exemple.fr/mail.private 1}]"},
		{"comments tabs blanks", "# keys\n\n\tk1\tEXAMPLE.org:s1:/k/1.private  # rsa\n",
			"[{k1 example.org s1 /k/1.private 3}]"},
		{"percent domain", "k %:s:./s.private\n", "[{k % s ./s.private 1}]"},
		{"no value", "k1\n", "err:t.kt:1: "},
		{"two fields", "ok a.example:s:/k\nk2 a.example:/k\n", "err:t.kt:2: key \"k2\""},
		{"empty selector", "k a.example::/k\n", "err:t.kt:1: key \"k\": empty field"},
		{"inline key", "k a.example:s:MIIEvQIBADANBg\n", "err:t.kt:1: key \"k\": \"MIIEvQIBADANBg\" is not a file path"},
		{"duplicate", "k a.example:s:/k\nk b.example:s:/k\n", "err:t.kt:2: key \"k\" already defined on line 1"},
		{"bad selector", "k a.example:s_1:/k\n", "err:t.kt:1: dkimkey: bad selector"},
	}
	for _, tc := range tests {
		keys, err := ParseKeyTable(strings.NewReader(tc.in), "t.kt")
		if e, ok := strings.CutPrefix(tc.want, "err:"); ok {
			if err == nil || !strings.Contains(err.Error(), e) {
				t.Errorf("%s: err = %v; want %q", tc.name, err, e)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
		} else if got := fmt.Sprint(keys); got != tc.want {
			t.Errorf("%s: %s; want %s", tc.name, got, tc.want)
		}
	}
}

func TestParseSigningTable(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"exemple.fr mail._domainkey.exemple.fr\n", "[{exemple.fr [mail._domainkey.exemple.fr]  1}]"},
		{"*@Example.org k1,k2\n", "[{*@example.org [k1 k2]  1}]"},
		{"*@example.org k1:joe@example.org\n", "[{*@example.org [k1] joe@example.org 1}]"},
		{"\n# c\n*.example.org\tk1 k2\n", "[{*.example.org [k1 k2]  3}]"},
		{"lonely\n", "err:s.st:1:"},
	}
	for _, tc := range tests {
		rules, err := ParseSigningTable(strings.NewReader(tc.in), "s.st")
		if e, ok := strings.CutPrefix(tc.want, "err:"); ok {
			if err == nil || !strings.Contains(err.Error(), e) {
				t.Errorf("%q: err = %v; want %q", tc.in, err, e)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
		} else if got := fmt.Sprint(rules); got != tc.want {
			t.Errorf("%q: %s; want %s", tc.in, got, tc.want)
		}
	}
}

func TestImportTables(t *testing.T) {
	dir := t.TempDir()
	kt := filepath.Join(dir, "TableClefs")
	st := filepath.Join(dir, "TableSignatures")
	// The reference's plain tables, plus the other forms a plain table has.
	os.WriteFile(kt, []byte(`mail._domainkey.exemple.fr exemple.fr:mail:/etc/dkimkeys/clefs/exemple.fr/mail.private
ed._domainkey.exemple.fr exemple.fr:ed:./clefs/ed.private
any %:2024:/k/%/any.private
other other.example:o:/k/o.private
`), 0o600)
	os.WriteFile(st, []byte(`exemple.fr mail._domainkey.exemple.fr
exemple.fr ed._domainkey.exemple.fr
.sub.example other
joe@toto.fr any
*@exemple.fr mail._domainkey.exemple.fr
boss@.exemple.fr other
* other
third.example other:me@third.example
`), 0o600)
	im, err := ImportTables(kt, "file:"+st)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("[{exemple.fr mail /etc/dkimkeys/clefs/exemple.fr/mail.private []} {exemple.fr ed %s/clefs/ed.private []} {other.example o /k/o.private [*@*.sub.example *@third.example]} {toto.fr 2024 /k/toto.fr/any.private [joe@toto.fr]}]", dir)
	if got := fmt.Sprint(im.Keys); got != want {
		t.Errorf("keys = %s\nwant %s", got, want)
	}
	for i, w := range []string{st + ":5: *@exemple.fr: a plain SigningTable has no wildcards", st + ":6: boss@.exemple.fr: per-user", st + ":7: *: catch-all", st + ":8: third.example: the signer"} {
		if i >= len(im.Warnings) || !strings.HasPrefix(im.Warnings[i], w) {
			t.Errorf("warning %d = %q; want %q…", i, im.Warnings, w)
		}
	}
	y := im.YAML()
	for _, s := range []string{"milter:\n  dkim:\n    sign: true\n    keys:\n",
		"      - domain: exemple.fr\n        selector: mail\n        key_file: /etc/dkimkeys/clefs/exemple.fr/mail.private\n      - ",
		"selector: \"2024\"", "        from: [\"*@*.sub.example\", \"*@third.example\"]\n", "# warning: "} {
		if !strings.Contains(y, s) {
			t.Errorf("YAML lacks %q:\n%s", s, y)
		}
	}

	os.WriteFile(st, []byte("exemple.fr missing\n"), 0o600)
	if _, err := ImportTables(kt, st); err == nil || !strings.Contains(err.Error(), st+":1: key \"missing\"") {
		t.Errorf("unknown key name: err = %v", err)
	}
	if _, err := ImportTables(filepath.Join(dir, "nope"), st); err == nil {
		t.Error("missing KeyTable: no error")
	}
	if _, err := ImportTables(kt, "db:/etc/opendkim/signing.db"); err == nil || !strings.Contains(err.Error(), "flat file") {
		t.Errorf("db: data set: err = %v", err)
	}
}

// TestImportRefile: a refile: SigningTable holds wildcard patterns over the
// whole From address, first match wins.
func TestImportRefile(t *testing.T) {
	dir := t.TempDir()
	kt := filepath.Join(dir, "key.table")
	st := filepath.Join(dir, "signing.table")
	os.WriteFile(kt, []byte(`k1 example.org:s1:/k/1.private
k2 example.org:s2:/k/2.private
k3 %:s3:/k/%.private
`), 0o600)
	os.WriteFile(st, []byte(`ceo@example.org k2
*@example.org k1
*@example.net k1
*@*.example.org k1
bob@example.org k1
*@a.example.org k1
example.com k1
*example.info k3
*@toto.fr k3
*@lists.* k1
*@exemple.fr k1,k3:%
`), 0o600)
	im, err := ImportTables("file:"+kt, "refile:"+st)
	if err != nil {
		t.Fatal(err)
	}
	want := "[{example.org s2 /k/2.private [ceo@example.org]} {example.org s1 /k/1.private [*@example.org *@example.net *@*.example.org *@exemple.fr]} {example.info s3 /k/example.info.private []} {toto.fr s3 /k/toto.fr.private []} {exemple.fr s3 /k/exemple.fr.private []}]"
	if got := fmt.Sprint(im.Keys); got != want {
		t.Errorf("keys = %s\nwant %s", got, want)
	}
	for i, w := range []string{":5: bob@example.org: never used", ":6: *@a.example.org: never used", ":7: example.com: OpenDKIM matches refile", ":8: *example.info: also matched", ":10: *@lists.*: wildcards inside a domain", ":11: *@exemple.fr: the signer"} {
		if i >= len(im.Warnings) || !strings.Contains(im.Warnings[i], w) {
			t.Errorf("warning %d: %q; want …%s…", i, im.Warnings, w)
		}
	}
	// Two files for one selector is a conflict the admin must settle.
	os.WriteFile(kt, []byte("a example.org:s:/k/a.private\nb example.org:s:/k/b.private\n"), 0o600)
	os.WriteFile(st, []byte("*@example.org a\n*@example.net b\n"), 0o600)
	if _, err := ImportTables(kt, "refile:"+st); err == nil || !strings.Contains(err.Error(), "two key files") {
		t.Errorf("conflicting key files: err = %v", err)
	}
}

func FuzzParseTables(f *testing.F) {
	f.Add("k a.example:s:/k\n# c\n")
	f.Add("*@*.a.example k1,k2\n")
	f.Add("\x00 \xff:::\n")
	f.Fuzz(func(t *testing.T, in string) {
		keys, err := ParseKeyTable(strings.NewReader(in), "f")
		if err == nil {
			for _, k := range keys {
				if k.Domain == "" || k.Selector == "" || k.KeyFile == "" || k.Line < 1 {
					t.Fatalf("bad key %+v from %q", k, in)
				}
			}
		} else if !strings.HasPrefix(err.Error(), "dkimkey: f:") {
			t.Fatalf("error without file:line: %v", err)
		}
		rules, err := ParseSigningTable(strings.NewReader(in), "f")
		if err == nil {
			for _, r := range rules {
				if len(r.KeyNames) == 0 {
					t.Fatalf("rule without key from %q", in)
				}
				rulePattern(r.Pattern, true)
				rulePattern(r.Pattern, false)
			}
		}
	})
}

func FuzzParsePrivateKey(f *testing.F) {
	f.Add([]byte(opensslEd25519))
	f.Add([]byte(opensslEC))
	f.Add([]byte("-----BEGIN RSA PRIVATE KEY-----\nMAA=\n-----END RSA PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		s, err := ParsePrivateKey(in)
		if err == nil {
			if err := Check(s); err != nil {
				t.Fatalf("ParsePrivateKey returned a key Check refuses: %v", err)
			}
		}
	})
}
