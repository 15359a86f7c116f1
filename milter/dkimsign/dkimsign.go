// Package dkimsign is the milter chain's DKIM signer (RFC 6376 section 5,
// RFC 8463 for ed25519-sha256, RFC 8301 for the algorithm and key-size rules).
// It signs outbound messages with every active key of the From domain, in one
// pass over the streamed body.
//
// The signing core is postkit's own rather than go-msgauth's Signer: the body
// is canonicalized and hashed once for all keys of a message (an RSA and an
// Ed25519 signature share it), nothing runs in a goroutine (an aborted message
// leaves nothing behind), t= comes from the configured clock, and the
// per-key part of the header is prepared once. Verification interop is tested
// against go-msgauth, dkimpy and OpenDKIM.
//
// # Whose mail is signed
//
// A signature says the signing domain vouches for the message, so the signer
// does not sign for whoever asks. Mail from an authenticated user (the
// {auth_authen} macro, the SASL login) is signed only when its From address
// is one that login may use, by the same rule Postfix applies to the envelope
// sender on the submission services (smtpd_sender_login_maps, read from the
// same database through Senders); otherwise it is refused or passed unsigned
// (Config.Unowned). OpenDKIM signs anything its InternalHosts or an
// authenticated client submits, whatever the From says. Outbound mail without
// a login (trusted networks, local submission through sendmail) comes from
// the administrator's own hosts and is signed as before.
package dkimsign

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/postkit/postkit/internal/dkimkey"
	"github.com/postkit/postkit/internal/mailaddr"
	"github.com/postkit/postkit/milter/filter"
	"github.com/postkit/postkit/milter/header"
)

// DefaultHeaders are the header fields signed when present: RFC 6376 section
// 5.4.1's list, as OpenDKIM signs by default, plus List-Unsubscribe-Post
// (RFC 8058 section 4 requires it to be signed).
var DefaultHeaders = []string{
	"From", "Reply-To", "Subject", "Date", "To", "Cc",
	"Resent-Date", "Resent-From", "Resent-To", "Resent-Cc",
	"In-Reply-To", "References", "Message-ID", "Sender",
	"MIME-Version", "Content-Type", "Content-Transfer-Encoding",
	"Content-ID", "Content-Description",
	"List-Id", "List-Help", "List-Unsubscribe", "List-Unsubscribe-Post",
	"List-Subscribe", "List-Post", "List-Owner", "List-Archive",
}

// DefaultOversign are the header fields listed in h= once more than they
// occur, so that a copy added in transit breaks the signature (RFC 6376
// section 8.15; OpenDKIM's OversignHeaders From, as in the reference setup).
var DefaultOversign = []string{"From"}

// DefaultCanonicalization is header/body canonicalization (OpenDKIM's
// Canonicalization relaxed/simple in the reference setup).
const DefaultCanonicalization = "relaxed/simple"

// Key is one signing key.
type Key struct {
	Domain   string        // d=
	Selector string        // s=
	KeyFile  string        // PEM private key, read by New/Reload when Signer is nil
	Signer   crypto.Signer // the key itself (RSA ≥ 2048 bits or Ed25519)
	// Disabled keeps a key configured (its record stays published during
	// rotation) without signing with it. Its key file is not read.
	Disabled bool
	// From are the From addresses the key signs, as mailaddr.Pattern
	// strings: user@example.org, *@example.org, *@*.example.org. Empty
	// means every address of Domain (and, with Config.Subdomains, of its
	// sub-domains that have no key of their own). See lookup for which
	// rule wins.
	From []string
}

