package sqlmaps

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// AliasPolicy says what DeleteUser does with the aliases whose destination
// names the user.
type AliasPolicy int

const (
	// AliasesRefuse refuses the delete while aliases point at the user:
	// mail to them would bounce as "unknown user" once the user is gone.
	AliasesRefuse AliasPolicy = iota
	// AliasesCascade removes the user from every alias destination in the
	// same transaction, and deletes an alias left with no destination.
	AliasesCascade
	// AliasesKeep deletes the user and leaves the aliases as they are (the
	// admin means to re-create the user, or to point them elsewhere).
	AliasesKeep
)

// AliasRef is an alias whose destination names a user.
type AliasRef struct {
	Kind        Kind
	Source      string
	Destination string
}

// aliasesPointingAt lists the aliases (local and virtual) whose destination
// list holds addr. Local aliases may name the user by address only: a bare
// local name is delivered to local(8), never to a virtual mailbox.
func aliasesPointingAt(ctx context.Context, q querier, addr string) ([]AliasRef, error) {
	var out []AliasRef
	for _, k := range []Kind{VirtualAliases, Aliases} {
		t := tables[k]
		// A cheap filter in SQL (LIKE: both drivers; a _ or % in addr only widens it), the exact test on the split list below.
		rows, err := q.QueryContext(ctx, "SELECT "+t.key+", destination FROM "+t.table+" WHERE lower(destination) LIKE '%' || ? || '%' ORDER BY id", addr)
		if err != nil {
			return nil, fmt.Errorf("sqlmaps: read %s: %w", t.table, err)
		}
		for rows.Next() {
			var r AliasRef
			if err := rows.Scan(&r.Source, &r.Destination); err != nil {
				rows.Close()
				return nil, fmt.Errorf("sqlmaps: read %s: %w", t.table, err)
			}
			r.Kind = k
			for _, d := range splitList(r.Destination) {
				if d == addr {
					out = append(out, r)
					break
				}
			}
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("sqlmaps: read %s: %w", t.table, err)
		}
	}
	return out, nil
}

