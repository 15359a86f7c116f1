package policyd

// The blacklist check answers like Postfix's check_sender_access and
// check_recipient_access over the seed's SQLite tables
// (postfix_liste_noire_expediteurs, postfix_liste_noire_destinataires), with the
// lookup order and action syntax of access(5).

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
)

// BlacklistStore is what the blacklist check needs from the SQL store;
// *sqlmaps.Store satisfies it. Each method matches exactly one key on active
// rows; found is false when no row matches.
type BlacklistStore interface {
	// LookupSenderBlacklist returns the row's code_retour and message.
	LookupSenderBlacklist(ctx context.Context, key string) (code int, message string, found bool, err error)
	// LookupRecipientBlacklist returns the row's action, an access(5) action.
	LookupRecipientBlacklist(ctx context.Context, key string) (action string, found bool, err error)
}

// BlacklistConfig configures the blacklist check. The zero value checks both
// sender and recipient with Postfix 3.7's default matching.
type BlacklistConfig struct {
	// SkipSender disables the sender blacklist (check_sender_access).
	SkipSender bool
	// SkipRecipient disables the recipient blacklist (check_recipient_access).
	SkipRecipient bool
	// RecipientDelimiter is Postfix's recipient_delimiter: each character
	// separates a localpart from its extension ("+" turns user+ext@d into
	// user@d as a second key). Default: "" (no extension stripping), as in
	// Postfix; the reference installation sets "+".
	RecipientDelimiter string
	// SubdomainsNeedDot is the opposite of listing smtpd_access_maps in
	// Postfix's parent_domain_matches_subdomains. False (Postfix 3.7's
	// default): the key "example.com" also matches sub.example.com. True:
	// only the key ".example.com" matches subdomains.
	SubdomainsNeedDot bool
	// NullSenderKey is the key looked up for the null sender, Postfix's
	// smtpd_null_access_lookup_key. Default: "<>".
	NullSenderKey string
	// Logger receives one line per decision or fault. Default: slog.Default().
	Logger *slog.Logger
}

// Blacklist is the sender/recipient blacklist check.
type Blacklist struct {
	cfg   BlacklistConfig
	store BlacklistStore
	log   *slog.Logger
}

