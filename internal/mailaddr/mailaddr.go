// Package mailaddr checks the syntax of domain names (RFC 1035 section
// 2.3.1, with RFC 1123 section 2.1's leading digits) and of mail addresses
// with a dot-atom local part (RFC 5322 section 3.4.1), as postkit stores
// them: the configuration, the database and the daemons share these rules.
package mailaddr

import (
	"regexp"
	"strings"
)

var (
	domainRE = regexp.MustCompile(`^(?i)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$`)
	localRE  = regexp.MustCompile(`^[A-Za-z0-9!#$%&'*+/=?^_` + "`" + `{|}~.-]{1,64}$`)
)

// ValidDomain reports whether s is a syntactically valid domain name with at
// least two labels and an alphabetic top-level label.
func ValidDomain(s string) bool {
	return len(s) <= 253 && domainRE.MatchString(s)
}

// ValidAddress reports whether s is local@domain with a dot-atom local part
// (no leading, trailing or doubled dot) and a ValidDomain domain.
func ValidAddress(s string) bool {
	i := strings.LastIndexByte(s, '@')
	if i <= 0 {
		return false
	}
	local := s[:i]
	if !localRE.MatchString(local) || strings.HasPrefix(local, ".") || strings.HasSuffix(local, ".") || strings.Contains(local, "..") {
		return false
	}
	return ValidDomain(s[i+1:])
}
