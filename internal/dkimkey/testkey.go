package dkimkey

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
)

// TXTResolver is the lookup TestKey needs; internal/dnsclient satisfies it.
// A *net.DNSError with IsNotFound means the name has no record.
type TXTResolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// Verdict is the outcome of TestKey for one key.
type Verdict string

const (
	KeyOK        Verdict = "ok"       // the published key is the private key's
	KeyMismatch  Verdict = "mismatch" // another key is published
	KeyMissing   Verdict = "missing"  // no key record at SELECTOR._domainkey.DOMAIN
	KeyRevoked   Verdict = "revoked"  // a record with an empty p=
	KeyBadRecord Verdict = "bad-record"
	KeyDNSError  Verdict = "dns-error" // the lookup failed (try again)
	KeyFileError Verdict = "key-error" // the private key cannot be read
)

// KeyTest is the result of TestKey.
type KeyTest struct {
	Verdict Verdict
	Name    string // the record's owner name
	Detail  string // why, for anything but ok
	Testing bool   // the record says t=y (verifiers may ignore failures)
}

// TestKey checks that the key record published at SELECTOR._domainkey.DOMAIN
// holds the public half of the private key in keyFile, as opendkim-testkey
// does: a DKIM signer whose record does not match signs mail that fails
// everywhere.
func TestKey(ctx context.Context, res TXTResolver, domain, selector, keyFile string) KeyTest {
	name := selector + "._domainkey." + strings.TrimSuffix(strings.ToLower(domain), ".")
	kt := KeyTest{Name: name}
	bad := func(v Verdict, format string, args ...any) KeyTest {
		kt.Verdict, kt.Detail = v, fmt.Sprintf(format, args...)
		return kt
	}
	priv, err := LoadPrivateKey(keyFile)
	if err != nil {
		return bad(KeyFileError, "%v", err)
	}
	txts, err := res.LookupTXT(ctx, name)
	var de *net.DNSError
	switch {
	case errors.As(err, &de) && de.IsNotFound:
		return bad(KeyMissing, "no TXT record at %s: publish the output of 'postkit dkim txt --key %s --selector %s --domain %s'", name, keyFile, selector, domain)
	case err != nil:
		return bad(KeyDNSError, "%v", err)
	}
	var recs []string
	for _, t := range txts {
		// RFC 6376 section 3.6.1: v=, when present, comes first.
		if v := strings.TrimSpace(t); !strings.HasPrefix(v, "v=") || strings.HasPrefix(strings.ReplaceAll(v, " ", ""), "v=DKIM1") {
			recs = append(recs, t)
		}
	}
	if len(recs) == 0 {
		return bad(KeyMissing, "the TXT records at %s are not DKIM key records", name)
	}
	if len(recs) > 1 {
		return bad(KeyBadRecord, "%d key records at %s: verifiers may take any; keep one", len(recs), name)
	}
	tags := map[string]string{}
	for _, p := range strings.Split(recs[0], ";") {
		n, v, ok := strings.Cut(p, "=")
		if ok {
			tags[strings.TrimSpace(n)] = strings.Join(strings.Fields(v), "")
		}
	}
	for _, f := range strings.Split(tags["t"], ":") {
		kt.Testing = kt.Testing || f == "y"
	}
	p, ok := tags["p"]
	if !ok {
		return bad(KeyBadRecord, "the record at %s has no p= tag", name)
	}
	if p == "" {
		return bad(KeyRevoked, "the record at %s is revoked (empty p=)", name)
	}
	alg, _ := AlgorithmOf(priv)
	k := tags["k"]
	if k == "" {
		k = string(RSA)
	}
	if !strings.EqualFold(k, string(alg)) {
		return bad(KeyMismatch, "the record at %s is k=%s, the key in %s is %s", name, k, keyFile, alg)
	}
	pub, err := parsePublished(alg, p)
	if err != nil {
		return bad(KeyBadRecord, "the record at %s: %v", name, err)
	}
	eq, _ := priv.Public().(interface{ Equal(crypto.PublicKey) bool })
	if eq == nil || !eq.Equal(pub) {
		return bad(KeyMismatch, "the key published at %s is not the public half of %s: publish 'postkit dkim txt --key %s --selector %s --domain %s'", name, keyFile, keyFile, selector, domain)
	}
	kt.Verdict = KeyOK
	return kt
}

// parsePublished decodes p=: a SubjectPublicKeyInfo (or, as some tools
// publish, a bare PKCS#1 key) for RSA, the raw key for Ed25519.
func parsePublished(alg Algorithm, p string) (crypto.PublicKey, error) {
	data, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		return nil, fmt.Errorf("p= is not base64: %v", err)
	}
	if alg == Ed25519 {
		if len(data) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("p= is %d bytes, an Ed25519 key is %d", len(data), ed25519.PublicKeySize)
		}
		return ed25519.PublicKey(data), nil
	}
	if k, err := x509.ParsePKIXPublicKey(data); err == nil {
		if rk, ok := k.(*rsa.PublicKey); ok {
			return rk, nil
		}
		return nil, fmt.Errorf("p= holds a %T key, not RSA", k)
	}
	if rk, err := x509.ParsePKCS1PublicKey(data); err == nil {
		return rk, nil
	}
	return nil, errors.New("p= is not an RSA public key")
}