// Config configures a Signer.
type Config struct {
	Keys []Key
	// Canonicalization is "header/body" with simple or relaxed each
	// (RFC 6376 section 3.4); "relaxed" alone means relaxed/simple, as the c=
	// tag reads. Default: relaxed/simple.
	Canonicalization string
	// Headers are the header fields signed when present. Default: DefaultHeaders.
	Headers []string
	// Oversign lists fields signed once more than present. nil means
	// DefaultOversign; an empty non-nil slice oversigns nothing.
	Oversign []string
	// Subdomains signs mail from a sub-domain with the keys of the closest
	// parent domain that has keys, when the sub-domain has none.
	Subdomains bool
	// Expiration, if set, adds x= that much after t= (RFC 6376 section 3.5).
	Expiration time.Duration
	// Senders, when set, is asked for every authenticated message whether
	// the login may use the From address; nil signs authenticated mail
	// without asking.
	Senders Senders
	// SenderTimeout bounds one Senders question. Default:
	// DefaultSenderTimeout.
	SenderTimeout time.Duration
	// Unowned is what happens to authenticated mail whose From address
	// the login may not use. Default: UnownedReject.
	Unowned Unowned
	Logger  *slog.Logger
	// Meter counts the signatures made (filter.EventDKIMSigned); nil counts none.
	Meter filter.Meter
	Now   func() time.Time // default time.Now
	Rand  io.Reader        // default crypto/rand; RSA PKCS#1 v1.5 and Ed25519 ignore it
}

// Senders answers whether a SASL login may use a sender address. In the
// daemon it is sqlmaps.Senders: the query of Postfix's
// smtpd_sender_login_maps, run on the database for every message.
type Senders interface {
	MayUse(ctx context.Context, login, addr string) (bool, error)
}

// Unowned is the fate of authenticated mail whose From address the login
// may not use.
type Unowned int

const (
	// UnownedReject refuses the message (550 5.7.1): the user's client
	// shows the error at once.
	UnownedReject Unowned = iota
	// UnownedUnsigned lets the message pass without a signature, logged.
	UnownedUnsigned
)

// ParseUnowned parses "reject" or "unsigned" ("" is reject).
func ParseUnowned(s string) (Unowned, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "reject":
		return UnownedReject, nil
	case "unsigned":
		return UnownedUnsigned, nil
	}
	return 0, fmt.Errorf("dkimsign: %q for mail whose From the login may not use: want reject or unsigned", s)
}

// DefaultSenderTimeout bounds one Senders question: a lookup takes tens of
// microseconds, a writer holding the database lock a few milliseconds.
const DefaultSenderTimeout = 15 * time.Second

// key is a loaded signing key with what can be prepared once.
type key struct {
	domain, selector string
	signer           crypto.Signer
	opts             crypto.SignerOpts // SHA256 for RSA; 0 for Ed25519 (PureEdDSA over the hash, RFC 8463 section 3)
	prefix           string            // "v=1; a=…; c=…; d=…; s=…;"
}

// keySet is one loaded configuration; Reload swaps it whole.
type keySet struct {
	byDomain       map[string][]*key // every address of the domain
	byAddr         map[string][]*key // one address (user@domain)
	bySub          map[string][]*key // the sub-domains of the domain
	headers        []string          // lowercase
	oversign       map[string]bool   // lowercase
	hRelaxed       bool
	bRelaxed       bool
	subdomains     bool
	expiration     time.Duration
	domains, total int
	senders        Senders
	senderTimeout  time.Duration
	unowned        Unowned
}

// Signer is the "dkimsign" filter. It is safe for concurrent use.
type Signer struct {
	set   atomic.Pointer[keySet]
	log   *slog.Logger
	meter filter.Meter
	now   func() time.Time
	rand  io.Reader
}

// New loads the keys of cfg and returns the filter.
func New(cfg Config) (*Signer, error) {
	s := &Signer{log: cfg.Logger, meter: cfg.Meter, now: cfg.Now, rand: cfg.Rand}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.rand == nil {
		s.rand = rand.Reader
	}
	if err := s.Reload(cfg); err != nil {
		return nil, err
	}
	return s, nil
}

// Name implements filter.Filter.
func (s *Signer) Name() string { return "dkimsign" }

// Needs declares what signing reads beyond the message and
// Message.Outbound: the SASL login.
func (s *Signer) Needs() filter.Needs { return filter.Needs{Macros: []string{"{auth_authen}"}} }

