// Package ownfrom refuses inbound mail whose header From (RFC 5322 section
// 3.6.2) names one of our own domains unless the sending host is
// authorised for that domain: SPF (RFC 7208) passes for the From domain
// from the client, or a DKIM signature (RFC 6376) of that domain or of a
// parent domain verified in this pass. It is the header-From half of
// postkit's defence against outsiders claiming our domains (the policy
// daemon judges the envelope sender at RCPT), and applies to our own
// domains the identifier alignment of DMARC (RFC 7489 section 3.1) without
// waiting for a published policy.
//
// Why DKIM counts: a forwarder that rewrites the envelope (SRS) or a
// mailing list that leaves the message intact cannot pass SPF for our
// domain, but keeps the signature our milter made when the author sent
// the message; the signature can only come from our key. The price, as in
// DMARC, is that a message we signed can be sent again by whoever received
// it (DKIM replay, RFC 6376 section 8.6); it stays the message we signed.
// Lists that modify the message usually rewrite From (RFC 7960 section
// 4.1.3) and so no longer name our domain.
//
// The DKIM result is read from the Authentication-Results field that the
// DKIM verifier of this chain (dkimverify, earlier in the chain) inserts at
// end of message: a field with our authserv-id that was not in the header
// when this filter saw it (filter "forged" removes copies that come with
// the message, and so would this filter ignore them).
package ownfrom

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-msgauth/authres"
	"github.com/postkit/postkit/milter/filter"
	"github.com/postkit/postkit/milter/header"
)

// SPF results as RFC 7208 section 2.6 spells them (those the filter tells
// apart).
const (
	SPFPass      = "pass"
	SPFTempError = "temperror"
)

// Config configures the filter.
type Config struct {
	// Own reports whether a domain is one of ours; an error is temporary
	// (the message is deferred). Required.
	Own func(ctx context.Context, domain string) (bool, error)
	// SPF evaluates check_host() for the MAIL FROM identity sender from
	// client ip (policyd/spfcheck's CheckHost) and returns the result
	// word. Required.
	SPF func(ctx context.Context, ip netip.Addr, helo, sender string) string
	// AuthservID is the DKIM verifier's authserv-id; "" lets no DKIM
	// signature count.
	AuthservID string
	// Exempt lists clients never checked (policy.spf.allow_ips).
	Exempt []netip.Prefix
	// Timeout bounds the checks of one message. Default 10s.
	Timeout time.Duration
	Logger  *slog.Logger
}

// Filter is the "ownfrom" filter of the milter chain.
type Filter struct {
	cfg Config
}

