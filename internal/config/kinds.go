package config

import (
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Every string of the model has a `kind:` tag naming what it is (a path, a
// listen address, a Postfix lookup table…), and Validate checks each value
// against its kind. Most of these strings end up verbatim in main.cf,
// master.cf, Dovecot's files or the Sieve script, where a line break would
// start a line the templates never wrote (a second "mynetworks =", say), and
// a space, comma, colon or percent sign would change how Postfix or Dovecot
// split the value. So:
//
//   - a control character (a line break, NUL, tab…) is refused in every
//     string, whatever its kind, before the kind is looked at;
//   - each kind allows only the characters and the shape its files need;
//   - TestEveryStringHasAKind fails when a string key has no kind, so a key
//     added later is validated by itself.
//
// A kind answers "" for a good value or says what is wrong; the hint says
// what to write instead. Empty values are not checked here: "required" is.
type kind struct {
	check func(s string) string
	hint  string
}

var kinds = map[string]kind{
	// enum values are checked against the enum tag.
	"enum": {check: func(string) string { return "" }},
	"path": {check: checkPath,
		hint: "write the full path, starting with /, using letters, digits and / . _ - + @ ~"},
	"listen": {check: checkListen,
		hint: "write a port (25) or host:port (127.0.0.1:2525, [::1]:2525)"},
	"addr": {check: checkAddr,
		hint: "write unix:/absolute/path or inet:127.0.0.1:PORT"},
	"hostname": {check: checkDomain("host name"),
		hint: "a fully qualified name such as mail.example.org"},
	"domain": {check: checkDomain("domain"),
		hint: "a domain such as example.org, without @ or scheme"},
	"email": {check: checkEmail,
		hint: "an address such as postmaster@example.org (letters, digits and . _ - + before the @)"},
	"address": {check: checkAddress,
		hint: "an address such as user@example.org, as in 'postkit db user list'"},
	"sender": {check: checkSender,
		hint: "an address such as billing@example.org, or @example.org for every address of the domain"},
	"user": {check: checkAccount("user"),
		hint: "a system account name such as postfix or vmail"},
	"group": {check: checkAccount("group"),
		hint: "a system group name such as postfix or postdrop"},
	"cidr": {check: checkCIDR,
		hint: "write a network such as 192.168.0.0/16 or an address"},
	"relayhost": {check: checkRelayHost,
		hint: "e.g. [smtp.example.net]:587, smtp.example.net or [192.0.2.1]:25; several separated by commas"},
	"maps": {check: checkMaps,
		hint: "Postfix lookup tables such as hash:/etc/postfix/transport or inline:{ example.test=smtp:[127.0.0.1]:2525 }, separated by commas"},
	"layout": {check: checkLayout,
		hint: "a path under mailbox.base_dir with Dovecot variables, e.g. %d/%n"},
	"folder": {check: checkFolder,
		hint: "a mailbox name such as Spam, Junk or INBOX/Spam: letters, digits and . _ - +, / between levels"},
	"name": {check: checkName("name"),
		hint: "letters, digits, dots, dashes and underscores, e.g. ORIGINATING or mail.example.org"},
	"selector": {check: checkName("selector"),
		hint: "letters, digits, dots, dashes"},
	"header": {check: checkHeaderName,
		hint: "a header field name such as X-Mailer"},
	"regexp": {check: checkRegexp,
		hint: "RE2 syntax, see https://github.com/google/re2/wiki/Syntax; write \\t or \\n for control characters"},
	"text": {check: func(string) string { return "" },
		hint: "one line of text"},
	"mode": {check: checkMode,
		hint: "e.g. 0660"},
	"delimiter": {check: checkDelimiter,
		hint: "one of + - _ . ="},
	"hostport": {check: checkHostPort,
		hint: "write host:port, e.g. 127.0.0.1:53 or [::1]:53"},
	"ip": {check: checkIP,
		hint: "an IPv4 or IPv6 address such as 192.0.2.25 or 2001:db8::25"},
	"testname": {check: checkTestName,
		hint: "capital letters, digits and _, e.g. RCVD_IN_ZEN"},
	"dnszone": {check: checkDNSZone,
		hint: "a zone with an optional answer filter, e.g. zen.spamhaus.org=127.0.0.[2..11]"},
	"addrglob": {check: checkAddrGlob,
		hint: "an address with * and ? as wildcards, e.g. *@exemple.fr or newsletter@*.exemple.fr"},
	"pgdsn": {check: checkPGDSN,
		hint: "postgres://USER@HOST:PORT/DBNAME, e.g. postgres://postkit@127.0.0.1:5432/postkit, without a password"},
	"signfrom": {check: checkSignFrom,
		hint: "user@example.org, *@example.org or *@*.example.org (the sub-domains)"},
	"hostglob": {check: checkHostGlob,
		hint: "a host name (its sub-domains match too), /regexp/ over the client name, an address, its first octets such as 192.0.2, or a network such as 192.0.2.0/24"},
	"rcptglob": {check: checkRcptGlob,
		hint: "user@, user@example.org, example.org or /regexp/"},
	"dnsbl": {check: checkDNSBLSite,
		hint: "e.g. zen.spamhaus.org=127.0.0.[2..11]*3 or list.dnswl.org=127.0.[0..255].[1..3]*-2"},
}

// badRune returns the first rune that no string in postkit.yaml may hold:
// C0 and C1 control characters (line breaks, NUL, tab, ESC…), DEL, the
// Unicode line and paragraph separators, and bytes that are not UTF-8.
func badRune(s string) (rune, bool) {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return r, true
			}
		}
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return r, true
		}
	}
	return 0, false
}