// Reload loads the keys and options of cfg and swaps them in for the messages
// that start afterwards (messages in progress finish with the keys they
// started with). On error the previous keys stay in use. Logger, Now and Rand
// are fixed by New.
func (s *Signer) Reload(cfg Config) error {
	set, err := load(cfg)
	if err != nil {
		return err
	}
	s.set.Store(set)
	return nil
}

// ParseCanonicalization parses "header/body" (RFC 6376 section 3.5, c=): it
// returns whether each part is relaxed. "" means DefaultCanonicalization; a
// single word is the header canonicalization with simple body.
func ParseCanonicalization(c string) (hRelaxed, bRelaxed bool, err error) {
	if c == "" {
		c = DefaultCanonicalization
	}
	h, b, ok := strings.Cut(strings.ToLower(strings.TrimSpace(c)), "/")
	if !ok {
		b = "simple"
	}
	parse := func(s string) (bool, error) {
		switch s {
		case "simple":
			return false, nil
		case "relaxed":
			return true, nil
		}
		return false, fmt.Errorf("dkimsign: bad canonicalization %q: use simple or relaxed for header/body, e.g. relaxed/simple", c)
	}
	if hRelaxed, err = parse(h); err != nil {
		return
	}
	bRelaxed, err = parse(b)
	return
}

func canonName(relaxed bool) string {
	if relaxed {
		return "relaxed"
	}
	return "simple"
}

func load(cfg Config) (*keySet, error) {
	hr, br, err := ParseCanonicalization(cfg.Canonicalization)
	if err != nil {
		return nil, err
	}
	set := &keySet{byDomain: map[string][]*key{}, byAddr: map[string][]*key{}, bySub: map[string][]*key{}, hRelaxed: hr, bRelaxed: br,
		subdomains: cfg.Subdomains, expiration: cfg.Expiration, oversign: map[string]bool{},
		senders: cfg.Senders, senderTimeout: cfg.SenderTimeout, unowned: cfg.Unowned}
	if set.senderTimeout <= 0 {
		set.senderTimeout = DefaultSenderTimeout
	}
	if cfg.Unowned != UnownedReject && cfg.Unowned != UnownedUnsigned {
		return nil, fmt.Errorf("dkimsign: Unowned %d: want UnownedReject or UnownedUnsigned", cfg.Unowned)
	}
	if cfg.Expiration < 0 {
		return nil, errors.New("dkimsign: negative signature expiration: use 0 for none")
	}
	headers := cfg.Headers
	if headers == nil {
		headers = DefaultHeaders
	}
	seenH := map[string]bool{}
	for _, h := range headers {
		lh := strings.ToLower(strings.TrimSpace(h))
		if lh == "" || strings.ContainsAny(lh, ": \t\r\n") {
			return nil, fmt.Errorf("dkimsign: bad header name %q in the signed header list", h)
		}
		if lh == "dkim-signature" {
			return nil, errors.New("dkimsign: DKIM-Signature cannot be in the signed header list")
		}
		if !seenH[lh] {
			seenH[lh] = true
			set.headers = append(set.headers, lh)
		}
	}
	if !seenH["from"] {
		return nil, errors.New("dkimsign: the signed header list must contain From (RFC 6376 section 5.4)")
	}
	over := cfg.Oversign
	if over == nil {
		over = DefaultOversign
	}
	for _, h := range over {
		lh := strings.ToLower(strings.TrimSpace(h))
		if !seenH[lh] {
			return nil, fmt.Errorf("dkimsign: oversigned header %q is not in the signed header list: add it there too", h)
		}
		set.oversign[lh] = true
	}
	c := canonName(hr) + "/" + canonName(br)
	seen := map[string]bool{}
	for _, k := range cfg.Keys {
		dom := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(k.Domain), "."))
		if dom == "" || !strings.Contains(dom, ".") || strings.ContainsAny(dom, " ;=\t@") {
			return nil, fmt.Errorf("dkimsign: bad signing domain %q: expected a domain such as example.org", k.Domain)
		}
		if err := dkimkey.CheckSelector(k.Selector); err != nil {
			return nil, fmt.Errorf("dkimsign: key for %s: %w", dom, err)
		}
		id := k.Selector + "._domainkey." + dom
		if seen[id] {
			return nil, fmt.Errorf("dkimsign: key %s configured twice: remove one", id)
		}
		seen[id] = true
		if k.Disabled {
			continue
		}
		signer := k.Signer
		if signer == nil {
			if k.KeyFile == "" {
				return nil, fmt.Errorf("dkimsign: key %s has no key file", id)
			}
			if signer, err = dkimkey.LoadPrivateKey(k.KeyFile); err != nil {
				return nil, fmt.Errorf("dkimsign: key %s: %w", id, err)
			}
		} else if err := dkimkey.Check(signer); err != nil {
			return nil, fmt.Errorf("dkimsign: key %s: %w", id, err)
		}
		alg, _ := dkimkey.AlgorithmOf(signer)
		kk := &key{domain: dom, selector: k.Selector, signer: dkimkey.Accelerate(signer), opts: crypto.SHA256}
		if alg == dkimkey.Ed25519 {
			kk.opts = crypto.Hash(0)
		}
		kk.prefix = "v=1; a=" + string(alg) + "-sha256; c=" + c + "; d=" + dom + "; s=" + k.Selector + ";"
		if len(k.From) == 0 {
			set.byDomain[dom] = addKey(set.byDomain[dom], kk)
		}
		for _, f := range k.From {
			p, err := mailaddr.ParsePattern(f)
			if err != nil {
				return nil, fmt.Errorf("dkimsign: key %s: %w", id, err)
			}
			switch {
			case p.Local != "":
				a := p.Local + "@" + p.Domain
				set.byAddr[a] = addKey(set.byAddr[a], kk)
			case p.Sub:
				set.bySub[p.Domain] = addKey(set.bySub[p.Domain], kk)
			default:
				set.byDomain[p.Domain] = addKey(set.byDomain[p.Domain], kk)
			}
		}
		set.total++
	}
	set.domains = len(set.byDomain)
	return set, nil
}

