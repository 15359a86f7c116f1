// Package pwhash makes and checks the password hashes Dovecot reads from the
// SQL store, in Dovecot's "{SCHEME}hash" notation (Dovecot password schemes,
// doc.dovecot.org "Password Schemes"): SHA512-CRYPT (Drepper's "Unix crypt
// using SHA-256 and SHA-512", the reference installation's scheme),
// BLF-CRYPT (bcrypt, $2b$) and ARGON2ID (RFC 9106, in libsodium's PHC-style
// string).
//
// SHA512-CRYPT is implemented here from the published algorithm rather than
// through libcrypt's crypt_r, so the binary needs no C library besides
// SQLite's and behaves the same on every libc; the tests cross-check it
// against Dovecot (doveadm pw -t) and libxcrypt.
package pwhash

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// Scheme names, as Dovecot spells them between braces.
const (
	SHA512Crypt = "SHA512-CRYPT"
	BlfCrypt    = "BLF-CRYPT"
	Argon2ID    = "ARGON2ID"
)

// Default is the scheme used when none is asked for: the reference
// installation's.
const Default = SHA512Crypt

// Schemes lists the schemes Hash can make, Default first.
func Schemes() []string { return []string{SHA512Crypt, BlfCrypt, Argon2ID} }

// Cost parameters. They follow Dovecot 2.3's own defaults for `doveadm pw`
// except bcrypt, where Dovecot's cost 5 is too cheap today.
const (
	sha512Rounds = 5000 // the algorithm's default; omitted from the string
	bcryptCost   = 10
	argonTime    = 3
	argonMemory  = 64 * 1024 // KiB
	argonThreads = 1
	argonSaltLen = 16
	argonKeyLen  = 32
)

// ErrMismatch is returned by Verify when the password does not match.
var ErrMismatch = errors.New("pwhash: password does not match")

// Hasher makes hashes; Rand is the randomness seam for salts (crypto/rand when nil).
type Hasher struct {
	Rand io.Reader
}

// Hash returns password hashed with scheme (case-insensitive; "" means
// Default), prefixed with "{SCHEME}" as Dovecot expects.
func Hash(scheme, password string) (string, error) {
	return Hasher{}.Hash(scheme, password)
}

// Hash is the package-level Hash with h's randomness.
func (h Hasher) Hash(scheme, password string) (string, error) {
	r := h.Rand
	if r == nil {
		r = rand.Reader
	}
	if password == "" {
		return "", errors.New("pwhash: empty password: give a non-empty password")
	}
	if strings.ContainsAny(password, "\x00\r\n") {
		return "", errors.New("pwhash: password contains NUL or a line break: Dovecot cannot check it; choose another")
	}
	switch s := strings.ToUpper(scheme); s {
	case "", SHA512Crypt:
		salt, err := cryptSalt(r, 16)
		if err != nil {
			return "", err
		}
		return "{" + SHA512Crypt + "}" + sha512Crypt([]byte(password), salt, sha512Rounds, false), nil
	case BlfCrypt:
		if len(password) > 72 {
			return "", errors.New("pwhash: BLF-CRYPT uses at most 72 bytes of a password: use SHA512-CRYPT or ARGON2ID for longer ones")
		}
		b, err := bcrypt.GenerateFromPassword([]byte(password), bcryptCost)
		if err != nil {
			return "", fmt.Errorf("pwhash: bcrypt: %w", err)
		}
		// x/crypto writes the $2a$ prefix for what is the corrected
		// algorithm; libxcrypt's crypt_blowfish (Dovecot's crypt(3)) applies
		// a compatibility countermeasure to $2a$ for some 8-bit passwords,
		// while $2b$ means exactly the corrected algorithm.
		out := string(b)
		if strings.HasPrefix(out, "$2a$") {
			out = "$2b$" + out[4:]
		}
		return "{" + BlfCrypt + "}" + out, nil
	case Argon2ID:
		salt := make([]byte, argonSaltLen)
		if _, err := io.ReadFull(r, salt); err != nil {
			return "", fmt.Errorf("pwhash: reading random salt: %w", err)
		}
		key := argon2.IDKey([]byte(password), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
		b64 := base64.RawStdEncoding
		return fmt.Sprintf("{%s}$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", Argon2ID, argon2.Version,
			argonMemory, argonTime, argonThreads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
	default:
		return "", fmt.Errorf("pwhash: unknown scheme %q: use one of %s", scheme, strings.Join(Schemes(), ", "))
	}
}

// Split separates "{SCHEME}rest" into its upper-cased scheme and the rest. A
// string without braces has scheme "".
func Split(stored string) (scheme, rest string) {
	if strings.HasPrefix(stored, "{") {
		if i := strings.IndexByte(stored, '}'); i > 0 {
			return strings.ToUpper(stored[1:i]), stored[i+1:]
		}
	}
	return "", stored
}

// Verify checks password against a stored "{SCHEME}…" hash made by Hash or by
// doveadm pw with one of Schemes. It returns nil on a match, ErrMismatch on a
// wrong password, and another error when the hash cannot be read.
func Verify(stored, password string) error {
	scheme, h := Split(stored)
	switch scheme {
	case SHA512Crypt:
		salt, rounds, explicit, ok := parseSHA512(h)
		if !ok {
			return fmt.Errorf("pwhash: malformed SHA512-CRYPT hash %.12q…", h)
		}
		got := sha512Crypt([]byte(password), salt, rounds, explicit)
		if subtle.ConstantTimeCompare([]byte(got), []byte(h)) != 1 {
			return ErrMismatch
		}
		return nil
	case BlfCrypt:
		err := bcrypt.CompareHashAndPassword([]byte(h), []byte(password))
		if errors.Is(err, bcrypt.ErrMismatchedHashAndPassword) {
			return ErrMismatch
		}
		if err != nil {
			return fmt.Errorf("pwhash: BLF-CRYPT hash: %w", err)
		}
		return nil
	case Argon2ID:
		return verifyArgon2(h, password)
	case "":
		return errors.New("pwhash: hash has no {SCHEME} prefix: store it as Dovecot expects, e.g. {SHA512-CRYPT}$6$…")
	default:
		return fmt.Errorf("pwhash: scheme %s cannot be checked here: use doveadm pw -t", scheme)
	}
}

func verifyArgon2(h, password string) error {
	// $argon2id$v=19$m=65536,t=3,p=1$SALT$HASH
	f := strings.Split(h, "$")
	if len(f) != 6 || f[0] != "" || f[1] != "argon2id" || f[2] != "v="+strconv.Itoa(argon2.Version) {
		return fmt.Errorf("pwhash: malformed ARGON2ID hash %.20q…", h)
	}
	var m, t uint32
	var p uint8
	if _, err := fmt.Sscanf(f[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil || t == 0 || p == 0 || m < 8*uint32(p) || m > 4<<20 {
		return fmt.Errorf("pwhash: bad ARGON2ID parameters %q", f[3])
	}
	b64 := base64.RawStdEncoding
	salt, err1 := b64.DecodeString(f[4])
	want, err2 := b64.DecodeString(f[5])
	if err1 != nil || err2 != nil || len(want) == 0 || len(want) > 1024 {
		return fmt.Errorf("pwhash: bad ARGON2ID salt or hash encoding")
	}
	got := argon2.IDKey([]byte(password), salt, t, m, p, uint32(len(want)))
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return ErrMismatch
	}
	return nil
}
