package sqlmaps

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// AddAlias adds a row to postfix_alias, read through alias_maps by local(8):
// name is a bare local name ("postmaster"), destination one or more
// addresses or local names.
func (s *Store) AddAlias(ctx context.Context, name, destination string) (Result, error) {
	return s.addAlias(ctx, Aliases, name, destination)
}

// AddVirtualAlias adds a row to postfix_alias_virtuels, read through
// virtual_alias_maps: source is an address or @domain (catch-all),
// destination one or more addresses.
func (s *Store) AddVirtualAlias(ctx context.Context, source, destination string) (Result, error) {
	return s.addAlias(ctx, VirtualAliases, source, destination)
}

func (s *Store) addAlias(ctx context.Context, k Kind, source, destination string) (Result, error) {
	t := tables[k]
	key, err := t.check(source)
	if err != nil {
		return Result{}, err
	}
	dest, err := CheckDestinations(destination, k == Aliases)
	if err != nil {
		return Result{}, err
	}
	res := Result{Object: t.noun, Key: key}
	err = s.tx(ctx, func(tx *txn) error {
		var old string
		err := tx.QueryRowContext(ctx, "SELECT destination FROM "+t.table+" WHERE "+t.key+" = ?", key).Scan(&old)
		if err == nil {
			if sameList(old, dest) {
				res.Change = Unchanged
				return nil
			}
			return conflict(k, key, []string{diff("destination", old, dest)})
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("sqlmaps: read %s %s: %w", t.noun, key, err)
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO "+t.table+" ("+t.key+", destination, active) VALUES (?, ?, 1)", key, dest); err != nil {
			return fmt.Errorf("sqlmaps: insert %s %s: %w", t.noun, key, err)
		}
		res.Change = Created
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	return res, nil
}

// sameList compares two destination lists ignoring separators and case.
func sameList(a, b string) bool {
	split := func(s string) []string {
		return strings.FieldsFunc(strings.ToLower(s), func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
	}
	x, y := split(a), split(b)
	if len(x) != len(y) {
		return false
	}
	for i := range x {
		if x[i] != y[i] {
			return false
		}
	}
	return true
}

// ListAliases returns the rows of postfix_alias (k == Aliases) or
// postfix_alias_virtuels (k == VirtualAliases).
func (s *Store) ListAliases(ctx context.Context, k Kind) ([]Alias, error) {
	if k != Aliases && k != VirtualAliases {
		return nil, fmt.Errorf("sqlmaps: ListAliases of %s: want Aliases or VirtualAliases", k)
	}
	t := tables[k]
	rows, err := s.db.QueryContext(ctx, "SELECT id, "+t.key+", destination, active FROM "+t.table+" ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("sqlmaps: list %s: %w", t.table, err)
	}
	defer rows.Close()
	var out []Alias
	for rows.Next() {
		var a Alias
		var act sql.NullInt64
		if err := rows.Scan(&a.ID, &a.Source, &a.Destination, &act); err != nil {
			return nil, fmt.Errorf("sqlmaps: list %s: %w", t.table, err)
		}
		a.Active = active(act)
		out = append(out, a)
	}
	return out, rows.Err()
}
