package dkimkey

import (
	"crypto"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// MaxTXTString is the longest character-string of a TXT record (RFC 1035
// section 3.3: one length octet). Longer record text is split into several
// strings of one record, which verifiers concatenate (RFC 6376 section 3.6.2.2).
const MaxTXTString = 255

// SplitTXT cuts s into strings of at most n bytes (n <= 0 or > 255 means 255).
// Key records are ASCII, so cutting at any byte is safe.
func SplitTXT(s string, n int) []string {
	if n <= 0 || n > MaxTXTString {
		n = MaxTXTString
	}
	var out []string
	for len(s) > n {
		out = append(out, s[:n])
		s = s[n:]
	}
	return append(out, s)
}

// RecordName returns the owner name of a key record, relative to the
// domain's zone: "SELECTOR._domainkey" (RFC 6376 section 3.6.2.1).
func RecordName(selector string) string { return selector + "._domainkey" }

// ZoneTXT formats a TXT record in zone-file syntax the way opendkim-genkey
// writes S.txt: the tags before p= in one string, the key data in strings of
// at most 250 bytes, all inside parentheses, and a comment naming the key:
//
//	sel._domainkey	IN	TXT	( "v=DKIM1; k=rsa; "
//		  "p=MIIB…" )  ; ----- DKIM key sel for example.org
//
// owner is the record's owner name as it should appear (relative or with a
// trailing dot); comment may be empty.
func ZoneTXT(owner, text, comment string) string {
	var parts []string
	if i := strings.Index(text, "p="); i > 0 {
		parts = append(SplitTXT(text[:i], 250), SplitTXT(text[i:], 250)...)
	} else {
		parts = SplitTXT(text, 250)
	}
	var b strings.Builder
	b.WriteString(owner)
	b.WriteString("\tIN\tTXT\t")
	if len(parts) == 1 {
		b.WriteString(quoteTXT(parts[0]))
	} else {
		b.WriteString("( ")
		for i, p := range parts {
			if i > 0 {
				b.WriteString("\n\t  ")
			}
			b.WriteString(quoteTXT(p))
		}
		b.WriteString(" )")
	}
	if comment != "" {
		b.WriteString("  ; ")
		b.WriteString(comment)
	}
	b.WriteByte('\n')
	return b.String()
}

// quoteTXT quotes one character-string for a zone file (RFC 1035 section 5.1).
func quoteTXT(s string) string {
	if !strings.ContainsAny(s, `"\`) {
		return `"` + s + `"`
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}

// KeyZoneTXT is ZoneTXT for a key: the S._domainkey record of pub with the
// opendkim-genkey comment.
func KeyZoneTXT(selector, domain string, pub crypto.PublicKey) (string, error) {
	rec, err := Record(pub)
	if err != nil {
		return "", err
	}
	return ZoneTXT(RecordName(selector), rec, "----- DKIM key "+selector+" for "+domain), nil
}

// CheckSelector checks a selector is a usable DNS label sequence (RFC 6376
// section 3.1: sub-domain syntax), since it becomes part of a file name too.
func CheckSelector(s string) error {
	if s == "" {
		return errors.New("dkimkey: empty selector: give one with --selector, e.g. the year and month (202601)")
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("dkimkey: bad selector %q: labels are 1 to 63 characters", s)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' && i > 0 && i < len(label)-1
			if !ok {
				return fmt.Errorf("dkimkey: bad selector %q: use letters, digits and inner hyphens", s)
			}
		}
	}
	return nil
}

// WriteKeyFiles writes dir/SELECTOR.private (PEM, mode 0600) and
// dir/SELECTOR.txt (the zone-file record, mode 0644), as opendkim-genkey does.
// It refuses to overwrite an existing private key. dir is created (0750) if
// missing. It returns the two paths.
func WriteKeyFiles(dir, selector, domain string, key crypto.Signer) (private, txt string, err error) {
	if err := CheckSelector(selector); err != nil {
		return "", "", err
	}
	pemData, err := MarshalPrivateKey(key)
	if err != nil {
		return "", "", err
	}
	zone, err := KeyZoneTXT(selector, domain, key.Public())
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", "", fmt.Errorf("dkimkey: %w", err)
	}
	private = filepath.Join(dir, selector+".private")
	txt = filepath.Join(dir, selector+".txt")
	f, err := os.OpenFile(private, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return "", "", fmt.Errorf("dkimkey: %s exists: choose another selector (rotation) or remove the old key first", private)
		}
		return "", "", fmt.Errorf("dkimkey: %w", err)
	}
	if _, err := f.Write(pemData); err != nil {
		f.Close()
		os.Remove(private)
		return "", "", fmt.Errorf("dkimkey: writing %s: %w", private, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(private)
		return "", "", fmt.Errorf("dkimkey: writing %s: %w", private, err)
	}
	if err := os.WriteFile(txt, []byte(zone), 0o644); err != nil {
		return "", "", fmt.Errorf("dkimkey: %w", err)
	}
	return private, txt, nil
}
