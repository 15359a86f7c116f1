// Package bayesdb is the Bayes classifier's token store in SQLite
// (https://sqlite.org/wal.html: write-ahead log, so that scoring reads never
// wait for a learning write). It is postkit's own database, apart from the
// maps database that Postfix reads (sqlmaps keeps a rollback journal for
// Postfix's read-only opens; nothing but postkit opens this one).
//
// Tokens are stored as their 64-bit hashes (bayes.Token), with their spam and
// ham counts and the last time a learning touched them (for expiry). Each
// learned message has a record: its key (bayes.MessageKey), how it was
// learned and its tokens, so that learning again is a no-op and unlearning
// takes back exactly what was added.
package bayesdb

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/postkit/postkit/internal/waldb"
	"github.com/postkit/postkit/spam/bayes"
)

const schema = `
CREATE TABLE IF NOT EXISTS bayes_tokens (
	token INTEGER PRIMARY KEY,
	spam  INTEGER NOT NULL DEFAULT 0,
	ham   INTEGER NOT NULL DEFAULT 0,
	atime INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS bayes_tokens_atime ON bayes_tokens(atime);
CREATE TABLE IF NOT EXISTS bayes_learned (
	id      TEXT PRIMARY KEY,
	is_spam INTEGER NOT NULL,
	tokens  BLOB NOT NULL,
	at      INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bayes_vars (
	name  TEXT PRIMARY KEY,
	value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO bayes_vars (name, value) VALUES ('spam', 0), ('ham', 0), ('last_expire', 0), ('expired', 0), ('schema', 1);
`

// DB is a Bayes store in one SQLite file. It is safe for concurrent use.
type DB struct {
	db   *sql.DB
	path string

	// The scoring path's statements, prepared once: preparing them for
	// every message was a tenth of the milter's CPU.
	prepOnce sync.Once
	prepErr  error
	totals   *sql.Stmt
	counts   *sql.Stmt // batch placeholders; shorter batches repeat a token
}

func (d *DB) prepare() error {
	d.prepOnce.Do(func() {
		// Not the caller's context: a message's deadline must not spoil
		// the statements for the next ones.
		ctx := context.Background()
		d.totals, d.prepErr = d.db.PrepareContext(ctx, `SELECT name, value FROM bayes_vars WHERE name IN ('spam', 'ham')`)
		if d.prepErr != nil {
			return
		}
		// One row per batch, the counts as text ("token spam ham ..."):
		// a row per token cost a cgo call per token.
		d.counts, d.prepErr = d.db.PrepareContext(ctx, `SELECT group_concat(token || ' ' || spam || ' ' || ham, ' ') FROM bayes_tokens WHERE token IN (?`+strings.Repeat(",?", batch-1)+`)`)
	})
	return d.prepErr
}

var _ bayes.Store = (*DB)(nil)

// Open opens (creating if needed, mode 0600) the store at path.
func Open(path string) (*DB, error) {
	db, err := waldb.Open(path, "bayesdb", schema, 4)
	if err != nil {
		return nil, err
	}
	return &DB{db: db, path: path}, nil
}

// Path returns the file the store was opened from.
func (d *DB) Path() string { return d.path }

// Close implements bayes.Store.
func (d *DB) Close() error {
	for _, st := range []*sql.Stmt{d.totals, d.counts} {
		if st != nil {
			st.Close()
		}
	}
	return d.db.Close()
}

