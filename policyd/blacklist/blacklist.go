// Package blacklist is the policy check that answers like Postfix's
// check_sender_access and check_recipient_access (access(5)) over the seed's
// SQLite tables (postfix_liste_noire_expediteurs,
// postfix_liste_noire_destinataires), with access(5)'s lookup order and
// action syntax.
package blacklist

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"github.com/postkit/postkit/policyd"
	"github.com/postkit/postkit/policyd/access"
)

// Store is what the blacklist check needs from the SQL store;
// *sqlmaps.Store satisfies it. Each method matches exactly one key on active
// rows; found is false when no row matches.
type Store interface {
	// LookupSenderBlacklist returns the row's code_retour and message.
	LookupSenderBlacklist(ctx context.Context, key string) (code int, message string, found bool, err error)
	// LookupRecipientBlacklist returns the row's action, an access(5) action.
	LookupRecipientBlacklist(ctx context.Context, key string) (action string, found bool, err error)
}

// Config configures the blacklist check. The zero value checks both
// sender and recipient with Postfix 3.7's default matching.
type Config struct {
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

// Check is the sender/recipient blacklist check.
type Check struct {
	cfg   Config
	store Store
	log   *slog.Logger
}

var _ policyd.Check = (*Check)(nil)

// New returns the blacklist check over store.
func New(cfg Config, store Store) (*Check, error) {
	if store == nil {
		return nil, fmt.Errorf("blacklist: no store given; open the SQLite store first")
	}
	if cfg.NullSenderKey == "" {
		cfg.NullSenderKey = "<>"
	}
	for _, c := range cfg.RecipientDelimiter {
		if c == '@' || c == '.' || c <= ' ' {
			return nil, fmt.Errorf("blacklist: recipient delimiter %q contains %q; use characters like + or -", cfg.RecipientDelimiter, c)
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Check{cfg: cfg, store: store, log: log.With("check", "blacklist")}, nil
}

// Name implements policyd.Check.
func (b *Check) Name() string { return "blacklist" }

// Check implements policyd.Check: the sender blacklist first (Postfix evaluates
// sender restrictions before recipient restrictions), then the recipient
// blacklist when the request names a recipient. Store faults and invalid
// table answers are logged and give no opinion.
func (b *Check) Check(ctx context.Context, r *policyd.Request) (policyd.Decision, error) {
	var d policyd.Decision
	if !b.cfg.SkipSender {
		var keys []string
		if r.Sender() == "" {
			// smtpd_null_access_lookup_key: the null sender is looked up
			// under one fixed key.
			keys = []string{b.cfg.NullSenderKey}
		} else {
			keys = access.Keys(r.Sender(), b.cfg.RecipientDelimiter, b.cfg.SubdomainsNeedDot)
		}
		for _, k := range keys {
			code, msg, found, err := b.store.LookupSenderBlacklist(ctx, k)
			if err != nil {
				b.log.Error("sender blacklist lookup failed; no opinion", "queue_id", r.Get("queue_id"), "key", k, "err", err)
				return policyd.Decision{Reason: "blacklist=error"}, nil
			}
			if !found {
				continue
			}
			action, err := senderBlacklistAction(code, msg)
			if err != nil {
				b.log.Error("invalid sender blacklist row; no opinion", "queue_id", r.Get("queue_id"), "key", k, "err", err)
				return policyd.Decision{Reason: "blacklist=error"}, nil
			}
			b.log.Info("sender blacklisted", "queue_id", r.Get("queue_id"), "sender", r.Sender(), "key", k, "action", action)
			return policyd.Decision{Action: action, Reason: "blacklist=sender"}, nil
		}
	}
	if b.cfg.SkipRecipient || r.Recipient() == "" {
		return d, nil
	}
	for _, k := range access.Keys(r.Recipient(), b.cfg.RecipientDelimiter, b.cfg.SubdomainsNeedDot) {
		value, found, err := b.store.LookupRecipientBlacklist(ctx, k)
		if err != nil {
			b.log.Error("recipient blacklist lookup failed; no opinion", "queue_id", r.Get("queue_id"), "key", k, "err", err)
			return policyd.Decision{Reason: "blacklist=error"}, nil
		}
		if !found {
			continue
		}
		ad, err := access.ParseAction(value)
		if err != nil {
			b.log.Error("invalid recipient blacklist action; no opinion", "queue_id", r.Get("queue_id"), "key", k, "err", err)
			return policyd.Decision{Reason: "blacklist=error"}, nil
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
		return policyd.Decision{Reason: "blacklist=dunno"}, nil
	}
	return d, nil
}

// senderBlacklistAction builds the answer of a sender blacklist row:
// code_retour ' ' message, as the reference installation's map query does.
func senderBlacklistAction(code int, msg string) (string, error) {
	if code < 400 || code > 599 {
		return "", fmt.Errorf("blacklist: code_retour %d is not a 4xx or 5xx SMTP code; fix the row", code)
	}
	msg = strings.TrimSpace(msg)
	if strings.ContainsAny(msg, "\r\n\x00") {
		return "", fmt.Errorf("blacklist: message %q contains a line break; fix the row", msg)
	}
	if msg == "" {
		// A bare "554" would be an all-numerical answer, which access(5)
		// treats as OK: always send a text.
		msg = "Access denied"
	}
	return strconv.Itoa(code) + " " + msg, nil
}
