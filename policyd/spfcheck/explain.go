package spfcheck

import (
	"context"
	"fmt"
	"net"
	"strings"

	"blitiri.com.ar/go/spf"
)

// libResolver is the resolver handed to the SPF library. It adds what the
// library does not do:
//   - §4.6: a record with a syntax error anywhere is a permerror, even after
//     a matching mechanism (the library stops at the first match);
//   - §7.3: %{p} in domain-specs (the library expands it to "unknown");
//   - §7.1: domain-specs may hold "/" and ":" (the library's parser takes
//     them for CIDR lengths);
//
// and lets explain() replace records to find out which one decided. The
// last two work by rewriting the record the library sees: %{p} becomes its
// value, a domain-spec with "/" becomes an alias name that the lookups below
// map back.
type libResolver struct {
	res      Resolver
	env      *macroEnv         // for %{p}; nil leaves it to the library
	override map[string]string // lower-case domain -> record served instead
	problem  string            // first syntax problem met
	// localPart is set when a record used %{l} or %{s} (§7.3): the result
	// then depends on the sender's local part, not only on its domain.
	localPart bool
	aliases   map[string]string // alias -> real name
}

// permErrorRecord is served instead of an invalid record: the library
// answers permerror for it without a DNS query (an ip4 value that is no IP).
const permErrorRecord = "v=spf1 ip4:invalid-record"

const aliasSuffix = ".alias.spf.postkit.invalid"

func (l *libResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	name = l.unalias(name)
	if rec, ok := l.override[canonDomain(name)]; ok {
		return []string{rec}, nil
	}
	txts, err := l.res.LookupTXT(ctx, name)
	if err != nil {
		return txts, err
	}
	rec, n := selectRecord(txts)
	if n != 1 {
		return txts, nil // none, or several: the library decides (§4.5)
	}
	if usesLocalPart(rec) {
		l.localPart = true
	}
	if err := validateRecord(rec); err != nil {
		if l.problem == "" {
			l.problem = fmt.Sprintf("%s: %v", strings.TrimSuffix(name, "."), err)
		}
		return []string{permErrorRecord}, nil
	}
	return []string{l.rewrite(ctx, rec, canonDomain(name))}, nil
}

func (l *libResolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	return l.res.LookupMX(ctx, l.unalias(name))
}

// ipLookuper is implemented by *dnsclient.Resolver and *net.Resolver.
type ipLookuper interface {
	LookupIP(ctx context.Context, network, host string) ([]net.IP, error)
}

func (l *libResolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	host = l.unalias(host)
	// §5.3, §5.4: the a and mx mechanisms look up the address type of the
	// connection; for an IPv4 client that is A alone (the AAAA query could
	// only yield addresses the library then ignores). exists (§5.7) asks
	// for A whatever the client, which this keeps. For IPv6 clients both
	// types are asked, so that exists still sees A records.
	if ipr, ok := l.res.(ipLookuper); ok && l.env != nil && l.env.ip.Is4() {
		ips, err := ipr.LookupIP(ctx, "ip4", host)
		if err != nil {
			return nil, err
		}
		out := make([]net.IPAddr, len(ips))
		for i, ip := range ips {
			out[i] = net.IPAddr{IP: ip}
		}
		return out, nil
	}
	return l.res.LookupIPAddr(ctx, host)
}

func (l *libResolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	return l.res.LookupAddr(ctx, addr)
}

func (l *libResolver) unalias(name string) string {
	if real, ok := l.aliases[canonDomain(name)]; ok {
		return real
	}
	return name
}

// rewrite adapts a valid record for the library (see libResolver).
func (l *libResolver) rewrite(ctx context.Context, rec, domain string) string {
	if !strings.Contains(rec, "/") && !strings.Contains(strings.ToLower(rec), "%{p") {
		return rec
	}
	terms := strings.Split(rec, " ")
	for i, t := range terms {
		if l.env != nil && strings.Contains(strings.ToLower(t), "%{p") {
			t = l.expandP(ctx, t, domain)
		}
		terms[i] = l.aliasSlash(t)
	}
	return strings.Join(terms, " ")
}

// expandP replaces each %{p…} macro of term by its value.
func (l *libResolver) expandP(ctx context.Context, term, domain string) string {
	env := *l.env
	var name string
	env.ptr = func() string {
		if name == "" {
			name = validatedName(ctx, l.res, env.ip, domain)
		}
		return name
	}
	var b strings.Builder
	for i := 0; i < len(term); i++ {
		if term[i] == '%' && i+1 < len(term) {
			if term[i+1] == '{' && i+2 < len(term) && (term[i+2] == 'p' || term[i+2] == 'P') {
				if end := strings.IndexByte(term[i:], '}'); end > 0 {
					v, err := env.macro(term[i+2:i+end], domain, false)
					if err == nil {
						b.WriteString(strings.ReplaceAll(v, "%", "%%"))
						i += end
						continue
					}
				}
			}
			b.WriteString(term[i : i+2])
			i++
			continue
		}
		b.WriteByte(term[i])
	}
	return b.String()
}

