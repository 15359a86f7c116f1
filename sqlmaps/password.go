package sqlmaps

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// PasswordPolicy is what a new password must satisfy (the YAML's
// database.password_policy). Length is what counts, as NIST SP 800-63B
// §5.1.1.2 says: no composition rules, which push users to "Password1!".
type PasswordPolicy struct {
	MinLength     int  // fewest code points
	MaxLength     int  // most bytes; 0 means no limit
	RefuseAddress bool // refuse the address, local part or domain (+ digits/punctuation)
}

// Check returns an ErrInvalid error saying what is wrong with password as
// the new password of address, or nil. The password itself is never in
// the message.
func (p PasswordPolicy) Check(address, password string) error {
	if strings.ContainsAny(password, "\r\n\x00") {
		return errf(ErrInvalid, "the password holds a line break or NUL: Dovecot's clients cannot send it")
	}
	if n := utf8.RuneCountInString(password); n < p.MinLength {
		return errf(ErrInvalid, "the password has %d characters; database.password_policy.min_length asks for at least %d: choose a longer one (a few words are easier to remember)", n, p.MinLength)
	}
	if p.MaxLength > 0 && len(password) > p.MaxLength {
		return errf(ErrInvalid, "the password has %d bytes; database.password_policy.max_length allows at most %d", len(password), p.MaxLength)
	}
	if p.RefuseAddress && address != "" {
		local, domain, _ := strings.Cut(strings.ToLower(address), "@")
		// What remains once trailing digits and punctuation ("2024!") are
		// taken off.
		core := strings.TrimRightFunc(strings.ToLower(password), func(r rune) bool {
			return unicode.IsDigit(r) || unicode.IsPunct(r) || unicode.IsSymbol(r) || unicode.IsSpace(r)
		})
		for _, bad := range []string{strings.ToLower(address), local, domain, strings.SplitN(domain, ".", 2)[0]} {
			if bad != "" && (core == bad || strings.ToLower(password) == bad) {
				return errf(ErrInvalid, "the password is the user's own address, local part or domain (database.password_policy.refuse_address): anyone who knows the address can guess it")
			}
		}
	}
	return nil
}
