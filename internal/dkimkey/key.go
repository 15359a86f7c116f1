// Package dkimkey handles DKIM keys (RFC 6376 section 3.6, RFC 8301, RFC 8463):
// loading and generating private keys, the public-key TXT record and its zone
// file form, and importing OpenDKIM's KeyTable and SigningTable. It has no
// daemon dependencies so that `postkit dkim` can use it.
package dkimkey

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Algorithm is a DKIM key type, the k= tag of the key record (RFC 6376
// section 3.6.1, RFC 8463 section 4).
type Algorithm string

const (
	RSA     Algorithm = "rsa"
	Ed25519 Algorithm = "ed25519"
)

// RSA key sizes. RFC 8301 section 3.2 makes 1024 bits the floor and 2048 the
// recommendation; postkit refuses to sign with less than 2048 bits (OpenDKIM
// and opendkim-genkey still accept 1024). 4096 is the largest size that keeps
// the key record a reasonable DNS answer.
const (
	MinRSABits     = 2048
	DefaultRSABits = 2048
	MaxRSABits     = 4096
)

// ErrWeakKey is wrapped by the errors for RSA keys shorter than MinRSABits.
var ErrWeakKey = errors.New("dkimkey: RSA key too short")

// ParseAlgorithm accepts "rsa" or "ed25519" (case-insensitive).
func ParseAlgorithm(s string) (Algorithm, error) {
	switch Algorithm(strings.ToLower(strings.TrimSpace(s))) {
	case RSA:
		return RSA, nil
	case Ed25519:
		return Ed25519, nil
	}
	return "", fmt.Errorf("dkimkey: unknown key algorithm %q: use rsa or ed25519", s)
}

// AlgorithmOf returns the DKIM key type of a signer's public key.
func AlgorithmOf(s crypto.Signer) (Algorithm, error) {
	switch s.Public().(type) {
	case *rsa.PublicKey:
		return RSA, nil
	case ed25519.PublicKey:
		return Ed25519, nil
	}
	return "", fmt.Errorf("dkimkey: unsupported key type %T: DKIM keys are RSA or Ed25519", s.Public())
}

// Check reports whether s can sign DKIM mail: an RSA key of MinRSABits to
// MaxRSABits bits, or an Ed25519 key.
func Check(s crypto.Signer) error {
	switch pub := s.Public().(type) {
	case *rsa.PublicKey:
		bits := pub.N.BitLen()
		if bits < MinRSABits {
			return fmt.Errorf("%w: %d bits; generate a new key of at least %d bits (postkit dkim keygen --bits %d)",
				ErrWeakKey, bits, MinRSABits, DefaultRSABits)
		}
		if bits > MaxRSABits {
			return fmt.Errorf("dkimkey: RSA key has %d bits, more than %d: its record is too large for many DNS hosts; use 2048 to %d bits",
				bits, MaxRSABits, MaxRSABits)
		}
		return nil
	case ed25519.PublicKey:
		return nil
	}
	_, err := AlgorithmOf(s)
	return err
}

// ParsePrivateKey reads a PEM private key: PKCS#1 ("RSA PRIVATE KEY", as
// written by opendkim-genkey with older OpenSSL) or PKCS#8 ("PRIVATE KEY", RSA
// or Ed25519 as written by `openssl genpkey`). The key is checked with Check.
func ParsePrivateKey(data []byte) (crypto.Signer, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		if len(strings.TrimSpace(string(data))) == 0 {
			return nil, errors.New("dkimkey: empty key file")
		}
		return nil, errors.New("dkimkey: no PEM block found: expected -----BEGIN PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----")
	}
	if len(strings.TrimSpace(string(rest))) != 0 {
		if next, _ := pem.Decode(rest); next != nil {
			return nil, errors.New("dkimkey: more than one PEM block: keep a single private key per file")
		}
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "ENCRYPTED PRIVATE KEY":
		return nil, errors.New("dkimkey: encrypted private key: decrypt it first (openssl pkey -in KEY -out KEY.private)")
	case "EC PRIVATE KEY":
		return nil, errors.New("dkimkey: ECDSA keys are not DKIM keys: generate an RSA or Ed25519 key")
	default:
		return nil, fmt.Errorf("dkimkey: unexpected PEM block %q: expected PRIVATE KEY or RSA PRIVATE KEY", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("dkimkey: bad %s: %w", block.Type, err)
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("dkimkey: unsupported key type %T: DKIM keys are RSA or Ed25519", key)
	}
	if ek, ok := s.(*ed25519.PrivateKey); ok { // x509 returns the value type; be lenient
		s = *ek
	}
	if err := Check(s); err != nil {
		return nil, err
	}
	return s, nil
}

// LoadPrivateKey reads and parses a PEM private key file; errors name the file.
func LoadPrivateKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dkimkey: %w", err)
	}
	s, err := ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// Generate makes a new key. bits is the RSA size (0 means DefaultRSABits) and
