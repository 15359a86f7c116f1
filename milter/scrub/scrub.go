// Package scrub removes the submitting client's private details from
// outbound mail's header (RFC 5322 §3.6; Received trace fields of RFC 5321
// §4.4): the milter counterpart of the header_checks(5) IGNORE rules of the
// reference installation.
//
// Received headers are rewritten rather than deleted by default: the
// "from" clause (client HELO name, reverse DNS name and IP address) is cut and
// the "by … with … id … for …; date" part kept, because receivers and spam
// filters distrust mail that carries no Received trail at all.
//
// What the milter cannot see: Postfix never shows a milter the Received
// header it adds for the current hop, so for mail submitted straight to this
// server (port 587/465, "with ESMTPSA") that header must be handled by
// Postfix itself (header_checks). The filter handles Received headers
// added by earlier hops: a webmail or an internal relay that submitted with
// SASL, a MUA that adds its own, etc.
//
// Inbound mail (filter.Message.Outbound false) is never scrubbed.
package scrub

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/postkit/postkit/milter/filter"
)

// Actions of a Rule.
const (
	ActionDelete         = "delete"          // remove the header field
	ActionReplace        = "replace"         // replace the value with Rule.Replace
	ActionRedactReceived = "redact-received" // cut the "from" clause of a Received field
)

// Rule selects header fields by name and, optionally, value, and says what
// to do with them.
type Rule struct {
	// Header is the field name, matched case-insensitively ("Received").
	Header string `yaml:"header"`
	// Match is an optional regular expression (Go RE2 syntax) that the
	// value must match, tested on the unfolded value. Empty matches any value.
	Match string `yaml:"match"`
	// Action is "delete", "replace" or "redact-received". Default: delete.
	Action string `yaml:"action"`
	// Replace is the new value for "replace".
	Replace string `yaml:"replace"`
}

// DefaultRules mirror the reference installation's header_checks:
//
//	/^Received:.*with ESMTPSA/  IGNORE
//	/^X-Originating-IP:/        IGNORE
//	/^X-Mailer:/                IGNORE
//	/^User-Agent:/              IGNORE
//
// except that the authenticated submission's Received field is redacted
// instead of deleted (see the package documentation). "ESMTPSA" also covers
// ESMTPA, ESMTPSA, LMTPSA and UTF8SMTPSA (RFC 3848 §2 "with" protocol types
// for authenticated sessions).
func DefaultRules() []Rule {
	return []Rule{
		{Header: "Received", Match: `\bwith (UTF8)?(E|L)?SMTPS?A\b`, Action: ActionRedactReceived},
		{Header: "X-Originating-IP", Action: ActionDelete},
		{Header: "X-Mailer", Action: ActionDelete},
		{Header: "User-Agent", Action: ActionDelete},
	}
}

// Config is the filter's typed configuration.
type Config struct {
	// Rules are tried in order; the first matching rule applies to a field.
	// Nil means DefaultRules; an empty non-nil slice scrubs nothing.
	Rules []Rule
}

type rule struct {
	name    string
	re      *regexp.Regexp
	action  string
	replace string
}

// Filter is the scrub filter of the milter chain.
type Filter struct {
	rules []rule
}

// New validates cfg and builds the filter.
func New(cfg Config) (*Filter, error) {
	rs := cfg.Rules
	if rs == nil {
		rs = DefaultRules()
	}
	f := &Filter{}
	for i, r := range rs {
		cr, err := compile(r)
		if err != nil {
			return nil, fmt.Errorf("scrub: rule %d (%s): %w", i+1, r.Header, err)
		}
		f.rules = append(f.rules, cr)
	}
	return f, nil
}

func compile(r Rule) (rule, error) {
	cr := rule{name: r.Header, action: r.Action, replace: r.Replace}
	if r.Header == "" {
		return cr, fmt.Errorf("header name is empty; give the field name, e.g. X-Mailer")
	}
	for _, c := range []byte(r.Header) {
		// RFC 5322 §3.6.8: field-name = 1*ftext, printable US-ASCII except ":".
		if c < 33 || c > 126 || c == ':' {
			return cr, fmt.Errorf("header name %q: only printable ASCII without ':' or spaces is allowed (RFC 5322 §3.6.8)", r.Header)
		}
	}
	if r.Match != "" {
		re, err := regexp.Compile(r.Match)
		if err != nil {
			return cr, fmt.Errorf("match %q is not a valid regular expression (Go RE2 syntax): %w", r.Match, err)
		}
		cr.re = re
	}
	switch r.Action {
	case "", ActionDelete:
		cr.action = ActionDelete
	case ActionReplace:
		if r.Replace == "" {
			return cr, fmt.Errorf("action replace needs a replacement value; use action delete to remove the field")
		}
		if strings.ContainsAny(r.Replace, "\r\n\x00") {
			return cr, fmt.Errorf("replacement value must be one line without CR, LF or NUL")
		}
	case ActionRedactReceived:
	default:
		return cr, fmt.Errorf("action %q: want delete, replace or redact-received", r.Action)
	}
	return cr, nil
}

// Name implements filter.Filter.
func (f *Filter) Name() string { return "scrub" }

// Needs declares that scrubbing reads only the headers and Message.Outbound:
// the daemon may ask Postfix to leave out HELO, recipients and extra macros.
func (f *Filter) Needs() filter.Needs { return filter.Needs{} }

// Headers implements filter.Filter: it records a deletion or a change for
// every field a rule matches, on outbound mail only. It never needs the body.
func (f *Filter) Headers(m *filter.Message, c *filter.Changes) (filter.Body, error) {
	if !m.Outbound || len(f.rules) == 0 {
		return nil, nil
	}
	seen := map[string]int{} // occurrences of each name in the current view
	for i := 0; i < len(m.Headers); {
		h := m.Headers[i]
		key := strings.ToLower(h.Name)
		nth := seen[key] + 1
		r := f.match(h)
		if r == nil {
			seen[key] = nth
			i++
			continue
		}
		switch r.action {
		case ActionDelete:
			c.DeleteHeader(h.Name, nth)
			continue // the view shrank: the next field is now at i
		case ActionReplace:
			c.ChangeHeader(h.Name, nth, r.replace)
		case ActionRedactReceived:
			v, ok := RedactReceived(h.Value)
			switch {
			case !ok:
				// Not a parsable trace field: fall back to the seed's
				// behaviour rather than leak the client's address.
				c.DeleteHeader(h.Name, nth)
				continue
			case v != h.Value:
				c.ChangeHeader(h.Name, nth, v)
			}
		}
		seen[key] = nth
		i++
	}
	return nil, nil
}

func (f *Filter) match(h filter.Header) *rule {
	var unfolded string
	for i := range f.rules {
		r := &f.rules[i]
		if !strings.EqualFold(r.name, h.Name) {
			continue
		}
		if r.re == nil {
			return r
		}
		if unfolded == "" {
			unfolded = unfold(h.Value)
		}
		if r.re.MatchString(unfolded) {
			return r
		}
	}
	return nil
}

// unfold removes the CRLF of folded lines (RFC 5322 §2.2.3).
func unfold(v string) string {
	if !strings.ContainsAny(v, "\r\n") {
		return v
	}
	return strings.NewReplacer("\r\n", "", "\n", "").Replace(v)
}

// RedactReceived cuts the "from" clause (RFC 5321 §4.4 From-domain and
// TCP-info: the client's HELO, reverse DNS name and address) from a Received
// field value, keeping "by …" and what follows. It reports false when the
// value has no "by" clause to keep (the caller then deletes the field).
// A value without a "from" clause is returned unchanged.
func RedactReceived(v string) (string, bool) {
	t := strings.TrimLeft(v, " \t\r\n")
	if !hasWordPrefix(t, "from") {
		return v, true
	}
	// The "from" clause may contain comments with anything, including the
	// word "by" ("(Authenticated sender: by…)"): skip comments while looking
	// for " by " at nesting level 0.
	depth := 0
	for i := 4; i < len(t); i++ {
		switch t[i] {
		case '\\':
			i++
		case '(':
			depth++
		case ')':
			if depth > 0 {
				depth--
			}
		case ' ', '\t', '\n':
			if depth == 0 && hasWordPrefix(t[i+1:], "by") {
				return t[i+1:], true
			}
		}
	}
	return v, false
}

func hasWordPrefix(s, w string) bool {
	if len(s) < len(w) || !strings.EqualFold(s[:len(w)], w) {
		return false
	}
	return len(s) == len(w) || s[len(w)] == ' ' || s[len(w)] == '\t' || s[len(w)] == '\r' || s[len(w)] == '\n'
}

var _ filter.Declarer = (*Filter)(nil)
