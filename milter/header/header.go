// Package header reads and interprets message header fields (RFC 5322
// section 2.2 and 3.6) in the form the milter protocol gives them
// (filter.Header): reading a header block from a message file, finding the
// author address of the From field (section 3.6.2), removing comments
// (section 3.2.2) and reading the authserv-id of an Authentication-Results
// field (RFC 8601 section 2.2). The filters share it, so that the signer,
// the verifier and the From checks read a field the same way.
package header

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"regexp"
	"strings"

	"github.com/postkit/postkit/milter/filter"
)

// maxBytes bounds Read (Postfix's header_size_limit default).
const maxBytes = 102400

// Read reads a message header block up to and including the empty line, in
// the form the milter protocol gives it: Value without the single space
// after the colon, continuation lines kept with CRLF. Lines may end in CRLF
// or LF. A message without body separator ends at EOF. br is left at the
// first byte of the body.
func Read(br *bufio.Reader) ([]filter.Header, error) {
	var hs []filter.Header
	total := 0
	for {
		line, err := br.ReadString('\n')
		total += len(line)
		if total > maxBytes {
			return hs, fmt.Errorf("header: header block longer than %d bytes", maxBytes)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			if err != nil && err != io.EOF {
				return hs, fmt.Errorf("header: reading header: %w", err)
			}
			return hs, nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			if len(hs) == 0 {
				return hs, errors.New("header: message starts with a continuation line")
			}
			hs[len(hs)-1].Value += "\r\n" + line
		} else {
			name, value, ok := strings.Cut(line, ":")
			if !ok || strings.TrimRight(name, " \t") == "" {
				return hs, fmt.Errorf("header: header line without colon: %.40q", line)
			}
			hs = append(hs, filter.Header{Name: strings.TrimRight(name, " \t"), Value: strings.TrimPrefix(value, " ")})
		}
		if err != nil {
			if err == io.EOF {
				return hs, nil
			}
			return hs, fmt.Errorf("header: reading header: %w", err)
		}
	}
}

// FromDomain returns the lowercase domain of the one author address of the
// From field (RFC 5322 section 3.6.2). Several From fields or a From with
// several addresses give an error: a signing domain would be ambiguous.
func FromDomain(hs []filter.Header) (string, error) {
	addr, err := FromAddress(hs)
	if err != nil {
		return "", err
	}
	return domainOf(addr), nil
}

// FromAddress returns the one author address of the From field, as
// FromDomain finds it, without display name or angle brackets. A value
// net/mail refuses (raw 8-bit display names, odd quoting) is read
// leniently: the last <…>, else the last word.
func FromAddress(hs []filter.Header) (string, error) {
	var from string
	n := 0
	for _, h := range hs {
		if strings.EqualFold(h.Name, "From") {
			from = h.Value
			n++
		}
	}
	switch n {
	case 0:
		return "", errors.New("header: no From header")
	case 1:
	default:
		return "", fmt.Errorf("header: %d From headers", n)
	}
	var addr string
	if !strings.ContainsAny(from, "\",():;\\") && strings.Count(from, "<") <= 1 && strings.Count(from, "@") == 1 {
		// Fast path for the usual "Name <a@b>" or "a@b": one address, no
		// quoting, comments or groups to interpret.
		addr = strings.TrimSpace(from)
		if i := strings.IndexByte(addr, '<'); i >= 0 {
			j := strings.IndexByte(addr, '>')
			if j < i || strings.TrimSpace(addr[j+1:]) != "" {
				return "", fmt.Errorf("header: bad From %q", from)
			}
			addr = addr[i+1 : j]
		} else if strings.ContainsAny(addr, " \t\r\n>") {
			return "", fmt.Errorf("header: bad From %q", from)
		}
	} else if list, err := mail.ParseAddressList(from); err == nil {
		if len(list) != 1 {
			return "", fmt.Errorf("header: From has %d addresses", len(list))
		}
		addr = list[0].Address
	} else {
		v := strings.ReplaceAll(strings.ReplaceAll(from, "\r", ""), "\n", "")
		if i := strings.LastIndexByte(v, '<'); i >= 0 {
			if j := strings.IndexByte(v[i:], '>'); j > 0 {
				addr = v[i+1 : i+j]
			}
		} else if f := strings.Fields(v); len(f) > 0 {
			addr = f[len(f)-1]
		}
	}
	if !strings.Contains(addr, "@") {
		return "", fmt.Errorf("header: no domain in From %q", from)
	}
	dom := domainOf(addr)
	if dom == "" || strings.ContainsAny(dom, " \t\"<>()[],;:@\\") {
		return "", fmt.Errorf("header: bad domain in From %q", from)
	}
	return strings.TrimSpace(addr), nil
}

// looseAddr finds what looks like addr-spec domains in a field that does
// not parse: a forger gets no pass by breaking the syntax.
var looseAddr = regexp.MustCompile(`[^\s<>()",;:@]+@([A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)`)

// FromAddresses returns the addresses of every From field (a message may
// illegally carry several, or several addresses in one; each counts). A
// field net/mail cannot parse is searched for anything shaped like an
// address instead. Unlike FromAddress, it never fails: it serves checks
// that must see every domain a message claims.
func FromAddresses(hs []filter.Header) []string {
	var out []string
	for _, h := range hs {
		if !strings.EqualFold(strings.TrimSpace(h.Name), "From") {
			continue
		}
		v := Unfold(h.Value)
		list, err := mail.ParseAddressList(v)
		if err == nil {
			for _, a := range list {
				out = append(out, a.Address)
			}
			continue
		}
		for _, sm := range looseAddr.FindAllStringSubmatch(v, -1) {
			out = append(out, sm[0])
		}
	}
	return out
}

// Unfold joins the lines of a folded value (RFC 5322 section 2.2.3): the
// line breaks go, the white space that followed them stays.
func Unfold(v string) string {
	return strings.NewReplacer("\r\n", "", "\n", "").Replace(v)
}

// domainOf returns the lowercase domain of an address, without a final dot.
func domainOf(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(addr[i+1:]), "."))
}

// ServID returns the authserv-id an Authentication-Results value claims
// (RFC 8601 section 2.2: the first token before ";", comments removed, an
// optional version after it ignored). Compare it case-insensitively. Filters
// use it to tell this server's results from forged ones (section 5).
func ServID(value string) string {
	v := StripComments(value)
	id, _, _ := strings.Cut(v, ";")
	f := strings.Fields(id)
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// StripComments removes RFC 5322 comments (section 3.2.2: nested
// parentheses, with quoted pairs; parentheses inside a quoted string are
// text) and unfolds the value: a line break becomes a space.
func StripComments(s string) string {
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
