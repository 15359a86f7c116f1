// Package dnsbl is the policy check that scores a client over DNS block and
// allow lists (RFC 5782) the way Postfix's postscreen does with
// postscreen_dnsbl_sites, postscreen_dnsbl_threshold and
// postscreen_dnsbl_allowlist_threshold (POSTSCREEN_README "Before-220 tests:
// DNS Blocklist"), but answers at the policy stage as reject_rbl_client
// would.
package dnsbl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/postkit/postkit/internal/dnsclient"
	"github.com/postkit/postkit/internal/ttlcache"
	"github.com/postkit/postkit/policyd"
	"github.com/postkit/postkit/policyd/access"
)

// Resolver looks up A records. *net.Resolver and *dnsclient.Resolver
// satisfy it. A name that does not exist (NXDOMAIN or no A record) must fail
// with a *net.DNSError whose IsNotFound is true: the client is not listed.
type Resolver interface {
	LookupIP(ctx context.Context, network, host string) ([]net.IP, error)
}

// Site is one entry of postscreen_dnsbl_sites:
// domain[=filter][*weight].
type Site struct {
	// Domain is the list's zone, e.g. "zen.spamhaus.org".
	Domain string
	// Filter restricts the answers that count; nil counts any answer in
	// 127.0.0.0/8. Parsed from "127.0.0.[2..11]" or "127.0.[0..255].[1;3]".
	Filter *Filter
	// Weight is added to the score when the list answers (through Filter);
	// negative for allow lists. Default 1.
	Weight int
}

// Filter matches an IPv4 answer octet by octet: each octet matches a
// set of ranges, postscreen's "[2..11]" and "[1;3;5..7]" syntax.
type Filter struct {
	spec   string
	octets [4][]octetRange
}

type octetRange struct{ lo, hi uint8 }

// String returns the filter as written.
func (f *Filter) String() string { return f.spec }

