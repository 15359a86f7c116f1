package config

import (
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// applyDerived fills defaults that depend on other values.
func (c *Config) applyDerived() {
	c.Hostname = strings.ToLower(strings.TrimSuffix(c.Hostname, "."))
	if c.Origin == "" {
		c.Origin = c.Hostname
	}
	for i, d := range c.Domains {
		c.Domains[i] = strings.ToLower(strings.TrimSuffix(d, "."))
	}
	if c.Postmaster == "" && len(c.Domains) > 0 {
		c.Postmaster = "postmaster@" + c.Domains[0]
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
	// Struct-tag driven checks: required, enum, pattern, kind.
	walk(reflect.ValueOf(c).Elem(), "", func(key string, fv reflect.Value, sf reflect.StructField) {
		s, isStr := "", fv.Kind() == reflect.String
		if isStr {
			s = fv.String()
		}
		if sf.Tag.Get("required") == "true" && fv.IsZero() {
			add(f.Errorf(key, "see examples/postkit.yaml", "is required"))
			return
		}
		if enum := sf.Tag.Get("enum"); enum != "" {
			allowed := strings.Split(enum, ",")
			check := func(k, v string) {
				for _, a := range allowed {
					if v == a {
						return
					}
				}
				add(f.Errorf(k, "one of: "+strings.Join(allowed, ", "), "%q is not allowed", v))
			}
			if isStr && s != "" {
				check(key, s)
			}
			if fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() == reflect.String {
				for i := 0; i < fv.Len(); i++ {
					check(fmt.Sprintf("%s[%d]", key, i), fv.Index(i).String())
				}
			}
		}
		if p := sf.Tag.Get("pattern"); p != "" && isStr && s != "" && !regexp.MustCompile(p).MatchString(s) {
			add(f.Errorf(key, "e.g. 0660", "%q is not an octal file mode", s))
		}
		switch sf.Tag.Get("kind") {
		case "path":
			if isStr && s != "" && !strings.HasPrefix(s, "/") {
				add(f.Errorf(key, "write the full path, starting with /", "%q is not an absolute path", s))
			}
		case "listen":
			if isStr && s != "" {
				if _, _, err := SplitListen(s); err != nil {
					add(f.Errorf(key, "write a port (25) or host:port (127.0.0.1:2525)", "%q: %v", s, err))
				}
			}
		case "addr":
			if isStr && s != "" {
				if err := checkAddr(s); err != nil {
					add(f.Errorf(key, "write unix:/absolute/path or inet:127.0.0.1:PORT", "%q: %v", s, err))
				}
			}
		}
	})
	if c.Hostname != "" && !ValidDomain(c.Hostname) {
		add(f.Errorf("hostname", "a fully qualified name such as mail.example.org", "%q is not a valid host name", c.Hostname))
	}
	if c.Origin != "" && !ValidDomain(c.Origin) {
		add(f.Errorf("origin", "a domain such as example.org", "%q is not a valid domain", c.Origin))
	}
	seen := map[string]bool{}
	for _, d := range c.Domains {
		if d == c.Hostname {
			add(f.Errorf("hostname", "use a host name such as mail."+d+": Postfix cannot treat one domain as both local and virtual", "%q is also a mail domain", d))
		}
	}
	for i, d := range c.Domains {
		k := fmt.Sprintf("domains[%d]", i)
		if !ValidDomain(d) {
			add(f.Errorf(k, "a domain such as example.org, without @ or scheme", "%q is not a valid domain", d))
		} else if seen[d] {
			add(f.Errorf(k, "remove the duplicate", "domain %q listed twice", d))
		}
		seen[d] = true
	}
	if c.Postmaster != "" && !ValidAddress(c.Postmaster) {
		add(f.Errorf("postmaster", "an address such as postmaster@example.org", "%q is not a valid address", c.Postmaster))
	}
	for i, n := range c.TrustedNetworks {
		if _, err := ParseCIDR(string(n)); err != nil {
			add(f.Errorf(fmt.Sprintf("trusted_networks[%d]", i), "write a network such as 192.168.0.0/16 or an address", "%q: %v", n, err))
		}
	}
	for i, n := range c.Policy.SPF.AllowIPs {
		if _, err := ParseCIDR(string(n)); err != nil {
			add(f.Errorf(fmt.Sprintf("policy.spf.allow_ips[%d]", i), "write a network such as 192.0.2.0/24", "%q: %v", n, err))
		}
	}
	for i, n := range c.Policy.Greylist.AllowIPs {
		if _, err := ParseCIDR(string(n)); err != nil {
			add(f.Errorf(fmt.Sprintf("policy.greylist.allow_ips[%d]", i), "write a network such as 192.0.2.0/24", "%q: %v", n, err))
		}
	}
	for i, g := range c.SenderLogins {
		k := fmt.Sprintf("sender_logins[%d]", i)
		if d, ok := strings.CutPrefix(g.Sender, "@"); ok {
			if !ValidDomain(d) {
				add(f.Errorf(k+".sender", "write @example.org for every address of a domain", "%q is not @ and a valid domain", g.Sender))
			}
		} else if g.Sender != "" && !ValidAddress(g.Sender) {
			hint := "an address such as billing@example.org, or @example.org for the whole domain"
			if ValidDomain(g.Sender) {
				hint = "write @" + g.Sender + " for every address of the domain"
			}
			add(f.Errorf(k+".sender", hint, "%q is not an address", g.Sender))
		}
		for j, l := range g.Logins {
			if !ValidAddress(l) {
				add(f.Errorf(fmt.Sprintf("%s.logins[%d]", k, j), "logins are user addresses, as in 'postkit db user list'", "%q is not a login", l))
			}
		}
	}
	if c.MessageSizeLimit < 1024 {
		add(f.Errorf("message_size_limit", "the reference installation uses 31457280 (30 MiB)", "%d bytes is too small", c.MessageSizeLimit))
	}
	if len(c.RecipientDelim) > 1 {
		add(f.Errorf("recipient_delimiter", "one character such as +", "%q is longer than one character", c.RecipientDelim))
	}
	if c.Mailbox.UID < 1 || c.Mailbox.GID < 1 {
		add(f.Errorf("mailbox.uid", "use a dedicated account such as vmail (3000)", "mailbox uid and gid must be above 0"))
	}
	if !strings.Contains(c.Mailbox.Layout, "%") {
		add(f.Errorf("mailbox.layout", "e.g. %d/%n", "%q has no %%d/%%n variable: every user would share one Maildir", c.Mailbox.Layout))
	}
	if c.Postfix.Chroot {
		q := strings.TrimSuffix(c.Paths.PostfixQueue, "/") + "/"
		for key, p := range map[string]string{"listeners.lmtp": c.Listeners.LMTP, "listeners.auth": c.Listeners.Auth} {
			if p != "" && !strings.HasPrefix(p, q) {
				add(f.Errorf(key, "put it under "+q+"private/ or set postfix.chroot: false", "%q is outside the Postfix chroot %s: chrooted smtpd cannot reach it", p, q))
			}
		}
		for key, a := range map[string]string{"milter.listen": c.Milter.Listen, "policy.listen": c.Policy.Listen} {
			if strings.HasPrefix(a, "unix:") && !strings.HasPrefix(strings.TrimPrefix(a, "unix:"), q) &&
				((key == "milter.listen" && c.Milter.Enabled) || (key == "policy.listen" && c.Policy.Enabled)) {
				add(f.Errorf(key, "put the socket under "+q+" or use inet:127.0.0.1:PORT", "%q is outside the Postfix chroot %s: chrooted smtpd cannot reach it", a, q))
			}
		}
	}
	for i, k := range c.Milter.DKIM.Keys {
		base := fmt.Sprintf("milter.dkim.keys[%d]", i)
		if k.Domain != "" && !ValidDomain(k.Domain) {
			add(f.Errorf(base+".domain", "a domain such as example.org", "%q is not a valid domain", k.Domain))
		}
		if k.Selector != "" && !regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`).MatchString(k.Selector) {
			add(f.Errorf(base+".selector", "letters, digits, dots, dashes", "%q is not a valid selector", k.Selector))
		}
	}
	for i, r := range c.Milter.Scrub.Rules {
		if r.Match != "" {
			if _, err := regexp.Compile(r.Match); err != nil {
				add(f.Errorf(fmt.Sprintf("milter.scrub.rules[%d].match", i), "RE2 syntax, see https://github.com/google/re2/wiki/Syntax", "bad regular expression: %v", err))
			}
		}
		if r.Action == "replace" && (r.With == "" || strings.ContainsAny(r.With, "\r\n")) {
			add(f.Errorf(fmt.Sprintf("milter.scrub.rules[%d].with", i), "one line of text, or use action delete", "action replace needs a one-line 'with' value"))
		}
	}
	if c.Policy.Enabled && c.Policy.TimeBudget.D() <= 0 {
		add(f.Errorf("policy.time_budget", "e.g. 10s", "must be positive"))
	}
	for _, e := range c.validatePolicyChecks(f) {
		add(e)
	}
	for i, s := range c.DNS.Servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			add(f.Errorf(fmt.Sprintf("dns.servers[%d]", i), "write host:port, e.g. 127.0.0.1:53", "%q: %v", s, err))
		}
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

func checkAddr(s string) error {
	switch {
	case strings.HasPrefix(s, "unix:"):
		if !strings.HasPrefix(s[5:], "/") {
			return fmt.Errorf("unix socket path must be absolute")
		}
		return nil
	case strings.HasPrefix(s, "inet:"):
		_, _, err := SplitListen(s[5:])
		if err == nil && !strings.Contains(s[5:], ":") {
			return fmt.Errorf("give host and port")
		}
		return err
	}
	return fmt.Errorf("must start with unix: or inet:")
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
