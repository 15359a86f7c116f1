package greylist

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// ClientList holds clients never greylisted, written as postgrey's
// whitelist_clients file writes them (Debian ships one in /etc/postgrey),
// one entry a line, "#" starting a comment:
//
//	example.com          the client name example.com, or any name ending in .example.com
//	/^mx[0-9]+\.a\.org$/ a regular expression over the client name (case-insensitive)
//	192.0.2.7, 192.0.2   an address, or its first octets (every address under them)
//	192.0.2.0/24, 2001:db8::/32, 2001:db8::1
//	                     a network or an IPv6 address
//
// Names are Postfix's verified client_name; a client without one
// ("unknown") matches address entries only. Regular expressions are RE2,
// which reads the expressions postgrey's lists use (Perl-only constructs
// such as look-ahead are refused with the line).
type ClientList struct {
	names []string // lowercase, no leading or trailing dot
	res   []*regexp.Regexp
	nets  []netip.Prefix
}

// Len is the number of entries.
func (l *ClientList) Len() int {
	if l == nil {
		return 0
	}
	return len(l.names) + len(l.res) + len(l.nets)
}

// Add parses one entry; the error says what forms exist.
func (l *ClientList) Add(entry string) error {
	e := strings.TrimSpace(entry)
	switch {
	case e == "":
		return nil
	case strings.HasPrefix(e, "/"):
		re, err := slashRegexp(e)
		if err != nil {
			return err
		}
		l.res = append(l.res, re)
		return nil
	}
	if p, err := netip.ParsePrefix(e); err == nil {
		l.nets = append(l.nets, p.Masked())
		return nil
	}
	if a, err := netip.ParseAddr(e); err == nil {
		l.nets = append(l.nets, netip.PrefixFrom(a, a.BitLen()))
		return nil
	}
	if p, ok := partialIPv4(e); ok {
		l.nets = append(l.nets, p)
		return nil
	}
	name := strings.ToLower(strings.Trim(e, "."))
	if name == "" || strings.ContainsAny(name, " \t/@") {
		return fmt.Errorf("%q is not a client: write a host name, an address or network, or /regexp/", entry)
	}
	l.names = append(l.names, name)
	return nil
}

// partialIPv4 reads "192", "192.0" or "192.0.2" as the network of the
// addresses that start with those octets (postgrey matches them as a
// prefix that ends at an octet boundary).
func partialIPv4(s string) (netip.Prefix, bool) {
	parts := strings.Split(s, ".")
	if len(parts) > 3 {
		return netip.Prefix{}, false
	}
	var b [4]byte
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 255 || p == "" || len(p) > 3 {
			return netip.Prefix{}, false
		}
		b[i] = byte(n)
	}
	return netip.PrefixFrom(netip.AddrFrom4(b), 8*len(parts)), true
}

// slashRegexp compiles "/RE/" case-insensitively.
func slashRegexp(e string) (*regexp.Regexp, error) {
	if len(e) < 3 || !strings.HasSuffix(e, "/") {
		return nil, fmt.Errorf("%q starts a /regexp/ but does not end with /", e)
	}
	re, err := regexp.Compile("(?i)" + e[1:len(e)-1])
	if err != nil {
		return nil, fmt.Errorf("%q: %v (RE2 syntax)", e, err)
	}
	return re, nil
}

// Match reports whether the client (its verified name, "" or "unknown"
// when it has none, and address) is listed.
func (l *ClientList) Match(name string, ip netip.Addr) bool {
	if l == nil {
		return false
	}
	ip = ip.Unmap()
	for _, p := range l.nets {
		if p.Contains(ip) {
			return true
		}
	}
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if name == "" || name == "unknown" {
		return false
	}
	for _, n := range l.names {
		if name == n || strings.HasSuffix(name, "."+n) {
			return true
		}
	}
	for _, re := range l.res {
		if re.MatchString(name) {
			return true
		}
	}
	return false
}