// Match reports whether the answer a matches the filter.
func (f *Filter) Match(a netip.Addr) bool {
	if f == nil {
		return true
	}
	if !a.Is4() {
		return false
	}
	b := a.As4()
	for i, rs := range f.octets {
		ok := false
		for _, r := range rs {
			if b[i] >= r.lo && b[i] <= r.hi {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// String renders the site in postscreen_dnsbl_sites syntax.
func (s Site) String() string {
	out := s.Domain
	if s.Filter != nil {
		out += "=" + s.Filter.spec
	}
	if s.Weight != 1 {
		out += "*" + strconv.Itoa(s.Weight)
	}
	return out
}

// ParseSites parses a postscreen_dnsbl_sites value: sites separated by
// commas and/or white space.
func ParseSites(s string) ([]Site, error) {
	var out []Site
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r' }) {
		site, err := ParseSite(f)
		if err != nil {
			return nil, err
		}
		out = append(out, site)
	}
	return out, nil
}

// ParseSite parses one postscreen_dnsbl_sites entry, e.g.
// "zen.spamhaus.org=127.0.0.[2..11]*3" or "list.dnswl.org=127.0.[0..255].[1..3]*-2".
func ParseSite(s string) (Site, error) {
	orig := s
	site := Site{Weight: 1}
	if i := strings.LastIndexByte(s, '*'); i >= 0 {
		w, err := strconv.Atoi(s[i+1:])
		if err != nil || w == 0 || w > 1000 || w < -1000 {
			return Site{}, fmt.Errorf("dnsbl: site %q: weight %q: want a non-zero integer between -1000 and 1000, e.g. *3 or *-2", orig, s[i+1:])
		}
		site.Weight, s = w, s[:i]
	}
	if i := strings.IndexByte(s, '='); i >= 0 {
		f, err := parseFilter(s[i+1:])
		if err != nil {
			return Site{}, fmt.Errorf("dnsbl: site %q: %w", orig, err)
		}
		site.Filter, s = f, s[:i]
	}
	d := strings.ToLower(strings.TrimSuffix(s, "."))
	if err := checkDomain(d); err != nil {
		return Site{}, fmt.Errorf("dnsbl: site %q: %w", orig, err)
	}
	site.Domain = d
	return site, nil
}

// checkDomain accepts host names (RFC 1035 §2.3.1, with "_" allowed)
// short enough to take an IPv6 query prefix (64 bytes) under the 253-byte limit.
func checkDomain(d string) error {
	if d == "" || len(d) > 253-64 {
		return fmt.Errorf("domain %q: want a DNS name of 1 to 189 bytes, e.g. zen.spamhaus.org", d)
	}
	for _, label := range strings.Split(d, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("domain %q: empty or over-long label", d)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("domain %q: character %q not allowed", d, c)
			}
		}
	}
	return nil
}

// parseFilter parses "a.b.c.d" where each octet is a number or a
// bracketed list of numbers and "lo..hi" ranges separated by ';'.
func parseFilter(s string) (*Filter, error) {
	f := &Filter{spec: s}
	parts := strings.Split(s, ".")
	// Dots also separate "lo..hi": rejoin the pieces inside brackets.
	var octets []string
	for i := 0; i < len(parts); i++ {
		p := parts[i]
		for strings.Count(p, "[") > strings.Count(p, "]") && i+1 < len(parts) {
			i++
			p += "." + parts[i]
		}
		octets = append(octets, p)
	}
	if len(octets) != 4 {
		return nil, fmt.Errorf("filter %q: want four octets, e.g. 127.0.0.[2..11]", s)
	}
	for i, o := range octets {
		var items []string
		if strings.HasPrefix(o, "[") && strings.HasSuffix(o, "]") && len(o) > 2 {
			items = strings.Split(o[1:len(o)-1], ";")
		} else {
			items = []string{o}
		}
		for _, it := range items {
			lo, hi, isRange := strings.Cut(it, "..")
			if !isRange {
				hi = lo
			}
			l, err1 := parseOctet(lo)
			h, err2 := parseOctet(hi)
			if err1 != nil || err2 != nil || l > h {
				return nil, fmt.Errorf("filter %q: octet %q: want 0-255, [lo..hi] or [a;b;c]", s, o)
			}
			f.octets[i] = append(f.octets[i], octetRange{l, h})
		}
	}
	return f, nil
}

func parseOctet(s string) (uint8, error) {
	if s == "" || len(s) > 3 || strings.Trim(s, "0123456789") != "" {
		return 0, errors.New("not an octet")
	}
	n, err := strconv.Atoi(s)
	if err != nil || n > 255 {
		return 0, errors.New("not an octet")
	}
	return uint8(n), nil
}

// Config configures the DNSBL check.
type Config struct {
	// Sites are the lists to query, all in parallel, one query per distinct
	// domain.
	Sites []Site
	// Threshold: a client whose summed weight reaches it is refused
	// (postscreen_dnsbl_threshold). Required: 1 or more.
	Threshold int
	// AllowThreshold: a client whose score is at or below it is allow-listed
	// (postscreen_dnsbl_allowlist_threshold); greylisting skips it. Must be
	// negative. Default -1.
	AllowThreshold int
	// RejectCode starts the refusal: "<code> Service unavailable; client
	// [ip] blocked using <lists>". Default "554 5.7.1" (reject_rbl_client's
	// code and enhanced status).
	RejectCode string
	// Timeout bounds all the queries of one client. Zero: no bound of its
	// own, the request's context alone bounds them.
	Timeout time.Duration
	// CacheSize bounds the cache of client scores, which spares the next
	// recipients of a client (and the greylisting check) their queries.
	// A score is kept until the first of the DNS answers it was built from
	// expires (the smallest TTL, or the RFC 2308 negative TTL, as the
	// resolver reports them through dnsclient.WithExpiry); a resolver that
	// reports none, and results with DNS errors, are not kept. Default
	// 10000 clients.
	CacheSize int
	// CheckAuthenticated also scores SASL-authenticated clients (default:
	// skipped, as permit_sasl_authenticated before reject_rbl_client does).
	CheckAuthenticated bool
	// CheckPrivate also queries loopback, private (RFC 1918, RFC 4193) and
	// link-local clients, which public lists never list. Default: skipped.
	CheckPrivate bool
	// SkipClients are networks never queried (e.g. mynetworks).
	SkipClients []netip.Prefix
	Logger      *slog.Logger
	Now         func() time.Time
}

// Result is one client's score.
type Result struct {
	Score   int
	Listed  []string // domains that added a positive weight
	Allowed []string // domains that added a negative weight
	Errors  int      // queries that failed (counted as not listed)
}

// Check is the DNS block/allow list check.
type Check struct {
	cfg     Config
	res     Resolver
	log     *slog.Logger
	domains []string // distinct Sites domains, in first-seen order

	cache *ttlcache.Cache[netip.Addr, Result]
}

var _ policyd.Check = (*Check)(nil)

// New returns the DNSBL check querying through res.
func New(cfg Config, res Resolver) (*Check, error) {
	if res == nil {
		return nil, errors.New("dnsbl: no resolver given")
	}
	if len(cfg.Sites) == 0 {
		return nil, errors.New("dnsbl: no sites; list at least one, e.g. zen.spamhaus.org=127.0.0.[2..11]*3")
	}
	if cfg.Threshold < 1 {
		return nil, fmt.Errorf("dnsbl: threshold %d: want 1 or more, e.g. 3", cfg.Threshold)
	}
	if cfg.AllowThreshold == 0 {
		cfg.AllowThreshold = -1
	}
	if cfg.AllowThreshold > 0 {
		return nil, fmt.Errorf("dnsbl: allow threshold %d must be negative", cfg.AllowThreshold)
	}
	if cfg.RejectCode == "" {
		cfg.RejectCode = "554 5.7.1"
	}
	if !access.IsRefusalCode(cfg.RejectCode) {
		return nil, fmt.Errorf("dnsbl: reject code %q: want a 4xx or 5xx code, e.g. 554 5.7.1", cfg.RejectCode)
	}
	if cfg.Timeout < 0 {
		return nil, fmt.Errorf("dnsbl: timeout %v: want a positive duration, or 0 for none", cfg.Timeout)
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = 10000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	d := &Check{cfg: cfg, res: res, log: log.With("check", "dnsbl"), cache: ttlcache.New[netip.Addr, Result](cfg.CacheSize)}
	seen := map[string]bool{}
	for _, s := range cfg.Sites {
		if !seen[s.Domain] {
			seen[s.Domain] = true
			d.domains = append(d.domains, s.Domain)
		}
	}
	return d, nil
}

// Name implements policyd.Check.
func (d *Check) Name() string { return "dnsbl" }

// Check implements policyd.Check: it refuses a client whose score reaches the
// threshold, naming the lists that listed it. DNS faults never refuse.
func (d *Check) Check(ctx context.Context, r *policyd.Request) (policyd.Decision, error) {
	ip := r.ClientAddr()
	if d.skip(r, ip) {
		return policyd.Decision{}, nil
	}
	res := d.Lookup(ctx, ip)
	switch {
	case res.Score >= d.cfg.Threshold:
		action := fmt.Sprintf("%s Service unavailable; client [%s] blocked using %s",
			d.cfg.RejectCode, ip, strings.Join(res.Listed, ", "))
		d.log.Info("client listed", "queue_id", r.Get("queue_id"), "client", ip.String(), "score", res.Score, "lists", res.Listed)
		return policyd.Decision{Action: action, Reason: "dnsbl=listed"}, nil
	case res.Score <= d.cfg.AllowThreshold:
		return policyd.Decision{Reason: "dnsbl=allowlisted"}, nil
	case res.Errors > 0:
		return policyd.Decision{Reason: "dnsbl=error"}, nil
	}
	return policyd.Decision{}, nil
}

func (d *Check) skip(r *policyd.Request, ip netip.Addr) bool {
	if !ip.IsValid() {
		return true
	}
	if !d.cfg.CheckAuthenticated && r.SASLUser() != "" {
		return true
	}
	if !d.cfg.CheckPrivate && (ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsUnspecified()) {
		return true
	}
	for _, p := range d.cfg.SkipClients {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// AllowListed reports whether the client r comes from scores at or below the
// allow threshold (e.g. it is on list.dnswl.org with a negative weight). It
// uses the cached score when Check already ran for this client; clients Check
// skips (authenticated, private, SkipClients) are not allow-listed.
func (d *Check) AllowListed(ctx context.Context, r *policyd.Request) bool {
	ip := r.ClientAddr()
	if d.skip(r, ip) {
		return false
	}
	return d.Lookup(ctx, ip).Score <= d.cfg.AllowThreshold
}

// Lookup scores ip over every site, from the cache when it is fresh.
func (d *Check) Lookup(ctx context.Context, ip netip.Addr) Result {
	ip = ip.Unmap()
	now := d.cfg.Now()
	if res, expires, ok := d.cache.Get(ip, now); ok {
		// What is built on the score (a greylisting decision) is bounded
		// by the same answers.
		dnsclient.NoteExpiry(ctx, expires)
		return res
	}
	qctx, exp := dnsclient.WithExpiry(ctx)
	res := d.query(qctx, ip)
	if expires, ok := exp.Earliest(); ok && res.Errors == 0 {
		d.cache.Put(ip, res, expires, now)
	}
	return res
}

// query asks every list about ip in parallel and sums the weights.
func (d *Check) query(ctx context.Context, ip netip.Addr) Result {
	if d.cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.cfg.Timeout)
		defer cancel()
	}
	rev := ReverseName(ip)
	answers := make([][]netip.Addr, len(d.domains))
	failed := make([]bool, len(d.domains))
	var wg sync.WaitGroup
	for i, dom := range d.domains {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i], failed[i] = d.queryOne(ctx, ip, rev+"."+dom, dom)
		}()
	}
	wg.Wait()

	var res Result
	for i, dom := range d.domains {
		if failed[i] {
			res.Errors++
			continue
		}
		for _, s := range d.cfg.Sites {
			if s.Domain != dom || !siteMatches(s, answers[i]) {
				continue
			}
			// Each matching site entry counts once, whatever the number
			// of answers (postscreen_dnsbl_sites).
			res.Score += s.Weight
			if s.Weight > 0 {
				res.Listed = appendOnce(res.Listed, dom)
			} else {
				res.Allowed = appendOnce(res.Allowed, dom)
			}
		}
	}
	return res
}

