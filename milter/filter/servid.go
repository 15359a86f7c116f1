package filter

import "strings"

// ServID returns the authserv-id an Authentication-Results value claims
// (RFC 8601 section 2.2: the first token before ";", comments removed, an
// optional version after it ignored). Compare it case-insensitively. Filters
// use it to tell this server's results from forged ones (section 5).
func ServID(value string) string {
	v := stripComments(value)
	id, _, _ := strings.Cut(v, ";")
	f := strings.Fields(id)
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// stripComments removes RFC 5322 comments (nested parentheses, with quoted
// pairs) and unfolds.
func stripComments(s string) string {
	var b strings.Builder
	depth := 0
	quoted := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && (depth > 0 || quoted) && i+1 < len(s):
			if depth == 0 {
				b.WriteByte(c)
				b.WriteByte(s[i+1])
			}
			i++
		case c == '"' && depth == 0:
			quoted = !quoted
			b.WriteByte(c)
		case c == '(' && !quoted:
			depth++
		case c == ')' && !quoted && depth > 0:
			depth--
		case depth > 0:
		case c == '\r' || c == '\n':
			b.WriteByte(' ')
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
