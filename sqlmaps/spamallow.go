package sqlmaps

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// SpamAllow is one row of postkit_liste_blanche_spam: mail to the users of
// Domain from Sender (a domain, its sub-domains included) is not marked as
// spam when the sender's domain is authenticated.
type SpamAllow struct {
	ID     int64  `json:"id"`
	Domain string `json:"domain"`
	Sender string `json:"sender_domain"`
	Active bool   `json:"active"`
}

// spamAllowNoun names the rows in results and errors.
const spamAllowNoun = "spam allow list entry"

// checkSenderDomain takes a sender domain, also written @domain or
// *@domain as whitelist_from patterns are.
func checkSenderDomain(s string) (string, error) {
	d := strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(s), "*"), "@")
	if strings.Contains(d, "@") || strings.ContainsAny(d, "*?") {
		return "", errf(ErrInvalid, "%q: the allow list holds sender domains (e.g. partner.fr): an authenticated domain vouches for all its addresses, not for one", s)
	}
	return CheckDomain(d)
}

// AddSpamAllow lets authenticated mail from sender (a domain and its
// sub-domains) reach the users of domain without being marked as spam.
func (s *Store) AddSpamAllow(ctx context.Context, domain, sender string) (Result, error) {
	d, err := CheckDomain(domain)
	if err != nil {
		return Result{}, err
	}
	from, err := checkSenderDomain(sender)
	if err != nil {
		return Result{}, err
	}
	res := Result{Object: spamAllowNoun, Key: d + " " + from}
	err = s.tx(ctx, func(tx *txn) error {
		r, err := tx.ExecContext(ctx, "INSERT INTO postkit_liste_blanche_spam (domaine, domaine_expediteur, active) VALUES (?, ?, 1) ON CONFLICT DO NOTHING", d, from)
		if err != nil {
			return fmt.Errorf("sqlmaps: insert %s %s: %w", spamAllowNoun, res.Key, err)
		}
		res.Change = Created
		if n, _ := r.RowsAffected(); n == 0 {
			res.Change = Unchanged
		}
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	return res, nil
}

// DeleteSpamAllow removes a row added by AddSpamAllow; one that does not
// exist is reported Absent.
func (s *Store) DeleteSpamAllow(ctx context.Context, domain, sender string) (Result, error) {
	d, err := CheckDomain(domain)
	if err != nil {
		return Result{}, err
	}
	from, err := checkSenderDomain(sender)
	if err != nil {
		return Result{}, err
	}
	res := Result{Object: spamAllowNoun, Key: d + " " + from, Change: Deleted}
	err = s.tx(ctx, func(tx *txn) error {
		r, err := tx.ExecContext(ctx, "DELETE FROM postkit_liste_blanche_spam WHERE domaine = ? AND domaine_expediteur = ?", d, from)
		if err != nil {
			return fmt.Errorf("sqlmaps: delete %s %s: %w", spamAllowNoun, res.Key, err)
		}
		if n, _ := r.RowsAffected(); n == 0 {
			res.Change, res.Detail = Absent, "no such row: nothing to delete"
		}
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	return res, nil
}

// ListSpamAllow returns every row, by domain then sender domain.
func (s *Store) ListSpamAllow(ctx context.Context) ([]SpamAllow, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT id, domaine, domaine_expediteur, active FROM postkit_liste_blanche_spam ORDER BY domaine, domaine_expediteur")
	if err != nil {
		return nil, fmt.Errorf("sqlmaps: list spam allow lists: %w", err)
	}
	defer rows.Close()
	var out []SpamAllow
	for rows.Next() {
		var a SpamAllow
		var act sql.NullInt64
		if err := rows.Scan(&a.ID, &a.Domain, &a.Sender, &act); err != nil {
			return nil, fmt.Errorf("sqlmaps: list spam allow lists: %w", err)
		}
		a.Active = active(act)
		out = append(out, a)
	}
	return out, rows.Err()
}

// SpamAllowLists answers, for the milter's spam filter, whether the
// recipients' domains let a sender domain's mail through (the active rows
// of postkit_liste_blanche_spam). The spam engine asks it only for a From
// domain that SPF or DKIM authenticated. Nothing is cached: the table is
// asked on every such message (one indexed query per recipient domain), so
// a change applies to the next message. A database not migrated to schema
// version 2 has no such table, and so no allow list.
type SpamAllowLists struct {
	live liveStore
}

// NewSpamAllowLists returns the allow lists of the database src.
func NewSpamAllowLists(src Source) *SpamAllowLists {
	return &SpamAllowLists{live: liveStore{src: src}}
}

// Allowed reports whether the domain of every recipient lists sender, or a
// parent domain of it: a message for several domains passes only if each of
// them lets it. An error means the database could not be read.
func (l *SpamAllowLists) Allowed(ctx context.Context, rcpts []string, sender string) (bool, error) {
	sender = normDomain(sender)
	if len(rcpts) == 0 || sender == "" {
		return false, nil
	}
	// sender and its parents, up to the last two labels.
	var cands []any
	for d := sender; strings.Contains(d, "."); {
		cands = append(cands, d)
		_, d, _ = strings.Cut(d, ".")
	}
	if len(cands) == 0 {
		return false, nil
	}
	st, err := l.live.open()
	if err != nil {
		return false, err
	}
	q := "SELECT 1 FROM postkit_liste_blanche_spam WHERE " + st.db.d.nocaseEq("domaine") + " AND active = 1 AND domaine_expediteur IN (?" +
		strings.Repeat(", ?", len(cands)-1) + ") LIMIT 1"
	seen := map[string]bool{}
	for _, r := range rcpts {
		i := strings.LastIndexByte(r, '@')
		if i < 0 {
			return false, nil
		}
		d := normDomain(r[i+1:])
		if seen[d] {
			continue
		}
		seen[d] = true
		var one int
		err := st.db.QueryRowContext(ctx, q, append([]any{d}, cands...)...).Scan(&one)
		switch {
		case err == sql.ErrNoRows:
			return false, nil
		case isNoTable(err):
			return false, nil
		case err != nil:
			return false, fmt.Errorf("sqlmaps: read the spam allow list of %s in %s: %w", d, l.live.src, err)
		}
	}
	return true, nil
}

// Close closes the database if it was opened.
func (l *SpamAllowLists) Close() error { return l.live.Close() }
