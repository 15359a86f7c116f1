// Package spfcheck is the Sender Policy Framework check (RFC 7208) of the
// policy server: it evaluates the HELO and MAIL FROM identities with
// blitiri.com.ar/go/spf over postkit's resolver, adds what that library
// leaves out (exp= explanations §6.2, the strict record syntax of §4.6 and
// §12, the %{p} macro in explanations), and maps results to Postfix actions
// the way postfix-policyd-spf-python does: fail rejects with 550 5.7.23
// (RFC 7372), other results prepend a Received-SPF header (§9.1).
package spfcheck

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"blitiri.com.ar/go/spf"

	"github.com/postkit/postkit/internal/dnsclient"
	"github.com/postkit/postkit/internal/ttlcache"
	"github.com/postkit/postkit/policyd"
)

// Resolver is the DNS the check needs; *dnsclient.Resolver satisfies it, as
// does *net.Resolver. Not-found errors must be *net.DNSError with
// IsNotFound, temporary ones *net.DNSError with Temporary() true.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}

// Result is an SPF result (RFC 7208 §2.6), spelled as in headers.
type Result string

// The results of §2.6.
const (
	None      Result = "none"
	Neutral   Result = "neutral"
	Pass      Result = "pass"
	Fail      Result = "fail"
	SoftFail  Result = "softfail"
	TempError Result = "temperror"
	PermError Result = "permerror"
)

// Mode selects what the check may do.
type Mode string

const (
	// Enforce rejects fail results (HELO first, then MAIL FROM) and prepends
	// a header otherwise.
	Enforce Mode = "enforce"
	// Header never rejects or defers: every result becomes a header.
	Header Mode = "header"
)

// Config configures the check. Zero values select the defaults.
type Config struct {
	Mode Mode // default Enforce
	// Hostname is the receiver named in headers and the %{r} macro.
	// Default: os.Hostname().
	Hostname string
	// TempErrorDefer answers temperror with DEFER_IF_PERMIT 4.7.24 in
	// enforce mode; default false (a header, as postfix-policyd-spf-python's
	// TempError_Defer=False).
	TempErrorDefer bool
	// PermErrorReject answers permerror with 550 5.7.24 in enforce mode;
	// default false (a header, as postfix-policyd-spf-python).
	PermErrorReject bool
	// IgnoreHeloFail does not refuse a HELO fail in enforce mode: the MAIL
	// FROM result decides (postfix-policyd-spf-python's HELO_reject =
	// False). Default false: a HELO fail is refused, as §2.3 allows.
	IgnoreHeloFail bool
	// HeloReject and MailFromReject are when each identity's result
	// refuses the message in enforce mode (see Level). Default RejectFail;
	// IgnoreHeloFail makes the HELO level RejectNever when HeloReject is
	// unset.
	HeloReject     Level
	MailFromReject Level
	// RejectNotPassDomains are sender domains whose MAIL FROM softfail or
	// neutral is refused as a fail would be (the peer's
	// Reject_Not_Pass_Domains): commonly forged domains that publish ~all.
	// Not with MailFromReject RejectNever.
	RejectNotPassDomains []string
	// HeaderType is the field prepended with the result. Default
	// ReceivedSPF.
	HeaderType HeaderType
	// AuthservID names this host in Authentication-Results (HeaderType
	// AuthResults). Default: Hostname.
	AuthservID string
	// CheckAuthenticated also checks SASL-authenticated clients (skipped by
	// default: they are our users, sending through us).
	CheckAuthenticated bool
	// Trusted networks are never checked (postkit.yaml's trusted_networks,
	// loopback by default, as both Debian SPF policy servers do). Empty
	// trusts nothing.
	Trusted []netip.Prefix
	// AllowIPs, AllowSenderDomains and AllowHelos skip the check for these
	// clients, envelope sender domains (exact, case-insensitive) or HELO
	// names. A HELO name skips only when it has an address record holding
	// the client's address, so a forged HELO skips nothing (as the peer's
	// HELO_Whitelist).
	AllowIPs           []netip.Prefix
	AllowSenderDomains []string
	AllowHelos         []string
	// Timeout is the time budget of one request (both identities), and of
	// one CheckHost. Zero: no budget of its own, the caller's context
	// alone bounds it.
	Timeout time.Duration
	// CacheSize bounds the per-(client, HELO, sender) decision cache that
	// serves the RCPTs of one message, and the per-identity cache of
	// check_host() results that serves the next messages of a client
	// (its HELO) and of a sender domain (see identityKey). Negative
	// disables both. Default 4096 entries each.
	//
	// There is no cache lifetime to configure: a cached result is kept
	// until the first of the DNS answers it was built from expires, as the
	// resolver reports it (dnsclient.WithExpiry: the smallest TTL, or the
	// RFC 2308 negative TTL). A resolver that reports no expiry (such as
	// *net.Resolver) leaves nothing cached.
	CacheSize int
	// MaxVoidLookups overrides the §4.6.4 limit of 2; 0 keeps it.
	MaxVoidLookups uint
	// OwnDomain, when set, reports whether a domain is one of ours. Mail
	// whose envelope sender is in one of our domains, from a client the
	// check does not skip, is then refused unless SPF passes: only our
	// users (authenticated or in Trusted) and the hosts our SPF record
	// lists send as our domains. A temperror defers, as does an error of
	// OwnDomain (4xx, never 5xx). AllowIPs still skip; AllowSenderDomains
	// and AllowHelos do not, since the client chooses both.
	OwnDomain func(ctx context.Context, domain string) (bool, error)
	// Seal, when set, rewrites every Received-SPF line of an answer for the
	// request it answers (internal/seal: a code binding the field to the
	// transaction, which the milter verifies). It runs after the result
	// cache, so each request gets its own code.
	Seal   func(r *policyd.Request, line string) string
	Logger *slog.Logger
	Now    func() time.Time
}