// addKey appends k to ks unless it is there already.
func addKey(ks []*key, k *key) []*key {
	for _, o := range ks {
		if o == k {
			return ks
		}
	}
	return append(ks, k)
}

// lookup returns the keys for a From address: the most specific rule wins,
// and every key of that rule signs (an RSA and an Ed25519 key, say). In
// order: keys for that very address (user@domain); keys for its domain;
// then, climbing from the closest parent, keys for the parent's sub-domains
// (*@*.parent), or with Subdomains the keys of the parent itself. This is
// the order OpenDKIM looks a plain SigningTable up in (address, domain,
// parents); with a refile: table OpenDKIM takes the first line that
// matches instead, and 'postkit dkim import' says when the two differ.
func (set *keySet) lookup(addr string) []*key {
	addr = strings.ToLower(addr)
	if ks := set.byAddr[addr]; len(ks) > 0 {
		return ks
	}
	dom := addr[strings.LastIndexByte(addr, '@')+1:]
	if ks := set.byDomain[dom]; len(ks) > 0 {
		return ks
	}
	for {
		i := strings.IndexByte(dom, '.')
		if i < 0 {
			return nil
		}
		dom = dom[i+1:]
		if !strings.Contains(dom, ".") {
			return nil // never climb to a top-level domain
		}
		if ks := set.bySub[dom]; len(ks) > 0 {
			return ks
		}
		if ks := set.byDomain[dom]; len(ks) > 0 && set.subdomains {
			return ks
		}
	}
}

// signedBy reports whether the headers already carry a DKIM-Signature with
// domain d and selector s.
func signedBy(hs []filter.Header, d, s string) bool {
	for _, h := range hs {
		if !strings.EqualFold(h.Name, "DKIM-Signature") {
			continue
		}
		var hd, hsel string
		for _, tag := range strings.Split(h.Value, ";") {
			name, val, ok := strings.Cut(tag, "=")
			if !ok {
				continue
			}
			val = strings.Join(strings.Fields(val), "")
			switch strings.TrimSpace(name) {
			case "d":
				hd = strings.ToLower(strings.TrimSuffix(val, "."))
			case "s":
				hsel = val
			}
		}
		if hd == d && strings.EqualFold(hsel, s) {
			return true
		}
	}
	return false
}

