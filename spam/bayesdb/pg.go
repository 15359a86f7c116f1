package bayesdb

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/postkit/postkit/internal/pgpool"
	"github.com/postkit/postkit/spam/bayes"
)

// pgSchema is schema in PostgreSQL: the same tables and columns.
const pgSchema = `
CREATE TABLE IF NOT EXISTS bayes_tokens (
	token BIGINT PRIMARY KEY,
	spam  BIGINT NOT NULL DEFAULT 0,
	ham   BIGINT NOT NULL DEFAULT 0,
	atime BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS bayes_tokens_atime ON bayes_tokens(atime);
CREATE TABLE IF NOT EXISTS bayes_learned (
	id      TEXT PRIMARY KEY,
	is_spam INTEGER NOT NULL,
	tokens  BYTEA NOT NULL,
	at      BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS bayes_vars (
	name  TEXT PRIMARY KEY,
	value BIGINT NOT NULL
);
INSERT INTO bayes_vars (name, value) VALUES ('spam', 0), ('ham', 0), ('last_expire', 0), ('expired', 0), ('schema', 1)
	ON CONFLICT (name) DO NOTHING;
`

// pgSchemaLock serialises schema creation between hosts starting at once.
const pgSchemaLock = 0x706b6279 // "pkby"

// PG is a Bayes store in PostgreSQL, shared by every host whose milter and
// learning command open the same database: a message learned through one
// host's IMAP is scored by every host's Bayes. The pool reconnects by
// itself; while the server is down every call fails within the connect
// timeout, and the engine then scores without Bayes (BayesNote "store
// error", the POSTKIT_BAYES_DOWN test in X-Spam-Status). The schema is
// created on the first call that reaches the server.
type PG struct {
	pool *pgxpool.Pool
	br   pgpool.Breaker

	schema *pgpool.Schema
}

var _ bayes.Store = (*PG)(nil)

// ready fails at once while the breaker pauses, and creates the schema on
// the first call that reaches the server.
func (p *PG) ready(ctx context.Context) (err error) {
	if err := p.br.Allow(); err != nil {
		return err
	}
	defer func() { p.br.Observe(err) }()
	return p.schema.Ensure(ctx, p.pool)
}

// OpenPG opens a pool on dsn; password, when not empty, is used instead of
// the DSN's (read from a file by the caller, never from argv). It does not
// fail when the server is down.
func OpenPG(ctx context.Context, dsn, password string) (*PG, error) {
	pool, err := pgpool.Open(ctx, "bayesdb", dsn, pgpool.Options{Password: password})
	if err != nil {
		return nil, err
	}
	p := &PG{pool: pool, br: pgpool.Breaker{What: "bayesdb"}, schema: &pgpool.Schema{What: "bayesdb", Lock: pgSchemaLock, DDL: pgSchema}}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_ = p.ready(sctx)
	return p, nil
}

// Close implements bayes.Store.
func (p *PG) Close() error { p.pool.Close(); return nil }

// Totals implements bayes.Store.
func (p *PG) Totals(ctx context.Context) (spam, ham int64, err error) {
	if err := p.ready(ctx); err != nil {
		return 0, 0, err
	}
	err = p.pool.QueryRow(ctx, `SELECT
		coalesce((SELECT value FROM bayes_vars WHERE name = 'spam'), 0),
		coalesce((SELECT value FROM bayes_vars WHERE name = 'ham'), 0)`).Scan(&spam, &ham)
	if err != nil {
		return 0, 0, fmt.Errorf("bayesdb: read totals: %w", p.br.Observe(err))
	}
	return spam, ham, nil
}

func int64s(toks []bayes.Token) []int64 {
	out := make([]int64, len(toks))
	for i, t := range toks {
		out[i] = int64(t)
	}
	return out
}

// Counts implements bayes.Store: one query for every token.
func (p *PG) Counts(ctx context.Context, toks []bayes.Token) (map[bayes.Token]bayes.Count, error) {
	if err := p.ready(ctx); err != nil {
		return nil, err
	}
	rows, err := p.pool.Query(ctx, `SELECT token, spam, ham FROM bayes_tokens WHERE token = ANY($1)`, int64s(toks))
	if err != nil {
		return nil, fmt.Errorf("bayesdb: read tokens: %w", p.br.Observe(err))
	}
	defer rows.Close()
	out := make(map[bayes.Token]bayes.Count, len(toks)/2)
	for rows.Next() {
		var t, s, h int64
		if err := rows.Scan(&t, &s, &h); err != nil {
			return nil, fmt.Errorf("bayesdb: read tokens: %w", p.br.Observe(err))
		}
		out[bayes.Token(t)] = bayes.Count{Spam: s, Ham: h}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("bayesdb: read tokens: %w", p.br.Observe(err))
	}
	return out, nil
}

