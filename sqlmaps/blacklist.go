package sqlmaps

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// AddSenderBlacklist adds a row to postfix_liste_noire_expediteurs: mail from
// key (user@domain, domain or user@) is answered "code message", which the
// map query returns as an access(5) "4NN text"/"5NN text" action.
func (s *Store) AddSenderBlacklist(ctx context.Context, key string, code int, message string) (Result, error) {
	k, err := CheckAccessKey(key)
	if err != nil {
		return Result{}, err
	}
	if err := CheckCode(code); err != nil {
		return Result{}, err
	}
	message = strings.TrimSpace(message)
	if err := checkText("message", message, true); err != nil {
		return Result{}, err
	}
	res := Result{Object: SenderBlacklist.String(), Key: k}
	err = s.tx(ctx, func(tx *txn) error {
		var oldCode int
		var oldMsg string
		err := tx.QueryRowContext(ctx, "SELECT code_retour, message FROM postfix_liste_noire_expediteurs WHERE courriel = ?", k).Scan(&oldCode, &oldMsg)
		if err == nil {
			var diffs []string
			if oldCode != code {
				diffs = append(diffs, diff("code", oldCode, code))
			}
			if oldMsg != message {
				diffs = append(diffs, diff("message", oldMsg, message))
			}
			if len(diffs) > 0 {
				return conflict(SenderBlacklist, k, diffs)
			}
			res.Change = Unchanged
			return nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("sqlmaps: read sender blacklist %s: %w", k, err)
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO postfix_liste_noire_expediteurs (courriel, code_retour, message, active) VALUES (?, ?, ?, 1)", k, code, message); err != nil {
			return fmt.Errorf("sqlmaps: insert sender blacklist %s: %w", k, err)
		}
		res.Change = Created
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	return res, nil
}

// AddRecipientBlacklist adds a row to postfix_liste_noire_destinataires:
// mail to key gets action, an access(5) action (see CheckAction).
func (s *Store) AddRecipientBlacklist(ctx context.Context, key, action string) (Result, error) {
	k, err := CheckAccessKey(key)
	if err != nil {
		return Result{}, err
	}
	act, err := CheckAction(action)
	if err != nil {
		return Result{}, err
	}
	res := Result{Object: RecipientBlacklist.String(), Key: k}
	err = s.tx(ctx, func(tx *txn) error {
		var old string
		err := tx.QueryRowContext(ctx, "SELECT action FROM postfix_liste_noire_destinataires WHERE courriel = ?", k).Scan(&old)
		if err == nil {
			if old != act {
				return conflict(RecipientBlacklist, k, []string{diff("action", old, act)})
			}
			res.Change = Unchanged
			return nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("sqlmaps: read recipient blacklist %s: %w", k, err)
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO postfix_liste_noire_destinataires (courriel, action, active) VALUES (?, ?, 1)", k, act); err != nil {
			return fmt.Errorf("sqlmaps: insert recipient blacklist %s: %w", k, err)
		}
		res.Change = Created
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	return res, nil
}

// ListSenderBlacklist returns every sender blacklist row.
func (s *Store) ListSenderBlacklist(ctx context.Context) ([]SenderBlock, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT id, courriel, code_retour, message, active FROM postfix_liste_noire_expediteurs ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("sqlmaps: list sender blacklist: %w", err)
	}
	defer rows.Close()
	var out []SenderBlock
	for rows.Next() {
		var b SenderBlock
		var act sql.NullInt64
		if err := rows.Scan(&b.ID, &b.Key, &b.Code, &b.Message, &act); err != nil {
			return nil, fmt.Errorf("sqlmaps: list sender blacklist: %w", err)
		}
		b.Active = active(act)
		out = append(out, b)
	}
	return out, rows.Err()
}

// ListRecipientBlacklist returns every recipient blacklist row.
func (s *Store) ListRecipientBlacklist(ctx context.Context) ([]RecipientBlock, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT id, courriel, action, active FROM postfix_liste_noire_destinataires ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("sqlmaps: list recipient blacklist: %w", err)
	}
	defer rows.Close()
	var out []RecipientBlock
	for rows.Next() {
		var b RecipientBlock
		var act sql.NullInt64
		if err := rows.Scan(&b.ID, &b.Key, &b.Action, &act); err != nil {
			return nil, fmt.Errorf("sqlmaps: list recipient blacklist: %w", err)
		}
		b.Active = active(act)
		out = append(out, b)
	}
	return out, rows.Err()
}

// LookupSenderBlacklist looks up one exact key (lower-cased, as Postfix
// folds keys) among active sender blacklist rows, for the policy daemon. The
// caller tries the access(5) key forms (user@domain, domain, parent
// domains, user@) in the order it wants.
func (s *Store) LookupSenderBlacklist(ctx context.Context, key string) (code int, message string, found bool, err error) {
	err = s.db.QueryRowContext(ctx,
		"SELECT code_retour, message FROM postfix_liste_noire_expediteurs WHERE courriel = ? AND active = '1' ORDER BY id LIMIT 1",
		strings.ToLower(key)).Scan(&code, &message)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, "", false, nil
	}
	if err != nil {
		return 0, "", false, fmt.Errorf("sqlmaps: sender blacklist lookup: %w", err)
	}
	return code, message, true, nil
}

// LookupRecipientBlacklist looks up one exact key among active recipient
// blacklist rows and returns its access(5) action.
func (s *Store) LookupRecipientBlacklist(ctx context.Context, key string) (action string, found bool, err error) {
	err = s.db.QueryRowContext(ctx,
		"SELECT action FROM postfix_liste_noire_destinataires WHERE courriel = ? AND active = '1' ORDER BY id LIMIT 1",
		strings.ToLower(key)).Scan(&action)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("sqlmaps: recipient blacklist lookup: %w", err)
	}
	return action, true, nil
}