// Check is the SPF policy check.
type Check struct {
	cfg     Config
	res     Resolver
	cache   *ttlcache.Cache[string, policyd.Decision] // per (client, HELO, sender)
	idCache *ttlcache.Cache[string, outcomeEntry]     // per identity (identityKey)
}

// New returns the check.
func New(cfg Config, res Resolver) (*Check, error) {
	if res == nil {
		return nil, errors.New("spfcheck: no resolver given")
	}
	switch cfg.Mode {
	case "":
		cfg.Mode = Enforce
	case Enforce, Header:
	default:
		return nil, fmt.Errorf("spfcheck: mode %q: want enforce or header", cfg.Mode)
	}
	if cfg.Hostname == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		cfg.Hostname = h
	}
	var err error
	if cfg.HeloReject == "" && cfg.IgnoreHeloFail {
		cfg.HeloReject = RejectNever
	}
	if cfg.HeloReject, err = ParseLevel(string(cfg.HeloReject), true); err != nil {
		return nil, err
	}
	if cfg.MailFromReject, err = ParseLevel(string(cfg.MailFromReject), false); err != nil {
		return nil, err
	}
	switch cfg.HeaderType {
	case "":
		cfg.HeaderType = ReceivedSPF
	case ReceivedSPF, AuthResults, NoHeader:
	default:
		return nil, fmt.Errorf("spfcheck: header type %q: want spf, ar or none", cfg.HeaderType)
	}
	if cfg.AuthservID == "" {
		cfg.AuthservID = cfg.Hostname
	}
	if strings.ContainsAny(cfg.AuthservID, " \t\r\n;()\"") {
		return nil, fmt.Errorf("spfcheck: authserv-id %q must be a single token such as mail.example.org", cfg.AuthservID)
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("spfcheck: timeout %v: want a positive duration, or 0 for none", cfg.Timeout)
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = 4096
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Check{cfg: cfg, res: res}
	if cfg.CacheSize > 0 {
		c.cache = ttlcache.New[string, policyd.Decision](cfg.CacheSize)
		c.idCache = ttlcache.New[string, outcomeEntry](cfg.CacheSize)
	}
	return c, nil
}

// Name implements policyd.Check.
func (c *Check) Name() string { return "spf" }

// withTimeout bounds ctx by the configured Timeout, if any.
func (c *Check) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if c.cfg.Timeout > 0 {
		return context.WithTimeout(ctx, c.cfg.Timeout)
	}
	return context.WithCancel(ctx)
}

