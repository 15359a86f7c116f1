package sqlmaps

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// Kind names one of the store's tables.
type Kind int

// The six tables of the reference installation.
const (
	Domains Kind = iota
	Users
	Aliases
	VirtualAliases
	SenderBlacklist
	RecipientBlacklist
)

type tableInfo struct {
	table, key, noun string
	check            func(string) (string, error)
}

var tables = [...]tableInfo{
	Domains:            {"postfix_domaines", "domaine", "domain", CheckDomain},
	Users:              {"postfix_utilisateurs", "utilisateur", "user", CheckAddress},
	Aliases:            {"postfix_alias", "alias", "alias", CheckLocalName},
	VirtualAliases:     {"postfix_alias_virtuels", "courriel", "virtual alias", CheckVirtualSource},
	SenderBlacklist:    {"postfix_liste_noire_expediteurs", "courriel", "sender blacklist entry", CheckAccessKey},
	RecipientBlacklist: {"postfix_liste_noire_destinataires", "courriel", "recipient blacklist entry", CheckAccessKey},
}

// String returns the kind's noun ("domain", "virtual alias"…).
func (k Kind) String() string {
	if int(k) < len(tables) {
		return tables[k].noun
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Table returns the SQL table name.
func (k Kind) Table() string { return tables[k].table }

// Change says what an operation did.
type Change string

// Changes reported in Result.
const (
	Created   Change = "created"
	Updated   Change = "updated"
	Unchanged Change = "unchanged"
	Deleted   Change = "deleted"
	// Absent: delete (or disable) of a row that does not exist. The
	// database already is as asked, so scripts may run it every time.
	Absent Change = "absent"
)

// Result reports one operation on one row, for humans and for --json.
type Result struct {
	Object   string   `json:"object"`
	Key      string   `json:"key"`
	Change   Change   `json:"change"`
	Detail   string   `json:"detail,omitempty"`
	Cascaded []Result `json:"cascaded,omitempty"`
}

// Changed reports whether the database was modified.
func (r Result) Changed() bool { return r.Change != Unchanged && r.Change != Absent }

// String renders the result as one line, e.g. "domain exemple.fr: created".
func (r Result) String() string {
	s := fmt.Sprintf("%s %s: %s", r.Object, r.Key, r.Change)
	if r.Detail != "" {
		s += " (" + r.Detail + ")"
	}
	return s
}

// Domain is a row of postfix_domaines.
type Domain struct {
	ID      int64  `json:"id"`
	Name    string `json:"domain"`
	Default bool   `json:"default"`
	Active  bool   `json:"active"`
}

// User is a row of postfix_utilisateurs.
type User struct {
	ID           int64  `json:"id"`
	Address      string `json:"user"`
	PasswordHash string `json:"-"`
	Name         string `json:"name"`
	Home         string `json:"home"` // rep_perso, "domain/user/"
	UID          int    `json:"uid"`
	GID          int    `json:"gid"`
	Privilege    string `json:"privilege"`
	Prefix       string `json:"prefix"`
	Active       bool   `json:"active"`
}

// Alias is a row of postfix_alias (Source is a local name) or
// postfix_alias_virtuels (Source is an address or @domain).
type Alias struct {
	ID          int64  `json:"id"`
	Source      string `json:"source"`
	Destination string `json:"destination"`
	Active      bool   `json:"active"`
}

// SenderBlock is a row of postfix_liste_noire_expediteurs.
type SenderBlock struct {
	ID      int64  `json:"id"`
	Key     string `json:"sender"`
	Code    int    `json:"code"`
	Message string `json:"message"`
	Active  bool   `json:"active"`
}

// RecipientBlock is a row of postfix_liste_noire_destinataires.
type RecipientBlock struct {
	ID     int64  `json:"id"`
	Key    string `json:"recipient"`
	Action string `json:"action"`
	Active bool   `json:"active"`
}

// active reads the seed's nullable INTEGER flag: only 1 is active, as the
// map queries' active='1' say.
func active(v sql.NullInt64) bool { return v.Valid && v.Int64 == 1 }

func str(v sql.NullString) string { return v.String }

// SetActive enables or disables the row of kind k with key.
func (s *Store) SetActive(ctx context.Context, k Kind, key string, on bool) (Result, error) {
	t := tables[k]
	norm, err := t.check(key)
	if err != nil {
		return Result{}, err
	}
	res := Result{Object: t.noun, Key: norm}
	err = s.tx(ctx, func(tx *txn) error {
		var cur sql.NullInt64
		err := tx.QueryRowContext(ctx, "SELECT active FROM "+t.table+" WHERE "+t.key+" = ?", norm).Scan(&cur)
		if errors.Is(err, sql.ErrNoRows) {
			if !on {
				// Nothing to disable: nothing is delivered or looked up
				// through a row that does not exist.
				res.Change = Absent
				return nil
			}
			return notFound(k, norm)
		}
		if err != nil {
			return fmt.Errorf("sqlmaps: read %s %s: %w", t.noun, norm, err)
		}
		if active(cur) == on {
			res.Change = Unchanged
			return nil
		}
		v := 0
		if on {
			v = 1
		}
		if _, err := tx.ExecContext(ctx, "UPDATE "+t.table+" SET active = ? WHERE "+t.key+" = ?", v, norm); err != nil {
			return fmt.Errorf("sqlmaps: update %s %s: %w", t.noun, norm, err)
		}
		res.Change = Updated
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	switch {
	case res.Change == Absent:
		res.Detail = "no such row: nothing to disable"
	case res.Change == Unchanged && on:
		res.Detail = "already enabled"
	case res.Change == Unchanged:
		res.Detail = "already disabled"
	case on:
		res.Detail = "enabled"
	default:
		res.Detail = "disabled"
	}
	return res, nil
}

func notFound(k Kind, key string) error {
	return errf(ErrNotFound, "no %s %s: list them with 'postkit db %s list'", k, key, cmdNoun(k))
}

func cmdNoun(k Kind) string {
	switch k {
	case Domains:
		return "domain"
	case Users:
		return "user"
	case Aliases:
		return "alias"
	case VirtualAliases:
		return "valias"
	case SenderBlacklist:
		return "blacklist sender"
	default:
		return "blacklist recipient"
	}
}

// Delete removes the row of kind k with key; a row that does not exist is
// reported Absent, not an error, so that scripts may delete every time.
// Domains are deleted with DeleteDomain and users with DeleteUser, which
// check what still uses them (here with neither cascade nor keep).
func (s *Store) Delete(ctx context.Context, k Kind, key string) (Result, error) {
	switch k {
	case Domains:
		return s.DeleteDomain(ctx, key, false)
	case Users:
		return s.DeleteUser(ctx, key, AliasesRefuse)
	}
	t := tables[k]
	norm, err := t.check(key)
	if err != nil {
		return Result{}, err
	}
	res := Result{Object: t.noun, Key: norm, Change: Deleted}
	err = s.tx(ctx, func(tx *txn) error {
		err := deleteRow(ctx, tx, k, norm)
		if errors.Is(err, ErrNotFound) {
			res.Change, res.Detail = Absent, "no such row: nothing to delete"
			return nil
		}
		return err
	})
	if err != nil {
		return Result{}, err
	}
	return res, nil
}

func deleteRow(ctx context.Context, tx *txn, k Kind, key string) error {
	t := tables[k]
	r, err := tx.ExecContext(ctx, "DELETE FROM "+t.table+" WHERE "+t.key+" = ?", key)
	if err != nil {
		return fmt.Errorf("sqlmaps: delete %s %s: %w", t.noun, key, err)
	}
	if n, _ := r.RowsAffected(); n == 0 {
		return notFound(k, key)
	}
	return nil
}

// exists reports whether a row with key exists in k's table.
func exists(ctx context.Context, q querier, k Kind, key string) (bool, error) {
	t := tables[k]
	var n int
	if err := q.QueryRowContext(ctx, "SELECT count(*) FROM "+t.table+" WHERE "+t.key+" = ?", key).Scan(&n); err != nil {
		return false, fmt.Errorf("sqlmaps: read %s: %w", t.table, err)
	}
	return n > 0, nil
}

// conflict builds the error for an add that differs from the stored row.
func conflict(k Kind, key string, diffs []string) error {
	if k == Users {
		return errf(ErrConflict, "%s %s already exists with %s: change it with 'postkit db user set' or keep the stored values", k, key, strings.Join(diffs, ", "))
	}
	return errf(ErrConflict, "%s %s already exists with %s: delete it first or keep the stored values", k, key, strings.Join(diffs, ", "))
}

func diff(field string, stored, given any) string {
	return fmt.Sprintf("%s %q (asked %q)", field, fmt.Sprint(stored), fmt.Sprint(given))
}