// Headers implements filter.Filter: it picks the keys for the message and
// returns the Body that hashes it, or nil when the message is not signed.
func (s *Signer) Headers(m *filter.Message, c *filter.Changes) (filter.Body, error) {
	if !m.Outbound {
		return nil, nil
	}
	set := s.set.Load()
	if login := m.Macro("{auth_authen}"); login != "" && set.senders != nil && !s.fromOwned(set, login, m, c) {
		return nil, nil
	}
	from, err := header.FromAddress(m.Headers)
	if err != nil {
		s.log.Info("dkimsign: not signed", "queue_id", m.QueueID, "reason", reason(err))
		return nil, nil
	}
	keys := set.lookup(from)
	if len(keys) == 0 {
		s.log.Info("dkimsign: not signed: no key for the From address", "queue_id", m.QueueID, "from", from)
		return nil, nil
	}
	var use []*key
	for _, k := range keys {
		if signedBy(m.Headers, k.domain, k.selector) {
			s.log.Info("dkimsign: already signed", "queue_id", m.QueueID, "d", k.domain, "s", k.selector)
			continue
		}
		use = append(use, k)
	}
	if len(use) == 0 {
		return nil, nil
	}
	return s.newMessage(set, use), nil
}

// fromOwned reports whether login may use the From address of m, asking
// the Senders. When it may not, the message is refused or left unsigned as
// set.unowned says, and the log line says why. A Senders fault defers the
// message (451 4.3.0) whatever the daemon's fault action: accepting it, as
// on_error: accept would, is the unchecked, unsigned pass this check exists
// to prevent; the client retries once the database answers again.
func (s *Signer) fromOwned(set *keySet, login string, m *filter.Message, c *filter.Changes) bool {
	addr, err := header.FromAddress(m.Headers)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), set.senderTimeout)
		var ok bool
		ok, err = set.senders.MayUse(ctx, login, addr)
		cancel()
		if err != nil {
			s.log.Error("dkimsign: deferred: cannot check the From address against the login", "queue_id", m.QueueID, "sasl_username", login, "from", addr, "err", err.Error())
			c.Refuse(filter.Tempfail, "451", "4.3.0", "Cannot check the From address now, try again later")
			return false
		}
		if ok {
			return true
		}
		err = fmt.Errorf("From address %s is not one login %s may use", addr, login)
	}
	why := reason(err)
	if set.unowned == UnownedUnsigned {
		s.log.Warn("dkimsign: not signed: From not owned by the login", "queue_id", m.QueueID, "sasl_username", login, "from", addr, "reason", why)
		return false
	}
	s.log.Warn("dkimsign: refused: From not owned by the login", "queue_id", m.QueueID, "sasl_username", login, "from", addr, "reason", why)
	text := "From header must hold one address user " + login + " may send as"
	if addr != "" {
		text = "<" + addr + ">: From address not owned by user " + login
	}
	c.Refuse(filter.Reject, "550", "5.7.1", text)
	return false
}

// message is the signing state of one message.
type message struct {
	s     *Signer
	set   *keySet
	keys  []*key
	hash  hash.Hash
	canon *bodyCanon
}

func (s *Signer) newMessage(set *keySet, keys []*key) *message {
	h := sha256.New()
	return &message{s: s, set: set, keys: keys, hash: h, canon: newBodyCanon(h, set.bRelaxed)}
}

// Write implements filter.Body: the chunk is canonicalized into the body hash
// and not kept.
func (ms *message) Write(chunk []byte) error {
	ms.canon.Write(chunk)
	return nil
}

// End implements filter.Body: it signs with each key and inserts the
// DKIM-Signature fields at the top (RFC 6376 section 5.6: prepended).
func (ms *message) End(m *filter.Message, c *filter.Changes) error {
	sigs, err := ms.sign(m.Headers)
	if err != nil {
		return err
	}
	for i := len(sigs) - 1; i >= 0; i-- {
		c.InsertHeader(0, "DKIM-Signature", sigs[i])
		filter.Count(ms.s.meter, filter.EventDKIMSigned, ms.keys[min(i, len(ms.keys)-1)].domain)
	}
	sel := make([]string, len(ms.keys))
	for i, k := range ms.keys {
		sel[i] = k.selector
	}
	ms.s.log.Info("dkimsign: signed", "queue_id", m.QueueID, "d", ms.keys[0].domain, "s", strings.Join(sel, ","))
	return nil
}

