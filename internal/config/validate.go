package config

import (
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/postkit/postkit/internal/mailaddr"
)

// normalize lower-cases names and drops their final dot, before Validate.
func (c *Config) normalize() {
	c.Hostname = strings.ToLower(strings.TrimSuffix(c.Hostname, "."))
	for i, d := range c.Domains {
		c.Domains[i] = strings.ToLower(strings.TrimSuffix(d, "."))
	}
	// One name per rate-limit key, in the file as on the command line
	// (--ratelimit): the policy protocol's attribute names are accepted.
	for i := range c.Policy.RateLimit.Limits {
		l := &c.Policy.RateLimit.Limits[i]
		switch l.Key {
		case "sasl_username":
			l.Key = "sasl_user"
		case "client_address":
			l.Key = "client_ip"
		}
	}
}

// applyDerived fills defaults that depend on other values. Parse calls it
// once Validate has passed, so that a bad value is reported once, at its own
// key, and not again at every key derived from it.
func (c *Config) applyDerived() {
	if c.Origin == "" {
		c.Origin = c.Hostname
	}
	if c.Postmaster == "" && len(c.Domains) > 0 {
		c.Postmaster = "postmaster@" + c.Domains[0]
	}
	for i := range c.Milter.DKIM.Keys {
		k := &c.Milter.DKIM.Keys[i]
		k.Domain = strings.ToLower(strings.TrimSuffix(k.Domain, "."))
	}
	for i := range c.SenderLogins {
		g := &c.SenderLogins[i]
		g.Sender = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(g.Sender), "."))
		for j, l := range g.Logins {
			g.Logins[j] = strings.ToLower(strings.TrimSpace(l))
		}
	}
	if c.Milter.DKIM.AuthservID == "" {
		c.Milter.DKIM.AuthservID = c.Hostname
	}
	if c.Milter.Spam.Bayes.Path == "" {
		c.Milter.Spam.Bayes.Path = strings.TrimSuffix(c.Paths.PostkitRun, "/") + "/bayes.sqlite"
	}
	if c.Milter.DMARC.Report.Path == "" {
		c.Milter.DMARC.Report.Path = strings.TrimSuffix(c.Paths.PostkitRun, "/") + "/dmarc.sqlite"
	}
	if c.Policy.StateFile == "" {
		c.Policy.StateFile = strings.TrimSuffix(c.Paths.PostkitRun, "/") + "/policyd.sqlite"
	}
}

// ValidDomain reports whether s is a syntactically valid domain name with at
// least two labels (RFC 1035 §2.3.1, with digits allowed first as RFC 1123 says).
func ValidDomain(s string) bool { return mailaddr.ValidDomain(s) }

// ValidAddress reports whether s is local@domain with a dot-atom local part.
func ValidAddress(s string) bool { return mailaddr.ValidAddress(s) }

// ParseCIDR parses a network, accepting a bare address as a host route.
func ParseCIDR(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "[") { // Postfix writes [::1]/128
		s = strings.Replace(strings.TrimPrefix(s, "["), "]", "", 1)
	}
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return p, err
	}
	if p.Masked() != p {
		return p, fmt.Errorf("host bits set: did you mean %s?", p.Masked())
	}
	return p, nil
}

// SplitListen splits a listener ("25", "127.0.0.1:2525", "[::1]:25") into
// host and port; host is "" for every interface.
func SplitListen(s string) (host string, port int, err error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n < 1 || n > 65535 {
			return "", 0, fmt.Errorf("port %d out of range 1-65535", n)
		}
		return "", n, nil
	}
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 {
		return "", 0, fmt.Errorf("port %q must be a number from 1 to 65535", p)
	}
	if h != "" && h != "*" {
		if _, err := netip.ParseAddr(h); err != nil {
			return "", 0, fmt.Errorf("host %q must be an IP address", h)
		}
	}
	if h == "*" {
		h = ""
	}
	return h, n, nil
}

