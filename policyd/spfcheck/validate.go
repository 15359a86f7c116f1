package spfcheck

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// validateRecord checks a whole SPF record against the ABNF of RFC 7208 §12
// before it is evaluated: §4.6 says a syntax error anywhere in the record
// makes check_host() return permerror, whatever comes first, and §3.1 that
// records are 7-bit ASCII. blitiri.com.ar/go/spf parses lazily (a match
// before the error wins) and accepts some invalid domain-specs; this closes
// those gaps. It does not repeat what the library does right.
func validateRecord(rec string) error {
	for i := 0; i < len(rec); i++ {
		if rec[i] >= 0x80 {
			return errors.New("record is not 7-bit ASCII (RFC 7208 §3.1)")
		}
		if rec[i] < 0x20 || rec[i] == 0x7f {
			return fmt.Errorf("control character 0x%02x in record", rec[i])
		}
	}
	terms := strings.Split(rec, " ")[1:] // after "v=spf1"; 1*SP separates terms
	seen := map[string]bool{}
	for _, t := range terms {
		if t == "" {
			continue
		}
		if err := validateTerm(t, seen); err != nil {
			return fmt.Errorf("term %q: %w", t, err)
		}
	}
	return nil
}

func validateTerm(t string, seen map[string]bool) error {
	// modifier = name "=" macro-string; name = ALPHA *( ALPHA / DIGIT / "-" / "_" / "." )
	if i := strings.IndexByte(t, '='); i > 0 && isName(t[:i]) {
		name := strings.ToLower(t[:i])
		val := t[i+1:]
		switch name {
		case "redirect", "exp":
			// §6: each at most once.
			if seen[name] {
				return fmt.Errorf("%s= appears twice (RFC 7208 §6)", name)
			}
			seen[name] = true
			return validateDomainSpec(val)
		}
		return validateMacroString(val, true)
	}
	if t[0] == '+' || t[0] == '-' || t[0] == '?' || t[0] == '~' {
		t = t[1:]
	}
	name, arg, hasArg := strings.Cut(t, ":")
	if !hasArg {
		name, arg, _ = strings.Cut(t, "/")
		if arg != "" || strings.HasSuffix(t, "/") {
			arg = "/" + arg
		}
	}
	switch strings.ToLower(name) {
	case "all":
		if hasArg || arg != "" {
			return errors.New("all takes no argument")
		}
	case "include", "exists":
		if !hasArg {
			return errors.New("missing domain-spec")
		}
		return validateDomainSpec(arg)
	case "a", "mx":
		spec, cidr := splitDualCIDR(arg)
		if hasArg {
			if err := validateDomainSpec(spec); err != nil {
				return err
			}
		} else if spec != "" {
			return errors.New("bad cidr length")
		}
		return validateDualCIDR(cidr)
	case "ptr":
		if hasArg {
			return validateDomainSpec(arg)
		}
		if arg != "" {
			return errors.New("ptr takes no cidr length")
		}
	case "ip4", "ip6":
		if !hasArg {
			return errors.New("missing address")
		}
		return validateIPNetwork(strings.ToLower(name), arg)
	default:
		return errors.New("unknown mechanism")
	}
	return nil
}

func isName(s string) bool {
	if s == "" || !isAlpha(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !isAlpha(c) && !isDigit(c) && c != '-' && c != '_' && c != '.' {
			return false
		}
	}
	return true
}

