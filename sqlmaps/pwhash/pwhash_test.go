package pwhash

import (
	"github.com/postkit/postkit/internal/testlib"

	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// seedHash is the reference installation's example row: doveadm pw -s
// SHA512-CRYPT -p 'toto1234567890°+'.
const (
	seedHash     = "{SHA512-CRYPT}$6$xWfisyC6fLawFcBr$zLm4hfRfs6Pn0RKArnyWcgliBy6lpnRUkDHfHMkvskShfLiv4pRIU6XC5ry0ysd.DeKhoAiZUfnNdmwIai2k50"
	seedPassword = "toto1234567890°+"
)

func TestVerifySeed(t *testing.T) {
	tests := []struct {
		pw   string
		want error
	}{
		{seedPassword, nil},
		{"toto1234567890°", ErrMismatch},
		{"", ErrMismatch},
		{seedPassword + " ", ErrMismatch},
	}
	for _, tt := range tests {
		if got := Verify(seedHash, tt.pw); !errors.Is(got, tt.want) {
			t.Errorf("Verify(seed, %q) = %v; want %v", tt.pw, got, tt.want)
		}
	}
}

func TestHashRoundTrip(t *testing.T) {
	passwords := []string{"a", "correct horse battery staple", "toto1234567890°+", "Ünïcødé ✓ 密码",
		strings.Repeat("x", 64), strings.Repeat("y", 65), strings.Repeat("z", 200)}
	for _, scheme := range Schemes() {
		for _, pw := range passwords {
			if scheme == BlfCrypt && len(pw) > 72 {
				if _, err := Hash(scheme, pw); err == nil {
					t.Errorf("Hash(%s, %d bytes) succeeded; want an error (bcrypt truncates)", scheme, len(pw))
				}
				continue
			}
			h, err := Hash(scheme, pw)
			if err != nil {
				t.Fatalf("Hash(%s, %q): %v", scheme, pw, err)
			}
			if s, _ := Split(h); s != scheme {
				t.Errorf("Hash(%s) = %q; scheme prefix %q", scheme, h, s)
			}
			if err := Verify(h, pw); err != nil {
				t.Errorf("Verify(Hash(%s, %q)) = %v; want nil", scheme, pw, err)
			}
			if err := Verify(h, pw+"!"); !errors.Is(err, ErrMismatch) {
				t.Errorf("Verify(Hash(%s, %q), wrong) = %v; want ErrMismatch", scheme, pw, err)
			}
		}
	}
}

func TestHashSaltSeam(t *testing.T) {
	for _, scheme := range []string{SHA512Crypt, Argon2ID} {
		a, _ := Hasher{Rand: bytes.NewReader(bytes.Repeat([]byte{1}, 64))}.Hash(scheme, "pw")
		b, _ := Hasher{Rand: bytes.NewReader(bytes.Repeat([]byte{1}, 64))}.Hash(scheme, "pw")
		c, _ := Hasher{Rand: bytes.NewReader(bytes.Repeat([]byte{2}, 64))}.Hash(scheme, "pw")
		if a == "" || a != b || a == c {
			t.Errorf("%s: same randomness gave %q and %q; other randomness %q", scheme, a, b, c)
		}
	}
	if _, err := (Hasher{Rand: bytes.NewReader(nil)}).Hash(SHA512Crypt, "pw"); err == nil {
		t.Error("Hash with an exhausted random source succeeded; want an error")
	}
}

func TestHashRejects(t *testing.T) {
	tests := []struct{ scheme, pw, want string }{
		{"MD5", "pw", "unknown scheme"},
		{"", "", "empty password"},
		{SHA512Crypt, "a\nb", "line break"},
		{Argon2ID, "a\x00b", "NUL"},
	}
	for _, tt := range tests {
		_, err := Hash(tt.scheme, tt.pw)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Hash(%q, %q) = %v; want error containing %q", tt.scheme, tt.pw, err, tt.want)
		}
	}
}

func TestVerifyMalformed(t *testing.T) {
	for _, h := range []string{"", "$6$abc$def", "{SHA512-CRYPT}$6$rounds=999$s$h", "{SHA512-CRYPT}$6$rounds=1000000000$s$h", "{SHA512-CRYPT}", "{SHA512-CRYPT}$5$x$y", "{SHA512-CRYPT}$6$rounds=x$s$h",
		"{ARGON2ID}$argon2id$v=19$m=1,t=0,p=1$AA$AA", "{ARGON2ID}$argon2i$v=19$m=65536,t=3,p=1$AA$AA",
		"{BLF-CRYPT}$2b$99$xxxx", "{PLAIN}pw"} {
		if err := Verify(h, "pw"); err == nil || errors.Is(err, ErrMismatch) {
			t.Errorf("Verify(%q) = %v; want a format error", h, err)
		}
	}
}

// e2e reports whether tests needing Debian binaries must run (POSTKIT_E2E=1).
func needBinary(t *testing.T, path string) {
	t.Helper()
	testlib.NeedBinary(t, path)
}