func siteMatches(s Site, answers []netip.Addr) bool {
	for _, a := range answers {
		if s.Filter.Match(a) {
			return true
		}
	}
	return false
}

func appendOnce(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}

// spamhausErrors are the answers by which Spamhaus (and lists that copy its
// convention) report a query error rather than a listing: 127.255.255.252
// typing error, .254 query via a public resolver, .255 excessive queries.
var spamhausErrors = netip.MustParsePrefix("127.255.255.0/24")

var loopback4 = netip.MustParsePrefix("127.0.0.0/8")

// queryOne returns the usable answers for one list, or failed=true when the
// list could not tell (DNS error, error answer): the client then counts as
// not listed there.
func (d *Check) queryOne(ctx context.Context, ip netip.Addr, name, dom string) (answers []netip.Addr, failed bool) {
	ips, err := d.res.LookupIP(ctx, "ip4", name)
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return nil, false
		}
		d.log.Warn("dnsbl query failed; client counted as not listed there", "list", dom, "client", ip.String(), "err", err)
		return nil, true
	}
	for _, raw := range ips {
		a, ok := netip.AddrFromSlice(raw)
		if !ok {
			continue
		}
		a = a.Unmap()
		switch {
		case spamhausErrors.Contains(a):
			d.log.Warn("dnsbl answered with an error code; check the resolver (public resolvers are refused) and the query volume",
				"list", dom, "client", ip.String(), "answer", a.String())
			return nil, true
		case !loopback4.Contains(a):
			// RFC 5782 §2.1: list entries are A records in 127.0.0.0/8;
			// anything else is a wildcarding resolver, not a listing.
			d.log.Warn("dnsbl answer outside 127.0.0.0/8 ignored", "list", dom, "client", ip.String(), "answer", a.String())
			continue
		}
		answers = append(answers, a)
	}
	sort.Slice(answers, func(i, j int) bool { return answers[i].Less(answers[j]) })
	return answers, false
}

// ReverseName returns the DNSxL query prefix of ip (RFC 5782 §2.1 for IPv4:
// octets reversed; §2.4 for IPv6: 32 nibbles reversed), without the list's
// domain.
func ReverseName(ip netip.Addr) string {
	ip = ip.Unmap()
	var b strings.Builder
	if ip.Is4() {
		a := ip.As4()
		for i := 3; i >= 0; i-- {
			b.WriteString(strconv.Itoa(int(a[i])))
			if i > 0 {
				b.WriteByte('.')
			}
		}
		return b.String()
	}
	const hex = "0123456789abcdef"
	a := ip.As16()
	for i := 15; i >= 0; i-- {
		b.WriteByte(hex[a[i]&0xf])
		b.WriteByte('.')
		b.WriteByte(hex[a[i]>>4])
		if i > 0 {
			b.WriteByte('.')
		}
	}
	return b.String()
}
