package dkimkey

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"testing"
)

// TestAccelerate checks that the accelerated signer (libcrypto with
// -tags openssl, crypto/rsa otherwise) makes valid, identical signatures:
// PKCS#1 v1.5 is deterministic.
func TestAccelerate(t *testing.T) {
	testKeys(t)
	fast := Accelerate(rsa2048)
	for _, msg := range []string{"", "a", "DKIM header hash input"} {
		d := sha256.Sum256([]byte(msg))
		want, err := rsa2048.Sign(nil, d[:], crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		got, err := fast.Sign(nil, d[:], crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("Accelerated=%v: signature of %q differs from crypto/rsa", Accelerated, msg)
		}
		if err := rsa.VerifyPKCS1v15(&rsa2048.PublicKey, crypto.SHA256, d[:], got); err != nil {
			t.Errorf("signature of %q does not verify: %v", msg, err)
		}
	}
}

func BenchmarkRSASign(b *testing.B) {
	testKeys(b)
	d := sha256.Sum256([]byte("x"))
	for _, c := range []struct {
		name string
		s    crypto.Signer
	}{{"crypto-rsa", rsa2048}, {"accelerated", Accelerate(rsa2048)}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := c.s.Sign(nil, d[:], crypto.SHA256); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
