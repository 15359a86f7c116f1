// Package dnsclient is postkit's stub resolver (RFC 1035 §7, RFC 1034 §5.3.1):
// it sends recursive queries to configured servers over UDP with TCP fallback on
// truncation (RFC 7766 §5), retries over servers, and keeps a bounded TTL cache
// with negative caching by the SOA minimum (RFC 2308 §5). It also tells its
// callers when each answer it gives stops being valid (WithExpiry), so that
// what they build from answers is kept no longer than the answers.
//
// Its Lookup methods have the signatures of net.Resolver so that consumers
// declare the small interface they need (blitiri.com.ar/go/spf's DNSResolver
// among them). Every error is a *net.DNSError, returned unwrapped because some
// consumers type-assert it: IsNotFound marks NXDOMAIN and no-data answers (the
// "void lookups" of RFC 7208 §4.6.4), Temporary() marks SERVFAIL, REFUSED and
// timeouts; errors.Is tells the cases apart with the Err* sentinels.
package dnsclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Sentinels wrapped by the *net.DNSError values the resolver returns.
var (
	ErrNXDomain    = errors.New("no such host")           // RCODE 3, permanent
	ErrNoData      = errors.New("no such record")         // RCODE 0 with no answer of the type, permanent
	ErrInvalidName = errors.New("invalid domain name")    // never sent, permanent (answered like NXDOMAIN)
	ErrServFail    = errors.New("server failure")         // SERVFAIL, REFUSED, …: temporary
	ErrTimeout     = errors.New("timeout")                // no server answered in time: temporary
	ErrCNAMELoop   = errors.New("cname chain too long")   // permanent
	ErrMalformed   = errors.New("malformed DNS response") // temporary (another server may do better)
)

// Config configures a Resolver. Zero values select the defaults.
type Config struct {
	// Servers are "host:port" (or bare host, port 53) recursive servers, tried
	// in order. Default: the nameservers of /etc/resolv.conf.
	Servers []string
	// Timeout bounds one query to one server. Default: 2s.
	Timeout time.Duration
	// Attempts is how many rounds over all servers are made. Default: 2.
	Attempts int
	// CacheSize bounds the number of (name, type) answers kept (see
	// internal/ttlcache: between half of it and all of it). Default: 10000;
	// negative disables the cache.
	CacheSize int
	// MaxTTL caps how long any answer is cached. Default: 1h.
	MaxTTL time.Duration
	// Now is the clock (a seam for tests). Default: time.Now.
	Now func() time.Time
}

// Resolver is a caching stub resolver, safe for concurrent use.
type Resolver struct {
	servers  []string
	timeout  time.Duration
	attempts int
	maxTTL   time.Duration
	now      func() time.Time
	udp      *dns.Client
	tcp      *dns.Client
	cache    *cache
	pool     udpPool         // sockets to loopback servers (udppool.go)
	loopback map[string]bool // servers whose sockets are pooled

	mu       sync.Mutex
	inflight map[cacheKey]*call
}

type call struct {
	done    chan struct{}
	res     result
	err     error
	expires time.Time
}

// result is the outcome of one (name, type) question after CNAME chasing.
type result struct {
	rrs []dns.RR // records of the asked type, owner = end of the CNAME chain
}

// New returns a Resolver. With no Servers it reads /etc/resolv.conf.
func New(c Config) (*Resolver, error) {
	r := &Resolver{
		timeout:  c.Timeout,
		attempts: c.Attempts,
		maxTTL:   c.MaxTTL,
		now:      c.Now,
		inflight: map[cacheKey]*call{},
	}
	if r.timeout <= 0 {
		r.timeout = 2 * time.Second
	}
	if r.attempts <= 0 {
		r.attempts = 2
	}
	if r.maxTTL <= 0 {
		r.maxTTL = time.Hour
	}
	if r.now == nil {
		r.now = time.Now
	}
	servers := c.Servers
	if len(servers) == 0 {
		cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil {
			return nil, fmt.Errorf("dnsclient: no servers given and /etc/resolv.conf unreadable: %w; pass servers explicitly", err)
		}
		for _, s := range cc.Servers {
			servers = append(servers, net.JoinHostPort(s, cc.Port))
		}
		if len(servers) == 0 {
			return nil, errors.New("dnsclient: /etc/resolv.conf lists no nameserver; pass servers explicitly")
		}
	}
	for _, s := range servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			s = net.JoinHostPort(strings.Trim(s, "[]"), "53")
		}
		host, _, _ := net.SplitHostPort(s)
		if _, err := netip.ParseAddr(host); err != nil {
			return nil, fmt.Errorf("dnsclient: server %q: want an IP address with optional :port, e.g. 127.0.0.1:53", s)
		}
		r.servers = append(r.servers, s)
	}
	// RFC 6891 §6.2.5 and the DNS flag day 2020 advice: 1232 bytes avoids
	// fragmentation; larger answers come back truncated and go over TCP.
	r.udp = &dns.Client{Net: "udp", UDPSize: 1232}
	r.loopback = map[string]bool{}
	for _, s := range r.servers {
		r.loopback[s] = isLoopback(s)
	}
	r.tcp = &dns.Client{Net: "tcp"}
	size := c.CacheSize
	if size == 0 {
		size = 10000
	}
	if size > 0 {
		r.cache = newCache(size)
	}
	return r, nil
}

