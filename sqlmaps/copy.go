package sqlmaps

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// copyTables are the tables CopyFrom copies, in order, with the columns
// that identify a row (the UNIQUE key). postkit_schema_version is not
// copied: the target records its own version when migrated.
var copyTables = []struct {
	table string
	key   []string
}{
	{"postfix_domaines", []string{"domaine"}},
	{"postfix_utilisateurs", []string{"utilisateur"}},
	{"postfix_alias", []string{"alias"}},
	{"postfix_alias_virtuels", []string{"courriel"}},
	{"postfix_liste_noire_expediteurs", []string{"courriel"}},
	{"postfix_liste_noire_destinataires", []string{"courriel"}},
	{"postkit_liste_blanche_spam", []string{"domaine", "domaine_expediteur"}},
	{"postkit_quotas", []string{"cible"}},
}

// intColumns are the integer columns; a value SQLite kept as text ('1') is
// converted, and one that is not a number refuses the copy.
var intColumns = map[string]bool{"id": true, "active": true, "defaut": true, "uid": true, "gid": true, "code_retour": true, "octets": true}

// CopyFrom copies every row of the store's tables from src (a SQLite
// database: the reference installation's, or one postkit made) into s (a
// PostgreSQL database migrated to SchemaVersion), in one transaction: all
// rows or none. A row is matched by its UNIQUE key: a missing row is added
// with its id, a row whose values differ takes src's values (its id stays),
// an equal row is left alone; so running it again changes nothing. The
// sequences behind the ids are moved past the highest id, so that rows
// added later get new ids. An id already used by another row in s stops
// the copy: copy into an empty database, or one filled from the same file.
// Tables src does not have (an older schema) are skipped.
func (s *Store) CopyFrom(ctx context.Context, src *Store) ([]Result, error) {
	if !s.db.d.pg() {
		return nil, errors.New("sqlmaps: copy goes into a PostgreSQL database: set database.driver: postgresql and database.dsn")
	}
	if v, err := s.Version(ctx); err != nil {
		return nil, err
	} else if v < SchemaVersion {
		return nil, errf(ErrSchema, "%s is at schema version %d: run 'postkit db init' first", s.path, v)
	}
	var res []Result
	err := s.tx(ctx, func(tx *txn) error {
		res = nil
		for _, t := range copyTables {
			r, err := s.copyTable(ctx, tx, src, t.table, t.key)
			if err != nil {
				return err
			}
			if r != nil {
				res = append(res, *r)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

func (s *Store) copyTable(ctx context.Context, tx *txn, src *Store, table string, key []string) (*Result, error) {
	if !src.tableExists(ctx, src.db, table) {
		return nil, nil
	}
	cols := expected[table]
	rows, err := src.db.QueryContext(ctx, "SELECT "+strings.Join(cols, ", ")+" FROM "+table+" ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("sqlmaps: read %s from %s: %w", table, src.path, err)
	}
	var data [][]any
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			rows.Close()
			return nil, fmt.Errorf("sqlmaps: read %s from %s: %w", table, src.path, err)
		}
		for i, v := range vals {
			if vals[i], err = copyValue(cols[i], v); err != nil {
				rows.Close()
				return nil, errf(ErrInvalid, "%s row %d of %s: column %s: %v: fix the row in the SQLite file and copy again", table, len(data)+1, src.path, cols[i], err)
			}
		}
		data = append(data, vals)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlmaps: read %s from %s: %w", table, src.path, err)
	}

	var set, differ []string
	isKey := map[string]bool{"id": true}
	for _, k := range key {
		isKey[k] = true
	}
	for _, c := range cols {
		if !isKey[c] {
			set = append(set, c+" = EXCLUDED."+c)
			differ = append(differ, table+"."+c+" IS DISTINCT FROM EXCLUDED."+c)
		}
	}
	// xmax = 0 marks a row this statement inserted (PostgreSQL's MVCC
	// header); no row back means an equal row was left alone.
	q := "INSERT INTO " + table + " (" + strings.Join(cols, ", ") + ") VALUES (?" + strings.Repeat(", ?", len(cols)-1) + ")" +
		" ON CONFLICT (" + strings.Join(key, ", ") + ") DO UPDATE SET " + strings.Join(set, ", ") +
		" WHERE " + strings.Join(differ, " OR ") + " RETURNING (xmax = 0)"
	var added, updated int
	for _, row := range data {
		var inserted bool
		err := tx.QueryRowContext(ctx, q, row...).Scan(&inserted)
		switch {
		case err == nil && inserted:
			added++
		case err == nil:
			updated++
		case errors.Is(err, sql.ErrNoRows):
		case strings.Contains(err.Error(), "_pkey"):
			return nil, errf(ErrConflict, "%s: id %v of %s is another row in %s: copy into an empty database, or one filled from the same file", table, row[0], src.path, s.path)
		default:
			return nil, fmt.Errorf("sqlmaps: copy %s row id %v: %w", table, row[0], err)
		}
	}
	if _, err := tx.ExecContext(ctx, "SELECT setval(pg_get_serial_sequence('"+table+"', 'id'), coalesce((SELECT max(id) FROM "+table+"), 0) + 1, false)"); err != nil {
		return nil, fmt.Errorf("sqlmaps: move the id sequence of %s: %w", table, err)
	}
	r := &Result{Object: "table", Key: table, Change: Unchanged,
		Detail: fmt.Sprintf("%d rows: %d added, %d updated, %d unchanged", len(data), added, updated, len(data)-added-updated)}
	switch {
	case added > 0:
		r.Change = Created
	case updated > 0:
		r.Change = Updated
	}
	return r, nil
}

// copyValue turns a SQLite value into what the PostgreSQL column takes.
func copyValue(col string, v any) (any, error) {
	if b, ok := v.([]byte); ok {
		v = string(b)
	}
	if !intColumns[col] {
		switch x := v.(type) {
		case nil, string:
			return x, nil
		case int64:
			return strconv.FormatInt(x, 10), nil
		case float64:
			return strconv.FormatFloat(x, 'g', -1, 64), nil
		}
		return nil, fmt.Errorf("value %v of type %T where text is expected", v, v)
	}
	switch x := v.(type) {
	case nil:
		return nil, nil
	case int64:
		return x, nil
	case bool:
		if x {
			return int64(1), nil
		}
		return int64(0), nil
	case string:
		n, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not a whole number", x)
		}
		return n, nil
	case float64:
		if x == float64(int64(x)) {
			return int64(x), nil
		}
	}
	return nil, fmt.Errorf("value %v is not a whole number", v)
}