type pgQueryer interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func pgRecord(ctx context.Context, q pgQueryer, id string) (bayes.Record, bool, error) {
	var isSpam int
	var at int64
	var blob []byte
	err := q.QueryRow(ctx, `SELECT is_spam, tokens, at FROM bayes_learned WHERE id = $1`, id).Scan(&isSpam, &blob, &at)
	if errors.Is(err, pgx.ErrNoRows) {
		return bayes.Record{}, false, nil
	}
	if err != nil {
		return bayes.Record{}, false, fmt.Errorf("bayesdb: read learned message: %w", err)
	}
	r := bayes.Record{ID: id, Spam: isSpam != 0, At: time.Unix(at, 0).UTC()}
	r.Tokens = decodeTokens(blob)
	return r, true, nil
}

// Record implements bayes.Store.
func (p *PG) Record(ctx context.Context, id string) (bayes.Record, bool, error) {
	if err := p.ready(ctx); err != nil {
		return bayes.Record{}, false, err
	}
	r, found, err := pgRecord(ctx, p.pool, id)
	return r, found, p.br.Observe(err)
}

// inTx runs f in a transaction holding the advisory lock of message id, so
// that two hosts learning one message at once take turns and the second
// sees the first's record.
func (p *PG) inTx(ctx context.Context, id string, f func(tx pgx.Tx) (bool, error)) (bool, error) {
	if err := p.ready(ctx); err != nil {
		return false, err
	}
	tx, err := p.pool.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("bayesdb: begin: %w", p.br.Observe(err))
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, "bayes:"+id); err != nil {
		return false, fmt.Errorf("bayesdb: lock learned message: %w", p.br.Observe(err))
	}
	changed, err := f(tx)
	if err != nil || !changed {
		return changed, p.br.Observe(err)
	}
	if err := tx.Commit(ctx); err != nil {
		return false, fmt.Errorf("bayesdb: commit: %w", p.br.Observe(err))
	}
	return true, nil
}

// sortedUnique returns toks sorted without repeats: one upsert may touch a
// row once only, and every learner locking rows in the same order cannot
// deadlock another.
func sortedUnique(toks []bayes.Token) []int64 {
	out := int64s(toks)
	slices.Sort(out)
	return slices.Compact(out)
}

// Learn implements bayes.Store.
func (p *PG) Learn(ctx context.Context, r bayes.Record, now time.Time) (bool, error) {
	return p.inTx(ctx, r.ID, func(tx pgx.Tx) (bool, error) {
		old, found, err := pgRecord(ctx, tx, r.ID)
		if err != nil {
			return false, err
		}
		if found && old.Spam == r.Spam {
			return false, nil
		}
		if found {
			if err := pgUnlearn(ctx, tx, old); err != nil {
				return false, err
			}
		}
		col := class(r.Spam)
		if _, err := tx.Exec(ctx, `INSERT INTO bayes_tokens AS b (token, `+col+`, atime)
			SELECT t, 1, $2 FROM unnest($1::bigint[]) AS t ORDER BY t
			ON CONFLICT (token) DO UPDATE SET `+col+` = b.`+col+` + 1, atime = excluded.atime`,
			sortedUnique(r.Tokens), now.Unix()); err != nil {
			return false, fmt.Errorf("bayesdb: learn: %w", p.br.Observe(err))
		}
		if _, err := tx.Exec(ctx, `UPDATE bayes_vars SET value = value + 1 WHERE name = $1`, col); err != nil {
			return false, fmt.Errorf("bayesdb: learn: %w", p.br.Observe(err))
		}
		isSpam := 0
		if r.Spam {
			isSpam = 1
		}
		if _, err := tx.Exec(ctx, `INSERT INTO bayes_learned (id, is_spam, tokens, at) VALUES ($1, $2, $3, $4)
			ON CONFLICT (id) DO UPDATE SET is_spam = excluded.is_spam, tokens = excluded.tokens, at = excluded.at`,
			r.ID, isSpam, encodeTokens(r.Tokens), r.At.Unix()); err != nil {
			return false, fmt.Errorf("bayesdb: learn: %w", p.br.Observe(err))
		}
		return true, nil
	})
}

