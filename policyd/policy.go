// Package policyd implements the Postfix SMTP access policy delegation protocol
// (SMTPD_POLICY_README): a server that answers Postfix's per-recipient questions
// by running configured checks in order.
package policyd

import (
	"context"
	"net/netip"
	"strings"
)

// Request is one policy request: the attribute=value lines Postfix sends,
// terminated by an empty line. Unknown attributes are kept but ignored.
type Request struct {
	Attrs map[string]string
}

// Get returns an attribute's value ("" if absent).
func (r *Request) Get(name string) string { return r.Attrs[name] }

// Stage is protocol_state: "RCPT", "END-OF-MESSAGE", "DATA", ….
func (r *Request) Stage() string { return r.Attrs["protocol_state"] }

// ClientAddr parses client_address; the result is invalid if absent or malformed.
func (r *Request) ClientAddr() netip.Addr {
	a, _ := netip.ParseAddr(r.Attrs["client_address"])
	return a.Unmap()
}

// Sender is the envelope sender ("" for the null sender).
func (r *Request) Sender() string { return r.Attrs["sender"] }

// Recipient is the envelope recipient of a RCPT-stage request.
func (r *Request) Recipient() string { return r.Attrs["recipient"] }

// SASLUser is the authenticated SASL user name, "" if the client did not authenticate.
func (r *Request) SASLUser() string { return r.Attrs["sasl_username"] }

// Helo is the HELO/EHLO name the client gave.
func (r *Request) Helo() string { return r.Attrs["helo_name"] }

// Domain returns the domain part of an address, lower-cased.
func Domain(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return strings.ToLower(addr[i+1:])
	}
	return ""
}

// Decision is a check's answer. The zero value means "no opinion" (DUNNO).
type Decision struct {
	// Action is the access(5) action sent to Postfix when the decision is
	// final: "REJECT …", "DEFER_IF_PERMIT …", "450 4.7.1 …", "554 …", "OK".
	// Empty means the check has no final opinion and the next check runs.
	Action string
	// Prepend lists header lines ("Name: value") to add to the message; every
	// check's prepends are kept, whatever the final action (unless it refuses).
	Prepend []string
	// Reason is a short text for the log and metrics (e.g. "spf=fail").
	Reason string
}

// Final reports whether the decision ends the chain.
func (d Decision) Final() bool { return d.Action != "" }

// Check is one policy check over one request. A check never returns a 5xx
// action because a lookup failed: DNS or store trouble maps to no opinion or
// to a temporary (4xx / DEFER_IF_PERMIT) answer, as the check's config says.
type Check interface {
	Name() string
	Check(ctx context.Context, r *Request) (Decision, error)
}
