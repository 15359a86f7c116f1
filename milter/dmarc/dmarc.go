// Package dmarc is the milter chain's DMARC filter (RFC 7489, with the
// DMARCbis clarifications where they settle a question: np=, several From
// addresses): for inbound mail it aligns the SPF result of the envelope
// sender and the DKIM results of this pass with the RFC5322.From domain,
// applies the Domain Owner's policy as the administrator allows (reject at
// end of data, a quarantine header field the generated Sieve rule files
// into the spam folder, or nothing), records dmarc= with spf= in the
// Authentication-Results field dkimverify inserted (one field per
// authserv-id, RFC 8601 section 2.1), and hands every evaluation to a
// Recorder for the aggregate reports of RFC 7489 section 7.2.
//
// SPF is evaluated here, for the MAIL FROM identity (the HELO identity for
// a null sender, RFC 7208 section 2.4), through the Config.SPF function;
// postkit's milter assembly passes the policy daemon's SPF code
// (policyd/spfcheck) over the chain's resolver, so one implementation
// judges both. The policy daemon's sealed Received-SPF is not read: it is
// missing when the spf check is off, skipped (policy.spf.allow_*) or
// refused the HELO first, and its result depends on policy choices DMARC
// must not inherit; the check's per-identity cache, bounded by the DNS
// TTLs, makes the second evaluation cost no query.
package dmarc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/postkit/postkit/milter/filter"
	"github.com/postkit/postkit/milter/header"
)

// QuarantineField is the header field added to a message whose policy
// quarantines it. The generated Sieve rule files it into the spam folder,
// the spam rule DMARC_QUARANTINE scores it, and the forged filter removes
// copies that come with a message.
const QuarantineField = "X-Postkit-DMARC"

// Actions: what the filter may do with a message that fails DMARC.
const (
	ActionReject     = "reject"     // honour p=reject with 550 5.7.1, p=quarantine with the header
	ActionQuarantine = "quarantine" // p=reject and p=quarantine both get the header
	ActionNone       = "none"       // monitor: Authentication-Results and reports only
)

// BadFrom answers for a message without a From domain to evaluate (none,
// or unparsable); BadFromReject also refuses several From domains, which
// are otherwise each evaluated.
const (
	BadFromReject    = "reject"
	BadFromPermError = "permerror"
)

// Override reasons (RFC 7489 Appendix C, PolicyOverrideType).
const (
	OverrideForwarded        = "forwarded"
	OverrideSampledOut       = "sampled_out"
	OverrideTrustedForwarder = "trusted_forwarder"
	OverrideMailingList      = "mailing_list"
	OverrideLocalPolicy      = "local_policy"
)

// Config configures the filter.
type Config struct {
	Resolver Resolver // required
	// SPF evaluates SPF for sender from ip (the HELO identity when sender
	// is ""), returning the RFC 7208 result word and the domain
	// evaluated. Required.
	SPF func(ctx context.Context, ip netip.Addr, helo, sender string) (result, domain string)
	// AuthservID is this server's authserv-id. Required.
	AuthservID string
	Action     string // ActionReject (default), ActionQuarantine or ActionNone
	BadFrom    string // BadFromPermError (default) or BadFromReject
	// TrustedForwarders are clients whose failing mail is delivered as is
	// (reason trusted_forwarder).
	TrustedForwarders []netip.Prefix
	// ExemptRecipients are envelope recipients (user@domain, or a domain
	// for all its addresses) for whom failing mail is delivered as is
	// (reason local_policy): a message for one of them is exempt.
	ExemptRecipients []string
	// ExemptListIDs are List-Id values (the id inside <>) of mailing lists
	// whose failing mail is delivered as is (reason mailing_list).
	ExemptListIDs []string
	// Recorder, when set, receives every evaluation for the aggregate
	// reports. A failure is logged and loses only the record.
	Recorder Recorder
	// Timeout bounds the DNS and SPF work for one message. Default 8s.
	Timeout time.Duration
	// Sample returns a number in [0, 100) for pct= sampling. Default
	// math/rand.
	Sample func() int
	Now    func() time.Time
	// Sealed reports whether an Authentication-Results field of ours was
	// written by our policy daemon (policy.spf.header_type ar, sealed:
	// internal/seal). When one states spf=, ours does not repeat it. Nil: none is.
	Sealed func(m *filter.Message, name, value string) bool
	Logger *slog.Logger
}