// Validate checks every value; f gives positions for the messages.
func (c *Config) Validate(f *File) error {
	var errs Errors
	add := func(e *Error) { errs = append(errs, e) }
	// Struct-tag driven checks: required and enum on every field, then every
	// string (list items too) against its kind (kinds.go).
	bad := map[string]bool{} // keys already refused: no second message about them
	walk(reflect.ValueOf(c).Elem(), "", func(key string, fv reflect.Value, sf reflect.StructField) {
		_, written := f.pos[key]
		number := fv.Kind() == reflect.Int || fv.Kind() == reflect.Int64
		empty := fv.IsZero() || (fv.Kind() == reflect.Slice && fv.Len() == 0)
		switch {
		case sf.Tag.Get("required") != "true" || !empty:
		case f.builtin && (key == "hostname" || key == "domains"):
		case number && written: // a 0 written gets the value's own message
		default:
			hint := "see 'postkit config example'"
			if fv.Kind() == reflect.Slice {
				hint = "give at least one item; " + hint
			}
			add(f.Errorf(key, hint, "is required"))
			bad[key] = true
		}
	})
	eachString(reflect.ValueOf(c).Elem(), "", func(key, s string, sf reflect.StructField) {
		if e := checkString(f, key, s, sf); e != nil {
			add(e)
			bad[key] = true
			return
		}
		if enum := sf.Tag.Get("enum"); enum != "" && s != "" && !slices.Contains(strings.Split(enum, ","), s) {
			add(f.Errorf(key, "one of: "+strings.ReplaceAll(enum, ",", ", "), "%q is not allowed", s))
		}
	})
	for _, d := range c.Domains {
		if d == c.Hostname {
			add(f.Errorf("hostname", "use a host name such as mail."+d+": Postfix cannot treat one domain as both local and virtual", "%q is also a mail domain", d))
		}
	}
	seen := map[string]bool{}
	for i, d := range c.Domains {
		if seen[d] {
			add(f.Errorf(fmt.Sprintf("domains[%d]", i), "remove the duplicate", "domain %q listed twice", d))
		}
		seen[d] = true
	}
	if c.MessageSizeLimit < 1024 {
		add(f.Errorf("message_size_limit", "the reference installation uses 31457280 (30 MiB)", "%d bytes is too small", c.MessageSizeLimit))
	}
	if c.Mailbox.UID < 1 || c.Mailbox.GID < 1 {
		add(f.Errorf("mailbox.uid", "use a dedicated account such as vmail (3000)", "mailbox uid and gid must be above 0"))
	}
	if pp := c.Database.PasswordPolicy; pp.MinLength < 1 || pp.MaxLength < pp.MinLength {
		add(f.Errorf("database.password_policy.min_length", "e.g. min_length: 12, max_length: 1024", "min_length must be at least 1 and at most max_length (%d, %d)", pp.MinLength, pp.MaxLength))
	}
	if !strings.Contains(c.Mailbox.Layout, "%") {
		add(f.Errorf("mailbox.layout", "e.g. %d/%n", "%q has no %%d/%%n variable: every user would share one Maildir", c.Mailbox.Layout))
	}
	if c.Postfix.Chroot && !bad["paths.postfix_queue"] {
		q := strings.TrimSuffix(c.Paths.PostfixQueue, "/") + "/"
		for key, p := range map[string]string{"listeners.lmtp": c.Listeners.LMTP, "listeners.auth": c.Listeners.Auth} {
			if p != "" && !bad[key] && !strings.HasPrefix(p, q) {
				add(f.Errorf(key, "put it under "+q+"private/ or set postfix.chroot: false", "%q is outside the Postfix chroot %s: chrooted smtpd cannot reach it", p, q))
			}
		}
		for key, a := range map[string]string{"milter.listen": c.Milter.Listen, "policy.listen": c.Policy.Listen} {
			if strings.HasPrefix(a, "unix:") && !bad[key] && !strings.HasPrefix(strings.TrimPrefix(a, "unix:"), q) &&
				((key == "milter.listen" && c.Milter.Enabled) || (key == "policy.listen" && c.Policy.Enabled)) {
				add(f.Errorf(key, "put the socket under "+q+" or use inet:127.0.0.1:PORT", "%q is outside the Postfix chroot %s: chrooted smtpd cannot reach it", a, q))
			}
		}
	}
	for i, r := range c.Milter.Scrub.Rules {
		if r.Action == "replace" && r.With == "" {
			add(f.Errorf(fmt.Sprintf("milter.scrub.rules[%d].with", i), "one line of text, or use action delete", "action replace needs a one-line 'with' value"))
		}
	}
	// The daemons' settings are checked whether or not the daemon is
	// enabled: they also run from flags alone (LoadDaemon).
	if c.Policy.TimeBudget.D() <= 0 {
		add(f.Errorf("policy.time_budget", "e.g. 10s", "must be positive"))
	}
	if c.Milter.Drain.D() <= 0 {
		add(f.Errorf("milter.drain", "e.g. 30s", "must be positive"))
	}
	for _, e := range c.validateSpam(f, bad) {
		add(e)
	}
	for _, e := range c.validatePolicyChecks(f, bad) {
		add(e)
	}
	for _, e := range c.validateState(f) {
		add(e)
	}
	for _, e := range c.validateMailbox(f, bad) {
		add(e)
	}
	for _, e := range c.validateDatabase(f, bad) {
		add(e)
	}
	for _, e := range c.validateClients(f) {
		add(e)
	}
	for _, e := range c.validateExtra(f, bad) {
		add(e)
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// walk calls fn for every leaf field (and every slice) of a struct, with its dotted key.
func walk(v reflect.Value, key string, fn func(key string, fv reflect.Value, sf reflect.StructField)) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		name := yamlName(sf)
		if name == "" {
			continue
		}
		k := join(key, name)
		fv := v.Field(i)
		switch {
		case fv.Kind() == reflect.Struct:
			walk(fv, k, fn)
		case fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() == reflect.Struct:
			fn(k, fv, sf)
			for j := 0; j < fv.Len(); j++ {
				walk(fv.Index(j), fmt.Sprintf("%s[%d]", k, j), fn)
			}
		default:
			fn(k, fv, sf)
		}
	}
}