// NewBlacklist returns the blacklist check over store.
func NewBlacklist(cfg BlacklistConfig, store BlacklistStore) (*Blacklist, error) {
	if store == nil {
		return nil, fmt.Errorf("policyd: blacklist: no store given; open the SQLite store first")
	}
	if cfg.NullSenderKey == "" {
		cfg.NullSenderKey = "<>"
	}
	for _, c := range cfg.RecipientDelimiter {
		if c == '@' || c == '.' || c <= ' ' {
			return nil, fmt.Errorf("policyd: blacklist: recipient delimiter %q contains %q; use characters like + or -", cfg.RecipientDelimiter, c)
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Blacklist{cfg: cfg, store: store, log: log.With("check", "blacklist")}, nil
}

// Name implements Check.
func (b *Blacklist) Name() string { return "blacklist" }

// Check implements Check: the sender blacklist first (Postfix evaluates
// sender restrictions before recipient restrictions), then the recipient
// blacklist when the request names a recipient. Store faults and invalid
// table answers are logged and give no opinion.
func (b *Blacklist) Check(ctx context.Context, r *Request) (Decision, error) {
	var d Decision
	if !b.cfg.SkipSender {
		var keys []string
		if r.Sender() == "" {
			// smtpd_null_access_lookup_key: the null sender is looked up
			// under one fixed key.
			keys = []string{b.cfg.NullSenderKey}
		} else {
			keys = AccessKeys(r.Sender(), b.cfg.RecipientDelimiter, b.cfg.SubdomainsNeedDot)
		}
		for _, k := range keys {
			code, msg, found, err := b.store.LookupSenderBlacklist(ctx, k)
			if err != nil {
				b.log.Error("sender blacklist lookup failed; no opinion", "queue_id", r.Get("queue_id"), "key", k, "err", err)
				return Decision{Reason: "blacklist=error"}, nil
			}
			if !found {
				continue
			}
			action, err := senderBlacklistAction(code, msg)
			if err != nil {
				b.log.Error("invalid sender blacklist row; no opinion", "queue_id", r.Get("queue_id"), "key", k, "err", err)
				return Decision{Reason: "blacklist=error"}, nil
			}
			b.log.Info("sender blacklisted", "queue_id", r.Get("queue_id"), "sender", r.Sender(), "key", k, "action", action)
			return Decision{Action: action, Reason: "blacklist=sender"}, nil
		}
	}
	if b.cfg.SkipRecipient || r.Recipient() == "" {
		return d, nil
	}
	for _, k := range AccessKeys(r.Recipient(), b.cfg.RecipientDelimiter, b.cfg.SubdomainsNeedDot) {
		value, found, err := b.store.LookupRecipientBlacklist(ctx, k)
		if err != nil {
			b.log.Error("recipient blacklist lookup failed; no opinion", "queue_id", r.Get("queue_id"), "key", k, "err", err)
			return Decision{Reason: "blacklist=error"}, nil
		}
		if !found {
			continue
		}
		ad, err := ParseAccessAction(value)
		if err != nil {
			b.log.Error("invalid recipient blacklist action; no opinion", "queue_id", r.Get("queue_id"), "key", k, "err", err)
			return Decision{Reason: "blacklist=error"}, nil
		}
		b.log.Info("recipient blacklist match", "queue_id", r.Get("queue_id"), "recipient", r.Recipient(), "key", k, "action", value)
		switch {
		case ad.Action != "" || len(ad.Prepend) > 0:
			ad.Reason = "blacklist=recipient"
			return ad, nil
		case ad.Reason == "warn":
			b.log.Warn("recipient blacklist WARN", "queue_id", r.Get("queue_id"), "recipient", r.Recipient(), "text", value)
		}
		// DUNNO, WARN, INFO: the lookup ends here without a decision, as in
		// Postfix (a match stops the search for less specific keys).
		return Decision{Reason: "blacklist=dunno"}, nil
	}
	return d, nil
}

// senderBlacklistAction builds the answer of a sender blacklist row:
// code_retour ' ' message, as the reference installation's map query does.
func senderBlacklistAction(code int, msg string) (string, error) {
	if code < 400 || code > 599 {
		return "", fmt.Errorf("policyd: blacklist: code_retour %d is not a 4xx or 5xx SMTP code; fix the row", code)
	}
	msg = strings.TrimSpace(msg)
	if strings.ContainsAny(msg, "\r\n\x00") {
		return "", fmt.Errorf("policyd: blacklist: message %q contains a line break; fix the row", msg)
	}
	if msg == "" {
		// A bare "554" would be an all-numerical answer, which access(5)
		// treats as OK: always send a text.
		msg = "Access denied"
	}
	return strconv.Itoa(code) + " " + msg, nil
}

// AccessKeys returns the keys Postfix looks up in an access(5) table for an
// email address, in order (access(5) "EMAIL ADDRESS PATTERNS"):
// user+ext@domain, user@domain, domain, the parent domains, user+ext@, user@.
// Keys are lower-cased (Postfix folds access-map keys). A localpart is split at
// the first character of delims, unless that leaves it empty. With dotStyle
// the parent domains are looked up as ".parent.tld" (smtpd_access_maps not in
// parent_domain_matches_subdomains), else as "parent.tld".
func AccessKeys(addr, delims string, dotStyle bool) []string {
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

// ParseAccessAction turns an access(5) table value into a Decision: final
// actions (OK, REJECT, DEFER, DEFER_IF_PERMIT, DEFER_IF_REJECT, DISCARD, HOLD,
// REDIRECT, FILTER, BCC, "4NN text", "5NN text") become Action, PREPEND becomes
// a Prepend line, and DUNNO, WARN and INFO give no action (Reason "dunno",
// "warn", "info"). An all-numerical value is OK, as in access(5). Restriction
// names and anything else are refused with an error: a table must never make
// postkit send garbage to Postfix.
func ParseAccessAction(v string) (Decision, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return Decision{}, fmt.Errorf("policyd: empty access action; use e.g. REJECT, DISCARD, OK or \"550 text\"")
	}
	if strings.ContainsAny(v, "\r\n\x00") {
		return Decision{}, fmt.Errorf("policyd: access action %q contains a line break", v)
	}
	word, text, _ := strings.Cut(v, " ")
	text = strings.TrimSpace(text)
	if isAllDigits(word) {
		if text == "" {
			// access(5): "An all-numerical result is treated as OK."
			return Decision{Action: "OK"}, nil
		}
		if len(word) == 3 && (word[0] == '4' || word[0] == '5') {
			return Decision{Action: v}, nil
		}
		return Decision{}, fmt.Errorf("policyd: access action %q: SMTP code must be 4NN or 5NN", v)
	}
	switch strings.ToUpper(word) {
	case "OK", "REJECT", "DEFER", "DEFER_IF_PERMIT", "DEFER_IF_REJECT", "DISCARD", "HOLD":
		return Decision{Action: v}, nil
	case "REDIRECT", "BCC":
		if !strings.Contains(text, "@") {
			return Decision{}, fmt.Errorf("policyd: access action %q: %s needs an address", v, word)
		}
		return Decision{Action: v}, nil
	case "FILTER":
		if !strings.Contains(text, ":") {
			return Decision{}, fmt.Errorf("policyd: access action %q: FILTER needs transport:destination", v)
		}
		return Decision{Action: v}, nil
	case "PREPEND":
		name, _, ok := strings.Cut(text, ":")
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return Decision{}, fmt.Errorf("policyd: access action %q: PREPEND needs \"Name: value\"", v)
		}
		return Decision{Prepend: []string{text}}, nil
	case "DUNNO":
		return Decision{Reason: "dunno"}, nil
	case "WARN":
		return Decision{Reason: "warn"}, nil
	case "INFO":
		return Decision{Reason: "info"}, nil
	}
	return Decision{}, fmt.Errorf("policyd: access action %q is not an access(5) action postkit passes on; use OK, REJECT, DEFER, DISCARD, HOLD, DUNNO, PREPEND or \"4NN/5NN text\"", v)
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
