package dkimverify

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-msgauth/authres"
	"github.com/postkit/postkit/milter/dkimsign"
	"github.com/postkit/postkit/milter/filter"
)

// BodyLength is what a signature with a body length count (l=, RFC 6376
// section 3.5) is worth. The count lets anyone append text after the signed
// part without breaking the signature (section 8.2), so verifiers differ:
// OpenDKIM and dkimpy verify the first l= bytes and pass the signature
// whatever follows; go-msgauth refuses every such signature.
type BodyLength int

const (
	// BodyLengthPass verifies the first l= bytes of the body and passes
	// the signature when they verify, whatever follows (OpenDKIM, dkimpy).
	BodyLengthPass BodyLength = iota
	// BodyLengthComplete passes the signature only when l= covers the
	// whole body; with anything after the signed length it is dkim=policy.
	BodyLengthComplete
	// BodyLengthPolicy reports every l= signature dkim=policy, unverified.
	BodyLengthPolicy
)

// ParseBodyLength parses "pass", "complete" or "policy" ("" is pass).
func ParseBodyLength(s string) (BodyLength, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "pass":
		return BodyLengthPass, nil
	case "complete":
		return BodyLengthComplete, nil
	case "policy":
		return BodyLengthPolicy, nil
	}
	return 0, fmt.Errorf("dkimverify: body length %q: want pass, complete or policy", s)
}

// malformed checks the syntax of a DKIM-Signature value (RFC 6376 section
// 3.2 tag lists, section 3.5 tags) and returns why it is malformed, or "".
// Section 6.1.1: a signature that does not parse is PERMFAIL, reported
// dkim=permerror (RFC 8601 section 2.7.1), never a verification failure.
// go-msgauth checks some of this, but after other tests that can end in
// fail (l=, body hash), so postkit checks it first.
func malformed(value string) string {
	seen := map[string]bool{}
	parts := strings.Split(value, ";")
	for i, p := range parts {
		if strings.TrimSpace(p) == "" && i == len(parts)-1 {
			break // a final ";" is allowed
		}
		name, val, ok := strings.Cut(p, "=")
		name = strings.TrimSpace(name)
		if !ok || !tagName(name) {
			return fmt.Sprintf("malformed tag %q", strings.TrimSpace(p))
		}
		if seen[name] {
			return "duplicate tag " + name + "="
		}
		seen[name] = true
		val = strings.Join(strings.Fields(val), "")
		switch name {
		case "v":
			if val != "1" {
				return "v=" + val + ": not version 1"
			}
		case "l":
			if !digits(val, 76) {
				return "l=" + val + ": not a decimal body length"
			}
		case "t", "x":
			if !digits(val, 12) {
				return name + "=" + val + ": not a decimal time"
			}
		case "b", "bh":
			if _, err := base64.StdEncoding.DecodeString(val); err != nil || val == "" {
				return name + "= is not base64"
			}
		case "c":
			h, b, _ := strings.Cut(val, "/")
			if !canonName(h) || (b != "" && !canonName(b)) {
				return "c=" + val + ": unknown canonicalization"
			}
		case "d", "s", "a", "h":
			if val == "" {
				return name + "= is empty"
			}
		}
	}
	for _, t := range []string{"v", "a", "b", "bh", "d", "h", "s"} {
		if !seen[t] {
			return "required tag " + t + "= missing"
		}
	}
	return ""
}