// RelayNetwork is a network whose clients may relay without authenticating,
// with the key it comes from.
type RelayNetwork struct {
	Key    string // e.g. trusted_networks[2]
	Prefix netip.Prefix
}

// RelayNetworks lists every network the generated Postfix lets relay without
// authentication, as Postfix will read them: mynetworks (trusted_networks),
// which smtpd_relay_restrictions permits with permit_mynetworks. A template
// that adds another permit list to main.cf or master.cf must add its
// networks here, so that OpenRelay judges them too.
func (c *Config) RelayNetworks() []RelayNetwork {
	var out []RelayNetwork
	for i, n := range c.TrustedNetworks {
		if p, err := ParseCIDR(string(n)); err == nil {
			out = append(out, RelayNetwork{fmt.Sprintf("trusted_networks[%d]", i), p})
		}
	}
	return out
}

// The largest union of relay networks that is not an open relay: a /8 of
// IPv4, a /16 of IPv6.
const (
	maxRelayBits4 = 32 - 8
	maxRelayBits6 = 128 - 16
)

// OpenRelay returns an error when a network that may relay without
// authentication (RelayNetworks) is larger than a /8 of IPv4 or a /16 of
// IPv6, or when together they cover more addresses than that: the whole
// Internet, or a large part of it, could then send mail anywhere through
// this server. The union is judged, overlaps counted once, so 256 separate
// /8 networks are all of IPv4; an IPv4-mapped IPv6 network (::ffff:0:0/96)
// counts as the IPv4 addresses it maps. Loopback addresses (127.0.0.0/8,
// ::1) are left out of the count: no other host can connect from them.
func (c *Config) OpenRelay(f *File) error {
	hint := "list only your own networks; pass --i-know-this-is-an-open-relay to generate anyway"
	nets := c.RelayNetworks()
	for _, n := range nets {
		if (n.Prefix.Addr().Is4() && n.Prefix.Bits() < 32-maxRelayBits4) || (n.Prefix.Addr().Is6() && n.Prefix.Bits() < 128-maxRelayBits6) {
			e := f.Errorf(n.Key, hint, "%s makes this server an open relay: anyone in it may send mail anywhere", n.Prefix)
			return fmt.Errorf("%w: %w", ErrOpenRelay, e)
		}
	}
	limit4 := new(big.Int).Lsh(big.NewInt(1), maxRelayBits4)
	limit6 := new(big.Int).Lsh(big.NewInt(1), maxRelayBits6)
	tooMany := func(nets []RelayNetwork) (family string, n *big.Int, most string) {
		v4, v6 := relayCoverage(nets)
		switch {
		case v4.Cmp(limit4) > 0:
			return "IPv4", v4, "/8"
		case v6.Cmp(limit6) > 0:
			return "IPv6", v6, "/16"
		}
		return "", nil, ""
	}
	family, n, most := tooMany(nets)
	if family == "" {
		return nil
	}
	for i := range nets { // one network alone (::ffff:0:0/96): name it
		if fam, n, most := tooMany(nets[i : i+1]); fam != "" {
			e := f.Errorf(nets[i].Key, hint, "%s covers %s %s addresses, more than a %s: this server would be an open relay for all of them", nets[i].Prefix, n, fam, most)
			return fmt.Errorf("%w: %w", ErrOpenRelay, e)
		}
	}
	e := f.Errorf("trusted_networks", hint,
		"together these networks cover %s %s addresses, more than a %s: this server would be an open relay for all of them",
		n, family, most)
	return fmt.Errorf("%w: %w", ErrOpenRelay, e)
}