// Close closes the sockets the resolver keeps open for reuse (to loopback
// servers). A query in flight finishes on its socket and closes it; the
// resolver still answers afterwards, with a socket per query. The daemons
// close the resolver of a chain a reload replaced.
func (r *Resolver) Close() error { return r.pool.close() }

// Servers returns the servers in the order they are tried.
func (r *Resolver) Servers() []string { return append([]string(nil), r.servers...) }

// LookupTXT returns the TXT records of name; the strings of one record are
// concatenated without separator (RFC 7208 §3.3, RFC 6376 §3.6.2.2).
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	rrs, err := r.lookup(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		t := rr.(*dns.TXT)
		var b strings.Builder
		for _, s := range t.Txt {
			b.WriteString(unescapeTXT(s))
		}
		out = append(out, b.String())
	}
	return out, nil
}

// LookupMX returns the MX records of name sorted by preference; host names
// keep their trailing dot, as with net.Resolver.
func (r *Resolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	rrs, err := r.lookup(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	out := make([]*net.MX, 0, len(rrs))
	for _, rr := range rrs {
		m := rr.(*dns.MX)
		out = append(out, &net.MX{Host: m.Mx, Pref: m.Preference})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Pref < out[j].Pref })
	return out, nil
}

// LookupAddr returns the PTR names of an IP address (trailing dot kept).
func (r *Resolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	rev, err := dns.ReverseAddr(addr)
	if err != nil {
		return nil, newError(addr, "", ErrInvalidName)
	}
	rrs, err := r.lookup(ctx, rev, dns.TypePTR)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, rr.(*dns.PTR).Ptr)
	}
	return out, nil
}

// LookupIPAddr returns the A and AAAA addresses of host (A first). It fails
// with a not-found error only if both queries are void, and with a temporary
// error if one failed and the other gave nothing.
func (r *Resolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	ips, err := r.LookupIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	out := make([]net.IPAddr, len(ips))
	for i, ip := range ips {
		out[i] = net.IPAddr{IP: ip}
	}
	return out, nil
}

// LookupHost returns host's addresses as strings.
func (r *Resolver) LookupHost(ctx context.Context, host string) ([]string, error) {
	ips, err := r.LookupIP(ctx, "ip", host)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out, nil
}

// LookupIP is net.Resolver.LookupIP: network is "ip", "ip4" or "ip6".
func (r *Resolver) LookupIP(ctx context.Context, network, host string) ([]net.IP, error) {
	var types []uint16
	switch network {
	case "ip":
		types = []uint16{dns.TypeA, dns.TypeAAAA}
	case "ip4":
		types = []uint16{dns.TypeA}
	case "ip6":
		types = []uint16{dns.TypeAAAA}
	default:
		return nil, fmt.Errorf("dnsclient: network %q: want ip, ip4 or ip6", network)
	}
	rrs := make([][]dns.RR, len(types))
	errs := make([]error, len(types))
	if len(types) == 1 {
		rrs[0], errs[0] = r.lookup(ctx, host, types[0])
	} else {
		var wg sync.WaitGroup
		for i, t := range types {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rrs[i], errs[i] = r.lookup(ctx, host, t)
			}()
		}
		wg.Wait()
	}
	var ips []net.IP
	for _, set := range rrs {
		for _, rr := range set {
			switch v := rr.(type) {
			case *dns.A:
				ips = append(ips, v.A)
			case *dns.AAAA:
				ips = append(ips, v.AAAA)
			}
		}
	}
	if len(ips) > 0 {
		return ips, nil
	}
	// Nothing found: a temporary failure wins over a void answer, so that a
	// caller retries rather than concluding the name has no address.
	for _, err := range errs {
		if IsTemporary(err) {
			return nil, err
		}
	}
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return nil, newError(host, "", ErrNoData)
}

