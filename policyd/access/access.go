// Package access implements the lookup keys and the actions of Postfix
// access(5) tables, which the policy checks share: the keys an address is
// looked up under, and the table values postkit may pass on to Postfix.
package access

import (
	"fmt"
	"strings"

	"github.com/postkit/postkit/policyd"
)

// Keys returns the keys Postfix looks up in an access(5) table for an
// email address, in order (access(5) "EMAIL ADDRESS PATTERNS"):
// user+ext@domain, user@domain, domain, the parent domains, user+ext@, user@.
// Keys are lower-cased (Postfix folds access-map keys). A localpart is split at
// the first character of delims, unless that leaves it empty. With dotStyle
// the parent domains are looked up as ".parent.tld" (smtpd_access_maps not in
// parent_domain_matches_subdomains), else as "parent.tld".
func Keys(addr, delims string, dotStyle bool) []string {
	addr = strings.ToLower(strings.TrimSpace(addr))
	addr = strings.TrimSuffix(strings.TrimPrefix(addr, "<"), ">")
	if addr == "" {
		return nil
	}
	local, domain, hasAt := addr, "", false
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		local, domain, hasAt = addr[:i], strings.TrimSuffix(addr[i+1:], "."), true
	}
	base := local
	if delims != "" {
		if i := strings.IndexAny(local, delims); i > 0 {
			base = local[:i]
		}
	}
	keys := make([]string, 0, 8)
	if hasAt {
		keys = append(keys, local+"@"+domain)
		if base != local {
			keys = append(keys, base+"@"+domain)
		}
	} else {
		keys = append(keys, local)
		if base != local {
			keys = append(keys, base)
		}
	}
	if domain != "" {
		keys = append(keys, domain)
		// Parent domains; an address literal ([192.0.2.1]) has none.
		if !strings.HasPrefix(domain, "[") {
			for rest := domain; ; {
				i := strings.IndexByte(rest, '.')
				if i < 0 || i == len(rest)-1 {
					break
				}
				if dotStyle {
					keys = append(keys, rest[i:])
				} else {
					keys = append(keys, rest[i+1:])
				}
				rest = rest[i+1:]
			}
		}
	}
	if hasAt && local != "" {
		keys = append(keys, local+"@")
		if base != local {
			keys = append(keys, base+"@")
		}
	}
	return keys
}

// ParseAction turns an access(5) table value into a policyd.Decision: final
// actions (OK, REJECT, DEFER, DEFER_IF_PERMIT, DEFER_IF_REJECT, DISCARD, HOLD,
// REDIRECT, FILTER, BCC, "4NN text", "5NN text") become Action, PREPEND becomes
// a Prepend line, and DUNNO, WARN and INFO give no action (Reason "dunno",
// "warn", "info"). An all-numerical value is OK, as in access(5). Restriction
// names and anything else are refused with an error: a table must never make
// postkit send garbage to Postfix.
func ParseAction(v string) (policyd.Decision, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return policyd.Decision{}, fmt.Errorf("access: empty action; use e.g. REJECT, DISCARD, OK or \"550 text\"")
	}
	if strings.ContainsAny(v, "\r\n\x00") {
		return policyd.Decision{}, fmt.Errorf("access: action %q contains a line break", v)
	}
	word, text, _ := strings.Cut(v, " ")
	text = strings.TrimSpace(text)
	if isAllDigits(word) {
		if text == "" {
			// access(5): "An all-numerical result is treated as OK."
			return policyd.Decision{Action: "OK"}, nil
		}
		if len(word) == 3 && (word[0] == '4' || word[0] == '5') {
			return policyd.Decision{Action: v}, nil
		}
		return policyd.Decision{}, fmt.Errorf("access: action %q: SMTP code must be 4NN or 5NN", v)
	}
	switch strings.ToUpper(word) {
	case "OK", "REJECT", "DEFER", "DEFER_IF_PERMIT", "DEFER_IF_REJECT", "DISCARD", "HOLD":
		return policyd.Decision{Action: v}, nil
	case "REDIRECT", "BCC":
		if !strings.Contains(text, "@") {
			return policyd.Decision{}, fmt.Errorf("access: action %q: %s needs an address", v, word)
		}
		return policyd.Decision{Action: v}, nil
	case "FILTER":
		if !strings.Contains(text, ":") {
			return policyd.Decision{}, fmt.Errorf("access: action %q: FILTER needs transport:destination", v)
		}
		return policyd.Decision{Action: v}, nil
	case "PREPEND":
		name, _, ok := strings.Cut(text, ":")
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return policyd.Decision{}, fmt.Errorf("access: action %q: PREPEND needs \"Name: value\"", v)
		}
		return policyd.Decision{Prepend: []string{text}}, nil
	case "DUNNO":
		return policyd.Decision{Reason: "dunno"}, nil
	case "WARN":
		return policyd.Decision{Reason: "warn"}, nil
	case "INFO":
		return policyd.Decision{Reason: "info"}, nil
	}
	return policyd.Decision{}, fmt.Errorf("access: action %q is not an access(5) action postkit passes on; use OK, REJECT, DEFER, DISCARD, HOLD, DUNNO, PREPEND or \"4NN/5NN text\"", v)
}

func isAllDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// IsRefusalCode reports whether s starts with a 4xx or 5xx SMTP reply code,
// as a check's configured refusal ("554 5.7.1", "450 4.7.1") must: access(5)
// takes "4NN text" and "5NN text" as they are.
func IsRefusalCode(s string) bool {
	return len(s) >= 3 && (s[0] == '4' || s[0] == '5') && isAllDigits(s[:3])
}