// Check implements policyd.Check: skips, then HELO, then MAIL FROM.
func (c *Check) Check(ctx context.Context, r *policyd.Request) (policyd.Decision, error) {
	switch r.Stage() {
	case "RCPT", "MAIL", "":
	default:
		return policyd.Decision{}, nil
	}
	ip := r.ClientAddr()
	if !ip.IsValid() {
		return policyd.Decision{Reason: "spf=skip(no-client-ip)"}, nil
	}
	why := c.skip(ctx, r, ip)
	own, err := c.ownSender(ctx, r, why)
	if err != nil {
		c.cfg.Logger.Warn("spf: cannot tell whether the sender's domain is ours; deferring", "sender", r.Sender(), "err", err)
		return policyd.Decision{Action: "DEFER_IF_PERMIT 4.3.0 Cannot check the sender domain " + policyd.Domain(r.Sender()) + " now; try again later", Reason: "own-domain=error"}, nil
	}
	if why != "" && !own {
		return policyd.Decision{Reason: "spf=skip(" + why + ")"}, nil
	}
	// The decision depends on own, which is asked of the database on every
	// request and so is part of the key.
	key := ip.String() + "\x00" + strings.ToLower(r.Helo()) + "\x00" + strings.ToLower(r.Sender()) + "\x00" + strconv.FormatBool(own)
	if d, _, ok := c.cache.Get(key, c.cfg.Now()); ok {
		return c.seal(r, d), nil
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	// The decision (result, explanation, header) is kept until the first
	// DNS answer it used expires.
	ctx, exp := dnsclient.WithExpiry(ctx)
	v := c.evaluate(ctx, ip, r.Helo(), r.Sender(), own)
	d := c.decide(v, own, ip, r.Sender() == "")
	if expires, ok := exp.Earliest(); ok {
		c.cache.Put(key, d, expires, c.cfg.Now())
	}
	return c.seal(r, d), nil
}

// ownSender reports whether the own-domain rule applies to r: the sender's
// domain is ours and the client is not one the rule exempts (authenticated,
// trusted, allowed by address). skip is c.skip's answer.
func (c *Check) ownSender(ctx context.Context, r *policyd.Request, skip string) (bool, error) {
	if c.cfg.OwnDomain == nil {
		return false, nil
	}
	switch skip {
	case "authenticated", "trusted", "allow-ip":
		return false, nil
	}
	d := policyd.Domain(r.Sender())
	if d == "" {
		return false, nil
	}
	return c.cfg.OwnDomain(ctx, d)
}

// seal returns d with its Received-SPF lines sealed for r; the cached
// decision is not modified.
func (c *Check) seal(r *policyd.Request, d policyd.Decision) policyd.Decision {
	if c.cfg.Seal == nil || len(d.Prepend) == 0 {
		return d
	}
	p := make([]string, len(d.Prepend))
	for i, line := range d.Prepend {
		if l := strings.ToLower(line); strings.HasPrefix(l, "received-spf:") || strings.HasPrefix(l, "authentication-results:") {
			line = c.cfg.Seal(r, line)
		}
		p[i] = line
	}
	d.Prepend = p
	return d
}

func (c *Check) skip(ctx context.Context, r *policyd.Request, ip netip.Addr) string {
	if r.SASLUser() != "" && !c.cfg.CheckAuthenticated {
		return "authenticated"
	}
	for _, p := range c.cfg.Trusted {
		if p.Contains(ip) {
			return "trusted"
		}
	}
	for _, p := range c.cfg.AllowIPs {
		if p.Contains(ip) {
			return "allow-ip"
		}
	}
	if d := policyd.Domain(r.Sender()); d != "" {
		for _, a := range c.cfg.AllowSenderDomains {
			if strings.EqualFold(a, d) {
				return "allow-sender"
			}
		}
	}
	for _, a := range c.cfg.AllowHelos {
		if r.Helo() != "" && strings.EqualFold(strings.TrimSuffix(a, "."), strings.TrimSuffix(r.Helo(), ".")) && c.heloConfirmed(ctx, r.Helo(), ip) {
			return "allow-helo"
		}
	}
	return ""
}

// Verdict holds the outcome of both identities.
type Verdict struct {
	Helo     Outcome // Result "" if the HELO identity was not checked
	MailFrom Outcome // for a null sender: the HELO outcome (§2.4)
}

// Outcome is the result of one identity.
type Outcome struct {
	Identity    string // "helo" or "mailfrom"
	Result      Result
	Domain      string // the domain whose policy was evaluated
	Sender      string // the sender used in macros: postmaster@domain if it had no local part
	Explanation string // for fail: the exp= text (§6.2) or our default
	Problem     string // for errors: what went wrong
	Header      string // the Received-SPF header line (§9.1)
	AR          string // the same result as an Authentication-Results line (RFC 8601)
}

// Evaluate checks the HELO identity (if it is a domain) and the MAIL FROM
// identity; a null sender uses postmaster@HELO (§2.4), i.e. the HELO outcome.
// A HELO fail decides first, as postfix-policyd-spf-python does: in enforce
// mode its MAIL FROM outcome is left empty. Unlike that peer, which checks
// the two identities one after the other, both are evaluated at once: they
// are independent (§2.3, §2.4), and a request then waits for the slower of
// the two rather than for their sum.
func (c *Check) Evaluate(ctx context.Context, ip netip.Addr, helo, sender string) Verdict {
	return c.evaluate(ctx, ip, helo, sender, false)
}

// evaluate is Evaluate; forceMailFrom checks the MAIL FROM identity even
// when MailFromReject is NoCheck (a sender in one of our domains).
func (c *Check) evaluate(ctx context.Context, ip netip.Addr, helo, sender string, forceMailFrom bool) Verdict {
	ip = ip.Unmap()
	var v Verdict
	h := strings.TrimSuffix(helo, ".")
	// §2.3: check HELO whenever it is a domain name (and not told not to).
	checkHelo := h != "" && !strings.HasPrefix(h, "[") && c.cfg.HeloReject != NoCheck
	if sender == "" && c.cfg.HeloReject == NoCheck && !forceMailFrom {
		// The null sender's only identity is its HELO name, which the
		// HELO setting says not to check (the peer then answers DUNNO).
		return v
	}
	if sender == "" {
		// §2.4: the null sender's identity is postmaster@HELO: one check.
		v.MailFrom = c.checkHost(ctx, "helo", ip, h, "postmaster@"+h, h)
		if checkHelo {
			v.Helo = v.MailFrom
		}
		return v
	}
	local, domain := splitSender(sender)
	if local == "" {
		// §4.3: an empty local part is taken as "postmaster".
		sender = "postmaster@" + domain
	}
	if c.cfg.MailFromReject == NoCheck && !forceMailFrom {
		if checkHelo {
			v.Helo = c.checkHost(ctx, "helo", ip, h, "postmaster@"+h, h)
		}
		return v
	}
	if !checkHelo {
		v.MailFrom = c.checkHost(ctx, "mailfrom", ip, h, sender, domain)
		return v
	}
	done := make(chan Outcome, 1)
	go func() { done <- c.checkHost(ctx, "mailfrom", ip, h, sender, domain) }()
	v.Helo = c.checkHost(ctx, "helo", ip, h, "postmaster@"+h, h)
	// The MAIL FROM check is awaited even when a HELO fail makes it moot: it
	// ends within ctx, and cancelling it would also fail the identical DNS
	// questions other requests share with it.
	mf := <-done
	if !c.heloRefused(v, false) {
		v.MailFrom = mf
	}
	return v
}

// heloRefused reports whether the HELO outcome alone refuses the message.
func (c *Check) heloRefused(v Verdict, nullSender bool) bool {
	if c.cfg.Mode != Enforce || v.Helo.Result == "" {
		return false
	}
	if v.Helo.Result == PermError && c.cfg.PermErrorReject && c.cfg.HeloReject != RejectNever {
		return true // PermError_reject covers both identities
	}
	return c.cfg.HeloReject.refuses(v.Helo.Result, nullSender)
}

// CheckHost evaluates check_host() (§4) for the MAIL FROM identity of
// sender alone, HELO name helo used only in macros: for checks outside the
// policy protocol, such as the milter's test of a header From domain. A
// sender without local part stands for postmaster (§4.3).
func (c *Check) CheckHost(ctx context.Context, ip netip.Addr, helo, sender string) Outcome {
	local, domain := splitSender(sender)
	if local == "" {
		sender = "postmaster@" + domain
	}
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	return c.checkHost(ctx, "mailfrom", ip.Unmap(), strings.TrimSuffix(helo, "."), sender, domain)
}

func splitSender(s string) (local, domain string) {
	i := strings.LastIndexByte(s, '@')
	if i < 0 {
		return s, ""
	}
	return s[:i], s[i+1:]
}

// decide maps a verdict to a policy decision. own says the envelope sender
// is in one of our domains (see Config.OwnDomain).
func (c *Check) decide(v Verdict, own bool, ip netip.Addr, nullSender bool) policyd.Decision {
	enforce := c.cfg.Mode == Enforce
	if c.heloRefused(v, nullSender) {
		if v.Helo.Result == Fail {
			return policyd.Decision{Action: "550 5.7.23 " + v.Helo.Explanation, Reason: "spf-helo=fail"}
		}
		return policyd.Decision{Action: rejectText(v.Helo, ip, "this server accepts only HELO names that pass SPF or publish no policy"),
			Reason: "spf-helo=" + string(v.Helo.Result)}
	}
	o := v.MailFrom
	if o.Result == "" {
		// MAIL FROM not checked (no_check): the HELO result, if any.
		if v.Helo.Result == "" {
			return policyd.Decision{Reason: "spf=skip(no-check)"}
		}
		return policyd.Decision{Prepend: c.prepend(v.Helo), Reason: "spf-helo=" + string(v.Helo.Result)}
	}
	reason := "spf=" + string(o.Result)
	if o.Identity == "helo" {
		reason = "spf-helo=" + string(o.Result)
	}
	if own {
		switch o.Result {
		case Pass:
		case Fail:
			return policyd.Decision{Action: "550 5.7.23 " + o.Explanation, Reason: "own-domain " + reason}
		case TempError:
			// RFC 7372 §3.2: X.7.24; DNS trouble is never a 5xx.
			return policyd.Decision{Action: "DEFER_IF_PERMIT 4.7.24 SPF temporary error checking " + o.Domain + "; try again later", Reason: "own-domain " + reason}
		default:
			// Not an SPF failure (RFC 7372's X.7.23 does not apply):
			// our local policy refuses, X.7.1 (RFC 3463 §3.8).
			return policyd.Decision{Action: fmt.Sprintf("550 5.7.1 %s is a domain of this server: mail from it must come through our submission service or a host its SPF record lists (SPF %s)",
				o.Domain, o.Result), Reason: "own-domain " + reason}
		}
	}
	if enforce {
		level := c.cfg.MailFromReject
		if o.Identity == "helo" && c.cfg.HeloReject != NoCheck {
			// A null sender's only identity is its HELO name (§2.4):
			// postfix-policyd-spf-python judges it by HELO_reject alone,
			// and so does postkit (TestLevelsAgreeWithPolicydSPF).
			level = c.cfg.HeloReject
		}
		switch {
		case o.Result == Fail && level.refuses(Fail, nullSender):
			return policyd.Decision{Action: "550 5.7.23 " + o.Explanation, Reason: reason}
		case level.refuses(o.Result, nullSender):
			return policyd.Decision{Action: rejectText(o, ip, "this server accepts only senders whose domain passes SPF or publishes no policy"), Reason: reason}
		case (o.Result == SoftFail || o.Result == Neutral) && o.Identity == "mailfrom" && level != RejectNever && c.notPassDomain(o.Domain):
			return policyd.Decision{Action: rejectText(o, ip, o.Domain+" is a domain whose mail must pass SPF here"), Reason: reason + " reject-not-pass-domain"}
		case o.Result == TempError && c.cfg.TempErrorDefer && level != RejectNever:
			// The peer's TempError_Defer and PermError_reject cover both
			// identities, unless that identity's level is false.
			// RFC 7372 §3.2: X.7.24, SPF validation error.
			return policyd.Decision{Action: "DEFER_IF_PERMIT 4.7.24 SPF temporary error checking " + o.Domain + "; try again later", Reason: reason}
		case o.Result == PermError && c.cfg.PermErrorReject && level != RejectNever:
			return policyd.Decision{Action: "550 5.7.24 SPF permanent error in the policy of " + o.Domain + ": " + o.Problem, Reason: reason}
		}
	}
	return policyd.Decision{Prepend: c.prepend(o), Reason: reason}
}

// prepend is the field recording outcome o, as Config.HeaderType says.
func (c *Check) prepend(o Outcome) []string {
	switch c.cfg.HeaderType {
	case AuthResults:
		return []string{o.AR}
	case NoHeader:
		return nil
	}
	return []string{o.Header}
}

// checkHost runs check_host() (§4) for one identity and fills the outcome.
func (c *Check) checkHost(ctx context.Context, identity string, ip netip.Addr, helo, sender, domain string) Outcome {
	o := Outcome{Identity: identity, Domain: domain, Sender: sender}
	env := &macroEnv{ip: ip, sender: sender, helo: helo, receiver: c.cfg.Hostname, now: c.cfg.Now()}
	lr := &libResolver{res: c.res, env: env}
	key := identityKey(identity, ip, helo, domain)
	if e, expires, ok := c.idCache.Get(key, c.cfg.Now()); ok {
		o.Result, o.Problem = e.result, e.problem
		// What is built on this result (the decision) is bounded by the
		// DNS answers the result was built from.
		dnsclient.NoteExpiry(ctx, expires)
	} else if !validSPFDomain(domain) {
		// §4.3: a malformed or single-label domain gives "none".
		o.Result = None
		o.Problem = "not a valid domain name"
	} else {
		hctx, exp := dnsclient.WithExpiry(ctx)
		opts := []spf.Option{spf.WithResolver(lr), spf.WithContext(hctx)}
		if c.cfg.MaxVoidLookups > 0 {
			opts = append(opts, spf.OverrideVoidLookupLimit(c.cfg.MaxVoidLookups))
		}
		res, err := spf.CheckHostWithSender(net.IP(ip.AsSlice()), helo, sender, opts...)
		o.Result = Result(res)
		if o.Result == TempError && ctx.Err() != nil {
			o.Problem = "time budget exhausted"
		} else if lr.problem != "" {
			o.Problem = lr.problem
		} else if err != nil && (o.Result == PermError || o.Result == TempError) {
			o.Problem = err.Error()
		}
		// A temporary error is asked again next time; a result that
		// depended on the local part is only valid for this sender.
		if expires, ok := exp.Earliest(); ok && o.Result != TempError && !lr.localPart {
			c.idCache.Put(key, outcomeEntry{o.Result, o.Problem}, expires, c.cfg.Now())
		}
	}
	if o.Result == Fail {
		o.Explanation = c.explain(ctx, env, domain)
	}
	o.Header = c.header(o, ip, helo)
	o.AR = c.arHeader(o, ip, helo)
	if o.Result == PermError || o.Result == TempError {
		c.cfg.Logger.Debug("spf: error result", "identity", identity, "domain", domain, "result", o.Result, "problem", o.Problem)
	}
	return o
}

// validSPFDomain: §4.3 asks for a multi-label name of valid labels.
func validSPFDomain(d string) bool {
	d = strings.TrimSuffix(d, ".")
	if len(d) == 0 || len(d) > 253 || !strings.Contains(d, ".") {
		return false
	}
	for _, l := range strings.Split(d, ".") {
		if len(l) == 0 || len(l) > 63 {
			return false
		}
	}
	return true
}

// arHeader renders the outcome as an Authentication-Results field (RFC 8601
// section 2.7.2: spf with smtp.mailfrom, or smtp.helo for the HELO
// identity), the comment as in Received-SPF.
func (c *Check) arHeader(o Outcome, ip netip.Addr, helo string) string {
	var b strings.Builder
	b.WriteString("Authentication-Results: ")
	b.WriteString(c.cfg.AuthservID)
	b.WriteString("; spf=")
	b.WriteString(string(o.Result))
	b.WriteString(" (")
	b.WriteString(commentText(c.cfg.Hostname + ": " + c.comment(o, ip)))
	b.WriteString(")")
	if o.Identity == "mailfrom" {
		b.WriteString(" smtp.mailfrom=" + headerValue(o.Sender))
	} else {
		b.WriteString(" smtp.helo=" + headerValue(o.Domain))
	}
	return b.String()
}

// comment is the human-readable part of a result field.
func (c *Check) comment(o Outcome, ip netip.Addr) string {
	var comment string
	switch o.Result {
	case Pass:
		comment = fmt.Sprintf("domain of %s designates %s as permitted sender", o.Sender, ip)
	case Fail:
		comment = o.Explanation
	case SoftFail:
		comment = fmt.Sprintf("domain of transitioning %s does not designate %s as permitted sender", o.Sender, ip)
	case Neutral:
		comment = fmt.Sprintf("%s is neither permitted nor denied by domain of %s", ip, o.Sender)
	case None:
		comment = fmt.Sprintf("domain of %s does not designate permitted sender hosts", o.Sender)
	case TempError:
		comment = fmt.Sprintf("temporary error looking up the policy of %s: %s", o.Domain, o.Problem)
	case PermError:
		comment = fmt.Sprintf("permanent error in the policy of %s: %s", o.Domain, o.Problem)
	}
	return comment
}

// header renders the §9.1 Received-SPF header field.
func (c *Check) header(o Outcome, ip netip.Addr, helo string) string {
	comment := c.comment(o, ip)
	var b strings.Builder
	b.WriteString("Received-SPF: ")
	b.WriteString(string(o.Result))
	b.WriteString(" (")
	b.WriteString(commentText(c.cfg.Hostname + ": " + comment))
	b.WriteString(") client-ip=")
	b.WriteString(ip.String())
	b.WriteString(";")
	if o.Identity == "mailfrom" {
		b.WriteString(" envelope-from=" + headerValue(o.Sender) + ";")
	}
	if helo != "" {
		b.WriteString(" helo=" + headerValue(helo) + ";")
	}
	b.WriteString(" receiver=" + headerValue(c.cfg.Hostname) + ";")
	b.WriteString(" identity=" + o.Identity + ";")
	if o.Problem != "" && (o.Result == PermError || o.Result == TempError) {
		b.WriteString(" problem=" + headerValue(o.Problem) + ";")
	}
	return b.String()
}

// commentText makes DNS-supplied text safe inside a header comment
// (RFC 5322 §3.2.2): printable ASCII only, parentheses and backslashes
// quoted, bounded length.
func commentText(s string) string {
	return sanitize(s, 400, true)
}

func sanitize(s string, max int, comment bool) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < max; i++ {
		ch := s[i]
		switch {
		case ch < 0x20 || ch > 0x7e:
			b.WriteByte('?')
		case comment && (ch == '(' || ch == ')' || ch == '\\'):
			b.WriteByte('\\')
			b.WriteByte(ch)
		default:
			b.WriteByte(ch)
		}
	}
	return b.String()
}

