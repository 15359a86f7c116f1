package sqlmaps

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// AddDomain adds a mail domain, active. The first domain of a database with
// no default domain becomes the default; makeDefault moves the default flag
// to this domain (the reference installation's portal expects exactly one
// default). Adding an existing domain changes nothing (Unchanged) unless
// makeDefault moves the flag to it.
func (s *Store) AddDomain(ctx context.Context, name string, makeDefault bool) (Result, error) {
	d, err := CheckDomain(name)
	if err != nil {
		return Result{}, err
	}
	res := Result{Object: Domains.String(), Key: d}
	err = s.tx(ctx, func(tx *txn) error {
		var isDefault bool
		err := tx.QueryRowContext(ctx, "SELECT defaut FROM postfix_domaines WHERE domaine = ?", d).Scan(&isDefault)
		found := err == nil
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("sqlmaps: read domain %s: %w", d, err)
		}
		var defaults int
		if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM postfix_domaines WHERE defaut = 1").Scan(&defaults); err != nil {
			return fmt.Errorf("sqlmaps: read domains: %w", err)
		}
		if found {
			if !makeDefault || (isDefault && defaults == 1) {
				res.Change = Unchanged
				return nil
			}
			if err := setDefault(ctx, tx, d); err != nil {
				return err
			}
			res.Change, res.Detail = Updated, "now the default domain"
			return nil
		}
		def := makeDefault || defaults == 0
		if def && defaults > 0 {
			if _, err := tx.ExecContext(ctx, "UPDATE postfix_domaines SET defaut = 0 WHERE defaut <> 0"); err != nil {
				return fmt.Errorf("sqlmaps: clear default domain: %w", err)
			}
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO postfix_domaines (domaine, defaut, active) VALUES (?, ?, 1)", d, def); err != nil {
			return fmt.Errorf("sqlmaps: insert domain %s: %w", d, err)
		}
		res.Change = Created
		if def {
			res.Detail = "default domain"
		}
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	return res, nil
}

func setDefault(ctx context.Context, tx *txn, d string) error {
	if _, err := tx.ExecContext(ctx, "UPDATE postfix_domaines SET defaut = CASE WHEN domaine = ? THEN 1 ELSE 0 END", d); err != nil {
		return fmt.Errorf("sqlmaps: move default domain to %s: %w", d, err)
	}
	return nil
}

// ListDomains returns every domain, in insertion order.
func (s *Store) ListDomains(ctx context.Context) ([]Domain, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT id, domaine, defaut, active FROM postfix_domaines ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("sqlmaps: list domains: %w", err)
	}
	defer rows.Close()
	var out []Domain
	for rows.Next() {
		var d Domain
		var def sql.NullBool
		var act sql.NullInt64
		if err := rows.Scan(&d.ID, &d.Name, &def, &act); err != nil {
			return nil, fmt.Errorf("sqlmaps: list domains: %w", err)
		}
		d.Default, d.Active = def.Valid && def.Bool, active(act)
		out = append(out, d)
	}
	return out, rows.Err()
}

// DeleteDomain deletes a domain; one that does not exist is reported
// Absent. While users or virtual aliases of the
// domain remain it refuses (ErrInUse) unless cascade is set; then they are
// deleted in the same transaction, the deleted users are removed from the
// destinations of other aliases (an alias left empty is deleted), and all
// of it is listed in Result.Cascaded. The default
// domain cannot be deleted while other domains exist: move the default first.
func (s *Store) DeleteDomain(ctx context.Context, name string, cascade bool) (Result, error) {
	d, err := CheckDomain(name)
	if err != nil {
		return Result{}, err
	}
	res := Result{Object: Domains.String(), Key: d, Change: Deleted}
	err = s.tx(ctx, func(tx *txn) error {
		var isDefault bool
		err := tx.QueryRowContext(ctx, "SELECT defaut FROM postfix_domaines WHERE domaine = ?", d).Scan(&isDefault)
		if errors.Is(err, sql.ErrNoRows) {
			res.Change, res.Detail = Absent, "no such row: nothing to delete"
			return nil
		}
		if err != nil {
			return fmt.Errorf("sqlmaps: read domain %s: %w", d, err)
		}
		if isDefault {
			var others int
			if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM postfix_domaines WHERE domaine <> ?", d).Scan(&others); err != nil {
				return fmt.Errorf("sqlmaps: read domains: %w", err)
			}
			if others > 0 {
				return errf(ErrInUse, "domain %s is the default domain: make another one the default first ('postkit db domain add OTHER --default')", d)
			}
		}
		users, err := keysInDomain(ctx, tx, tx.d, Users, d)
		if err != nil {
			return err
		}
		valiases, err := keysInDomain(ctx, tx, tx.d, VirtualAliases, d)
		if err != nil {
			return err
		}
		if (len(users) > 0 || len(valiases) > 0) && !cascade {
			var parts []string
			if len(users) > 0 {
				parts = append(parts, fmt.Sprintf("%d user(s) (%s)", len(users), preview(users)))
			}
			if len(valiases) > 0 {
				parts = append(parts, fmt.Sprintf("%d virtual alias(es) (%s)", len(valiases), preview(valiases)))
			}
			return errf(ErrInUse, "domain %s still has %s: delete them first or pass --cascade to delete them with the domain", d, strings.Join(parts, " and "))
		}
		for _, u := range users {
			if err := deleteRow(ctx, tx, Users, u); err != nil {
				return err
			}
			res.Cascaded = append(res.Cascaded, Result{Object: Users.String(), Key: u, Change: Deleted})
		}
		for _, v := range valiases {
			if err := deleteRow(ctx, tx, VirtualAliases, v); err != nil {
				return err
			}
			res.Cascaded = append(res.Cascaded, Result{Object: VirtualAliases.String(), Key: v, Change: Deleted})
		}
		// Aliases elsewhere (other domains, local aliases) that deliver to
		// a deleted user lose that destination, as 'user delete --cascade';
		// the users' and the domain's quotas go with them.
		for _, k := range append(append([]string(nil), users...), "@"+d) {
			if c, err := s.dropQuota(ctx, tx, k); err != nil {
				return err
			} else if c != nil {
				res.Cascaded = append(res.Cascaded, *c)
			}
		}
		for _, u := range users {
			refs, err := aliasesPointingAt(ctx, tx, u)
			if err != nil {
				return err
			}
			for _, r := range refs {
				c, err := dropDestination(ctx, tx, r, u)
				if err != nil {
					return err
				}
				res.Cascaded = append(res.Cascaded, c)
			}
		}
		return deleteRow(ctx, tx, Domains, d)
	})
	if err != nil {
		return Result{}, err
	}
	return res, nil
}

// keysInDomain lists the keys of k's table ending in "@domain" (users
// user@domain, virtual aliases user@domain and the catch-all @domain).
func keysInDomain(ctx context.Context, q querier, d2 dialect, k Kind, d string) ([]string, error) {
	t := tables[k]
	rows, err := q.QueryContext(ctx, "SELECT "+t.key+" FROM "+t.table+" WHERE "+d2.endsWith(t.key)+" ORDER BY id", "@"+d)
	if err != nil {
		return nil, fmt.Errorf("sqlmaps: read %s: %w", t.table, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var key string
		if err := rows.Scan(&key); err != nil {
			return nil, fmt.Errorf("sqlmaps: read %s: %w", t.table, err)
		}
		out = append(out, key)
	}
	return out, rows.Err()
}

func preview(keys []string) string {
	if len(keys) > 3 {
		return strings.Join(keys[:3], ", ") + ", …"
	}
	return strings.Join(keys, ", ")
}