func tagName(s string) bool {
	if s == "" || !(s[0] >= 'a' && s[0] <= 'z' || s[0] >= 'A' && s[0] <= 'Z') {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

func digits(s string, max int) bool {
	if s == "" || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func canonName(s string) bool { return s == "simple" || s == "relaxed" }

// tagMap is the tag list of a well-formed signature or key record, white
// space removed from the values.
func tagMap(value string) map[string]string {
	m := map[string]string{}
	for _, p := range strings.Split(value, ";") {
		name, val, ok := strings.Cut(p, "=")
		if ok {
			m[strings.TrimSpace(name)] = strings.Join(strings.Fields(val), "")
		}
	}
	return m
}

// lengthSig verifies one signature with l= itself, since go-msgauth
// refuses them: the body is canonicalized as it streams, the first l bytes
// hashed, the rest counted.
type lengthSig struct {
	index  int // among the message's DKIM-Signature fields
	field  filter.Header
	tags   map[string]string
	limit  int64
	seen   int64 // canonical body bytes
	hash   hash.Hash
	canon  interface{ Write([]byte) (int, error) }
	closer interface{ Close() error }
}

func newLengthSig(index int, field filter.Header) *lengthSig {
	t := tagMap(field.Value)
	l, _ := strconv.ParseInt(t["l"], 10, 64)
	ls := &lengthSig{index: index, field: field, tags: t, limit: l, hash: sha256.New()}
	_, body, _ := strings.Cut(strings.ToLower(t["c"]), "/")
	w := dkimsign.NewBodyCanonicalizer(ls, body == "relaxed")
	ls.canon, ls.closer = w, w
	return ls
}

// Write receives canonical body bytes: the first limit go to the hash.
func (ls *lengthSig) Write(p []byte) (int, error) {
	n := len(p)
	if rest := ls.limit - ls.seen; rest > 0 {
		take := p
		if int64(len(take)) > rest {
			take = take[:rest]
		}
		ls.hash.Write(take)
	}
	ls.seen += int64(n)
	return n, nil
}

// verify ends the body and checks the signature; hs are the message's
// header fields as received.
func (ls *lengthSig) verify(ctx context.Context, v *Verifier, hs []filter.Header, mode BodyLength) Result {
	ls.closer.Close()
	r := Result{Value: authres.ResultPass}
	fail := func(val authres.ResultValue, why string) Result { r.Value, r.Reason = val, why; return r }
	t := ls.tags
	d, s := strings.ToLower(strings.TrimSuffix(t["d"], ".")), t["s"]
	if i, ok := t["i"]; ok && !strings.HasSuffix(strings.ToLower(i), "@"+d) && !strings.HasSuffix(strings.ToLower(i), "."+d) {
		return fail(authres.ResultPermError, "domain mismatch") // section 6.1.1
	}
	if !hasFrom(t["h"]) {
		return fail(authres.ResultPermError, "From field not signed")
	}
	keyAlg, hashAlg, _ := strings.Cut(strings.ToLower(t["a"]), "-")
	if hashAlg != "sha256" || (keyAlg != "rsa" && keyAlg != "ed25519") {
		return fail(authres.ResultPermError, "unsupported algorithm "+t["a"]) // RFC 8301: no rsa-sha1
	}
	if x, ok := t["x"]; ok {
		// Section 3.5, x=: an expired signature is PERMFAIL (as go-msgauth
		// reports the signatures it checks).
		if exp, _ := strconv.ParseInt(x, 10, 64); time.Now().Unix() > exp {
			return fail(authres.ResultPermError, "signature has expired")
		}
	}
	// The key is fetched first, as go-msgauth does: a missing or unusable
	// key is PERMFAIL whatever the body holds.
	pub, why, temp := v.publicKey(ctx, s, d, keyAlg)
	if why != "" {
		if temp {
			return fail(authres.ResultTempError, why)
		}
		return fail(authres.ResultPermError, why)
	}
	if ls.seen < ls.limit {
		// Section 3.5: a count larger than the body cannot verify.
		return fail(authres.ResultFail, fmt.Sprintf("body length l=%d is longer than the body (%d bytes)", ls.limit, ls.seen))
	}
	bh, _ := base64.StdEncoding.DecodeString(t["bh"])
	if subtle.ConstantTimeCompare(ls.hash.Sum(nil), bh) != 1 {
		return fail(authres.ResultFail, "body hash did not verify")
	}
	hrel := strings.HasPrefix(strings.ToLower(t["c"]), "relaxed")
	h := sha256.New()
	var buf []byte
	for _, f := range pickHeaders(hs, strings.Split(t["h"], ":")) {
		buf = dkimsign.AppendCanonicalHeader(buf[:0], f.Name, f.Value, hrel)
		h.Write(buf)
	}
	buf = dkimsign.AppendCanonicalHeader(buf[:0], ls.field.Name, emptyB(ls.field.Value), hrel)
	h.Write(buf[:len(buf)-2]) // section 3.7: without the final CRLF
	digest := h.Sum(nil)
	sig, _ := base64.StdEncoding.DecodeString(t["b"])
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if err := rsa.VerifyPKCS1v15(k, crypto.SHA256, digest, sig); err != nil {
			return fail(authres.ResultFail, "signature did not verify")
		}
	case ed25519.PublicKey:
		if !ed25519.Verify(k, digest, sig) {
			return fail(authres.ResultFail, "signature did not verify")
		}
	}
	if ls.seen > ls.limit && mode == BodyLengthComplete {
		return fail(authres.ResultPolicy, fmt.Sprintf("%d body bytes after the signed length l=%d", ls.seen-ls.limit, ls.limit))
	}
	return r
}

func hasFrom(h string) bool {
	for _, n := range strings.Split(h, ":") {
		if strings.EqualFold(strings.TrimSpace(n), "from") {
			return true
		}
	}
	return false
}

// pickHeaders returns the fields h= names, each name taking the next
// instance from the bottom (RFC 6376 section 5.4.2); a name without one
// more instance contributes nothing.
func pickHeaders(hs []filter.Header, names []string) []filter.Header {
	used := map[string]int{}
	var out []filter.Header
	for _, n := range names {
		n = strings.ToLower(strings.TrimSpace(n))
		skip := used[n]
		for i := len(hs) - 1; i >= 0; i-- {
			if !strings.EqualFold(strings.TrimSpace(hs[i].Name), n) {
				continue
			}
			if skip > 0 {
				skip--
				continue
			}
			out = append(out, hs[i])
			break
		}
		used[n]++
	}
	return out
}

// emptyB returns a DKIM-Signature value with the b= tag's value removed
// (section 3.7), every other byte kept.
func emptyB(value string) string {
	parts := strings.Split(value, ";")
	for i, p := range parts {
		name, _, ok := strings.Cut(p, "=")
		if ok && strings.TrimSpace(name) == "b" {
			parts[i] = p[:strings.IndexByte(p, '=')+1]
		}
	}
	return strings.Join(parts, ";")
}

// publicKey fetches and parses the key record S._domainkey.D (RFC 6376
// section 3.6): why says what is wrong, temp whether it is a temporary
// DNS failure.
func (v *Verifier) publicKey(ctx context.Context, s, d, keyAlg string) (pub crypto.PublicKey, why string, temp bool) {
	name := s + "._domainkey." + d
	lctx, cancel := context.WithTimeout(ctx, v.timeout)
	defer cancel()
	txts, err := v.res.LookupTXT(lctx, name)
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return nil, "no key for signature: " + name, false
		}
		return nil, "key lookup: " + err.Error(), true
	}
	if len(txts) == 0 {
		return nil, "no key for signature: " + name, false
	}
	k := tagMap(strings.Join(txts, ""))
	if ver, ok := k["v"]; ok && ver != "DKIM1" {
		return nil, "key record: v=" + ver + " is not DKIM1", false
	}
	kt := strings.ToLower(k["k"])
	if kt == "" {
		kt = "rsa"
	}
	if kt != keyAlg {
		return nil, "inappropriate key algorithm", false
	}
	if hs, ok := k["h"]; ok && !strings.Contains(":"+strings.ToLower(hs)+":", ":sha256:") {
		return nil, "inappropriate hash algorithm", false
	}
	if svc, ok := k["s"]; ok && !strings.Contains(":"+svc+":", ":email:") && !strings.Contains(":"+svc+":", ":*:") {
		return nil, "inappropriate service", false // section 3.6.1, s=
	}
	if k["p"] == "" {
		return nil, "key revoked", false // section 3.6.1: empty p=
	}
	data, err := base64.StdEncoding.DecodeString(k["p"])
	if err != nil {
		return nil, "key record: p= is not base64", false
	}
	if kt == "ed25519" {
		if len(data) != ed25519.PublicKeySize {
			return nil, "key record: not an Ed25519 key", false
		}
		return ed25519.PublicKey(data), "", false
	}
	var rk *rsa.PublicKey
	if p, err := x509.ParsePKIXPublicKey(data); err == nil {
		rk, _ = p.(*rsa.PublicKey)
	} else if p, err := x509.ParsePKCS1PublicKey(data); err == nil {
		rk = p
	}
	if rk == nil {
		return nil, "key record: p= is not an RSA public key", false
	}
	if rk.N.BitLen() < 1024 { // RFC 8301 section 3.2
		return nil, "key too short", false
	}
	return rk, "", false
}