// Forget implements bayes.Store.
func (p *PG) Forget(ctx context.Context, id string) (bool, error) {
	return p.inTx(ctx, id, func(tx pgx.Tx) (bool, error) {
		old, found, err := pgRecord(ctx, tx, id)
		if err != nil || !found {
			return false, err
		}
		return true, pgUnlearn(ctx, tx, old)
	})
}

// pgUnlearn takes back r's counts and deletes its record, inside tx. Like
// Learn, it counts each distinct token once.
func pgUnlearn(ctx context.Context, tx pgx.Tx, r bayes.Record) error {
	col := class(r.Spam)
	toks := sortedUnique(r.Tokens)
	if _, err := tx.Exec(ctx, `UPDATE bayes_tokens SET `+col+` = `+col+` - 1 WHERE token = ANY($1) AND `+col+` > 0`, toks); err != nil {
		return fmt.Errorf("bayesdb: unlearn: %w", err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM bayes_tokens WHERE token = ANY($1) AND spam = 0 AND ham = 0`, toks); err != nil {
		return fmt.Errorf("bayesdb: unlearn: %w", err)
	}
	if _, err := tx.Exec(ctx, `UPDATE bayes_vars SET value = value - 1 WHERE name = $1 AND value > 0`, col); err != nil {
		return fmt.Errorf("bayesdb: unlearn: %w", err)
	}
	if _, err := tx.Exec(ctx, `DELETE FROM bayes_learned WHERE id = $1`, r.ID); err != nil {
		return fmt.Errorf("bayesdb: unlearn: %w", err)
	}
	return nil
}

// Expire implements bayes.Store.
func (p *PG) Expire(ctx context.Context, before time.Time) (int64, error) {
	if err := p.ready(ctx); err != nil {
		return 0, err
	}
	tx, err := p.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("bayesdb: begin: %w", p.br.Observe(err))
	}
	defer tx.Rollback(context.Background())
	tag, err := tx.Exec(ctx, `DELETE FROM bayes_tokens WHERE atime < $1`, before.Unix())
	if err != nil {
		return 0, fmt.Errorf("bayesdb: expire: %w", p.br.Observe(err))
	}
	n := tag.RowsAffected()
	if _, err := tx.Exec(ctx, `UPDATE bayes_vars SET value = CASE name WHEN 'last_expire' THEN GREATEST(value, $1) ELSE value + $2 END
		WHERE name IN ('last_expire', 'expired')`, before.Unix(), n); err != nil {
		return 0, fmt.Errorf("bayesdb: expire: %w", p.br.Observe(err))
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("bayesdb: commit: %w", p.br.Observe(err))
	}
	return n, nil
}

// Stats implements bayes.Store.
func (p *PG) Stats(ctx context.Context) (bayes.Stats, error) {
	var st bayes.Stats
	if err := p.ready(ctx); err != nil {
		return st, err
	}
	var oldest, newest *int64
	if err := p.pool.QueryRow(ctx, `SELECT count(*), min(atime), max(atime) FROM bayes_tokens`).Scan(&st.Tokens, &oldest, &newest); err != nil {
		return st, fmt.Errorf("bayesdb: stats: %w", p.br.Observe(err))
	}
	if oldest != nil && newest != nil {
		st.OldestAtime, st.NewestAtime = time.Unix(*oldest, 0).UTC(), time.Unix(*newest, 0).UTC()
	}
	if err := p.pool.QueryRow(ctx, `SELECT count(*) FROM bayes_learned`).Scan(&st.Records); err != nil {
		return st, fmt.Errorf("bayesdb: stats: %w", p.br.Observe(err))
	}
	rows, err := p.pool.Query(ctx, `SELECT name, value FROM bayes_vars`)
	if err != nil {
		return st, fmt.Errorf("bayesdb: stats: %w", p.br.Observe(err))
	}
	defer rows.Close()
	for rows.Next() {
		var n string
		var v int64
		if err := rows.Scan(&n, &v); err != nil {
			return st, fmt.Errorf("bayesdb: stats: %w", p.br.Observe(err))
		}
		setVar(&st, n, v)
	}
	return st, rows.Err()
}