// Recorder stores evaluations for the aggregate reports.
type Recorder interface {
	Record(ctx context.Context, r Row) error
}

// Row is one evaluation, as an aggregate report needs it (RFC 7489
// Appendix C).
type Row struct {
	Time         time.Time
	SourceIP     string
	HeaderFrom   string
	EnvelopeFrom string // MAIL FROM domain, "" for a null sender
	EnvelopeTo   string // first recipient's domain
	PolicyDomain string
	// The published policy.
	ADKIM, ASPF string
	P, SP, NP   string
	Pct         int
	RUA         string // the rua= URIs, comma-separated, as published
	// The evaluation.
	Disposition   string // none, quarantine, reject
	DKIMAligned   bool
	SPFAligned    bool
	Override      string // PolicyOverrideType, "" for none
	OverrideNote  string
	SPFDomain     string
	SPFScope      string // mfrom or helo
	SPFResult     string
	DKIM          []DKIMResult
	Result        string // the dmarc= result
	AppliedPolicy string
}

// Filter is the "dmarc" filter.
type Filter struct {
	cfg Config
}

// New checks cfg and returns the filter.
func New(cfg Config) (*Filter, error) {
	if cfg.Resolver == nil || cfg.SPF == nil {
		return nil, errors.New("dmarc: no resolver or no SPF check configured")
	}
	if cfg.AuthservID == "" {
		return nil, errors.New("dmarc: no authserv-id: set milter.dkim.authserv_id or hostname")
	}
	switch cfg.Action {
	case "":
		cfg.Action = ActionReject
	case ActionReject, ActionQuarantine, ActionNone:
	default:
		return nil, fmt.Errorf("dmarc: action %q: want reject, quarantine or none", cfg.Action)
	}
	switch cfg.BadFrom {
	case "":
		cfg.BadFrom = BadFromPermError
	case BadFromPermError, BadFromReject:
	default:
		return nil, fmt.Errorf("dmarc: bad_from %q: want permerror or reject", cfg.BadFrom)
	}
	for i, r := range cfg.ExemptRecipients {
		cfg.ExemptRecipients[i] = strings.ToLower(strings.TrimSpace(r))
	}
	for i, l := range cfg.ExemptListIDs {
		cfg.ExemptListIDs[i] = strings.ToLower(strings.Trim(strings.TrimSpace(l), "<>"))
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 8 * time.Second
	}
	if cfg.Sample == nil {
		cfg.Sample = func() int { return rand.IntN(100) }
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Filter{cfg: cfg}, nil
}

// Name implements filter.Filter.
func (f *Filter) Name() string { return "dmarc" }

// Needs declares the HELO name (SPF for a null sender) and the recipients
// (exceptions, reports).
func (f *Filter) Needs() filter.Needs { return filter.Needs{Helo: true, Rcpts: true} }

// Headers implements filter.Filter: it notes the From domain and our
// Authentication-Results fields present before this pass, and waits for the
// end of the message, where the DKIM results are known.
func (f *Filter) Headers(m *filter.Message, c *filter.Changes) (filter.Body, error) {
	if m.Outbound || m.Conn == nil || !m.Conn.Addr.IsValid() {
		return nil, nil
	}
	b := &body{f: f, before: map[string]bool{}}
	b.from, b.fromProblem = fromDomains(m.Headers)
	for _, h := range m.Headers {
		if f.ours(h) {
			b.before[h.Value] = true
		}
		if strings.EqualFold(h.Name, "List-Id") {
			b.listID = listID(h.Value)
		}
	}
	return b, nil
}

func (f *Filter) ours(h filter.Header) bool {
	return strings.EqualFold(h.Name, "Authentication-Results") && strings.EqualFold(header.ServID(h.Value), f.cfg.AuthservID)
}

// fromDomains returns the distinct RFC5322.From domains, or why there is
// none to evaluate (RFC 7489 section 6.6.1).
func fromDomains(hs []filter.Header) ([]string, string) {
	addrs := header.FromAddresses(hs)
	if len(addrs) == 0 {
		return nil, "no From address"
	}
	var doms []string
	for _, a := range addrs {
		i := strings.LastIndexByte(a, '@')
		d := ""
		if i >= 0 {
			d = canon(a[i+1:])
		}
		if !validDomain(d) {
			return nil, "From address without a usable domain"
		}
		if !slices.Contains(doms, d) {
			doms = append(doms, d)
		}
	}
	return doms, ""
}

// validDomain accepts an LDH domain name of two labels or more (also what
// may go unquoted into a header).
func validDomain(d string) bool {
	if len(d) == 0 || len(d) > 253 || !strings.Contains(d, ".") {
		return false
	}
	for _, l := range strings.Split(d, ".") {
		if l == "" || len(l) > 63 {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// listID returns the id of a List-Id value (RFC 2919 section 2: the part
// inside angle brackets).
func listID(v string) string {
	v = header.Unfold(v)
	if i := strings.LastIndexByte(v, '<'); i >= 0 {
		if j := strings.IndexByte(v[i:], '>'); j > 0 {
			return strings.ToLower(strings.TrimSpace(v[i+1 : i+j]))
		}
	}
	return strings.ToLower(strings.TrimSpace(v))
}

type body struct {
	f           *Filter
	from        []string
	fromProblem string
	listID      string
	before      map[string]bool
}

func (b *body) Write([]byte) error { return nil }

// End evaluates and acts.
func (b *body) End(m *filter.Message, c *filter.Changes) error {
	f := b.f
	ctx, cancel := context.WithTimeout(context.Background(), f.cfg.Timeout)
	defer cancel()
	arIdx, arValue := b.ourResults(m)
	dkims := dkimResults(arValue)

	ip := m.Conn.Addr.Unmap()
	helo := strings.TrimSuffix(m.Conn.Helo, ".")
	spfRes, spfDom := f.cfg.SPF(ctx, ip, helo, m.MailFrom)
	spfDom = canon(spfDom)
	scope := "mfrom"
	if m.MailFrom == "" {
		scope = "helo"
	}

	var e Evaluation
	var disp, override string
	switch {
	case b.fromProblem != "":
		e = Evaluation{Result: ResultPermError, Problem: b.fromProblem}
		disp = string(PolicyNone)
	default:
		// Section 6.6.1: with several From domains, each is an Author
		// Domain, and the strictest policy among those that fail applies;
		// without a failure, the first domain's result stands.
		for i, d := range b.from {
			ei := Evaluate(ctx, f.cfg.Resolver, Input{FromDomain: d, SPFDomain: spfDom, SPFResult: spfRes, DKIM: dkims})
			di, oi := f.disposition(m, b, ei)
			if i == 0 || (ei.Result == ResultFail && (e.Result != ResultFail || strictness(di) > strictness(disp))) {
				e, disp, override = ei, di, oi
			}
		}
	}

	// Authentication-Results: spf and dmarc join dkim in our one field.
	var add strings.Builder
	if spfRes != "" && !f.policySPF(m) {
		add.WriteString(";\r\n\tspf=" + spfRes)
		if scope == "helo" {
			add.WriteString(" smtp.helo=" + arValueOf(helo))
		} else {
			add.WriteString(" smtp.mailfrom=" + arValueOf(m.MailFrom))
		}
	}
	add.WriteString(";\r\n\tdmarc=" + string(e.Result))
	if e.Record != nil {
		add.WriteString(" (p=" + string(e.Record.P))
		if e.Record.SP != "" {
			add.WriteString(" sp=" + string(e.Record.SP))
		}
		add.WriteString(" dis=" + disp + ")")
	} else if e.Problem != "" {
		add.WriteString(" (" + commentSafe(e.Problem) + ")")
	}
	if e.Domain != "" {
		add.WriteString(" header.from=" + e.Domain)
	}
	if e.Policy != "" {
		add.WriteString(" policy.dmarc=" + string(e.Policy))
	}
	if arIdx > 0 {
		c.ChangeHeader("Authentication-Results", arIdx, arValue+add.String())
	} else {
		c.InsertHeader(0, "Authentication-Results", f.cfg.AuthservID+add.String())
	}

	args := []any{"queue_id", m.QueueID, "from", e.Domain, "dmarc", e.Result, "policy", e.Policy, "disposition", disp,
		"spf", spfRes, "spf_aligned", e.SPFAligned, "dkim_aligned", e.DKIMAligned}
	if override != "" {
		args = append(args, "override", override)
	}
	if e.Problem != "" {
		args = append(args, "problem", e.Problem)
	}
	f.cfg.Logger.Info("dmarc: evaluated", args...)

	switch {
	case f.cfg.BadFrom == BadFromReject && (b.fromProblem != "" || len(b.from) > 1):
		why := b.fromProblem
		if why == "" {
			why = "From addresses in several domains"
		}
		c.Refuse(filter.Reject, "550", "5.7.1", "DMARC: "+why+"; a message needs exactly one author domain (RFC 7489 section 6.6.1)")
	case disp == string(PolicyReject):
		// RFC 7489 section 6.6.4 (rejection at end of data), RFC 3463 X.7.1.
		c.Refuse(filter.Reject, "550", "5.7.1", "DMARC policy of "+e.Domain+" refuses this unauthenticated message (SPF and DKIM not aligned with From)")
	case disp == string(PolicyQuarantine):
		c.AddHeader(QuarantineField, "quarantine; domain="+e.Domain+"; policy="+string(e.Policy))
	}

	if f.cfg.Recorder != nil && e.Record != nil && len(e.Record.RUA) > 0 {
		row := Row{Time: f.cfg.Now(), SourceIP: ip.String(), HeaderFrom: e.Domain, PolicyDomain: e.PolicyDomain,
			ADKIM: string(e.Record.ADKIM), ASPF: string(e.Record.ASPF), P: string(e.Record.P), SP: string(e.Record.SP),
			NP: string(e.Record.NP), Pct: e.Record.Pct, RUA: rawURIs(e.Record.RUA), Disposition: disp,
			DKIMAligned: e.DKIMAligned, SPFAligned: e.SPFAligned, Override: override, SPFDomain: spfDom,
			SPFScope: scope, SPFResult: spfRes, DKIM: dkims, Result: string(e.Result), AppliedPolicy: string(e.Policy)}
		if i := strings.LastIndexByte(m.MailFrom, '@'); i >= 0 {
			row.EnvelopeFrom = canon(m.MailFrom[i+1:])
		}
		if len(m.Rcpts) > 0 {
			if i := strings.LastIndexByte(m.Rcpts[0], '@'); i >= 0 {
				row.EnvelopeTo = canon(m.Rcpts[0][i+1:])
			}
		}
		if err := f.cfg.Recorder.Record(ctx, row); err != nil {
			f.cfg.Logger.Warn("dmarc: cannot record the evaluation for the aggregate report; the message goes on", "queue_id", m.QueueID, "err", err)
		}
	}
	return nil
}

// strictness orders dispositions.
func strictness(d string) int {
	switch Policy(d) {
	case PolicyReject:
		return 2
	case PolicyQuarantine:
		return 1
	}
	return 0
}

// disposition returns what happens to the message (none, quarantine,
// reject) and why the policy was not applied as published.
func (f *Filter) disposition(m *filter.Message, b *body, e Evaluation) (string, string) {
	if e.Result != ResultFail {
		// Section 6.6.2: temperror and permerror never act on a message.
		return string(PolicyNone), ""
	}
	p := e.Policy
	override := ""
	if p != PolicyNone && e.Record.Pct < 100 && f.cfg.Sample() >= e.Record.Pct {
		// Section 6.6.4: not sampled, the next weaker policy.
		p, override = p.weaker(), OverrideSampledOut
	}
	if p == PolicyNone {
		return string(p), override
	}
	ip := m.Conn.Addr.Unmap()
	for _, n := range f.cfg.TrustedForwarders {
		if n.Contains(ip) {
			return string(PolicyNone), OverrideTrustedForwarder
		}
	}
	if b.listID != "" && slices.Contains(f.cfg.ExemptListIDs, b.listID) {
		return string(PolicyNone), OverrideMailingList
	}
	for _, r := range m.Rcpts {
		r = strings.ToLower(r)
		_, d, _ := strings.Cut(r, "@")
		if slices.Contains(f.cfg.ExemptRecipients, r) || (d != "" && slices.Contains(f.cfg.ExemptRecipients, d)) {
			return string(PolicyNone), OverrideLocalPolicy
		}
	}
	switch {
	case f.cfg.Action == ActionNone:
		return string(PolicyNone), OverrideLocalPolicy
	case f.cfg.Action == ActionQuarantine && p == PolicyReject:
		return string(PolicyQuarantine), OverrideLocalPolicy
	}
	return string(p), override
}

// ourResults returns the 1-based occurrence index among the
// Authentication-Results fields and the value of the one dkimverify added
// in this pass (with our authserv-id, not there at Headers), or 0.
// policySPF reports whether our policy daemon's sealed Authentication-Results
// field, with its spf= result, is in the message: that field states SPF for
// this server, so ours gives dkim and dmarc only.
func (f *Filter) policySPF(m *filter.Message) bool {
	if f.cfg.Sealed == nil {
		return false
	}
	for _, h := range m.Headers {
		if strings.EqualFold(h.Name, "Authentication-Results") && f.ours(h) &&
			strings.Contains(h.Value, "spf=") && f.cfg.Sealed(m, h.Name, h.Value) {
			return true
		}
	}
	return false
}

func (b *body) ourResults(m *filter.Message) (int, string) {
	n := 0
	for _, h := range m.Headers {
		if !strings.EqualFold(h.Name, "Authentication-Results") {
			continue
		}
		n++
		if b.f.ours(h) && !b.before[h.Value] {
			return n, h.Value
		}
	}
	return 0, ""
}

// dkimResults reads the dkim= results of our Authentication-Results value
// (dkimverify's: one result per signature, with header.d, header.i and
// header.s properties, RFC 8601 section 2.7.1).
func dkimResults(v string) []DKIMResult {
	if v == "" {
		return nil
	}
	segs := strings.Split(header.StripComments(v), ";")
	var out []DKIMResult
	for _, seg := range segs[1:] {
		f := strings.Fields(seg)
		if len(f) == 0 {
			continue
		}
		res, ok := strings.CutPrefix(strings.ToLower(f[0]), "dkim=")
		if !ok || res == "none" {
			continue
		}
		r := DKIMResult{Result: res}
		ident := ""
		for _, p := range f[1:] {
			k, val, _ := strings.Cut(p, "=")
			val = strings.Trim(val, `"`)
			switch strings.ToLower(k) {
			case "header.d":
				r.Domain = canon(val)
			case "header.s":
				r.Selector = val
			case "header.i":
				ident = val
			}
		}
		if r.Domain == "" {
			if _, after, ok := strings.Cut(ident, "@"); ok {
				r.Domain = canon(after)
			}
		}
		out = append(out, r)
	}
	return out
}

// arValueOf makes an address or name fit as an Authentication-Results
// property value (RFC 8601 section 2.2: a token or a quoted string).
func arValueOf(s string) string {
	ok := s != ""
	for i := 0; i < len(s) && ok; i++ {
		c := s[i]
		ok = c > ' ' && c < 0x7f && !strings.ContainsRune("()<>,;:\\\"[]", rune(c))
	}
	if ok {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		if r < ' ' || r == 0x7f {
			continue
		}
		if r == '"' || r == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
	return b.String()
}

// commentSafe makes text fit inside a header comment.
func commentSafe(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r < ' ' || r >= 0x7f:
			b.WriteByte('?')
		case r == '(' || r == ')' || r == '\\':
			b.WriteByte(' ')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func rawURIs(us []URI) string {
	var s []string
	for _, u := range us {
		s = append(s, u.Raw)
	}
	return strings.Join(s, ",")
}

var _ filter.Declarer = (*Filter)(nil)