// must be 0 for Ed25519. random is the entropy source (nil means crypto/rand).
func Generate(alg Algorithm, bits int, random io.Reader) (crypto.Signer, error) {
	if random == nil {
		random = rand.Reader
	}
	switch alg {
	case RSA:
		if bits == 0 {
			bits = DefaultRSABits
		}
		if bits < MinRSABits {
			return nil, fmt.Errorf("%w: %d bits requested; use at least %d (RFC 8301 section 3.2 recommends 2048)", ErrWeakKey, bits, MinRSABits)
		}
		if bits > MaxRSABits {
			return nil, fmt.Errorf("dkimkey: %d bits requested; use at most %d", bits, MaxRSABits)
		}
		k, err := rsa.GenerateKey(random, bits)
		if err != nil {
			return nil, fmt.Errorf("dkimkey: generating RSA key: %w", err)
		}
		return k, nil
	case Ed25519:
		if bits != 0 && bits != 256 {
			return nil, fmt.Errorf("dkimkey: Ed25519 keys have a fixed size: drop --bits")
		}
		_, k, err := ed25519.GenerateKey(random)
		if err != nil {
			return nil, fmt.Errorf("dkimkey: generating Ed25519 key: %w", err)
		}
		return k, nil
	}
	return nil, fmt.Errorf("dkimkey: unknown key algorithm %q: use rsa or ed25519", alg)
}

// MarshalPrivateKey encodes a key as PEM in the form OpenDKIM reads: PKCS#1
// "RSA PRIVATE KEY" for RSA, PKCS#8 "PRIVATE KEY" for Ed25519 (the output of
// `openssl genpkey -algorithm ed25519`, which OpenDKIM 2.11 loads).
func MarshalPrivateKey(s crypto.Signer) ([]byte, error) {
	switch k := s.(type) {
	case *rsa.PrivateKey:
		return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}), nil
	case ed25519.PrivateKey:
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, fmt.Errorf("dkimkey: encoding Ed25519 key: %w", err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
	}
	return nil, fmt.Errorf("dkimkey: cannot write a %T key: only RSA and Ed25519 keys are supported", s)
}

// PublicKeyData returns the p= value of the key record: the base64 DER
// SubjectPublicKeyInfo for RSA (RFC 6376 section 3.6.1, as every signer
// publishes it), the base64 raw 32-byte key for Ed25519 (RFC 8463 section 4).
func PublicKeyData(pub crypto.PublicKey) (string, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			return "", fmt.Errorf("dkimkey: encoding RSA public key: %w", err)
		}
		return base64.StdEncoding.EncodeToString(der), nil
	case ed25519.PublicKey:
		return base64.StdEncoding.EncodeToString(k), nil
	}
	return "", fmt.Errorf("dkimkey: unsupported public key type %T", pub)
}

// Record returns the key record text (RFC 6376 section 3.6.1):
// "v=DKIM1; k=rsa; p=…" or "v=DKIM1; k=ed25519; p=…".
func Record(pub crypto.PublicKey) (string, error) {
	p, err := PublicKeyData(pub)
	if err != nil {
		return "", err
	}
	k := RSA
	if _, ok := pub.(ed25519.PublicKey); ok {
		k = Ed25519
	}
	return "v=DKIM1; k=" + string(k) + "; p=" + p, nil
}