// IsNotFound reports whether err is a void answer: NXDOMAIN, no data of the
// type, or a malformed name (RFC 7208 §4.3 treats those alike).
func IsNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// IsTemporary reports whether err is worth retrying later (SERVFAIL, timeout).
func IsTemporary(err error) bool {
	var de *net.DNSError
	if errors.As(err, &de) {
		return de.Temporary()
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

func newError(name, server string, kind error) *net.DNSError {
	e := &net.DNSError{
		UnwrapErr: kind,
		Err:       kind.Error(),
		Name:      strings.TrimSuffix(name, "."),
		Server:    server,
	}
	switch kind {
	case ErrNXDomain, ErrNoData, ErrInvalidName:
		e.IsNotFound = true
	case ErrTimeout:
		e.IsTimeout, e.IsTemporary = true, true
	case ErrServFail, ErrMalformed:
		e.IsTemporary = true
	}
	return e
}

// validName checks the RFC 1035 §2.3.4 limits: labels of 1 to 63 octets and
// at most 255 octets in wire form. An invalid name is answered as NXDOMAIN
// without a query, which RFC 7208 §4.3 asks of SPF ("none").
func validName(fqdn string) bool {
	if fqdn == "." || len(fqdn) > 254 {
		return false
	}
	_, ok := dns.IsDomainName(fqdn)
	if !ok {
		return false
	}
	for _, l := range dns.SplitDomainName(fqdn) {
		if len(l) == 0 || len(l) > 63 {
			return false
		}
	}
	return !strings.Contains(fqdn, "..")
}

// canonName puts a name in the form miekg/dns gives names it unpacks
// (presentation escapes for spaces and other odd octets), lower-cased, so
// that names from callers and from answers compare equal.
func canonName(name string) (string, bool) {
	buf := make([]byte, 256)
	n, err := dns.PackDomainName(dns.Fqdn(name), buf, 0, nil, false)
	if err != nil {
		return "", false
	}
	s, _, err := dns.UnpackDomainName(buf[:n], 0)
	if err != nil {
		return "", false
	}
	return strings.ToLower(s), true
}

const maxCNAME = 8

// lookup answers (name, qtype) from the cache or the servers, following CNAME
// chains (RFC 1034 §3.6.2) up to maxCNAME links.
func (r *Resolver) lookup(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	qname, ok := canonName(name)
	if !ok || !validName(qname) {
		return nil, newError(name, "", ErrInvalidName)
	}
	for range maxCNAME {
		res, err := r.cachedQuery(ctx, qname, qtype)
		if err != nil {
			return nil, err
		}
		if len(res.rrs) == 1 && qtype != dns.TypeCNAME {
			if c, ok := res.rrs[0].(*dns.CNAME); ok {
				// The server stopped at a CNAME (no data for its target in the
				// answer): ask for the target ourselves.
				if qname, ok = canonName(c.Target); !ok {
					return nil, newError(name, "", ErrMalformed)
				}
				continue
			}
		}
		return res.rrs, nil
	}
	return nil, newError(name, "", ErrCNAMELoop)
}

type cacheKey struct {
	name  string
	qtype uint16
}

// cachedQuery returns the answer for one question, from the cache or by
// exchange; concurrent identical questions share one exchange. Whatever the
// source, the answer's expiry is noted in ctx's Expiry (expiry.go).
func (r *Resolver) cachedQuery(ctx context.Context, qname string, qtype uint16) (result, error) {
	key := cacheKey{qname, qtype}
	if r.cache != nil {
		if res, err, expires, ok := r.cache.get(key, r.now()); ok {
			NoteExpiry(ctx, expires)
			return res, err
		}
	}
	r.mu.Lock()
	if c, ok := r.inflight[key]; ok {
		r.mu.Unlock()
		select {
		case <-c.done:
			NoteExpiry(ctx, c.expires)
			return c.res, c.err
		case <-ctx.Done():
			NoteExpiry(ctx, r.now())
			return result{}, newError(qname, "", ErrTimeout)
		}
	}
	c := &call{done: make(chan struct{})}
	r.inflight[key] = c
	r.mu.Unlock()

	res, err, ttl := r.exchange(ctx, qname, qtype)
	// RFC 1035 §3.2.1, RFC 2308 §5: the answer is valid for its TTL (0: for
	// this use only), capped by MaxTTL.
	now := r.now()
	c.expires = now.Add(min(ttl, r.maxTTL))
	if r.cache != nil {
		r.cache.put(key, res, err, c.expires, now)
	}
	c.res, c.err = res, err
	r.mu.Lock()
	delete(r.inflight, key)
	r.mu.Unlock()
	close(c.done)
	NoteExpiry(ctx, c.expires)
	return res, err
}

// exchange asks the servers in turn, attempts rounds, and returns the
// answer, its error and how long it may be cached (0: not at all).
func (r *Resolver) exchange(ctx context.Context, qname string, qtype uint16) (result, error, time.Duration) {
	m := new(dns.Msg)
	m.SetQuestion(qname, qtype)
	m.RecursionDesired = true
	m.SetEdns0(1232, false)

	lastErr := newError(qname, "", ErrTimeout)
	for range r.attempts {
		for _, srv := range r.servers {
			if ctx.Err() != nil {
				return result{}, newError(qname, srv, ErrTimeout), 0
			}
			resp, err := r.exchangeOne(ctx, m, srv)
			if err != nil {
				lastErr = err.(*net.DNSError)
				continue
			}
			switch resp.Rcode {
			case dns.RcodeSuccess:
				return r.parseAnswer(qname, qtype, srv, resp)
			case dns.RcodeNameError:
				// RFC 2308 §5: negative answers are cached for the SOA's
				// MINIMUM field, bounded by the SOA's own TTL.
				return result{}, newError(qname, srv, ErrNXDomain), negativeTTL(resp)
			default:
				// SERVFAIL, REFUSED, NOTIMP, FORMERR: try the next server
				// (RFC 1035 §7.2). Not cached (RFC 2308 §7.1 allows it, we
				// prefer a fresh try on the next request).
				lastErr = newError(qname, srv, ErrServFail)
				lastErr.Err = "server failure: " + dns.RcodeToString[resp.Rcode]
			}
		}
	}
	return result{}, lastErr, 0
}

func (r *Resolver) exchangeOne(ctx context.Context, m *dns.Msg, srv string) (*dns.Msg, error) {
	qctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	var resp *dns.Msg
	var err error
	if r.loopback[srv] {
		resp, err = r.pool.exchangeUDP(qctx, m, srv, r.udp.UDPSize)
	} else {
		resp, _, err = r.udp.ExchangeContext(qctx, m, srv)
	}
	if err == nil && resp.Truncated {
		// RFC 7766 §5: a truncated UDP answer is retried over TCP.
		resp, _, err = r.tcp.ExchangeContext(qctx, m, srv)
	}
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() || qctx.Err() != nil {
			return nil, newError(m.Question[0].Name, srv, ErrTimeout)
		}
		e := newError(m.Question[0].Name, srv, ErrServFail)
		e.Err = err.Error()
		return nil, e
	}
	if len(resp.Question) != 1 || !strings.EqualFold(resp.Question[0].Name, m.Question[0].Name) ||
		resp.Question[0].Qtype != m.Question[0].Qtype {
		return nil, newError(m.Question[0].Name, srv, ErrMalformed)
	}
	return resp, nil
}

// parseAnswer follows the CNAME chain inside the answer section and keeps
// the records of the asked type owned by the chain's end.
func (r *Resolver) parseAnswer(qname string, qtype uint16, srv string, resp *dns.Msg) (result, error, time.Duration) {
	owner := qname
	ttl := r.maxTTL
	var chain *dns.CNAME
	for range maxCNAME + 1 {
		var next *dns.CNAME
		for _, rr := range resp.Answer {
			h := rr.Header()
			if h.Rrtype == dns.TypeCNAME && qtype != dns.TypeCNAME && strings.EqualFold(h.Name, owner) {
				next = rr.(*dns.CNAME)
				break
			}
		}
		if next == nil {
			break
		}
		ttl = min(ttl, time.Duration(next.Hdr.Ttl)*time.Second)
		chain = next
		owner = strings.ToLower(next.Target)
	}
	var rrs []dns.RR
	for _, rr := range resp.Answer {
		h := rr.Header()
		if h.Rrtype == qtype && h.Class == dns.ClassINET && strings.EqualFold(h.Name, owner) {
			rrs = append(rrs, rr)
			ttl = min(ttl, time.Duration(h.Ttl)*time.Second)
		}
	}
	if len(rrs) == 0 {
		if chain != nil && !strings.EqualFold(owner, qname) {
			// Only the chain came back; lookup asks for its target.
			return result{rrs: []dns.RR{chain}}, nil, ttl
		}
		// RFC 2308 §2.2: no data; cached like NXDOMAIN.
		return result{}, newError(qname, srv, ErrNoData), negativeTTL(resp)
	}
	return result{rrs: rrs}, nil, ttl
}

// negativeTTL is min(SOA TTL, SOA MINIMUM) from the authority section
// (RFC 2308 §5); without a SOA the answer is not cached (RFC 2308 §5 "SHOULD
// NOT be cached").
func negativeTTL(resp *dns.Msg) time.Duration {
	for _, rr := range resp.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second
		}
	}
	return 0
}

// unescapeTXT undoes the presentation escapes miekg/dns applies to
// character-strings when unpacking (\DDD for non-printable octets, \" and \\),
// giving back the octets sent on the wire.
func unescapeTXT(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 >= len(s) {
			b = append(b, c)
			continue
		}
		if i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
			n := int(s[i+1]-'0')*100 + int(s[i+2]-'0')*10 + int(s[i+3]-'0')
			if n <= 255 {
				b = append(b, byte(n))
				i += 3
				continue
			}
		}
		b = append(b, s[i+1])
		i++
	}
	return string(b)
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