func describeRune(r rune) string {
	switch r {
	case '\n', '\r', '\u2028', '\u2029', '\u0085', '\v', '\f':
		return fmt.Sprintf("a line break (%U)", r)
	case 0:
		return "a NUL byte (U+0000)"
	case utf8.RuneError:
		return "bytes that are not UTF-8"
	}
	return fmt.Sprintf("a control character (%U)", r)
}

// checkString is the check every string gets: no control characters, then
// its kind.
func checkString(f *File, key, s string, sf reflect.StructField) *Error {
	if r, bad := badRune(s); bad {
		return f.Errorf(key, "write the value on one line, without control characters",
			"%s holds %s: postkit writes values into Postfix and Dovecot files, where it would start a line of its own", strconv.Quote(s), describeRune(r))
	}
	if s == "" {
		return nil
	}
	k, ok := kinds[sf.Tag.Get("kind")]
	if !ok { // TestEveryStringHasAKind keeps this from happening
		return f.Errorf(key, "", "no kind to check %q against (a bug in postkit)", s)
	}
	if msg := k.check(s); msg != "" {
		return f.Errorf(key, k.hint, "%s", msg)
	}
	return nil
}

// eachString calls fn for every string of v (a struct), list items
// included, with its dotted key and the field that holds it.
func eachString(v reflect.Value, key string, fn func(key, s string, sf reflect.StructField)) {
	walk(v, key, func(k string, fv reflect.Value, sf reflect.StructField) {
		switch {
		case fv.Kind() == reflect.String:
			fn(k, fv.String(), sf)
		case fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() == reflect.String:
			for j := 0; j < fv.Len(); j++ {
				fn(fmt.Sprintf("%s[%d]", k, j), fv.Index(j).String(), sf)
			}
		}
	})
}

// pathRE is the characters a path may hold: none of them means anything to
// Postfix (, and space split lists, $ expands), Dovecot (: separates
// mail_location options, % expands, < reads a file) or master.cf.
var pathRE = regexp.MustCompile(`^/[A-Za-z0-9/._+@~-]*$`)

func checkPath(s string) string {
	if !strings.HasPrefix(s, "/") {
		return fmt.Sprintf("%q is not an absolute path", s)
	}
	if !pathRE.MatchString(s) {
		return fmt.Sprintf("%q holds %s, which Postfix or Dovecot would read as syntax", s, firstOutside(s, pathRE))
	}
	return ""
}

// firstOutside names the first character of s that re rejects on its own.
func firstOutside(s string, re *regexp.Regexp) string {
	for _, r := range s {
		if r != '/' && !re.MatchString("/"+string(r)) {
			if r == ' ' {
				return "a space"
			}
			return strconv.QuoteRune(r)
		}
	}
	return "a character it may not"
}

func checkListen(s string) string {
	host, _, err := SplitListen(s)
	if err != nil {
		return fmt.Sprintf("%q: %v", s, err)
	}
	if a, err := netip.ParseAddr(host); err == nil && a.Zone() != "" {
		return fmt.Sprintf("%q: an address with a zone (%%%s) is not supported", s, a.Zone())
	}
	return ""
}