// RecipientList holds recipients never greylisted, written as postgrey's
// whitelist_recipients file writes them:
//
//	postmaster@          that local part in every domain
//	user@example.com     that address
//	example.com          every address of example.com and of its sub-domains
//	/^abuse[-+.]?/       a regular expression over the address (case-insensitive)
//
// A recipient with an address extension (user+tag@) is also looked up
// without it, with the delimiter given to Match.
type RecipientList struct {
	locals []string // "postmaster"
	addrs  []string // "user@example.com"
	doms   []string // "example.com"
	res    []*regexp.Regexp
}

// Len is the number of entries.
func (l *RecipientList) Len() int {
	if l == nil {
		return 0
	}
	return len(l.locals) + len(l.addrs) + len(l.doms) + len(l.res)
}

// Add parses one entry.
func (l *RecipientList) Add(entry string) error {
	e := strings.ToLower(strings.TrimSpace(entry))
	switch {
	case e == "":
	case strings.HasPrefix(e, "/"):
		re, err := slashRegexp(strings.TrimSpace(entry))
		if err != nil {
			return err
		}
		l.res = append(l.res, re)
	case strings.ContainsAny(e, " \t"):
		return fmt.Errorf("%q is not a recipient: one entry a line", entry)
	case strings.HasSuffix(e, "@") && strings.Count(e, "@") == 1 && len(e) > 1:
		l.locals = append(l.locals, strings.TrimSuffix(e, "@"))
	case strings.Count(e, "@") == 1 && !strings.HasPrefix(e, "@"):
		l.addrs = append(l.addrs, e)
	case !strings.Contains(e, "@") && strings.Contains(strings.Trim(e, "."), "."):
		l.doms = append(l.doms, strings.Trim(e, "."))
	default:
		return fmt.Errorf("%q is not a recipient: write user@, user@example.com, example.com or /regexp/", entry)
	}
	return nil
}

// Match reports whether the recipient is listed; delim is the recipient
// delimiter ("" for none).
func (l *RecipientList) Match(rcpt, delim string) bool {
	if l == nil {
		return false
	}
	rcpt = strings.ToLower(strings.TrimSpace(rcpt))
	cands := []string{rcpt}
	if i := strings.LastIndexByte(rcpt, '@'); i > 0 && delim != "" {
		if j := strings.Index(rcpt[:i], delim); j > 0 {
			cands = append(cands, rcpt[:j]+rcpt[i:])
		}
	}
	for _, a := range cands {
		i := strings.LastIndexByte(a, '@')
		local, dom := a, ""
		if i >= 0 {
			local, dom = a[:i], a[i+1:]
		}
		for _, x := range l.addrs {
			if a == x {
				return true
			}
		}
		for _, x := range l.locals {
			if local == x && i >= 0 {
				return true
			}
		}
		for _, d := range l.doms {
			if dom == d || strings.HasSuffix(dom, "."+d) {
				return true
			}
		}
		for _, re := range l.res {
			if re.MatchString(a) {
				return true
			}
		}
	}
	return false
}

// readList reads a postgrey list file: "#" starts a comment, blank lines
// are skipped, each other line is one entry given to add. Errors carry
// file:line.
func readList(r io.Reader, file string, add func(string) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		if strings.TrimSpace(line) == "" {
			continue
		}
		if err := add(line); err != nil {
			return fmt.Errorf("greylist: %s:%d: %w", file, n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("greylist: %s:%d: %w", file, n+1, err)
	}
	return nil
}

// ReadClientFile adds the entries of a whitelist_clients file to l.
func (l *ClientList) ReadClientFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("greylist: client list: %w", err)
	}
	defer f.Close()
	return readList(f, path, l.Add)
}

// ReadRecipientFile adds the entries of a whitelist_recipients file to l.
func (l *RecipientList) ReadRecipientFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("greylist: recipient list: %w", err)
	}
	defer f.Close()
	return readList(f, path, l.Add)
}
