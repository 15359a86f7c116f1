package sqlmaps

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/postkit/postkit/internal/bytesize"
)

// Quota is one row of postkit_quotas: the storage limit of a user, or the
// default limit of a domain's users ("@domain").
type Quota struct {
	Target string `json:"target"` // user@domain, or @domain
	Bytes  int64  `json:"bytes"`  // 0: no limit
	Size   string `json:"size"`   // Bytes as written by bytesize.Format ("1G")
	Active bool   `json:"active"`
}

// Domain reports whether the row is a domain's default.
func (q Quota) Domain() bool { return strings.HasPrefix(q.Target, "@") }

// Effective is the limit that applies to one user and where it comes from.
type Effective struct {
	User   string `json:"user"`
	Bytes  int64  `json:"bytes"` // 0: no limit
	Size   string `json:"size"`
	Source string `json:"source"` // "user", "domain" or "default" (mailbox.quota.default)
}

const quotaNoun = "quota"

// errNoQuotaTable says what to do with a database older than schema 3.
func (s *Store) quotaTableErr(err error) error {
	if isNoTable(err) {
		return errf(ErrSchema, "%s has no quota table (schema version 3): upgrade it with 'postkit db init'", s.path)
	}
	return err
}

// CheckQuotaTarget validates a quota target: a user's address, or a domain
// (written example.org or @example.org) for the default of its users. It
// returns the key stored in postkit_quotas.
func CheckQuotaTarget(s string) (key string, domain bool, err error) {
	t := normKey(s)
	if d, ok := strings.CutPrefix(t, "@"); ok || !strings.Contains(t, "@") {
		d, err := CheckDomain(d)
		if err != nil {
			return "", false, errf(ErrInvalid, "%q is neither a user's address nor a domain (write user@example.org, example.org or @example.org)", s)
		}
		return "@" + d, true, nil
	}
	a, err := CheckAddress(t)
	if err != nil {
		return "", false, err
	}
	return a, false, nil
}

// SetQuota gives a user, or a domain's users, a storage limit in bytes (0:
// no limit, which for a user also overrides their domain's). The user or
// domain must exist.
func (s *Store) SetQuota(ctx context.Context, target string, bytes int64) (Result, error) {
	key, domain, err := CheckQuotaTarget(target)
	if err != nil {
		return Result{}, err
	}
	if bytes < 0 {
		return Result{}, errf(ErrInvalid, "quota %d for %s: a limit cannot be negative (0 means none)", bytes, key)
	}
	res := Result{Object: quotaNoun, Key: key, Detail: bytesize.Format(bytes)}
	err = s.tx(ctx, func(tx *txn) error {
		var n int
		if domain {
			err = tx.QueryRowContext(ctx, "SELECT count(*) FROM postfix_domaines WHERE domaine = ?", key[1:]).Scan(&n)
		} else {
			err = tx.QueryRowContext(ctx, "SELECT count(*) FROM postfix_utilisateurs WHERE utilisateur = ?", key).Scan(&n)
		}
		if err != nil {
			return fmt.Errorf("sqlmaps: look up %s: %w", key, err)
		}
		if n == 0 {
			if domain {
				return errf(ErrNotFound, "no domain %s: add it first with 'postkit db domain add %s'", key[1:], key[1:])
			}
			return errf(ErrNotFound, "no user %s: add it first with 'postkit db user add %s'", key, key)
		}
		var old int64
		var act sql.NullInt64
		switch err := tx.QueryRowContext(ctx, "SELECT octets, active FROM postkit_quotas WHERE cible = ?", key).Scan(&old, &act); {
		case errors.Is(err, sql.ErrNoRows):
			res.Change = Created
			_, err = tx.ExecContext(ctx, "INSERT INTO postkit_quotas (cible, octets, active) VALUES (?, ?, 1)", key, bytes)
			return s.quotaTableErr(err)
		case err != nil:
			return s.quotaTableErr(fmt.Errorf("sqlmaps: read the quota of %s: %w", key, err))
		case old == bytes && active(act):
			res.Change = Unchanged
			return nil
		}
		res.Change = Updated
		res.Detail = bytesize.Format(old) + " → " + bytesize.Format(bytes)
		_, err = tx.ExecContext(ctx, "UPDATE postkit_quotas SET octets = ?, active = 1 WHERE cible = ?", bytes, key)
		return err
	})
	if err != nil {
		return Result{}, err
	}
	return res, nil
}