func checkAddr(s string) string {
	switch {
	case strings.HasPrefix(s, "unix:"):
		p := s[len("unix:"):]
		if !strings.HasPrefix(p, "/") {
			return fmt.Sprintf("%q: unix socket path must be absolute", s)
		}
		if msg := checkPath(p); msg != "" {
			return fmt.Sprintf("%q: %s", s, msg)
		}
		return ""
	case strings.HasPrefix(s, "inet:"):
		hp := s[len("inet:"):]
		if !strings.Contains(hp, ":") {
			return fmt.Sprintf("%q: give host and port", s)
		}
		if msg := checkListen(hp); msg != "" {
			return msg
		}
		return ""
	}
	return fmt.Sprintf("%q: must start with unix: or inet:", s)
}

func checkDomain(what string) func(string) string {
	return func(s string) string {
		if !ValidDomain(s) {
			return fmt.Sprintf("%q is not a valid %s", s, what)
		}
		return ""
	}
}

// emailLocalRE is narrower than ValidAddress: the address goes into
// Dovecot's postmaster_address, where % expands and # and quotes are syntax.
var emailLocalRE = regexp.MustCompile(`^[A-Za-z0-9._+-]+$`)

func checkEmail(s string) string {
	i := strings.LastIndexByte(s, '@')
	if !ValidAddress(s) || !emailLocalRE.MatchString(s[:i]) {
		return fmt.Sprintf("%q is not a valid address", s)
	}
	return ""
}

// checkAddress takes any address the database can hold (sqlmaps quotes it
// where it goes into a query).
func checkAddress(s string) string {
	if !ValidAddress(s) {
		return fmt.Sprintf("%q is not an address", s)
	}
	return ""
}

// checkSender takes an address, or @domain for every address of a domain.
func checkSender(s string) string {
	if d, ok := strings.CutPrefix(s, "@"); ok {
		if !ValidDomain(d) {
			return fmt.Sprintf("%q is not @ and a valid domain", s)
		}
		return ""
	}
	if ValidDomain(s) {
		return fmt.Sprintf("%q is a domain: write @%s for every address of the domain", s, s)
	}
	return checkAddress(s)
}

var accountRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9._-]{0,31}$`)

func checkAccount(what string) func(string) string {
	return func(s string) string {
		if !accountRE.MatchString(s) {
			return fmt.Sprintf("%q is not a valid %s name", s, what)
		}
		return ""
	}
}

func checkCIDR(s string) string {
	if _, err := ParseCIDR(s); err != nil {
		return fmt.Sprintf("%q: %v", s, err)
	}
	if strings.TrimSpace(s) != s {
		return fmt.Sprintf("%q has spaces around it", s)
	}
	return ""
}

// A relayhost destination (postconf(5) relayhost): [host]:port, [address]:port,
// host:port, with the port optional; Postfix 3.5 and later accept a list.
var (
	labelRE = regexp.MustCompile(`^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`)
	portRE  = regexp.MustCompile(`^([0-9]{1,5}|[a-z][a-z0-9-]*)$`)
)

func checkRelayHost(s string) string {
	for _, d := range splitList(s) {
		if msg := checkNextHop(d); msg != "" {
			return fmt.Sprintf("%q: %s", s, msg)
		}
	}
	return ""
}

func checkNextHop(d string) string {
	host, port := d, ""
	if strings.HasPrefix(d, "[") {
		end := strings.IndexByte(d, ']')
		if end < 0 {
			return fmt.Sprintf("%q has no closing ]", d)
		}
		host, port = d[1:end], strings.TrimPrefix(d[end+1:], ":")
		if rest := d[end+1:]; rest != "" && !strings.HasPrefix(rest, ":") {
			return fmt.Sprintf("%q: only :port may follow ]", d)
		}
		if v6, ok := strings.CutPrefix(host, "ipv6:"); ok {
			if a, err := netip.ParseAddr(v6); err != nil || !a.Is6() || a.Zone() != "" {
				return fmt.Sprintf("%q: %q is not an IPv6 address", d, v6)
			}
			host = ""
		}
	} else if i := strings.LastIndexByte(d, ':'); i >= 0 {
		host, port = d[:i], d[i+1:]
	}
	if host != "" && !labelRE.MatchString(host) {
		return fmt.Sprintf("%q is not a host name or address", host)
	}
	if port != "" || strings.HasSuffix(d, ":") {
		n, err := strconv.Atoi(port)
		if !portRE.MatchString(port) || (err == nil && (n < 1 || n > 65535)) {
			return fmt.Sprintf("port %q must be a number from 1 to 65535 or a service name", port)
		}
	}
	return ""
}

// splitList splits a Postfix list (commas and/or spaces) outside braces.
func splitList(s string) []string {
	var out []string
	depth, start := 0, 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) {
			switch s[i] {
			case '{':
				depth++
				continue
			case '}':
				depth--
				continue
			}
			if depth > 0 || (s[i] != ',' && s[i] != ' ') {
				continue
			}
		}
		if i > start {
			out = append(out, s[start:i])
		}
		start = i + 1
	}
	return out
}

var (
	mapTypeRE   = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	socketMapRE = regexp.MustCompile(`^(unix:/[A-Za-z0-9/._+@~-]*|inet:[A-Za-z0-9.:\[\]-]+)(:[A-Za-z0-9_.-]+)?$`)
)

// checkMaps checks a list of Postfix lookup tables (DATABASE_README):
// type:/absolute/path, type:{ inline text }, proxy:type:name, or a socket
// map's unix:/path or inet:host:port.
func checkMaps(s string) string {
	items := splitList(s)
	if len(items) == 0 {
		return fmt.Sprintf("%q names no lookup table", s)
	}
	for _, m := range items {
		if msg := checkMap(m); msg != "" {
			return fmt.Sprintf("%q: %s", s, msg)
		}
	}
	if strings.Count(s, "{") != strings.Count(s, "}") {
		return fmt.Sprintf("%q: unbalanced braces", s)
	}
	return ""
}

func checkMap(m string) string {
	typ, name, ok := strings.Cut(m, ":")
	if !ok || !mapTypeRE.MatchString(typ) {
		return fmt.Sprintf("%q is not type:name", m)
	}
	switch {
	case strings.HasPrefix(name, "{"):
		if !strings.HasSuffix(name, "}") || braceDepthEnds(name) != len(name) {
			return fmt.Sprintf("%q: the text in braces must end the table", m)
		}
		return ""
	case typ == "proxy":
		return checkMap(name)
	case typ == "socketmap" || typ == "tcp":
		if !socketMapRE.MatchString(name) {
			return fmt.Sprintf("%q: want unix:/path or inet:host:port", m)
		}
		return ""
	}
	if msg := checkPath(name); msg != "" {
		return fmt.Sprintf("%q: %s", m, msg)
	}
	return ""
}

// braceDepthEnds returns the index just after the brace that closes s[0].
func braceDepthEnds(s string) int {
	depth := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '{':
			depth++
		case '}':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
	}
	return -1
}

// A Dovecot mail path template (doc.dovecot.org "Variables"): plain segments
// and %-variables such as %d, %Ln, %2.256Hu or %{user}.
var (
	layoutVarRE = regexp.MustCompile(`%([0-9]+(\.[0-9]+)?)?[A-Za-z]*[A-Za-z]|%\{[a-z_]+\}|%%`)
	layoutRE    = regexp.MustCompile(`^[A-Za-z0-9._+-]+$`)
)

func checkLayout(s string) string {
	if strings.HasPrefix(s, "/") {
		return fmt.Sprintf("%q starts with /: it is a path under mailbox.base_dir", s)
	}
	for _, seg := range strings.Split(s, "/") {
		plain := layoutVarRE.ReplaceAllString(seg, "x")
		if seg == "" || seg == "." || seg == ".." || !layoutRE.MatchString(plain) {
			return fmt.Sprintf("%q: segment %q is not a name or Dovecot variable", s, seg)
		}
	}
	return ""
}

// checkFolder checks an IMAP mailbox name as it appears unquoted in
// 15-mailboxes.conf and inside a Sieve string: letters of any script, digits,
// . _ - +, and / between hierarchy levels (the namespace separator).
func checkFolder(s string) string {
	if len(s) > 255 {
		return fmt.Sprintf("%q is longer than 255 bytes", s)
	}
	for _, level := range strings.Split(s, "/") {
		if level == "" || level == "." || level == ".." {
			return fmt.Sprintf("%q: empty, . or .. level", s)
		}
		for _, r := range level {
			if !unicode.IsLetter(r) && !unicode.IsDigit(r) && !unicode.Is(unicode.Mn, r) && !strings.ContainsRune("._-+", r) {
				return fmt.Sprintf("%q holds %s, which Dovecot's configuration or Sieve would read as syntax", s, quoteRune(r))
			}
		}
	}
	return ""
}

func quoteRune(r rune) string {
	if r == ' ' {
		return "a space"
	}
	return strconv.QuoteRune(r)
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$`)