var (
	mapped4    = netip.MustParsePrefix("::ffff:0.0.0.0/96")
	loopback4  = netip.MustParsePrefix("127.0.0.0/8")
	loopback6  = netip.MustParsePrefix("::1/128")
	allOfIPv4  = netip.MustParsePrefix("0.0.0.0/0")
	loopbacks4 = []addrRange{rangeOf(loopback4)}
	loopbacks6 = []addrRange{rangeOf(loopback6)}
)

// relayCoverage counts the IPv4 and IPv6 addresses in the union of nets,
// loopback left out.
func relayCoverage(nets []RelayNetwork) (v4, v6 *big.Int) {
	var r4, r6 []addrRange
	for _, n := range nets {
		p := n.Prefix.Masked()
		if p.Addr().Is4() {
			r4 = append(r4, rangeOf(p))
			continue
		}
		r6 = append(r6, rangeOf(p))
		// The IPv4 addresses an IPv6 network maps (::ffff:a.b.c.d).
		switch {
		case p.Bits() <= mapped4.Bits() && p.Contains(mapped4.Addr()):
			r4 = append(r4, rangeOf(allOfIPv4))
		case p.Bits() > mapped4.Bits() && mapped4.Contains(p.Addr()):
			r4 = append(r4, rangeOf(netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-mapped4.Bits())))
		}
	}
	v4 = new(big.Int).Sub(unionSize(r4), overlap(r4, loopbacks4))
	v6 = new(big.Int).Sub(unionSize(r6), overlap(r6, loopbacks6))
	return v4, v6
}

// overlap is the number of addresses of the union of rs that lie in the
// union of in.
func overlap(rs, in []addrRange) *big.Int {
	var cut []addrRange
	for _, r := range rs {
		for _, w := range in {
			lo, hi := r.lo, r.hi
			if w.lo.Cmp(lo) > 0 {
				lo = w.lo
			}
			if w.hi.Cmp(hi) < 0 {
				hi = w.hi
			}
			if lo.Cmp(hi) <= 0 {
				cut = append(cut, addrRange{lo, hi})
			}
		}
	}
	return unionSize(cut)
}

type addrRange struct{ lo, hi *big.Int }

func rangeOf(p netip.Prefix) addrRange {
	lo := new(big.Int).SetBytes(p.Addr().AsSlice())
	size := new(big.Int).Lsh(big.NewInt(1), uint(p.Addr().BitLen()-p.Bits()))
	hi := new(big.Int).Add(lo, size)
	return addrRange{lo, hi.Sub(hi, big.NewInt(1))}
}