// ClearQuota removes the limit of a user (who then has their domain's) or of
// a domain (whose users then have mailbox.quota.default). Clearing a target
// that has none is not an error: the result is Unchanged.
func (s *Store) ClearQuota(ctx context.Context, target string) (Result, error) {
	key, _, err := CheckQuotaTarget(target)
	if err != nil {
		return Result{}, err
	}
	res := Result{Object: quotaNoun, Key: key, Change: Deleted}
	err = s.tx(ctx, func(tx *txn) error {
		r, err := tx.ExecContext(ctx, "DELETE FROM postkit_quotas WHERE cible = ?", key)
		if err != nil {
			return s.quotaTableErr(fmt.Errorf("sqlmaps: clear the quota of %s: %w", key, err))
		}
		if n, _ := r.RowsAffected(); n == 0 {
			res.Change, res.Detail = Unchanged, "had no limit of its own"
		}
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	return res, nil
}

// ListQuotas returns every row, domains first, then users, by name.
func (s *Store) ListQuotas(ctx context.Context) ([]Quota, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT cible, octets, active FROM postkit_quotas ORDER BY substr(cible, 1, 1) <> '@', cible")
	if err != nil {
		return nil, s.quotaTableErr(fmt.Errorf("sqlmaps: list quotas: %w", err))
	}
	defer rows.Close()
	var out []Quota
	for rows.Next() {
		var q Quota
		var act sql.NullInt64
		if err := rows.Scan(&q.Target, &q.Bytes, &act); err != nil {
			return nil, fmt.Errorf("sqlmaps: list quotas: %w", err)
		}
		q.Active, q.Size = active(act), bytesize.Format(q.Bytes)
		out = append(out, q)
	}
	return out, rows.Err()
}

// GetQuota returns the row of a target (a user or @domain), or ErrNotFound.
func (s *Store) GetQuota(ctx context.Context, target string) (Quota, error) {
	key, _, err := CheckQuotaTarget(target)
	if err != nil {
		return Quota{}, err
	}
	q := Quota{Target: key}
	var act sql.NullInt64
	err = s.db.QueryRowContext(ctx, "SELECT octets, active FROM postkit_quotas WHERE cible = ?", key).Scan(&q.Bytes, &act)
	if errors.Is(err, sql.ErrNoRows) {
		return Quota{}, errf(ErrNotFound, "%s has no limit of its own", key)
	}
	if err != nil {
		return Quota{}, s.quotaTableErr(fmt.Errorf("sqlmaps: read the quota of %s: %w", key, err))
	}
	q.Active, q.Size = active(act), bytesize.Format(q.Bytes)
	return q, nil
}

// EffectiveQuota returns the limit Dovecot applies to an existing user: their
// own active row, else their domain's, else def (mailbox.quota.default), the
// same order as the userdb query of DovecotSQL.
func (s *Store) EffectiveQuota(ctx context.Context, user string, def int64) (Effective, error) {
	addr, err := CheckAddress(user)
	if err != nil {
		return Effective{}, err
	}
	if _, err := getUser(ctx, s.db, addr); err != nil {
		return Effective{}, err
	}
	e := Effective{User: addr, Bytes: def, Source: "default"}
	dom := "@" + addr[strings.LastIndexByte(addr, '@')+1:]
	var cible string
	var n int64
	err = s.db.QueryRowContext(ctx, "SELECT cible, octets FROM postkit_quotas WHERE cible IN (?, ?) AND active = '1' ORDER BY cible = ? LIMIT 1", addr, dom, dom).Scan(&cible, &n)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return Effective{}, s.quotaTableErr(fmt.Errorf("sqlmaps: read the quota of %s: %w", addr, err))
	case cible == dom:
		e.Bytes, e.Source = n, "domain"
	default:
		e.Bytes, e.Source = n, "user"
	}
	e.Size = bytesize.Format(e.Bytes)
	return e, nil
}
