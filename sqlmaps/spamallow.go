package sqlmaps

import (
	"context"
	"database/sql"
	"fmt"
	"regexp"
	"strings"
)

// SpamAllow is one row of postkit_liste_blanche_spam: mail to an address of
// Domain from a sender matching Pattern is not marked as spam.
type SpamAllow struct {
	ID      int64  `json:"id"`
	Domain  string `json:"domain"`
	Pattern string `json:"pattern"`
	Active  bool   `json:"active"`
}

// spamAllowNoun names the rows in results and errors.
const spamAllowNoun = "spam allow list entry"

// addrGlobRE is a sender pattern: an address whose local part and domain
// may hold * (any run of characters) and ? (one character), as
// SpamAssassin's whitelist_from takes them (*@exemple.fr).
var addrGlobRE = regexp.MustCompile(`^[a-z0-9._+=*?-]+@[a-z0-9.*?-]+$`)

// CheckAddrGlob validates a sender pattern and returns its normal form
// (lower case).
func CheckAddrGlob(s string) (string, error) {
	p := normKey(s)
	if !addrGlobRE.MatchString(p) {
		if !strings.Contains(p, "@") {
			return "", errf(ErrInvalid, "%q has no @: write *@%s for every address of the domain", s, p)
		}
		return "", errf(ErrInvalid, "%q is not an address pattern (an address with * and ? as wildcards, e.g. *@exemple.fr)", s)
	}
	return p, nil
}

// MatchAddrGlob reports whether addr matches pattern (CheckAddrGlob's
// form), ignoring case: * matches any run of characters, ? one.
func MatchAddrGlob(pattern, addr string) bool {
	p, a := pattern, strings.ToLower(addr)
	// Iterative glob matching with one backtrack point, linear in practice.
	pi, ai, star, mark := 0, 0, -1, 0
	for ai < len(a) {
		switch {
		case pi < len(p) && (p[pi] == '?' || p[pi] == a[ai]):
			pi++
			ai++
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, ai
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			ai = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// AddSpamAllow lets mail from senders matching pattern reach the users of
// domain without being marked as spam.
func (s *Store) AddSpamAllow(ctx context.Context, domain, pattern string) (Result, error) {
	d, err := CheckDomain(domain)
	if err != nil {
		return Result{}, err
	}
	p, err := CheckAddrGlob(pattern)
	if err != nil {
		return Result{}, err
	}
	res := Result{Object: spamAllowNoun, Key: d + " " + p}
	err = s.tx(ctx, func(tx *sql.Tx) error {
		r, err := tx.ExecContext(ctx, "INSERT OR IGNORE INTO postkit_liste_blanche_spam (domaine, courriel, active) VALUES (?, ?, 1)", d, p)
		if err != nil {
			return fmt.Errorf("sqlmaps: insert %s %s: %w", spamAllowNoun, res.Key, err)
		}
		if n, _ := r.RowsAffected(); n == 0 {
			res.Change = Unchanged
			return nil
		}
		res.Change = Created
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	return res, nil
}

// DeleteSpamAllow removes a row added by AddSpamAllow.
func (s *Store) DeleteSpamAllow(ctx context.Context, domain, pattern string) (Result, error) {
	d, err := CheckDomain(domain)
	if err != nil {
		return Result{}, err
	}
	p, err := CheckAddrGlob(pattern)
	if err != nil {
		return Result{}, err
	}
	res := Result{Object: spamAllowNoun, Key: d + " " + p, Change: Deleted}
	err = s.tx(ctx, func(tx *sql.Tx) error {
		r, err := tx.ExecContext(ctx, "DELETE FROM postkit_liste_blanche_spam WHERE domaine = ? AND courriel = ?", d, p)
		if err != nil {
			return fmt.Errorf("sqlmaps: delete %s %s: %w", spamAllowNoun, res.Key, err)
		}
		if n, _ := r.RowsAffected(); n == 0 {
			return errf(ErrNotFound, "no %s %s: see 'postkit db spam-allow list'", spamAllowNoun, res.Key)
		}
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	return res, nil
}

// ListSpamAllow returns every row, by domain then pattern.
func (s *Store) ListSpamAllow(ctx context.Context) ([]SpamAllow, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT id, domaine, courriel, active FROM postkit_liste_blanche_spam ORDER BY domaine, courriel")
	if err != nil {
		return nil, fmt.Errorf("sqlmaps: list spam allow lists: %w", err)
	}
	defer rows.Close()
	var out []SpamAllow
	for rows.Next() {
		var a SpamAllow
		var act sql.NullInt64
		if err := rows.Scan(&a.ID, &a.Domain, &a.Pattern, &act); err != nil {
			return nil, fmt.Errorf("sqlmaps: list spam allow lists: %w", err)
		}
		a.Active = active(act)
		out = append(out, a)
	}
	return out, rows.Err()
}

// SpamAllowLists answers, for the milter's spam filter, whether the
// recipients' domains let a sender's mail through (the active rows of
// postkit_liste_blanche_spam). Nothing is cached: the table is asked on
// every message (one indexed query per recipient domain), so a change
// applies to the next message. A database not migrated to schema version 2
// has no such table, and so no allow list.
type SpamAllowLists struct {
	live liveStore
}

// NewSpamAllowLists returns the allow lists of the database at path.
func NewSpamAllowLists(path string) *SpamAllowLists {
	return &SpamAllowLists{live: liveStore{path: path}}
}

// Allowed reports whether the domain of every recipient lists a pattern
// that one of senders matches: a message for several domains passes
// unscored only if each of them lets it. An error means the database could
// not be read.
func (l *SpamAllowLists) Allowed(ctx context.Context, rcpts, senders []string) (bool, error) {
	if len(rcpts) == 0 || len(senders) == 0 {
		return false, nil
	}
	st, err := l.live.open()
	if err != nil {
		return false, err
	}
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
		ok, err := domainAllows(ctx, st, d, senders)
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

func domainAllows(ctx context.Context, st *Store, domain string, senders []string) (bool, error) {
	rows, err := st.db.QueryContext(ctx, "SELECT courriel FROM postkit_liste_blanche_spam WHERE domaine = ? COLLATE NOCASE AND active = 1", domain)
	if err != nil {
		if strings.Contains(err.Error(), "no such table") {
			return false, nil
		}
		return false, fmt.Errorf("sqlmaps: read the spam allow list of %s in %s: %w", domain, st.path, err)
	}
	defer rows.Close()
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			return false, fmt.Errorf("sqlmaps: read the spam allow list of %s: %w", domain, err)
		}
		for _, s := range senders {
			if s != "" && MatchAddrGlob(strings.ToLower(p), s) {
				return true, nil
			}
		}
	}
	if err := rows.Err(); err != nil {
		return false, fmt.Errorf("sqlmaps: read the spam allow list of %s: %w", domain, err)
	}
	return false, nil
}

// Close closes the database if it was opened.
func (l *SpamAllowLists) Close() error { return l.live.Close() }
