// Package dnstest runs a loopback DNS server (RFC 1035) that answers from
// in-memory zones, for tests, the end-to-end harness and benchmarks.
//
//	srv, err := dnstest.Start()           // UDP and TCP on one 127.0.0.1 port
//	defer srv.Close()
//	err = srv.SetZone(
//		`example.com. 300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"`,
//		`example.com. 300 IN MX 10 mail.example.com.`,
//		`mail.example.com. 300 IN A 192.0.2.1`,
//	)
//	resolverConfig.Servers = []string{srv.Addr()}
//
// The server behaves like a recursive resolver seen from a stub: it follows
// CNAME chains inside its data (a loop answers SERVFAIL), says NXDOMAIN for
// names that own nothing (and have nothing below them, RFC 8020), NOERROR with
// an empty answer for existing names without the asked type, and puts a SOA in
// the authority section of negative answers (RFC 2308 §3). UDP answers larger
// than the client's EDNS0 size (512 without EDNS0) are truncated (TC bit) so
// clients retry over TCP. Names marked with Zone.Timeout never get an answer
// for a type they hold no data for.
package dnstest

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/miekg/dns"
)

// Zone is the data a Server answers from. The zero value is not usable; use
// NewZone or ParseZone.
type Zone struct {
	rrs      map[string][]dns.RR // owner (lower-case FQDN) -> records
	exists   map[string]bool     // owners and their ancestors (RFC 8020)
	timeout  map[string]bool
	servfail map[string]bool
	// NegativeTTL is the SOA MINIMUM sent with negative answers. Default 60.
	NegativeTTL uint32
	// Synth, when set, gives the records of names the zone holds none for,
	// in presentation format (any types: those of the asked type are
	// served), or nil for a name that does not exist. It must be safe for
	// concurrent use. Load tests use it to serve more distinct names than
	// would fit in memory; a record it returns that does not parse, or
	// that another name owns, is answered with SERVFAIL.
	Synth func(name string) []string
}

// NewZone returns an empty zone.
func NewZone() *Zone {
	return &Zone{
		rrs:         map[string][]dns.RR{},
		exists:      map[string]bool{},
		timeout:     map[string]bool{},
		servfail:    map[string]bool{},
		NegativeTTL: 60,
	}
}

// ParseZone builds a zone from records in presentation format, one per
// string, e.g. `example.com. 300 IN TXT "v=spf1 -all"`; a missing TTL
// defaults to 3600, a relative owner is taken as absolute.
func ParseZone(records ...string) (*Zone, error) {
	z := NewZone()
	for _, s := range records {
		if err := z.Add(s); err != nil {
			return nil, err
		}
	}
	return z, nil
}

// Add parses one record in presentation format and adds it.
func (z *Zone) Add(record string) error {
	rr, err := dns.NewRR(record)
	if err != nil {
		return fmt.Errorf("dnstest: record %q: %w", record, err)
	}
	if rr == nil {
		return fmt.Errorf("dnstest: record %q: empty", record)
	}
	z.addRR(rr)
	return nil
}

// AddTXT adds a TXT record made of the given character-strings taken as raw
// octets (no presentation escapes), so that test data can hold any byte.
// Strings longer than 255 octets are split (RFC 1035 §3.3.14).
func (z *Zone) AddTXT(name string, ttl uint32, strs ...string) {
	z.addRR(&dns.TXT{Hdr: hdr(name, dns.TypeTXT, ttl), Txt: rawStrings(strs)})
}

// Timeout makes the server stay silent for queries about name whose type it
// holds no data for (the "TIMEOUT" of the SPF test suite).
func (z *Zone) Timeout(name string) { z.timeout[canon(name)] = true }

// ServFail makes every query about name answer SERVFAIL.
func (z *Zone) ServFail(name string) { z.servfail[canon(name)] = true }

// SetTTL gives every record of the zone, and its negative answers (the SOA's
// TTL and MINIMUM, RFC 2308 §5), the TTL ttl: with 0, a resolver may cache
// nothing it is told, so each question reaches the server again.
func (z *Zone) SetTTL(ttl uint32) {
	for _, rrs := range z.rrs {
		for _, rr := range rrs {
			rr.Header().Ttl = ttl
		}
	}
	z.NegativeTTL = ttl
}