func isAlpha(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// splitDualCIDR separates "domain-spec/24//64" into the spec and "/24//64".
func splitDualCIDR(arg string) (spec, cidr string) {
	i := len(arg)
	for i > 0 && (isDigit(arg[i-1]) || arg[i-1] == '/') {
		i--
	}
	// Only a tail made of "/N" and "//N" groups is a cidr length.
	tail := arg[i:]
	j := strings.IndexByte(tail, '/')
	if j < 0 {
		return arg, ""
	}
	return arg[:i+j], tail[j:]
}

// validateDualCIDR: dual-cidr-length = [ ip4-cidr-length ] [ "/" ip6-cidr-length ].
func validateDualCIDR(c string) error {
	if c == "" {
		return nil
	}
	v4, v6, dual := strings.Cut(c, "//")
	if v4 != "" {
		if err := cidrLen(strings.TrimPrefix(v4, "/"), 32, strings.HasPrefix(v4, "/")); err != nil {
			return err
		}
	}
	if dual {
		return cidrLen(v6, 128, true)
	}
	return nil
}

// cidrLen: "0" / %x31-39 *DIGIT within the family's range (§5.6).
func cidrLen(s string, max int, slash bool) error {
	if !slash || s == "" || len(s) > 1 && s[0] == '0' {
		return fmt.Errorf("bad cidr length %q", s)
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > max {
		return fmt.Errorf("bad cidr length %q", s)
	}
	return nil
}

// validateDomainSpec: domain-spec = macro-string domain-end, domain-end =
// ( "." toplabel [ "." ] ) / macro-expand (§7.1).
func validateDomainSpec(s string) error {
	if s == "" {
		return errors.New("empty domain-spec")
	}
	if err := validateMacroString(s, false); err != nil {
		return err
	}
	if endsWithMacro(s) {
		return nil
	}
	d := strings.TrimSuffix(s, ".")
	i := strings.LastIndexByte(d, '.')
	if i < 0 {
		return errors.New("domain-spec needs a dot and a top label")
	}
	if !isTopLabel(d[i+1:]) {
		return fmt.Errorf("bad top label %q", d[i+1:])
	}
	return nil
}

// endsWithMacro reports whether s ends with a macro-expand ("%{…}", "%%",
// "%_", "%-"), counting "%" escapes from the left.
func endsWithMacro(s string) bool {
	end := -1
	for i := 0; i < len(s); i++ {
		if s[i] != '%' || i+1 >= len(s) {
			continue
		}
		if s[i+1] == '{' {
			j := strings.IndexByte(s[i:], '}')
			if j < 0 {
				return false
			}
			i += j
		} else {
			i++
		}
		end = i
	}
	return end == len(s)-1
}

// isTopLabel: ( *alphanum ALPHA *alphanum ) / ( 1*alphanum "-" *( alphanum / "-" ) alphanum ).
func isTopLabel(l string) bool {
	if l == "" {
		return false
	}
	alpha := false
	hyphen := false
	for i := 0; i < len(l); i++ {
		c := l[i]
		switch {
		case isAlpha(c):
			alpha = true
		case isDigit(c):
		case c == '-':
			hyphen = true
		default:
			return false
		}
	}
	if hyphen {
		return l[0] != '-' && l[len(l)-1] != '-'
	}
	return alpha
}

// validateMacroString checks macro-expands and literals (§7.1). c, r and t
// are allowed only in explanation text (§7.3), so not in domain-specs;
// unknown-modifier values (anyLetter) are never expanded and may hold them.
func validateMacroString(s string, anyLetter bool) error {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			if c < 0x21 || c > 0x7e {
				return fmt.Errorf("character 0x%02x not allowed", c)
			}
			continue
		}
		if i+1 >= len(s) {
			return errors.New("lone % at end")
		}
		i++
		switch s[i] {
		case '%', '_', '-':
			continue
		case '{':
		default:
			return fmt.Errorf("bad macro %%%c", s[i])
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return errors.New("unterminated macro")
		}
		body := s[i+1 : i+j]
		i += j
		if body == "" {
			return errors.New("empty macro")
		}
		letter := body[0] | 0x20
		if !strings.ContainsRune("slodiphvcrt", rune(letter)) {
			return fmt.Errorf("unknown macro letter %q", body[0])
		}
		if !anyLetter && strings.ContainsRune("crt", rune(letter)) {
			return fmt.Errorf("macro %%{%c} is only allowed in explanations (RFC 7208 §7.3)", body[0])
		}
		rest := body[1:]
		k := 0
		for k < len(rest) && isDigit(rest[k]) {
			k++
		}
		if k > 0 {
			if n, err := strconv.Atoi(rest[:k]); err != nil || n == 0 {
				return errors.New("bad macro digit transformer")
			}
		}
		rest = rest[k:]
		if rest != "" && (rest[0] == 'r' || rest[0] == 'R') {
			rest = rest[1:]
		}
		for k := 0; k < len(rest); k++ {
			if !strings.ContainsRune(".-+,/_=", rune(rest[k])) {
				return fmt.Errorf("bad macro delimiter %q", rest[k])
			}
		}
	}
	return nil
}

// validateIPNetwork: ip4-network [ ip4-cidr-length ] or ip6-network
// [ ip6-cidr-length ] (§5.6); like the addresses, lengths take no leading
// zeros.
func validateIPNetwork(mech, arg string) error {
	addr, length, hasLen := strings.Cut(arg, "/")
	a, err := netip.ParseAddr(addr)
	if err != nil || a.Zone() != "" {
		return fmt.Errorf("bad address %q", addr)
	}
	max := 32
	if mech == "ip4" && !a.Is4() {
		return fmt.Errorf("%q is not an IPv4 address", addr)
	}
	if mech == "ip6" {
		if !a.Is6() {
			return fmt.Errorf("%q is not an IPv6 address", addr)
		}
		max = 128
	}
	if hasLen {
		return cidrLen(length, max, true)
	}
	return nil
}