// Totals implements bayes.Store.
func (d *DB) Totals(ctx context.Context) (spam, ham int64, err error) {
	if err := d.prepare(); err != nil {
		return 0, 0, fmt.Errorf("bayesdb: read totals: %w", err)
	}
	rows, err := d.totals.QueryContext(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("bayesdb: read totals: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var n string
		var v int64
		if err := rows.Scan(&n, &v); err != nil {
			return 0, 0, fmt.Errorf("bayesdb: read totals: %w", err)
		}
		if n == "spam" {
			spam = v
		} else {
			ham = v
		}
	}
	return spam, ham, rows.Err()
}

// batch is the number of tokens one query asks for (SQLite's default limit
// of host parameters is 32766 since 3.32; a smaller batch keeps statements
// cacheable).
const batch = 250

// Counts implements bayes.Store.
func (d *DB) Counts(ctx context.Context, toks []bayes.Token) (map[bayes.Token]bayes.Count, error) {
	out := make(map[bayes.Token]bayes.Count, len(toks)/2)
	if len(toks) == 0 {
		return out, nil
	}
	if err := d.prepare(); err != nil {
		return nil, fmt.Errorf("bayesdb: read tokens: %w", err)
	}
	args := make([]any, 0, batch)
	for start := 0; start < len(toks); start += batch {
		end := min(start+batch, len(toks))
		args = args[:0]
		for _, t := range toks[start:end] {
			args = append(args, int64(t))
		}
		for len(args) < batch {
			args = append(args, args[len(args)-1])
		}
		var list sql.NullString
		if err := d.counts.QueryRowContext(ctx, args...).Scan(&list); err != nil {
			return nil, fmt.Errorf("bayesdb: read tokens: %w", err)
		}
		if err := parseCounts(list.String, out); err != nil {
			return nil, fmt.Errorf("bayesdb: read tokens: %w", err)
		}
	}
	return out, nil
}

// parseCounts reads "token spam ham token spam ham ..." into out.
func parseCounts(s string, out map[bayes.Token]bayes.Count) error {
	var v [3]int64
	for n := 0; len(s) > 0; n++ {
		i := strings.IndexByte(s, ' ')
		if i < 0 {
			i = len(s)
		}
		x, err := strconv.ParseInt(s[:i], 10, 64)
		if err != nil {
			return err
		}
		v[n%3] = x
		if n%3 == 2 {
			out[bayes.Token(v[0])] = bayes.Count{Spam: v[1], Ham: v[2]}
		}
		if i == len(s) {
			if n%3 != 2 {
				return errors.New("token counts cut short")
			}
			break
		}
		s = s[i+1:]
	}
	return nil
}

// Record implements bayes.Store.
func (d *DB) Record(ctx context.Context, id string) (bayes.Record, bool, error) {
	return readRecord(ctx, d.db, id)
}

type queryer interface {
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

func readRecord(ctx context.Context, q queryer, id string) (bayes.Record, bool, error) {
	var isSpam, at int64
	var blob []byte
	err := q.QueryRowContext(ctx, `SELECT is_spam, tokens, at FROM bayes_learned WHERE id = ?`, id).Scan(&isSpam, &blob, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return bayes.Record{}, false, nil
	}
	if err != nil {
		return bayes.Record{}, false, fmt.Errorf("bayesdb: read learned message: %w", err)
	}
	r := bayes.Record{ID: id, Spam: isSpam != 0, At: time.Unix(at, 0).UTC()}
	r.Tokens = decodeTokens(blob)
	return r, true, nil
}

func decodeTokens(blob []byte) []bayes.Token {
	var out []bayes.Token
	for i := 0; i+8 <= len(blob); i += 8 {
		out = append(out, bayes.Token(binary.LittleEndian.Uint64(blob[i:])))
	}
	return out
}

func encodeTokens(toks []bayes.Token) []byte {
	b := make([]byte, 8*len(toks))
	for i, t := range toks {
		binary.LittleEndian.PutUint64(b[8*i:], uint64(t))
	}
	return b
}

func class(spam bool) string {
	if spam {
		return "spam"
	}
	return "ham"
}

// Learn implements bayes.Store: one transaction (BEGIN IMMEDIATE, so the
// record is read under the write lock).
func (d *DB) Learn(ctx context.Context, r bayes.Record, now time.Time) (bool, error) {
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("bayesdb: begin: %w", err)
	}
	defer tx.Rollback()
	old, found, err := readRecord(ctx, tx, r.ID)
	if err != nil {
		return false, err
	}
	if found && old.Spam == r.Spam {
		return false, nil
	}
	if found {
		if err := unlearn(ctx, tx, old); err != nil {
			return false, err
		}
	}
	col := class(r.Spam)
	ins, err := tx.PrepareContext(ctx, `INSERT INTO bayes_tokens (token, `+col+`, atime) VALUES (?, 1, ?)
		ON CONFLICT(token) DO UPDATE SET `+col+` = `+col+` + 1, atime = excluded.atime`)
	if err != nil {
		return false, fmt.Errorf("bayesdb: learn: %w", err)
	}
	defer ins.Close()
	for _, t := range r.Tokens {
		if _, err := ins.ExecContext(ctx, int64(t), now.Unix()); err != nil {
			return false, fmt.Errorf("bayesdb: learn: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE bayes_vars SET value = value + 1 WHERE name = ?`, col); err != nil {
		return false, fmt.Errorf("bayesdb: learn: %w", err)
	}
	isSpam := 0
	if r.Spam {
		isSpam = 1
	}
	if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO bayes_learned (id, is_spam, tokens, at) VALUES (?, ?, ?, ?)`,
		r.ID, isSpam, encodeTokens(r.Tokens), r.At.Unix()); err != nil {
		return false, fmt.Errorf("bayesdb: learn: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("bayesdb: commit: %w", err)
	}
	return true, nil
}

// Forget implements bayes.Store.
func (d *DB) Forget(ctx context.Context, id string) (bool, error) {
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("bayesdb: begin: %w", err)
	}
	defer tx.Rollback()
	old, found, err := readRecord(ctx, tx, id)
	if err != nil || !found {
		return false, err
	}
	if err := unlearn(ctx, tx, old); err != nil {
		return false, err
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("bayesdb: commit: %w", err)
	}
	return true, nil
}

// unlearn takes back r's counts and deletes its record, inside tx.
func unlearn(ctx context.Context, tx *sql.Tx, r bayes.Record) error {
	col := class(r.Spam)
	dec, err := tx.PrepareContext(ctx, `UPDATE bayes_tokens SET `+col+` = `+col+` - 1 WHERE token = ? AND `+col+` > 0`)
	if err != nil {
		return fmt.Errorf("bayesdb: unlearn: %w", err)
	}
	defer dec.Close()
	del, err := tx.PrepareContext(ctx, `DELETE FROM bayes_tokens WHERE token = ? AND spam = 0 AND ham = 0`)
	if err != nil {
		return fmt.Errorf("bayesdb: unlearn: %w", err)
	}
	defer del.Close()
	for _, t := range r.Tokens {
		if _, err := dec.ExecContext(ctx, int64(t)); err != nil {
			return fmt.Errorf("bayesdb: unlearn: %w", err)
		}
		if _, err := del.ExecContext(ctx, int64(t)); err != nil {
			return fmt.Errorf("bayesdb: unlearn: %w", err)
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE bayes_vars SET value = value - 1 WHERE name = ? AND value > 0`, col); err != nil {
		return fmt.Errorf("bayesdb: unlearn: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM bayes_learned WHERE id = ?`, r.ID); err != nil {
		return fmt.Errorf("bayesdb: unlearn: %w", err)
	}
	return nil
}

// Expire implements bayes.Store.
func (d *DB) Expire(ctx context.Context, before time.Time) (int64, error) {
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("bayesdb: begin: %w", err)
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `DELETE FROM bayes_tokens WHERE atime < ?`, before.Unix())
	if err != nil {
		return 0, fmt.Errorf("bayesdb: expire: %w", err)
	}
	n, _ := res.RowsAffected()
	if _, err := tx.ExecContext(ctx, `UPDATE bayes_vars SET value = CASE name WHEN 'last_expire' THEN ? ELSE value + ? END WHERE name IN ('last_expire', 'expired')`, before.Unix(), n); err != nil {
		return 0, fmt.Errorf("bayesdb: expire: %w", err)
	}
	return n, tx.Commit()
}

// Stats implements bayes.Store.
func (d *DB) Stats(ctx context.Context) (bayes.Stats, error) {
	var st bayes.Stats
	var oldest, newest sql.NullInt64
	if err := d.db.QueryRowContext(ctx, `SELECT count(*), min(atime), max(atime) FROM bayes_tokens`).Scan(&st.Tokens, &oldest, &newest); err != nil {
		return st, fmt.Errorf("bayesdb: stats: %w", err)
	}
	if oldest.Valid {
		st.OldestAtime, st.NewestAtime = time.Unix(oldest.Int64, 0).UTC(), time.Unix(newest.Int64, 0).UTC()
	}
	if err := d.db.QueryRowContext(ctx, `SELECT count(*) FROM bayes_learned`).Scan(&st.Records); err != nil {
		return st, fmt.Errorf("bayesdb: stats: %w", err)
	}
	rows, err := d.db.QueryContext(ctx, `SELECT name, value FROM bayes_vars`)
	if err != nil {
		return st, fmt.Errorf("bayesdb: stats: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var n string
		var v int64
		if err := rows.Scan(&n, &v); err != nil {
			return st, fmt.Errorf("bayesdb: stats: %w", err)
		}
		setVar(&st, n, v)
	}
	return st, rows.Err()
}

// setVar puts one bayes_vars row (both stores keep the same names) into st.
func setVar(st *bayes.Stats, name string, v int64) {
	switch name {
	case "spam":
		st.Spam = v
	case "ham":
		st.Ham = v
	case "last_expire":
		if v > 0 {
			st.LastExpire = time.Unix(v, 0).UTC()
		}
	case "expired":
		st.ExpiredTotal = v
	}
}