func (z *Zone) addRR(rr dns.RR) {
	h := rr.Header()
	h.Name = canon(h.Name)
	if h.Class == 0 {
		h.Class = dns.ClassINET
	}
	z.rrs[h.Name] = append(z.rrs[h.Name], rr)
	for n := h.Name; ; {
		z.exists[n] = true
		i := strings.IndexByte(n, '.')
		if i < 0 || i == len(n)-1 {
			break
		}
		n = n[i+1:]
	}
}

// canon gives names the presentation form miekg/dns uses for unpacked
// names (escapes for spaces and odd octets), lower-cased, so that names
// from test data and from queries match.
func canon(name string) string {
	name = dns.Fqdn(name)
	buf := make([]byte, 256)
	if n, err := dns.PackDomainName(name, buf, 0, nil, false); err == nil {
		if s, _, err := dns.UnpackDomainName(buf[:n], 0); err == nil {
			name = s
		}
	}
	return strings.ToLower(name)
}

func hdr(name string, t uint16, ttl uint32) dns.RR_Header {
	return dns.RR_Header{Name: canon(name), Rrtype: t, Class: dns.ClassINET, Ttl: ttl}
}

// rawStrings escapes backslashes (miekg/dns reads \DDD and \X escapes when
// packing) and splits strings into 255-octet character-strings.
func rawStrings(strs []string) []string {
	var out []string
	for _, s := range strs {
		for {
			n := min(len(s), 255)
			out = append(out, strings.ReplaceAll(s[:n], `\`, `\\`))
			s = s[n:]
			if s == "" {
				break
			}
		}
	}
	if len(out) == 0 {
		out = []string{""}
	}
	return out
}

// Server is a running loopback DNS server.
type Server struct {
	udp, tcp *dns.Server
	addr     string
	queries  atomic.Int64

	mu   sync.RWMutex
	zone *Zone
}

// Start listens on 127.0.0.1 (UDP and TCP, same port) and serves an empty
// zone until SetZone or Set.
func Start() (*Server, error) { return StartAt("127.0.0.1:0") }

// StartAt is Start on a given address, e.g. 127.0.0.1:53 in a network
// namespace where a system resolver must find the server; port 0 picks one.
func StartAt(addr string) (*Server, error) {
	var pc net.PacketConn
	var ln net.Listener
	var err error
	// The UDP port picked by the kernel may be taken on TCP: retry a few times.
	for range 10 {
		pc, err = net.ListenPacket("udp", addr)
		if err != nil {
			return nil, fmt.Errorf("dnstest: listen udp: %w", err)
		}
		ln, err = net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			break
		}
		pc.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("dnstest: listen tcp: %w", err)
	}
	s := &Server{addr: pc.LocalAddr().String(), zone: NewZone()}
	h := dns.HandlerFunc(s.serveDNS)
	s.udp = &dns.Server{PacketConn: pc, Handler: h}
	s.tcp = &dns.Server{Listener: ln, Handler: h}
	var wg sync.WaitGroup
	wg.Add(2)
	s.udp.NotifyStartedFunc = wg.Done
	s.tcp.NotifyStartedFunc = wg.Done
	go s.udp.ActivateAndServe()
	go s.tcp.ActivateAndServe()
	wg.Wait()
	return s, nil
}

// Addr is the server's "127.0.0.1:port", for a resolver's server list.
func (s *Server) Addr() string { return s.addr }

// SetZone replaces all data with the given records (see ParseZone).
func (s *Server) SetZone(records ...string) error {
	z, err := ParseZone(records...)
	if err != nil {
		return err
	}
	s.Set(z)
	return nil
}

// Set replaces all data with z. The server keeps z: do not change it after.
func (s *Server) Set(z *Zone) {
	s.mu.Lock()
	s.zone = z
	s.mu.Unlock()
}

// Add adds records to the current data.
func (s *Server) Add(records ...string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range records {
		if err := s.zone.Add(r); err != nil {
			return err
		}
	}
	return nil
}

// Queries is the number of queries received so far (answered or not).
func (s *Server) Queries() int64 { return s.queries.Load() }

// Close stops the server.
func (s *Server) Close() error {
	err1 := s.udp.Shutdown()
	err2 := s.tcp.Shutdown()
	if err1 != nil {
		return err1
	}
	return err2
}

func (s *Server) serveDNS(w dns.ResponseWriter, req *dns.Msg) {
	s.queries.Add(1)
	resp := new(dns.Msg)
	if len(req.Question) != 1 || req.Opcode != dns.OpcodeQuery {
		resp.SetRcode(req, dns.RcodeFormatError)
		w.WriteMsg(resp)
		return
	}
	resp.SetReply(req)
	resp.Authoritative = true
	resp.RecursionAvailable = true
	q := req.Question[0]

	s.mu.RLock()
	z := s.zone
	answer, rcode, silent := z.answer(canon(q.Name), q.Qtype)
	s.mu.RUnlock()
	if silent {
		return
	}
	resp.Rcode = rcode
	resp.Answer = answer
	if rcode == dns.RcodeNameError || rcode == dns.RcodeSuccess && len(answer) == 0 {
		resp.Ns = []dns.RR{&dns.SOA{
			Hdr: hdr("test.", dns.TypeSOA, z.NegativeTTL), Ns: "ns.test.", Mbox: "hostmaster.test.",
			Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: z.NegativeTTL,
		}}
	}
	size := dns.MinMsgSize
	if opt := req.IsEdns0(); opt != nil {
		size = max(int(opt.UDPSize()), dns.MinMsgSize)
		resp.SetEdns0(opt.UDPSize(), false)
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		resp.Truncate(size)
	}
	w.WriteMsg(resp)
}

// answer resolves (name, qtype) in the zone, chasing CNAMEs.
func (z *Zone) answer(name string, qtype uint16) (rrs []dns.RR, rcode int, silent bool) {
	seen := map[string]bool{}
	for {
		if z.servfail[name] {
			return nil, dns.RcodeServerFailure, false
		}
		if seen[name] {
			// A CNAME loop: recursive servers answer SERVFAIL.
			return nil, dns.RcodeServerFailure, false
		}
		seen[name] = true
		var cname *dns.CNAME
		found := false
		owned, exists, ok := z.records(name)
		if !ok {
			return nil, dns.RcodeServerFailure, false
		}
		for _, rr := range owned {
			t := rr.Header().Rrtype
			if t == qtype || qtype == dns.TypeANY {
				rrs = append(rrs, dns.Copy(rr))
				found = true
			} else if c, ok := rr.(*dns.CNAME); ok {
				cname = c
			}
		}
		if found {
			return rrs, dns.RcodeSuccess, false
		}
		if z.timeout[name] {
			return nil, 0, true
		}
		if cname == nil {
			if exists {
				return rrs, dns.RcodeSuccess, false
			}
			if len(rrs) > 0 {
				// The chain's target does not exist: NXDOMAIN with the chain
				// (RFC 6604 §2.1).
				return rrs, dns.RcodeNameError, false
			}
			return nil, dns.RcodeNameError, false
		}
		rrs = append(rrs, dns.Copy(cname))
		name = canon(cname.Target)
	}
}

// records returns the records name owns and whether the name exists (it or
// a name below it owns records, RFC 8020); ok is false when Synth gave
// records that do not parse or belong to another name.
func (z *Zone) records(name string) (rrs []dns.RR, exists, ok bool) {
	if rrs, found := z.rrs[name]; found || z.exists[name] || z.Synth == nil {
		return rrs, z.exists[name], true
	}
	for _, s := range z.Synth(name) {
		rr, err := dns.NewRR(s)
		if err != nil || rr == nil || canon(rr.Header().Name) != name {
			return nil, false, false
		}
		rr.Header().Name = name
		rrs = append(rrs, rr)
	}
	return rrs, len(rrs) > 0, true
}
