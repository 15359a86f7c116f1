package pwhash

import (
	"crypto/sha512"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// cryptAlphabet is the crypt(3) base-64 alphabet.
const cryptAlphabet = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// Limits from "Unix crypt using SHA-256 and SHA-512" (U. Drepper, 2007–2016),
// section "rounds=<N>".
const (
	roundsMin = 1000
	roundsMax = 999999999
	saltMax   = 16
)

// cryptSalt draws n salt characters from the crypt alphabet.
func cryptSalt(r io.Reader, n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("pwhash: reading random salt: %w", err)
	}
	for i := range b {
		b[i] = cryptAlphabet[b[i]&0x3f] // 256 is a multiple of 64: no bias
	}
	return b, nil
}

// parseSHA512 reads "$6$[rounds=N$]salt$hash" and returns the salt, the
// rounds and whether rounds were written out.
func parseSHA512(h string) (salt []byte, rounds int, explicit, ok bool) {
	rest, found := strings.CutPrefix(h, "$6$")
	if !found {
		return nil, 0, false, false
	}
	rounds = sha512Rounds
	if r, after, found := strings.Cut(rest, "$"); found && strings.HasPrefix(r, "rounds=") {
		// glibc raises out-of-range rounds to the limits; libxcrypt (and so
		// Dovecot on Debian) refuses them. We refuse them too.
		n, err := strconv.Atoi(r[len("rounds="):])
		if err != nil || n < roundsMin || n > roundsMax {
			return nil, 0, false, false
		}
		rounds = n
		explicit = true
		rest = after
	}
	s, _, found := strings.Cut(rest, "$")
	if !found {
		return nil, 0, false, false
	}
	if len(s) > saltMax {
		s = s[:saltMax]
	}
	return []byte(s), rounds, explicit, true
}

// sha512Crypt computes the SHA-512 based crypt string ("$6$…") for password
// key, following the numbered steps of Drepper's specification.
func sha512Crypt(key, salt []byte, rounds int, explicitRounds bool) string {
	if len(salt) > saltMax {
		salt = salt[:saltMax]
	}
	// Steps 4-8: digest B = H(key salt key).
	h := sha512.New()
	h.Write(key)
	h.Write(salt)
	h.Write(key)
	b := h.Sum(nil)

	// Steps 1-3, 9-12: digest A.
	h.Reset()
	h.Write(key)
	h.Write(salt)
	for n := len(key); n > 0; n -= 64 { // step 9-10: B for each byte of key
		h.Write(b[:min(n, 64)])
	}
	for n := len(key); n > 0; n >>= 1 { // step 11: bits of len(key), lowest first
		if n&1 != 0 {
			h.Write(b)
		} else {
			h.Write(key)
		}
	}
	a := h.Sum(nil)

	// Steps 13-16: sequence P from digest DP = H(key repeated len(key) times).
	h.Reset()
	for range len(key) {
		h.Write(key)
	}
	dp := h.Sum(nil)
	p := make([]byte, 0, len(key))
	for len(p) < len(key) {
		p = append(p, dp[:min(len(key)-len(p), 64)]...)
	}

	// Steps 17-20: sequence S from digest DS = H(salt repeated 16+A[0] times).
	h.Reset()
	for range 16 + int(a[0]) {
		h.Write(salt)
	}
	ds := h.Sum(nil)
	s := ds[:len(salt)]

	// Step 21: the rounds.
	c := a
	for i := range rounds {
		h.Reset()
		if i&1 != 0 {
			h.Write(p)
		} else {
			h.Write(c)
		}
		if i%3 != 0 {
			h.Write(s)
		}
		if i%7 != 0 {
			h.Write(p)
		}
		if i&1 != 0 {
			h.Write(c)
		} else {
			h.Write(p)
		}
		c = h.Sum(c[:0])
	}

	// Step 22: the output string, bytes permuted in groups of three.
	var out strings.Builder
	out.WriteString("$6$")
	if explicitRounds {
		fmt.Fprintf(&out, "rounds=%d$", rounds)
	}
	out.Write(salt)
	out.WriteByte('$')
	enc := func(b2, b1, b0 byte, n int) {
		w := uint(b2)<<16 | uint(b1)<<8 | uint(b0)
		for range n {
			out.WriteByte(cryptAlphabet[w&0x3f])
			w >>= 6
		}
	}
	for i := range 21 {
		// Groups (0,21,42), (22,43,1), (44,2,23), (3,24,45), …
		x, y, z := i, i+21, i+42
		switch i % 3 {
		case 1:
			x, y, z = i+21, i+42, i
		case 2:
			x, y, z = i+42, i, i+21
		}
		enc(c[x], c[y], c[z], 4)
	}
	enc(0, 0, c[63], 2)
	return out.String()
}