// New checks cfg and returns the filter.
func New(cfg Config) (*Filter, error) {
	if cfg.Own == nil || cfg.SPF == nil {
		return nil, errors.New("ownfrom: no domain set or no SPF check configured")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Filter{cfg: cfg}, nil
}

// Name implements filter.Filter.
func (f *Filter) Name() string { return "ownfrom" }

// Needs declares the HELO name (SPF macros); the client address comes with
// CONNECT.
func (f *Filter) Needs() filter.Needs { return filter.Needs{Helo: true} }

// Headers implements filter.Filter: it finds our domains in the header From
// and, if there are any, waits for the end of the message, where the DKIM
// verifier's results are known.
func (f *Filter) Headers(m *filter.Message, c *filter.Changes) (filter.Body, error) {
	if m.Outbound || m.Conn == nil || !m.Conn.Addr.IsValid() {
		return nil, nil
	}
	ip := m.Conn.Addr.Unmap()
	for _, p := range f.cfg.Exempt {
		if p.Contains(ip) {
			return nil, nil
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.cfg.Timeout)
	defer cancel()
	var ours []string
	for _, addr := range header.FromAddresses(m.Headers) {
		d := domainOf(addr)
		if d == "" || slices.ContainsFunc(ours, func(o string) bool { return domainOf(o) == d }) {
			continue
		}
		own, err := f.cfg.Own(ctx, d)
		if err != nil {
			f.cfg.Logger.Warn("ownfrom: cannot tell whether the From domain is ours; deferring", "queue_id", m.QueueID, "domain", d, "err", err)
			c.Refuse(filter.Tempfail, "451", "4.3.0", "Cannot check the From domain "+d+" now; try again later")
			return nil, nil
		}
		if own {
			ours = append(ours, addr)
		}
	}
	if len(ours) == 0 {
		return nil, nil
	}
	b := &body{f: f, ours: ours, before: map[string]bool{}}
	for _, h := range m.Headers {
		if f.ourResults(h) {
			b.before[h.Value] = true
		}
	}
	return b, nil
}

func (f *Filter) ourResults(h filter.Header) bool {
	return f.cfg.AuthservID != "" && strings.EqualFold(h.Name, "Authentication-Results") &&
		strings.EqualFold(header.ServID(h.Value), f.cfg.AuthservID)
}

type body struct {
	f      *Filter
	ours   []string        // From addresses in our domains
	before map[string]bool // our Authentication-Results values present at Headers
}

func (b *body) Write([]byte) error { return nil }

// End decides: every From address in our domains must be vouched for.
func (b *body) End(m *filter.Message, c *filter.Changes) error {
	f := b.f
	signed := b.dkimDomains(m)
	ctx, cancel := context.WithTimeout(context.Background(), f.cfg.Timeout)
	defer cancel()
	var refused, deferred []string
	for _, addr := range b.ours {
		d := domainOf(addr)
		if aligned(d, signed) {
			f.cfg.Logger.Info("ownfrom: our domain in From, DKIM verified", "queue_id", m.QueueID, "from", addr, "client", m.Conn.Addr)
			continue
		}
		res := f.cfg.SPF(ctx, m.Conn.Addr, m.Conn.Helo, addr)
		switch res {
		case SPFPass:
			f.cfg.Logger.Info("ownfrom: our domain in From, SPF pass", "queue_id", m.QueueID, "from", addr, "client", m.Conn.Addr)
			continue
		case SPFTempError:
			deferred = append(deferred, d)
		default:
			refused = append(refused, fmt.Sprintf("%s (SPF %s, no DKIM signature of it)", d, res))
		}
	}
	switch {
	case len(refused) > 0:
		f.cfg.Logger.Warn("ownfrom: refused: our domain in From from a host it does not authorise", "queue_id", m.QueueID, "client", m.Conn.Addr, "sender", m.MailFrom, "domains", strings.Join(refused, "; "))
		// RFC 3463 section 3.8: X.7.1, delivery not authorized.
		c.Refuse(filter.Reject, "550", "5.7.1", "From: header names our domain "+strings.Join(refused, ", ")+
			": mail from it must come through our submission service, a host its SPF record lists, or carry its DKIM signature")
	case len(deferred) > 0:
		f.cfg.Logger.Warn("ownfrom: deferred: SPF temporary error for our domain in From", "queue_id", m.QueueID, "client", m.Conn.Addr, "domains", strings.Join(deferred, ","))
		// RFC 7372 section 3.2: X.7.24; DNS trouble is never a 5xx.
		c.Refuse(filter.Tempfail, "451", "4.7.24", "SPF temporary error checking "+strings.Join(deferred, ", ")+"; try again later")
	}
	return nil
}

// dkimDomains returns the d= of every passing DKIM result in the
// Authentication-Results fields with our authserv-id added during this
// pass (not present when Headers ran).
func (b *body) dkimDomains(m *filter.Message) []string {
	var out []string
	for _, h := range m.Headers {
		if !b.f.ourResults(h) || b.before[h.Value] {
			continue
		}
		_, results, err := authres.Parse(header.Unfold(h.Value))
		if err != nil {
			b.f.cfg.Logger.Warn("ownfrom: cannot read our own Authentication-Results", "queue_id", m.QueueID, "err", err)
			continue
		}
		for _, r := range results {
			if d, ok := r.(*authres.DKIMResult); ok && d.Value == authres.ResultPass && d.Domain != "" {
				out = append(out, strings.ToLower(strings.TrimSuffix(d.Domain, ".")))
			}
		}
	}
	return out
}

// aligned reports whether a signing domain is d or a parent of d (RFC 7489
// section 3.1.1 relaxed alignment; the organisational domain is not
// computed, but d is one of ours, so a parent that signs is ours too, or
// a public suffix, which holds no keys).
func aligned(d string, signed []string) bool {
	for _, s := range signed {
		if s == d || strings.HasSuffix(d, "."+s) {
			return true
		}
	}
	return false
}

func domainOf(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(addr[i+1:]), "."))
}

var _ filter.Declarer = (*Filter)(nil)
