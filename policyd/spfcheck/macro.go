package spfcheck

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

var errMacro = errors.New("spfcheck: invalid macro")

// macroEnv holds what macros expand to (RFC 7208 §7.3).
type macroEnv struct {
	ip       netip.Addr
	sender   string // full sender; local part "postmaster" if it had none (§4.3)
	helo     string
	receiver string
	now      time.Time
	// ptr returns the validated name of ip for %{p} (§7.3, §5.5), computed
	// once when first needed.
	ptr func() string
}

// expand expands a macro-string (§7.1). exp allows the c, r and t letters
// and spaces, which only explanation strings may hold (§6.2, §7.3).
func (e *macroEnv) expand(s, domain string, exp bool) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			// macro-literal = %x21-24 / %x26-7E; explain-string adds SP.
			if c < 0x21 && !(exp && c == ' ') || c > 0x7e {
				return "", errMacro
			}
			b.WriteByte(c)
			continue
		}
		if i+1 >= len(s) {
			return "", errMacro
		}
		i++
		switch s[i] {
		case '%':
			b.WriteByte('%')
		case '_':
			b.WriteByte(' ')
		case '-':
			b.WriteString("%20")
		case '{':
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return "", errMacro
			}
			v, err := e.macro(s[i+1:i+end], domain, exp)
			if err != nil {
				return "", err
			}
			b.WriteString(v)
			i += end
		default:
			return "", errMacro
		}
	}
	return b.String(), nil
}

// macro expands the body of one %{…}: letter, transformers, delimiters.
func (e *macroEnv) macro(body, domain string, exp bool) (string, error) {
	if body == "" {
		return "", errMacro
	}
	letter := body[0]
	upper := 'A' <= letter && letter <= 'Z'
	if upper {
		letter += 'a' - 'A'
	}
	rest := body[1:]
	j := 0
	for j < len(rest) && '0' <= rest[j] && rest[j] <= '9' {
		j++
	}
	digits := 0
	if j > 0 {
		n, err := strconv.Atoi(rest[:j])
		if err != nil || n == 0 {
			return "", errMacro
		}
		digits = n
	}
	rest = rest[j:]
	reverse := false
	if rest != "" && (rest[0] == 'r' || rest[0] == 'R') {
		reverse = true
		rest = rest[1:]
	}
	delims := "."
	if rest != "" {
		for k := 0; k < len(rest); k++ {
			if !strings.ContainsRune(".-+,/_=", rune(rest[k])) {
				return "", errMacro
			}
		}
		delims = rest
	}

	var v string
	switch letter {
	case 's':
		v = e.sender
	case 'l':
		v = e.sender
		if i := strings.LastIndexByte(e.sender, '@'); i >= 0 {
			v = e.sender[:i]
		}
	case 'o':
		if i := strings.LastIndexByte(e.sender, '@'); i >= 0 {
			v = e.sender[i+1:]
		}
	case 'd':
		v = domain
	case 'i':
		v = dottedIP(e.ip)
	case 'p':
		v = "unknown"
		if e.ptr != nil {
			v = e.ptr()
		}
	case 'v':
		v = "in-addr"
		if e.ip.Is6() {
			v = "ip6"
		}
	case 'h':
		v = e.helo
	case 'c', 'r', 't':
		if !exp {
			return "", errMacro
		}
		switch letter {
		case 'c':
			v = e.ip.String()
		case 'r':
			v = e.receiver
		case 't':
			v = strconv.FormatInt(e.now.Unix(), 10)
		}
	default:
		return "", errMacro
	}

	if digits > 0 || reverse || delims != "." {
		parts := strings.FieldsFunc(v, func(r rune) bool { return strings.ContainsRune(delims, r) })
		if reverse {
			for a, b := 0, len(parts)-1; a < b; a, b = a+1, b-1 {
				parts[a], parts[b] = parts[b], parts[a]
			}
		}
		if digits > 0 && digits < len(parts) {
			parts = parts[len(parts)-digits:]
		}
		v = strings.Join(parts, ".")
	}
	if upper {
		v = urlEscape(v)
	}
	return v, nil
}

// dottedIP is the %{i} form: dotted quad, or 32 dot-separated nibbles (§7.3).
func dottedIP(ip netip.Addr) string {
	if ip.Is4() {
		return ip.String()
	}
	var b strings.Builder
	for i, x := range ip.As16() {
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(strconv.FormatUint(uint64(x>>4), 16))
		b.WriteByte('.')
		b.WriteString(strconv.FormatUint(uint64(x&0xf), 16))
	}
	return b.String()
}

// urlEscape escapes all but RFC 3986 unreserved characters (§7.3: uppercase
// macro letters are URL-encoded).
func urlEscape(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xf])
	}
	return b.String()
}

// truncateDomain applies §7.3: an expanded name longer than 253 octets
// loses labels on the left until it fits.
func truncateDomain(d string) string {
	for len(d) > 253 {
		i := strings.IndexByte(d, '.')
		if i < 0 {
			return ""
		}
		d = d[i+1:]
	}
	return d
}

// validatedName implements the %{p} lookup (§7.3 via §5.5): a PTR name of
// ip that resolves back to ip, preferring one within domain; "unknown" if
// none. At most 10 PTR names are tried (§4.6.4).
func validatedName(ctx context.Context, res Resolver, ip netip.Addr, domain string) string {
	names, err := res.LookupAddr(ctx, ip.String())
	if err != nil {
		return "unknown"
	}
	if len(names) > 10 {
		names = names[:10]
	}
	var valid []string
	for _, n := range names {
		addrs, err := res.LookupIPAddr(ctx, n)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if a.IP.Equal(net.IP(ip.AsSlice())) {
				valid = append(valid, strings.TrimSuffix(n, "."))
				break
			}
		}
	}
	if len(valid) == 0 {
		return "unknown"
	}
	for _, n := range valid {
		if strings.EqualFold(n, domain) || hasSuffixFold(n, "."+domain) {
			return n
		}
	}
	return valid[0]
}

func hasSuffixFold(s, suffix string) bool {
	return len(s) >= len(suffix) && strings.EqualFold(s[len(s)-len(suffix):], suffix)
}