// sign finishes the body hash and returns one DKIM-Signature value per key,
// in key order, without the field name and with "\r\n\t" folding.
func (ms *message) sign(hs []filter.Header) ([]string, error) {
	set := ms.set
	ms.canon.Close()
	var sum [sha256.Size]byte
	bh := base64.StdEncoding.EncodeToString(ms.hash.Sum(sum[:0]))

	// Section 5.4.2: each name in h= takes the next instance from the bottom.
	names, picked := selectHeaders(hs, set.headers, set.oversign)
	var canon []byte
	for _, h := range picked {
		canon = appendHeader(canon, h.Name, h.Value, set.hRelaxed)
	}
	now := ms.s.now()
	var tags strings.Builder
	tags.WriteString("\r\n\tt=")
	tags.WriteString(strconv.FormatInt(now.Unix(), 10))
	tags.WriteByte(';')
	if set.expiration > 0 {
		tags.WriteString(" x=")
		tags.WriteString(strconv.FormatInt(now.Add(set.expiration).Unix(), 10))
		tags.WriteByte(';')
	}
	tags.WriteString(" h=")
	line := 12
	for i, n := range names {
		if i > 0 {
			tags.WriteByte(':')
			line++
		}
		if line+len(n) > 76 {
			tags.WriteString("\r\n\t")
			line = 1
		}
		tags.WriteString(n)
		line += len(n)
	}
	tags.WriteString(";\r\n\tbh=")
	tags.WriteString(bh)
	tags.WriteString(";\r\n\tb=")
	rest := tags.String()

	out := make([]string, 0, len(ms.keys))
	var sigField []byte
	for _, k := range ms.keys {
		unsigned := k.prefix + rest
		// Section 3.7: the headers, then this DKIM-Signature with an empty
		// b= value, canonicalized, without its final CRLF.
		ms.hash.Reset()
		ms.hash.Write(canon)
		sigField = appendHeader(sigField[:0], "DKIM-Signature", unsigned, set.hRelaxed)
		ms.hash.Write(sigField[:len(sigField)-2])
		digest := ms.hash.Sum(sum[:0])
		sig, err := k.signer.Sign(ms.s.rand, digest, k.opts)
		if err != nil {
			return nil, fmt.Errorf("dkimsign: signing with %s._domainkey.%s: %w", k.selector, k.domain, err)
		}
		out = append(out, unsigned+foldBase64(base64.StdEncoding.EncodeToString(sig), 5))
	}
	return out, nil
}

// selectHeaders returns the h= names (lowercase; each present instance of a
// signed field, plus one more for oversigned fields) and the instances they
// pick, bottom-up (RFC 6376 section 5.4.2).
func selectHeaders(hs []filter.Header, signed []string, oversign map[string]bool) (names []string, picked []filter.Header) {
	for _, name := range signed {
		n := 0
		for i := len(hs) - 1; i >= 0; i-- {
			if strings.EqualFold(hs[i].Name, name) {
				names = append(names, name)
				picked = append(picked, hs[i])
				n++
			}
		}
		if n > 0 && oversign[name] {
			names = append(names, name) // section 8.15: names no instance
		}
	}
	return names, picked
}

// foldBase64 folds the b= value: lines of at most 76 characters, the first
// starting after "\tb=" (col columns used).
func foldBase64(b string, col int) string {
	var out strings.Builder
	out.Grow(len(b) + len(b)/70*3)
	first := 76 - col
	for len(b) > first {
		out.WriteString(b[:first])
		out.WriteString("\r\n\t")
		b = b[first:]
		first = 75
	}
	out.WriteString(b)
	return out.String()
}

var _ filter.Declarer = (*Signer)(nil)