// headerValue renders a key-value-pair value (§9.1): a dot-atom as is,
// anything else as a quoted-string.
func headerValue(v string) string {
	if v != "" && isDotAtom(v) {
		return v
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(v) && i < 300; i++ {
		ch := v[i]
		switch {
		case ch < 0x20 || ch > 0x7e:
			b.WriteByte('?')
		case ch == '"' || ch == '\\':
			b.WriteByte('\\')
			b.WriteByte(ch)
		default:
			b.WriteByte(ch)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func isDotAtom(s string) bool {
	if s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if 'a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9' ||
			strings.IndexByte("!#$%&'*+-/=?^_`{|}~.@", ch) >= 0 {
			continue
		}
		return false
	}
	return true
}

// identityKey names a check_host() evaluation whose result depends on
// nothing else (§4.1: the client IP, the domain, the sender, the HELO name
// for %{h}) when no record used the sender's local part (%{l}, %{s}): the
// next messages of a client repeat its HELO identity, and bulk senders send
// from many local parts of one domain.
func identityKey(identity string, ip netip.Addr, helo, domain string) string {
	return identity + "\x00" + ip.String() + "\x00" + strings.ToLower(helo) + "\x00" + strings.ToLower(domain)
}

// outcomeEntry is a check_host() result kept in the identity cache (not
// headers or explanations, which name the sender and are built per
// request).
type outcomeEntry struct {
	result  Result
	problem string
}
