package seal

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func testKey(t *testing.T) Key {
	t.Helper()
	k, err := LoadOrCreate(filepath.Join(t.TempDir(), "run", "seal.key"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var tx = Tx{Addr: netip.MustParseAddr("192.0.2.7"), Port: 40123, Helo: "mx.outside.test", Sender: "someone@outside.test"}

const line = "Received-SPF: pass (mail.example.test: domain of someone@outside.test designates 192.0.2.7 as permitted sender) client-ip=192.0.2.7; envelope-from=someone@outside.test; helo=mx.outside.test; receiver=mail.example.test; identity=mailfrom;"

func split(l string) (string, string) {
	n, v, _ := strings.Cut(l, ": ")
	return n, v
}

func TestSealVerify(t *testing.T) {
	k := testKey(t)
	sealed := k.Seal(tx, line)
	if !strings.HasPrefix(sealed, line+" "+Param+"=") || !strings.HasSuffix(sealed, ";") {
		t.Fatalf("Seal = %q, want the line with a last %s pair", sealed, Param)
	}
	name, value := split(sealed)
	if !k.Verify(tx, name, value) {
		t.Fatal("a sealed field does not verify")
	}
	// Postfix may fold; SMTP compares names and addresses case-insensitively.
	folded := strings.Replace(value, " client-ip=", "\r\n\tclient-ip=", 1)
	upper := tx
	upper.Helo, upper.Sender = strings.ToUpper(tx.Helo), strings.ToUpper(tx.Sender)
	if !k.Verify(upper, "received-spf", folded) {
		t.Error("folding or case changes broke verification")
	}
	mapped := tx
	mapped.Addr = netip.AddrFrom16(tx.Addr.As16())
	if !k.Verify(mapped, name, value) {
		t.Error("an IPv4-mapped client address broke verification")
	}

	other := testKey(t)
	changes := []struct {
		name  string
		key   Key
		tx    Tx
		field string
		value string
	}{
		{"other key", other, tx, name, value},
		{"zero key", Key{}, tx, name, value},
		{"other client", k, Tx{Addr: netip.MustParseAddr("192.0.2.8"), Port: tx.Port, Helo: tx.Helo, Sender: tx.Sender}, name, value},
		{"other port", k, Tx{Addr: tx.Addr, Port: tx.Port + 1, Helo: tx.Helo, Sender: tx.Sender}, name, value},
		{"other helo", k, Tx{Addr: tx.Addr, Port: tx.Port, Helo: "x.test", Sender: tx.Sender}, name, value},
		{"other sender", k, Tx{Addr: tx.Addr, Port: tx.Port, Helo: tx.Helo, Sender: "billing@example.test"}, name, value},
		{"other field name", k, tx, "X-Received-SPF", value},
		{"result changed", k, tx, name, strings.Replace(value, "pass", "fail", 1)},
		{"no code", k, tx, name, line[len("Received-SPF: "):]},
		{"code cut", k, tx, name, value[:len(value)-3] + ";"},
		{"code moved", k, tx, name, strings.Replace(value, " client-ip=", " "+value[strings.LastIndex(value, Param):]+" client-ip=", 1)},
	}
	for _, c := range changes {
		if c.key.Verify(c.tx, c.field, c.value) {
			t.Errorf("%s: verifies, want refused", c.name)
		}
	}
	if got := (Key{}).Seal(tx, line); got != line {
		t.Errorf("zero key Seal = %q, want the line unchanged", got)
	}
}

func TestLoadOrCreate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "seal.key")
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "policy daemon creates it") {
		t.Fatalf("Load of a missing file: %v, want an error saying who creates it", err)
	}
	// Concurrent starts agree on one key.
	keys := make([]Key, 8)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := LoadOrCreate(path)
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		}()
	}
	wg.Wait()
	for i, k := range keys {
		if !k.Valid() || !k.Equal(keys[0]) {
			t.Fatalf("start %d got another key", i)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o640 {
		t.Errorf("key file mode %o, want 0640", fi.Mode().Perm())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "sub", ".seal-key-*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
	if err := os.WriteFile(path, []byte("short"), 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(path); err == nil || !strings.Contains(err.Error(), "delete it") {
		t.Errorf("a damaged key file: %v, want an error saying to delete it", err)
	}
}

func TestFileFollowsChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "seal.key")
	f := NewFile(path)
	if _, err := f.Key(); err == nil {
		t.Fatal("Key before the file exists: no error")
	}
	k1, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := f.Key(); err != nil || !got.Equal(k1) {
		t.Fatalf("after creation: %v, want the new key", err)
	}
	os.Remove(path)
	k2, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := f.Key(); err != nil || !got.Equal(k2) || got.Equal(k1) {
		t.Fatalf("after replacement: %v, want the replacing key", err)
	}
}

// A sealed line verifies however its white space is folded, and no change
// of its text keeps it valid.
func FuzzVerify(f *testing.F) {
	k, err := LoadOrCreate(filepath.Join(f.TempDir(), "seal.key"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add("pass (x) client-ip=192.0.2.7;", "x")
	f.Add("", "")
	f.Fuzz(func(t *testing.T, value, edit string) {
		sealed := k.Seal(tx, "Received-SPF: "+value)
		_, v, _ := strings.Cut(sealed, ": ")
		if !k.Verify(tx, "Received-SPF", strings.ReplaceAll(v, " ", "\r\n\t")) {
			t.Fatalf("sealed %q does not verify once folded", sealed)
		}
		changed := edit + v
		if strings.Join(strings.Fields(changed), " ") != strings.Join(strings.Fields(v), " ") && k.Verify(tx, "Received-SPF", changed) {
			t.Fatalf("%q verifies after a change", changed)
		}
	})
}

// An Authentication-Results field carries the code in a final comment, so
// that the field stays valid RFC 8601 syntax for every reader.
func TestSealAuthenticationResults(t *testing.T) {
	k := testKey(t)
	const ar = "Authentication-Results: mail.example.test; spf=pass (mail.example.test: domain of someone@outside.test designates 192.0.2.7 as permitted sender) smtp.mailfrom=someone@outside.test"
	sealed := k.Seal(tx, ar)
	if !strings.HasPrefix(sealed, ar+" ("+Param+"=") || !strings.HasSuffix(sealed, ")") {
		t.Fatalf("Seal = %q, want the field with a last (%s=…) comment", sealed, Param)
	}
	name, value := split(sealed)
	if !k.Verify(tx, name, value) || !k.Verify(tx, "authentication-results", strings.Replace(value, " smtp.", "\r\n\tsmtp.", 1)) {
		t.Fatal("a sealed Authentication-Results does not verify")
	}
	for what, v := range map[string]string{
		"result changed": strings.Replace(value, "spf=pass", "spf=fail", 1),
		"dkim added":     strings.Replace(value, "; spf=pass", "; dkim=pass header.d=outside.test; spf=pass", 1),
		"pair form":      strings.TrimSuffix(strings.Replace(value, " ("+Param, " "+Param, 1), ")") + ";",
		"no code":        ar[len("Authentication-Results: "):],
	} {
		if k.Verify(tx, name, v) {
			t.Errorf("%s: verifies, want refused", what)
		}
	}
	if k.Verify(tx, "Received-SPF", value) {
		t.Error("an Authentication-Results code verifies as Received-SPF")
	}
}
