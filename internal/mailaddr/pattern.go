package mailaddr

import (
	"fmt"
	"strings"
)

// Pattern is a From address pattern of a DKIM signing rule, in the forms an
// OpenDKIM SigningTable uses for one address, one domain or the sub-domains
// of a domain:
//
//	user@example.org            that address (local part case-insensitive)
//	*@example.org, example.org  every address of example.org
//	*@*.example.org, *.example.org, .example.org
//	                            every address of every sub-domain of
//	                            example.org (not example.org itself)
type Pattern struct {
	Local  string // lowercase; "" for every local part
	Domain string // lowercase, without a trailing dot
	Sub    bool   // the sub-domains of Domain, not Domain
}

// ParsePattern parses a signing pattern; the error says which forms exist.
func ParsePattern(s string) (Pattern, error) {
	p := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(s), "."))
	local, dom, hasAt := strings.Cut(p, "@")
	if !hasAt {
		local, dom = "*", p
	}
	var pt Pattern
	switch {
	case strings.HasPrefix(dom, "*."):
		dom, pt.Sub = dom[2:], true
	case strings.HasPrefix(dom, "."):
		dom, pt.Sub = dom[1:], true
	}
	if !ValidDomain(dom) {
		return Pattern{}, fmt.Errorf("%q is not a From pattern: write user@example.org, *@example.org or *@*.example.org", s)
	}
	pt.Domain = dom
	if local != "*" {
		if pt.Sub || !ValidAddress(local+"@"+dom) {
			return Pattern{}, fmt.Errorf("%q is not a From pattern: the local part is one address (no wildcards within it) of one domain, e.g. user@example.org", s)
		}
		pt.Local = local
	}
	return pt, nil
}

// String writes the pattern in its canonical form.
func (p Pattern) String() string {
	local := p.Local
	if local == "" {
		local = "*"
	}
	if p.Sub {
		return local + "@*." + p.Domain
	}
	return local + "@" + p.Domain
}
