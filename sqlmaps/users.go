package sqlmaps

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/postkit/postkit/sqlmaps/pwhash"
)

// NewUser is what AddUser needs to create a mailbox user.
type NewUser struct {
	Address      string // user@domain; the domain must be in postfix_domaines
	PasswordHash string // "{SCHEME}…", e.g. from pwhash.Hash; may be empty only if the user exists
	Name         string // full name (nom_complet), may be empty
	UID, GID     int    // mailbox owner, normally config mailbox.uid/gid
	Privilege    string // PrivilegeUser (default) or PrivilegeAdmin
}

// AddUser creates a mailbox user, active, with rep_perso "domain/user/" and
// an empty prefixe as the reference installation does. If the user exists
// with the same name, uid, gid and privilege the result is Unchanged and the
// stored password is kept (change it with SetPassword); any other difference
// is an ErrConflict naming the fields.
func (s *Store) AddUser(ctx context.Context, u NewUser) (Result, error) {
	addr, err := CheckAddress(u.Address)
	if err != nil {
		return Result{}, err
	}
	priv, err := CheckPrivilege(u.Privilege)
	if err != nil {
		return Result{}, err
	}
	if err := checkText("full name", u.Name, false); err != nil {
		return Result{}, err
	}
	if u.UID < 1 || u.GID < 1 {
		return Result{}, errf(ErrInvalid, "uid %d / gid %d: mailboxes must not belong to root; set mailbox.uid and mailbox.gid (e.g. 3000)", u.UID, u.GID)
	}
	if u.PasswordHash != "" {
		if err := checkHash(u.PasswordHash); err != nil {
			return Result{}, err
		}
	}
	local, domain, _ := strings.Cut(addr, "@")
	res := Result{Object: Users.String(), Key: addr}
	err = s.tx(ctx, func(tx *txn) error {
		old, err := getUser(ctx, tx, addr)
		switch {
		case err == nil:
			var diffs []string
			if old.Name != u.Name {
				diffs = append(diffs, diff("name", old.Name, u.Name))
			}
			if old.UID != u.UID || old.GID != u.GID {
				diffs = append(diffs, diff("uid:gid", fmt.Sprintf("%d:%d", old.UID, old.GID), fmt.Sprintf("%d:%d", u.UID, u.GID)))
			}
			if old.Privilege != priv {
				diffs = append(diffs, diff("privilege", old.Privilege, priv))
			}
			if len(diffs) > 0 {
				return conflict(Users, addr, diffs)
			}
			res.Change, res.Detail = Unchanged, "password kept; change it with passwd"
			return nil
		case !errors.Is(err, ErrNotFound):
			return err
		}
		if u.PasswordHash == "" {
			return errf(ErrInvalid, "user %s does not exist and no password was given to create it", addr)
		}
		ok, err := exists(ctx, tx, Domains, domain)
		if err != nil {
			return err
		}
		if !ok {
			return errf(ErrNotFound, "domain %s of user %s is not in the database: add it first ('postkit db domain add %s')", domain, addr, domain)
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO postfix_utilisateurs
			(utilisateur, mot_de_passe, nom_complet, rep_perso, uid, gid, privilege, prefixe, active)
			VALUES (?, ?, ?, ?, ?, ?, ?, '', 1)`,
			addr, u.PasswordHash, u.Name, domain+"/"+local+"/", u.UID, u.GID, priv)
		if err != nil {
			return fmt.Errorf("sqlmaps: insert user %s: %w", addr, err)
		}
		res.Change = Created
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	return res, nil
}

func checkHash(h string) error {
	scheme, rest := pwhash.Split(h)
	if scheme == "" || rest == "" || strings.ContainsAny(h, "\r\n\x00") {
		return errf(ErrInvalid, "password hash must be \"{SCHEME}hash\" as Dovecot reads it, e.g. {SHA512-CRYPT}$6$…")
	}
	return nil
}

// GetUser returns one user, or ErrNotFound.
func (s *Store) GetUser(ctx context.Context, address string) (User, error) {
	addr, err := CheckAddress(address)
	if err != nil {
		return User{}, err
	}
	return getUser(ctx, s.db, addr)
}

const userCols = "id, utilisateur, mot_de_passe, nom_complet, rep_perso, uid, gid, privilege, prefixe, active"

func scanUser(sc interface{ Scan(...any) error }) (User, error) {
	var u User
	var name, prefix sql.NullString
	var act sql.NullInt64
	err := sc.Scan(&u.ID, &u.Address, &u.PasswordHash, &name, &u.Home, &u.UID, &u.GID, &u.Privilege, &prefix, &act)
	u.Name, u.Prefix, u.Active = str(name), str(prefix), active(act)
	return u, err
}

func getUser(ctx context.Context, q querier, addr string) (User, error) {
	u, err := scanUser(q.QueryRowContext(ctx, "SELECT "+userCols+" FROM postfix_utilisateurs WHERE utilisateur = ?", addr))
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, notFound(Users, addr)
	}
	if err != nil {
		return User{}, fmt.Errorf("sqlmaps: read user %s: %w", addr, err)
	}
	return u, nil
}

// SetPassword replaces a user's password hash.
func (s *Store) SetPassword(ctx context.Context, address, hash string) (Result, error) {
	addr, err := CheckAddress(address)
	if err != nil {
		return Result{}, err
	}
	if err := checkHash(hash); err != nil {
		return Result{}, err
	}
	err = s.tx(ctx, func(tx *txn) error {
		r, err := tx.ExecContext(ctx, "UPDATE postfix_utilisateurs SET mot_de_passe = ? WHERE utilisateur = ?", hash, addr)
		if err != nil {
			return fmt.Errorf("sqlmaps: update password of %s: %w", addr, err)
		}
		if n, _ := r.RowsAffected(); n == 0 {
			return notFound(Users, addr)
		}
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	return Result{Object: Users.String(), Key: addr, Change: Updated, Detail: "password changed"}, nil
}

// ListUsers returns the users, of one domain when domain is not empty.
func (s *Store) ListUsers(ctx context.Context, domain string) ([]User, error) {
	q, args := "SELECT "+userCols+" FROM postfix_utilisateurs ORDER BY id", []any{}
	if domain != "" {
		d, err := CheckDomain(domain)
		if err != nil {
			return nil, err
		}
		q = "SELECT " + userCols + " FROM postfix_utilisateurs WHERE " + s.db.d.endsWith("utilisateur") + " ORDER BY id"
		args = append(args, "@"+d)
	}
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlmaps: list users: %w", err)
	}
	defer rows.Close()
	var out []User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlmaps: list users: %w", err)
		}
		out = append(out, u)
	}
	return out, rows.Err()
}