func checkName(what string) func(string) string {
	return func(s string) string {
		if !nameRE.MatchString(s) {
			return fmt.Sprintf("%q is not a valid %s", s, what)
		}
		return ""
	}
}

// checkHeaderName checks a field name (RFC 5322 §3.6.8: printable ASCII but
// the colon).
func checkHeaderName(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] < 33 || s[i] > 126 || s[i] == ':' {
			return fmt.Sprintf("%q is not a header field name", s)
		}
	}
	return ""
}

func checkRegexp(s string) string {
	if _, err := regexp.Compile(s); err != nil {
		return fmt.Sprintf("bad regular expression: %v", err)
	}
	return ""
}

var modeRE = regexp.MustCompile(`^0?[0-7]{3}$`)

func checkMode(s string) string {
	if !modeRE.MatchString(s) {
		return fmt.Sprintf("%q is not an octal file mode", s)
	}
	return ""
}

func checkDelimiter(s string) string {
	if len(s) > 1 {
		return fmt.Sprintf("%q is longer than one character", s)
	}
	if !strings.Contains("+-_.=", s) {
		return fmt.Sprintf("%q is not a delimiter Postfix and Dovecot agree on", s)
	}
	return ""
}

func checkIP(s string) string {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" || a.Is4In6() {
		return fmt.Sprintf("%q is not an IPv4 or IPv6 address", s)
	}
	return ""
}

func checkHostPort(s string) string {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Sprintf("%q: %v", s, err)
	}
	if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
		return fmt.Sprintf("%q: port %q must be a number from 1 to 65535", s, p)
	}
	if a, err := netip.ParseAddr(h); err == nil {
		if a.Zone() != "" {
			return fmt.Sprintf("%q: an address with a zone is not supported", s)
		}
		return ""
	}
	if !labelRE.MatchString(h) {
		return fmt.Sprintf("%q: %q is not a host name or address", s, h)
	}
	return ""
}

// The shape of a policy.dnsbl.sites entry; the policy daemon parses it
// fully (dnsbl.ParseSite) when it starts.
var dnsblRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+(=[0-9.\[\];]+)?(\*-?[0-9]+)?$`)

func checkDNSBLSite(s string) string {
	if !dnsblRE.MatchString(s) {
		return fmt.Sprintf("%q is not a DNS list site", s)
	}
	return ""
}

// An address pattern of whitelist_from and friends: an address whose
// local part and domain may hold * and ? wildcards.
var addrGlobRE = regexp.MustCompile(`^[A-Za-z0-9._+=*?-]+@[A-Za-z0-9.*?-]+$`)

func checkAddrGlob(s string) string {
	if !addrGlobRE.MatchString(s) {
		if !strings.Contains(s, "@") {
			return fmt.Sprintf("%q has no @: write *@%s for every address of a domain", s, s)
		}
		return fmt.Sprintf("%q is not an address pattern", s)
	}
	return ""
}

var testNameRE = regexp.MustCompile(`^[A-Z][A-Z0-9_]{0,63}$`)

// checkTestName checks a spam test's name as X-Spam-Status lists it.
func checkTestName(s string) string {
	if !testNameRE.MatchString(s) {
		return fmt.Sprintf("%q is not a test name", s)
	}
	return ""
}

// The shape of a spam DNS list: a policy.dnsbl.sites entry without the
// weight (a score of its own says that); the engine parses it fully
// (dnsbl.ParseSite) when the milter starts.
var dnsZoneRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+(=[0-9.\[\];]+)?$`)

func checkDNSZone(s string) string {
	if strings.Contains(s, "*") {
		return fmt.Sprintf("%q has a weight: give the list a score instead", s)
	}
	if !dnsZoneRE.MatchString(s) {
		return fmt.Sprintf("%q is not a DNS list zone", s)
	}
	return ""
}
