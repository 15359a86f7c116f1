package sqlmaps

import (
	"regexp"
	"strconv"
	"strings"
	"unicode"

	"github.com/postkit/postkit/internal/mailaddr"
)

// normDomain lower-cases a domain and drops a trailing dot.
func normDomain(s string) string {
	return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(s), "."))
}

// normKey lower-cases a lookup key. Postfix folds every lookup key to lower
// case before querying (postmap(1) -f; stored keys must be lower case to be
// found) and Dovecot's default auth_username_format %Lu does the same for
// logins. Keys are ASCII after validation, so ASCII folding is exact.
func normKey(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// CheckDomain validates a domain name and returns its normal form.
func CheckDomain(s string) (string, error) {
	d := normDomain(s)
	if !mailaddr.ValidDomain(d) {
		return "", errf(ErrInvalid, "%q is not a domain name (letters, digits, hyphens, at least two labels; write IDNs as xn--)", s)
	}
	return d, nil
}

// CheckAddress validates a mailbox address (local@domain) and returns its
// normal form.
func CheckAddress(s string) (string, error) {
	a := normKey(s)
	if !mailaddr.ValidAddress(a) {
		return "", errf(ErrInvalid, "%q is not a mail address of the form user@example.org", s)
	}
	return a, nil
}

// localRE is a dot-atom local part (RFC 5322 §3.4.1), as alias_maps keys are.
var localRE = regexp.MustCompile(`^[a-z0-9!#$%&'*+/=?^_` + "`" + `{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_` + "`" + `{|}~-]+)*$`)

// CheckLocalName validates an alias_maps key: a bare local name such as
// "postmaster" (aliases(5): local(8) looks up the local part only).
func CheckLocalName(s string) (string, error) {
	a := normKey(s)
	if len(a) > 64 || !localRE.MatchString(a) {
		return "", errf(ErrInvalid, "%q is not a local name (e.g. postmaster; no @domain in alias names, use a virtual alias for full addresses)", s)
	}
	return a, nil
}

// CheckVirtualSource validates a virtual_alias_maps key: an address, or
// "@domain" to catch every address of the domain (virtual(5)).
func CheckVirtualSource(s string) (string, error) {
	k := normKey(s)
	if d, ok := strings.CutPrefix(k, "@"); ok {
		if _, err := CheckDomain(d); err != nil {
			return "", errf(ErrInvalid, "%q: the catch-all form is @domain with a valid domain", s)
		}
		return normDomainAt(d), nil
	}
	if !mailaddr.ValidAddress(k) {
		return "", errf(ErrInvalid, "%q is neither a mail address nor @domain", s)
	}
	return k, nil
}

func normDomainAt(d string) string { return "@" + normDomain(d) }

// CheckDestinations validates an alias destination: one address or a list
// separated by commas and/or spaces, as aliases(5) and virtual(5) accept.
// localOK allows bare local names (alias_maps results are delivered by
// local(8), which appends $myorigin). Commands (|cmd), files (/path) and
// :include: are refused: postkit does not run programs from SQL rows. The
// list is returned joined with ", ".
func CheckDestinations(s string, localOK bool) (string, error) {
	fields := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
	if len(fields) == 0 {
		return "", errf(ErrInvalid, "empty destination: give one or more addresses separated by commas")
	}
	seen := map[string]bool{}
	out := make([]string, 0, len(fields))
	for _, f := range fields {
		switch {
		case strings.HasPrefix(f, "|"), strings.HasPrefix(f, "/"), strings.HasPrefix(strings.ToLower(f), ":include:"), strings.HasPrefix(f, "\""):
			return "", errf(ErrInvalid, "destination %q: commands, files and :include: are not stored in SQL; use a plain address", f)
		case mailaddr.ValidAddress(f):
		case localOK && localRE.MatchString(strings.ToLower(f)) && len(f) <= 64:
		default:
			what := "a mail address"
			if localOK {
				what = "a mail address or a local name"
			}
			return "", errf(ErrInvalid, "destination %q is not %s", f, what)
		}
		if !seen[strings.ToLower(f)] {
			seen[strings.ToLower(f)] = true
			out = append(out, f)
		}
	}
	return strings.Join(out, ", "), nil
}

// CheckAccessKey validates a key of an access(5) table: user@domain, a
// domain, or user@ (EMAIL ADDRESS PATTERNS in access(5)).
func CheckAccessKey(s string) (string, error) {
	k := normKey(s)
	switch {
	case mailaddr.ValidAddress(k):
		return k, nil
	case strings.HasSuffix(k, "@") && strings.Count(k, "@") == 1:
		if _, err := CheckLocalName(strings.TrimSuffix(k, "@")); err == nil {
			return k, nil
		}
	case !strings.Contains(k, "@"):
		if d, err := CheckDomain(k); err == nil {
			return d, nil
		}
	}
	return "", errf(ErrInvalid, "%q is not an access(5) key: use user@domain, domain or user@", s)
}

// CheckCode validates an SMTP reply code for the sender blacklist: three
// digits, 4xx (temporary) or 5xx (permanent) (RFC 5321 §4.2.1; access(5)
// "4NN text", "5NN text").
func CheckCode(code int) error {
	if code < 400 || code > 599 {
		return errf(ErrInvalid, "reply code %d: use a 4xx (try later) or 5xx (refuse) code such as 554", code)
	}
	return nil
}

// checkText validates reply text: one line of printable characters.
func checkText(what, s string, required bool) error {
	if required && strings.TrimSpace(s) == "" {
		return errf(ErrInvalid, "empty %s: give the text the client will see", what)
	}
	if len(s) > 400 {
		return errf(ErrInvalid, "%s is %d bytes: keep it under 400 (SMTP reply lines are limited to 512)", what, len(s))
	}
	for _, r := range s {
		if r == '\r' || r == '\n' || (unicode.IsControl(r) && r != '\t') {
			return errf(ErrInvalid, "%s contains a control character or line break: keep it to one line", what)
		}
	}
	return nil
}

// accessActions are the access(5) ACCEPT/REJECT/OTHER actions and whether
// they take an argument ("" none, "opt" optional text, "req" required).
var accessActions = map[string]string{
	"OK": "", "DUNNO": "", "DEFER_IF_REJECT": "opt", "DEFER_IF_PERMIT": "opt",
	"REJECT": "opt", "DEFER": "opt", "DISCARD": "opt", "HOLD": "opt", "WARN": "opt", "INFO": "opt",
	"REDIRECT": "addr", "BCC": "addr", "FILTER": "req", "PREPEND": "req",
}

// CheckAction validates a recipient blacklist action: an access(5) action
// (OK, DUNNO, REJECT [text], DEFER [text], DEFER_IF_REJECT, DEFER_IF_PERMIT,
// DISCARD, HOLD, WARN, INFO, REDIRECT address, BCC address, FILTER
// transport:destination, PREPEND header: value) or "4NN text" / "5NN text".
// It returns the action with its keyword in upper case.
func CheckAction(s string) (string, error) {
	s = strings.TrimSpace(s)
	word, rest, _ := strings.Cut(s, " ")
	rest = strings.TrimSpace(rest)
	if err := checkText("action", s, true); err != nil {
		return "", err
	}
	if len(word) == 3 && word[0] >= '0' && word[0] <= '9' {
		code, err := strconv.Atoi(word)
		if err != nil || CheckCode(code) != nil {
			return "", errf(ErrInvalid, "action %q: a numeric action is 4NN or 5NN followed by text", s)
		}
		return s, nil
	}
	kw := strings.ToUpper(word)
	arg, ok := accessActions[kw]
	if !ok {
		return "", errf(ErrInvalid, "action %q: use REJECT, DEFER, DISCARD, HOLD, OK, DUNNO, DEFER_IF_REJECT, DEFER_IF_PERMIT, WARN, INFO, REDIRECT addr, BCC addr, FILTER transport:dest, PREPEND header, or 4NN/5NN text", s)
	}
	switch {
	case arg == "" && rest != "":
		return "", errf(ErrInvalid, "action %s takes no text", kw)
	case arg == "addr" && !mailaddr.ValidAddress(rest):
		return "", errf(ErrInvalid, "action %s needs a mail address, got %q", kw, rest)
	case arg == "req" && rest == "":
		return "", errf(ErrInvalid, "action %s needs an argument", kw)
	case kw == "FILTER" && !strings.Contains(rest, ":"):
		return "", errf(ErrInvalid, "FILTER needs transport:destination, got %q", rest)
	case kw == "PREPEND" && !strings.Contains(rest, ":"):
		return "", errf(ErrInvalid, "PREPEND needs a header line \"Name: value\", got %q", rest)
	}
	if rest == "" {
		return kw, nil
	}
	return kw + " " + rest, nil
}

// Privileges are the values of postfix_utilisateurs.privilege the reference
// installation's web portal knows.
const (
	PrivilegeUser  = "utilisateur"
	PrivilegeAdmin = "administrateur"
)

// CheckPrivilege validates a privilege; "" means PrivilegeUser.
func CheckPrivilege(s string) (string, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", PrivilegeUser, "user":
		return PrivilegeUser, nil
	case PrivilegeAdmin, "admin":
		return PrivilegeAdmin, nil
	}
	return "", errf(ErrInvalid, "privilege %q: use %s or %s", s, PrivilegeUser, PrivilegeAdmin)
}