// TestSHA512AgainstLibxcrypt compares the Go implementation with glibc's
// successor libxcrypt through Debian's Python crypt module.
func TestSHA512AgainstLibxcrypt(t *testing.T) {
	needBinary(t, "/usr/bin/python3")
	tests := []struct{ pw, setting string }{
		{"Hello world!", "$6$saltstring"},
		{"Hello world!", "$6$rounds=10000$saltstringsaltstring"},
		{"", "$6$rounds=1000$x"},
		{"toto1234567890°+", "$6$xWfisyC6fLawFcBr"},
		{strings.Repeat("long password ", 10), "$6$rounds=1400$abcdefghijklmnop"},
	}
	for _, tt := range tests {
		cmd := exec.Command("/usr/bin/python3", "-W", "ignore", "-c",
			"import crypt,sys; print(crypt.crypt(sys.argv[1], sys.argv[2]))", tt.pw, tt.setting)
		out, err := cmd.Output()
		if err != nil {
			testlib.Skip(t, "python3 crypt module unavailable: %v", err)
		}
		want := strings.TrimSpace(string(out))
		salt, rounds, explicit, ok := parseSHA512(tt.setting + "$")
		if !ok {
			t.Fatalf("parseSHA512(%q) failed", tt.setting)
		}
		if got := sha512Crypt([]byte(tt.pw), salt, rounds, explicit); got != want {
			t.Errorf("sha512Crypt(%q, %q) = %q; libxcrypt says %q", tt.pw, tt.setting, got, want)
		}
	}
}

// TestDoveadmAccepts checks that Debian's Dovecot verifies every scheme Hash makes.
func TestDoveadmAccepts(t *testing.T) {
	needBinary(t, "/usr/bin/doveadm")
	for _, scheme := range Schemes() {
		for _, pw := range []string{"s3cret", "toto1234567890°+ à é"} {
			h, err := Hash(scheme, pw)
			if err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command("/usr/bin/doveadm", "pw", "-t", h, "-p", pw).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "(verified)") {
				t.Errorf("doveadm pw -t %s -p %q: %v: %s", h, pw, err, out)
			}
			out, err = exec.Command("/usr/bin/doveadm", "pw", "-t", h, "-p", pw+"x").CombinedOutput()
			if err == nil {
				t.Errorf("doveadm pw -t accepted a wrong password for %s: %s", h, out)
			}
		}
	}
	// And the other way round: hashes made by Dovecot verify here.
	for _, scheme := range Schemes() {
		out, err := exec.Command("/usr/bin/doveadm", "pw", "-s", scheme, "-p", "from dovecot").Output()
		if err != nil {
			t.Fatalf("doveadm pw -s %s: %v", scheme, err)
		}
		h := strings.TrimSpace(string(out))
		if err := Verify(h, "from dovecot"); err != nil {
			t.Errorf("Verify(%q) = %v; want nil", h, err)
		}
	}
}

func FuzzVerify(f *testing.F) {
	f.Add(seedHash, seedPassword)
	f.Add(seedHash, seedPassword[:len(seedPassword)-1])
	f.Add("{SHA512-CRYPT}$6$rounds=2000$s$h", "x")
	f.Add("{ARGON2ID}$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaA", "x")
	f.Add("{BLF-CRYPT}$2b$04$abcdefghijklmnopqrstuu", "x")
	f.Fuzz(func(t *testing.T, stored, pw string) {
		if costly(stored) {
			return
		}
		err := Verify(stored, pw)
		if err != nil && !errors.Is(err, ErrMismatch) && !strings.HasPrefix(err.Error(), "pwhash: ") {
			t.Fatalf("Verify(%q, %q) = %v: neither a match, a mismatch nor a reasoned refusal", stored, pw, err)
		}
		// The reference row matches its password and nothing else.
		if stored == seedHash && (err == nil) != (pw == seedPassword) {
			t.Fatalf("Verify(seed, %q) = %v; want a match only for the seed's password", pw, err)
		}
		// A hash that matches pw does not also match pw with one more byte
		// (bcrypt reads only the first 72 bytes, as Dovecot's does).
		scheme, _ := Split(stored)
		if err == nil && (scheme != BlfCrypt || len(pw) < 72) && Verify(stored, pw+"x") == nil {
			t.Fatalf("Verify(%q) matches both %q and %q", stored, pw, pw+"x")
		}
	})
}

// costly reports whether a hash asks for more work than a fuzzing run can
// afford: Verify honours the cost a stored hash names (up to 4 GiB of memory
// for ARGON2ID), which is the administrator's choice.
func costly(stored string) bool {
	for _, re := range []struct {
		re  *regexp.Regexp
		max int
	}{
		{regexp.MustCompile(`rounds=0*([0-9]+)`), 5000},
		{regexp.MustCompile(`m=0*([0-9]+)`), 1 << 16},
		{regexp.MustCompile(`t=0*([0-9]+)`), 3},
		{regexp.MustCompile(`\$2[aby]?\$0*([0-9]+)\$`), 10},
	} {
		for _, m := range re.re.FindAllStringSubmatch(stored, -1) {
			if n, err := strconv.Atoi(m[1]); err != nil || n > re.max {
				return true
			}
		}
	}
	return false
}

func ExampleHash() {
	h, err := Hash(SHA512Crypt, "toto1234567890°+")
	if err != nil {
		panic(err)
	}
	scheme, rest := Split(h)
	fmt.Println(scheme, strings.HasPrefix(rest, "$6$"), Verify(h, "toto1234567890°+") == nil)
	// Output: SHA512-CRYPT true true
}