// aliasSlash replaces a macro-free domain-spec holding "/" by an alias.
func (l *libResolver) aliasSlash(t string) string {
	q := ""
	if t != "" && strings.IndexByte("+-?~", t[0]) >= 0 {
		q, t = t[:1], t[1:]
	}
	name, arg, ok := strings.Cut(t, ":")
	if !ok {
		name, arg, ok = strings.Cut(t, "=")
		if !ok || !hasPrefixFold(name, "redirect") || len(name) != len("redirect") {
			return q + t
		}
		name += "="
	} else {
		name += ":"
	}
	spec, cidr := arg, ""
	switch strings.ToLower(name) {
	case "a:", "mx:":
		spec, cidr = splitDualCIDR(arg)
	case "include:", "exists:", "ptr:", "redirect=":
	default:
		return q + t
	}
	if !strings.Contains(spec, "/") || strings.Contains(spec, "%") {
		return q + t
	}
	if l.aliases == nil {
		l.aliases = map[string]string{}
	}
	alias := fmt.Sprintf("a%d%s", len(l.aliases), aliasSuffix)
	l.aliases[alias] = spec
	return q + name + alias + cidr
}

func canonDomain(d string) string { return strings.ToLower(strings.TrimSuffix(d, ".")) }

// selectRecord picks the SPF records among TXT strings (§4.5): those that
// are "v=spf1" alone or followed by a space, case-insensitively.
func selectRecord(txts []string) (string, int) {
	var rec string
	n := 0
	for _, t := range txts {
		if len(t) >= 6 && strings.EqualFold(t[:6], "v=spf1") && (len(t) == 6 || t[6] == ' ') {
			rec = t
			n++
		}
	}
	return rec, n
}

// record is a parsed record as far as explain() needs it.
type record struct {
	terms    []string
	redirect string // domain-spec of redirect=, "" if none
	exp      string // domain-spec of exp=, "" if none
}

func parseRecord(rec string) record {
	var r record
	for _, t := range strings.Fields(rec)[1:] {
		switch {
		case hasPrefixFold(t, "redirect="):
			r.redirect = t[len("redirect="):]
			continue
		case hasPrefixFold(t, "exp="):
			r.exp = t[len("exp="):]
		}
		r.terms = append(r.terms, t)
	}
	return r
}

func hasPrefixFold(s, p string) bool { return len(s) >= len(p) && strings.EqualFold(s[:len(p)], p) }

// explain returns the explanation of a fail result (§6.2). The exp= that
// counts is the one of the record whose mechanism failed, following
// redirect= (whose target's exp replaces the original's) but not include:
// (whose exp is ignored). The library evaluates and ignores exp=, so we find
// that record by evaluating each record of the redirect chain again without
// its redirect: if it still fails, a mechanism of its own failed.
func (c *Check) explain(ctx context.Context, env *macroEnv, domain string) string {
	def := fmt.Sprintf("%s is not allowed to send mail for %s", env.ip, domain)
	top := canonDomain(domain)
	d := top
	for depth := 0; depth < 10; depth++ {
		txts, err := c.res.LookupTXT(ctx, d)
		if err != nil {
			return def
		}
		rec, n := selectRecord(txts)
		if n != 1 {
			return def
		}
		r := parseRecord(rec)
		if r.redirect != "" {
			stripped := "v=spf1 " + strings.Join(r.terms, " ")
			over := map[string]string{d: stripped}
			if d != top {
				over[top] = "v=spf1 redirect=" + d
			}
			lr := &libResolver{res: c.res, override: over, env: env}
			res, _ := spf.CheckHostWithSender(net.IP(env.ip.AsSlice()), env.helo, env.sender,
				spf.WithResolver(lr), spf.WithContext(ctx))
			if Result(res) != Fail {
				next, err := env.expand(r.redirect, d, false)
				if err != nil {
					return def
				}
				d = canonDomain(truncateDomain(next))
				continue
			}
		}
		if r.exp == "" {
			return def
		}
		if text, ok := c.expText(ctx, env, r.exp, d); ok {
			return text
		}
		return def
	}
	return def
}

// expText fetches and expands the explanation named by an exp= domain-spec
// evaluated for domain. ok is false whenever §6.2 says to proceed as if
// there were no exp=: DNS error, not exactly one TXT record, syntax error,
// or text that is not 7-bit ASCII.
func (c *Check) expText(ctx context.Context, env *macroEnv, spec, domain string) (string, bool) {
	target, err := env.expand(spec, domain, false)
	if err != nil || target == "" {
		return "", false
	}
	target = truncateDomain(target)
	txts, err := c.res.LookupTXT(ctx, target)
	if err != nil || len(txts) != 1 {
		return "", false
	}
	for i := 0; i < len(txts[0]); i++ {
		if txts[0][i] >= 0x80 {
			return "", false
		}
	}
	env.ptr = func() string {
		name := validatedName(ctx, c.res, env.ip, domain)
		env.ptr = func() string { return name }
		return name
	}
	text, err := env.expand(txts[0], domain, true)
	if err != nil {
		return "", false
	}
	return sanitize(text, 300, false), true
}

// usesLocalPart reports whether a record holds a macro that expands to the
// sender's local part: %{l} or %{s} (§7.3; macro letters are
// case-insensitive, an upper-case letter only adds URL escaping).
func usesLocalPart(rec string) bool {
	for i := 0; i+2 < len(rec); i++ {
		if rec[i] == '%' && rec[i+1] == '{' {
			switch rec[i+2] {
			case 'l', 'L', 's', 'S':
				return true
			}
		}
	}
	return false
}