// splitList splits a destination list as sameList does, lower-cased.
func splitList(s string) []string {
	return strings.FieldsFunc(strings.ToLower(s), func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
}

// AliasesOf returns the aliases whose destination names the user address.
func (s *Store) AliasesOf(ctx context.Context, address string) ([]AliasRef, error) {
	addr, err := CheckAddress(address)
	if err != nil {
		return nil, err
	}
	return aliasesPointingAt(ctx, s.db, addr)
}

// DeleteUser deletes a mailbox user (its row; the Maildir stays on disk).
// A user that does not exist is reported Absent. Aliases whose destination
// names the user are handled as p says; with AliasesCascade each is listed
// in Result.Cascaded (updated: the user removed from its list; deleted: it
// had no other destination).
func (s *Store) DeleteUser(ctx context.Context, address string, p AliasPolicy) (Result, error) {
	addr, err := CheckAddress(address)
	if err != nil {
		return Result{}, err
	}
	res := Result{Object: Users.String(), Key: addr, Change: Deleted}
	err = s.tx(ctx, func(tx *txn) error {
		ok, err := exists(ctx, tx, Users, addr)
		if err != nil {
			return err
		}
		if !ok {
			res.Change, res.Detail = Absent, "no such row: nothing to delete"
			return nil
		}
		refs, err := aliasesPointingAt(ctx, tx, addr)
		if err != nil {
			return err
		}
		if len(refs) > 0 {
			switch p {
			case AliasesRefuse:
				names := make([]string, len(refs))
				for i, r := range refs {
					names[i] = r.Source
				}
				return errf(ErrInUse, "user %s is the destination of %d alias(es) (%s): pass --cascade to remove the user from them (an alias left empty is deleted) or --keep-aliases to leave them", addr, len(refs), preview(names))
			case AliasesCascade:
				for _, r := range refs {
					c, err := dropDestination(ctx, tx, r, addr)
					if err != nil {
						return err
					}
					res.Cascaded = append(res.Cascaded, c)
				}
			case AliasesKeep:
				res.Detail = fmt.Sprintf("%d alias(es) still point at it", len(refs))
			}
		}
		if c, err := s.dropQuota(ctx, tx, addr); err != nil {
			return err
		} else if c != nil {
			res.Cascaded = append(res.Cascaded, *c)
		}
		return deleteRow(ctx, tx, Users, addr)
	})
	if err != nil {
		return Result{}, err
	}
	return res, nil
}

// dropQuota deletes the quota row of a user or domain (@domain) being
// deleted, so that one created again later does not inherit it. A database
// without the quota table has none.
func (s *Store) dropQuota(ctx context.Context, tx *txn, key string) (*Result, error) {
	if !s.tableExists(ctx, tx, "postkit_quotas") {
		return nil, nil
	}
	r, err := tx.ExecContext(ctx, "DELETE FROM postkit_quotas WHERE cible = ?", key)
	if err != nil {
		return nil, fmt.Errorf("sqlmaps: delete the quota of %s: %w", key, err)
	}
	if n, _ := r.RowsAffected(); n == 0 {
		return nil, nil
	}
	return &Result{Object: quotaNoun, Key: key, Change: Deleted}, nil
}

// dropDestination removes addr from r's destination list, or deletes r
// when addr was its only destination.
func dropDestination(ctx context.Context, tx *txn, r AliasRef, addr string) (Result, error) {
	t := tables[r.Kind]
	var keep []string
	for _, d := range strings.FieldsFunc(r.Destination, func(c rune) bool { return c == ',' || c == ' ' || c == '\t' }) {
		if strings.ToLower(d) != addr {
			keep = append(keep, d)
		}
	}
	if len(keep) == 0 {
		if err := deleteRow(ctx, tx, r.Kind, r.Source); err != nil {
			return Result{}, err
		}
		return Result{Object: t.noun, Key: r.Source, Change: Deleted}, nil
	}
	dest := strings.Join(keep, ", ")
	if _, err := tx.ExecContext(ctx, "UPDATE "+t.table+" SET destination = ? WHERE "+t.key+" = ?", dest, r.Source); err != nil {
		return Result{}, fmt.Errorf("sqlmaps: update %s %s: %w", t.noun, r.Source, err)
	}
	return Result{Object: t.noun, Key: r.Source, Change: Updated, Detail: "destination now " + dest}, nil
}

// UserChange lists the fields SetUser changes; nil fields are kept.
type UserChange struct {
	Name      *string
	Privilege *string
	UID, GID  *int
	Active    *bool
}

// SetUser changes a user's name, privilege, uid, gid or active flag in one
// transaction. The password has its own SetPassword. Result.Detail names
// the fields changed; asking for the stored values is Unchanged. The
// caller checks uid and gid against what Dovecot accepts (mailbox.uid).
func (s *Store) SetUser(ctx context.Context, address string, c UserChange) (Result, error) {
	addr, err := CheckAddress(address)
	if err != nil {
		return Result{}, err
	}
	if c.Name != nil {
		if err := checkText("full name", *c.Name, false); err != nil {
			return Result{}, err
		}
	}
	if c.Privilege != nil {
		p, err := CheckPrivilege(*c.Privilege)
		if err != nil {
			return Result{}, err
		}
		c.Privilege = &p
	}
	if (c.UID != nil && *c.UID < 1) || (c.GID != nil && *c.GID < 1) {
		return Result{}, errf(ErrInvalid, "uid and gid must be above 0: mailboxes must not belong to root")
	}
	res := Result{Object: Users.String(), Key: addr, Change: Unchanged}
	err = s.tx(ctx, func(tx *txn) error {
		old, err := getUser(ctx, tx, addr)
		if err != nil {
			return err
		}
		var sets, changed []string
		var args []any
		set := func(col, field string, stored, asked any) {
			if fmt.Sprint(stored) != fmt.Sprint(asked) {
				sets = append(sets, col+" = ?")
				args = append(args, asked)
				changed = append(changed, fmt.Sprintf("%s %v → %v", field, stored, asked))
			}
		}
		if c.Name != nil {
			set("nom_complet", "name", fmt.Sprintf("%q", old.Name), fmt.Sprintf("%q", *c.Name))
			if len(args) > 0 {
				args[len(args)-1] = *c.Name
			}
		}
		if c.Privilege != nil {
			set("privilege", "privilege", old.Privilege, *c.Privilege)
		}
		if c.UID != nil {
			set("uid", "uid", old.UID, *c.UID)
		}
		if c.GID != nil {
			set("gid", "gid", old.GID, *c.GID)
		}
		if c.Active != nil && *c.Active != old.Active {
			v := 0
			if *c.Active {
				v = 1
			}
			sets = append(sets, "active = ?")
			args = append(args, v)
			changed = append(changed, map[bool]string{true: "enabled", false: "disabled"}[*c.Active])
		}
		if len(sets) == 0 {
			res.Detail = "already as asked"
			return nil
		}
		args = append(args, addr)
		if _, err := tx.ExecContext(ctx, "UPDATE postfix_utilisateurs SET "+strings.Join(sets, ", ")+" WHERE utilisateur = ?", args...); err != nil {
			return fmt.Errorf("sqlmaps: update user %s: %w", addr, err)
		}
		res.Change, res.Detail = Updated, strings.Join(changed, ", ")
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	return res, nil
}

// IsNotFound reports whether err says a row does not exist.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }
