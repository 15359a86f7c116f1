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
		{"exemple.fr mail._domainkey.exemple.fr\n", "[{exemple.fr [mail._domainkey.exemple.fr] 1}]"},
		{"*@Example.org k1,k2\n", "[{*@example.org [k1 k2] 1}]"},
		{"\n# c\n*.example.org\tk1 k2\n", "[{*.example.org [k1 k2] 3}]"},
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
	os.WriteFile(kt, []byte(`mail._domainkey.exemple.fr exemple.fr:mail:/etc/dkimkeys/clefs/exemple.fr/mail.private
ed._domainkey.exemple.fr exemple.fr:ed:./clefs/ed.private
any %:2024:/k/any.private
other other.example:o:/k/o.private
`), 0o600)
	os.WriteFile(st, []byte(`exemple.fr mail._domainkey.exemple.fr
*@exemple.fr ed._domainkey.exemple.fr,mail._domainkey.exemple.fr
*@*.sub.example any
joe@exemple.fr mail._domainkey.exemple.fr
*@third.example other
`), 0o600)
	im, err := ImportTables(kt, st)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("[{exemple.fr mail /etc/dkimkeys/clefs/exemple.fr/mail.private} {exemple.fr ed %s/clefs/ed.private} {sub.example 2024 /k/any.private} {other.example o /k/o.private}]", dir)
	if got := fmt.Sprint(im.Keys); got != want {
		t.Errorf("keys = %s\nwant %s", got, want)
	}
	if !im.Subdomains {
		t.Error("Subdomains = false; want true for *@*.sub.example")
	}
	if len(im.Warnings) != 2 || !strings.Contains(im.Warnings[0], st+":4:") || !strings.Contains(im.Warnings[1], "d=other.example") {
		t.Errorf("warnings = %q", im.Warnings)
	}
	y := im.YAML()
	for _, s := range []string{"milter:\n  dkim:\n    sign: true\n    subdomains: true\n    keys:\n",
		"      - domain: exemple.fr\n        selector: mail\n        key_file: /etc/dkimkeys/clefs/exemple.fr/mail.private\n",
		"selector: \"2024\"", "# warning: "} {
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
				patternDomain(r.Pattern)
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