// unionSize is the number of addresses in the union of ranges, overlaps
// counted once.
func unionSize(rs []addrRange) *big.Int {
	sort.Slice(rs, func(i, j int) bool { return rs[i].lo.Cmp(rs[j].lo) < 0 })
	total := new(big.Int)
	var cur *addrRange
	flush := func() {
		if cur != nil {
			n := new(big.Int).Sub(cur.hi, cur.lo)
			total.Add(total, n.Add(n, big.NewInt(1)))
		}
	}
	for i := range rs {
		r := rs[i]
		if cur != nil && r.lo.Cmp(new(big.Int).Add(cur.hi, big.NewInt(1))) <= 0 {
			if r.hi.Cmp(cur.hi) > 0 {
				cur.hi = r.hi
			}
			continue
		}
		flush()
		cur = &addrRange{r.lo, r.hi}
	}
	flush()
	return total
}

// maxWindow is the longest rate-limit window the policy daemon keeps counts
// for.
const maxWindow = 366 * 24 * time.Hour

// validatePolicyChecks checks that every check listed in policy.checks has
// what it needs, so that the policy daemon does not discover it at start.
func (c *Config) validatePolicyChecks(f *File, bad map[string]bool) []*Error {
	var errs []*Error
	p := c.Policy
	on := map[string]bool{}
	for i, name := range p.Checks {
		if on[name] {
			errs = append(errs, f.Errorf(fmt.Sprintf("policy.checks[%d]", i), "list each check once", "%q listed twice", name))
		}
		on[name] = true
	}
	// What a check needs is asked only when it is listed; every value
	// written is checked whether or not its check is listed, so that a
	// mistake shows at once and not on the day the check is turned on.
	if on["dnsbl"] && len(p.DNSBL.Sites) == 0 {
		errs = append(errs, f.Errorf("policy.dnsbl.sites", "e.g. [zen.spamhaus.org=127.0.0.[2..11]*3], or remove dnsbl from policy.checks", "the dnsbl check needs at least one site"))
	}
	if p.DNSBL.Threshold < 1 {
		errs = append(errs, f.Errorf("policy.dnsbl.threshold", "e.g. 3", "must be at least 1"))
	}
	g := p.Greylist
	if g.Delay.D() <= 0 || g.RetryWindow.D() <= g.Delay.D() || g.MaxAge.D() < g.RetryWindow.D() {
		key := "policy.greylist"
		for _, k := range []string{"delay", "retry_window", "max_age"} { // the one written, if one was
			if f.pos[key+"."+k] != (Pos{}) {
				key += "." + k
				break
			}
		}
		errs = append(errs, f.Errorf(key, "e.g. delay 5m, retry_window 48h, max_age 35d (840h)",
			"want 0 < delay (%v) < retry_window (%v) <= max_age (%v)", g.Delay.D(), g.RetryWindow.D(), g.MaxAge.D()))
	}
	if g.AutoAllow < 0 {
		errs = append(errs, f.Errorf("policy.greylist.auto_allow", "0 never allows a client outright", "must not be negative"))
	}
	if on["ratelimit"] && len(p.RateLimit.Limits) == 0 {
		errs = append(errs, f.Errorf("policy.ratelimit.limits", "e.g. [{key: sasl_user, count: recipients, max: 500, window: 1h}], or remove ratelimit from policy.checks", "the ratelimit check needs at least one limit"))
	}
	for i, l := range p.RateLimit.Limits {
		k := fmt.Sprintf("policy.ratelimit.limits[%d]", i)
		if l.Max < 1 && !bad[k+".max"] {
			errs = append(errs, f.Errorf(k+".max", "e.g. 500", "must be at least 1"))
		}
		if w := l.Window.D(); !bad[k+".window"] && w < time.Second || w > maxWindow || w%time.Second != 0 {
			errs = append(errs, f.Errorf(k+".window", "e.g. 1m, 1h or 24h", "must be whole seconds from 1s to 366 days (8784h), not %v", w))
		}
	}
	return errs
}

