package config

import (
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// normalize lower-cases names and drops their final dot, before Validate.
func (c *Config) normalize() {
	c.Hostname = strings.ToLower(strings.TrimSuffix(c.Hostname, "."))
	for i, d := range c.Domains {
		c.Domains[i] = strings.ToLower(strings.TrimSuffix(d, "."))
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
	if c.Milter.DKIM.AuthservID == "" {
		c.Milter.DKIM.AuthservID = c.Hostname
	}
}

var (
	domainRE = regexp.MustCompile(`^(?i)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$`)
	localRE  = regexp.MustCompile(`^[A-Za-z0-9!#$%&'*+/=?^_` + "`" + `{|}~.-]{1,64}$`)
)

// ValidDomain reports whether s is a syntactically valid domain name with at
// least two labels (RFC 1035 §2.3.1, with digits allowed first as RFC 1123 says).
func ValidDomain(s string) bool {
	return len(s) <= 253 && domainRE.MatchString(s)
}

// ValidAddress reports whether s is local@domain with a dot-atom local part.
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
	walk(reflect.ValueOf(c).Elem(), "", func(key string, fv reflect.Value, sf reflect.StructField) {
		if sf.Tag.Get("required") == "true" && fv.IsZero() {
			add(f.Errorf(key, "see examples/postkit.yaml", "is required"))
		}
	})
	bad := map[string]bool{} // keys already refused: no second message about them
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
	if c.Policy.Enabled && c.Policy.TimeBudget.D() <= 0 {
		add(f.Errorf("policy.time_budget", "e.g. 10s", "must be positive"))
	}
	for _, e := range c.validatePolicyChecks(f) {
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

// OpenRelay returns an error naming the trusted network that would let the
// whole Internet (or a large part of it) relay through this server.
func (c *Config) OpenRelay(f *File) error {
	for i, n := range c.TrustedNetworks {
		p, err := ParseCIDR(string(n))
		if err != nil {
			continue
		}
		if (p.Addr().Is4() && p.Bits() < 8) || (p.Addr().Is6() && p.Bits() < 16) {
			e := f.Errorf(fmt.Sprintf("trusted_networks[%d]", i),
				"list only your own networks; pass --i-know-this-is-an-open-relay to generate anyway",
				"%s makes this server an open relay: anyone in it may send mail anywhere", n)
			return fmt.Errorf("%w: %w", ErrOpenRelay, e)
		}
	}
	return nil
}

// validatePolicyChecks checks that every check listed in policy.checks has
// what it needs, so that the policy daemon does not discover it at start.
func (c *Config) validatePolicyChecks(f *File) []*Error {
	var errs []*Error
	p := c.Policy
	on := map[string]bool{}
	for i, name := range p.Checks {
		if on[name] {
			errs = append(errs, f.Errorf(fmt.Sprintf("policy.checks[%d]", i), "list each check once", "%q listed twice", name))
		}
		on[name] = true
	}
	if on["dnsbl"] {
		if len(p.DNSBL.Sites) == 0 {
			errs = append(errs, f.Errorf("policy.dnsbl.sites", "e.g. [zen.spamhaus.org=127.0.0.[2..11]*3], or remove dnsbl from policy.checks", "the dnsbl check needs at least one site"))
		}
		if p.DNSBL.Threshold < 1 {
			errs = append(errs, f.Errorf("policy.dnsbl.threshold", "e.g. 3", "must be at least 1"))
		}
	}
	if on["greylist"] {
		g := p.Greylist
		if g.Delay.D() <= 0 || g.RetryWindow.D() <= g.Delay.D() || g.MaxAge.D() < g.RetryWindow.D() {
			errs = append(errs, f.Errorf("policy.greylist", "e.g. delay 5m, retry_window 48h, max_age 35d (840h)",
				"want 0 < delay (%v) < retry_window (%v) <= max_age (%v)", g.Delay.D(), g.RetryWindow.D(), g.MaxAge.D()))
		}
		if g.AutoAllow < 0 {
			errs = append(errs, f.Errorf("policy.greylist.auto_allow", "0 never allows a client outright", "must not be negative"))
		}
	}
	if on["ratelimit"] && len(p.RateLimit.Limits) == 0 {
		errs = append(errs, f.Errorf("policy.ratelimit.limits", "e.g. [{key: sasl_user, count: recipients, max: 500, window: 1h}], or remove ratelimit from policy.checks", "the ratelimit check needs at least one limit"))
	}
	for i, l := range p.RateLimit.Limits {
		k := fmt.Sprintf("policy.ratelimit.limits[%d]", i)
		if l.Max < 1 {
			errs = append(errs, f.Errorf(k+".max", "e.g. 500", "must be at least 1"))
		}
		if l.Window.D() < time.Second {
			errs = append(errs, f.Errorf(k+".window", "e.g. 1m, 1h or 24h", "must be at least 1s"))
		}
	}
	return errs
}
