// Package forged removes header fields that only this server may write
// when they come with the message instead: spam verdicts (X-Spam-*, which
// the generated Sieve rule files into the spam folder), the DMARC filter's
// quarantine field (X-Postkit-DMARC, filed there too), SPF results
// (Received-SPF, RFC 7208 section 9.1) that our policy daemon did not add
// for this transaction, and Authentication-Results fields claiming our
// authserv-id (RFC 8601 section 5: "MUST delete"). It acts on every message
// the milter sees, inbound and outbound: a user may not hand another user
// (or a remote receiver that trusts us) a verdict we never gave.
//
// How our own Received-SPF is told apart: Postfix writes the fields a
// policy service PREPENDs above its own Received field; the smtpd milter
// sees them as the first fields of the header, and they count in the
// header indexes like the client's own (measured on Postfix 3.7.11,
// TestPrependedHeaders). Position alone cannot separate them from a field
// the client put at the top of its header, because Postfix's Received field,
// the boundary, is hidden from milters. The policy daemon therefore seals
// its fields with a code bound to the client address, port, HELO name and
// sender (internal/seal), and only a field whose code verifies is kept.
//
// Fields are deleted by their occurrence index in the current header view
// (filter.Changes), the same list and order Postfix counts in, so a
// deletion never hits a neighbouring field of the same name. Run the
// postkit milter first in smtpd_milters: a milter before it that inserts
// fields of these names would shift the indexes Postfix applies.
package forged

import (
	"errors"
	"log/slog"
	"strings"

	"github.com/postkit/postkit/milter/filter"
	"github.com/postkit/postkit/milter/header"
)

// Config configures the filter.
type Config struct {
	// AuthservID is this server's authserv-id (RFC 8601 section 2.5), as
	// the DKIM verifier writes it. Required.
	AuthservID string
	// Sealed reports whether a field (Received-SPF, or an
	// Authentication-Results with our authserv-id when the policy daemon
	// writes its SPF result there) was added by our policy daemon for m (a
	// valid seal). Nil: none was, every such field is removed.
	Sealed func(m *filter.Message, name, value string) bool
	Logger *slog.Logger
}

// Filter is the "forged" filter of the milter chain.
type Filter struct {
	id     string
	sealed func(m *filter.Message, name, value string) bool
	log    *slog.Logger
}

// New checks cfg and returns the filter.
func New(cfg Config) (*Filter, error) {
	if cfg.AuthservID == "" {
		return nil, errors.New("forged: no authserv-id: set milter.dkim.authserv_id or hostname")
	}
	f := &Filter{id: cfg.AuthservID, sealed: cfg.Sealed, log: cfg.Logger}
	if f.log == nil {
		f.log = slog.Default()
	}
	return f, nil
}

// Name implements filter.Filter.
func (f *Filter) Name() string { return "forged" }

// Needs declares what the filter reads: the header, and the HELO name when
// seals are checked (the connection's address and port come with CONNECT,
// the sender with MAIL).
func (f *Filter) Needs() filter.Needs { return filter.Needs{Helo: f.sealed != nil} }

// Why a field is removed.
const (
	whySpam     = "spam verdict"
	whyDMARC    = "DMARC quarantine verdict"
	headerDMARC = "x-postkit-dmarc"
	whySPF      = "Received-SPF not added by our policy daemon"
	whyAuthRes  = "Authentication-Results with our authserv-id"
	headerSPF   = "received-spf"
	headerAR    = "authentication-results"
	prefixSpamH = "x-spam-"
)

// Judge reports why the field h must go, or "" to keep it.
func (f *Filter) Judge(m *filter.Message, h filter.Header) string {
	name := strings.ToLower(strings.TrimSpace(h.Name))
	switch {
	case strings.HasPrefix(name, prefixSpamH):
		return whySpam
	case name == headerDMARC:
		return whyDMARC
	case name == headerSPF:
		if f.sealed != nil && f.sealed(m, h.Name, h.Value) {
			return ""
		}
		return whySPF
	case name == headerAR:
		if strings.EqualFold(header.ServID(h.Value), f.id) && (f.sealed == nil || !f.sealed(m, h.Name, h.Value)) {
			return whyAuthRes
		}
	}
	return ""
}

// Headers implements filter.Filter: it records the deletions. It never
// needs the body.
func (f *Filter) Headers(m *filter.Message, c *filter.Changes) (filter.Body, error) {
	seen := map[string]int{} // kept occurrences of each name in the current view
	var removed []string
	for i := 0; i < len(m.Headers); {
		h := m.Headers[i]
		key := strings.ToLower(h.Name)
		if why := f.Judge(m, h); why != "" {
			if !c.DeleteHeader(h.Name, seen[key]+1) {
				return nil, errors.New("forged: header view out of step with its occurrence index")
			}
			removed = append(removed, h.Name)
			f.log.Debug("forged: removed", "queue_id", m.QueueID, "header", h.Name, "why", why, "value", h.Value)
			continue // the view shrank: the next field is now at i
		}
		seen[key]++
		i++
	}
	if len(removed) > 0 {
		f.log.Info("forged: removed header fields only this server may write", "queue_id", m.QueueID,
			"outbound", m.Outbound, "sender", m.MailFrom, "headers", strings.Join(removed, ","))
	}
	return nil, nil
}

var _ filter.Declarer = (*Filter)(nil)