// validateSpam checks the spam filter's settings, whether or not it is
// enabled (a mistake shows at once, not on the day it is turned on).
func (c *Config) validateSpam(f *File, bad map[string]bool) []*Error {
	var errs []*Error
	s := c.Milter.Spam
	if s.RequiredScore <= 0 {
		errs = append(errs, f.Errorf("milter.spam.required_score", "SpamAssassin's default is 5.0", "must be above 0, not %.1f", s.RequiredScore))
	}
	if s.RejectScore != 0 && s.RejectScore <= s.RequiredScore {
		errs = append(errs, f.Errorf("milter.spam.reject_score", fmt.Sprintf("e.g. %.1f, well above required_score, or 0 to refuse none", s.RequiredScore*3),
			"%.1f is not above required_score (%.1f): spam would be refused before it is marked", s.RejectScore, s.RequiredScore))
	}
	if s.MaxScanBytes < 1024 || s.MaxScanBytes > 64<<20 {
		errs = append(errs, f.Errorf("milter.spam.max_scan_bytes", "SpamAssassin scans 500000 bytes", "%d bytes: want from 1024 to %d (64 MiB)", s.MaxScanBytes, 64<<20))
	}
	if s.TimeBudget.D() <= 0 {
		errs = append(errs, f.Errorf("milter.spam.time_budget", "e.g. 10s", "must be positive"))
	} else if s.TimeBudget.D() >= 300*time.Second {
		errs = append(errs, f.Errorf("milter.spam.time_budget", "e.g. 10s", "%v reaches Postfix's milter_content_timeout (300s): Postfix would give up on the milter first", s.TimeBudget.D()))
	}
	if s.DNSBudget.D() <= 0 || (s.TimeBudget.D() > 0 && s.DNSBudget.D() > s.TimeBudget.D()) {
		errs = append(errs, f.Errorf("milter.spam.dns_budget", "e.g. 4s, within time_budget", "want 0 < dns_budget (%v) <= time_budget (%v)", s.DNSBudget.D(), s.TimeBudget.D()))
	}
	b := s.Bayes
	if b.AutolearnHam >= b.AutolearnSpam {
		errs = append(errs, f.Errorf("milter.spam.bayes.autolearn_ham", "SpamAssassin uses 0.1 and 12.0",
			"autolearn_ham (%.1f) must be below autolearn_spam (%.1f)", b.AutolearnHam, b.AutolearnSpam))
	}
	if b.AutolearnSpam < s.RequiredScore {
		errs = append(errs, f.Errorf("milter.spam.bayes.autolearn_spam", "SpamAssassin uses 12.0",
			"%.1f is below required_score (%.1f): mail that is not spam would be learned as spam", b.AutolearnSpam, s.RequiredScore))
	}
	if b.MinTrained < 1 {
		errs = append(errs, f.Errorf("milter.spam.bayes.min_trained", "SpamAssassin uses 200", "must be at least 1"))
	}
	if b.Expiry.D() < 0 || (b.Expiry.D() > 0 && b.Expiry.D() < 24*time.Hour) {
		errs = append(errs, f.Errorf("milter.spam.bayes.expiry", "e.g. 2160h (90 days), or 0 to keep tokens forever", "%v: want 0 or at least 24h", b.Expiry.D()))
	}
	if c.LearnFromMoves() && s.Learn.User == "" && !bad["milter.spam.learn.user"] {
		errs = append(errs, f.Errorf("milter.spam.learn.user", "the account the milter runs as, e.g. postkit, or set learn.imapsieve: false", "is required for learning from moves (learn.imapsieve)"))
	}
	return errs
}

// LearnFromMoves reports whether the generated Dovecot learns from users'
// moves into and out of the spam folder: the milter scores spam with
// Bayes, Sieve runs, and learn.imapsieve asks for it.
func (c *Config) LearnFromMoves() bool {
	s := c.Milter.Spam
	return c.Milter.Enabled && s.Enabled && s.Bayes.Enabled && s.Learn.IMAPSieve && c.Sieve.Enabled
}
