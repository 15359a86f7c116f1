package state

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/postkit/postkit/internal/pgpool"
)

// pgSchema is the PostgreSQL form of schema: the same tables and columns.
// Every statement is idempotent; it runs on the first use of each pool.
const pgSchema = `
CREATE TABLE IF NOT EXISTS greylist_triplets (
	key        TEXT PRIMARY KEY,
	first_seen BIGINT NOT NULL,
	last_seen  BIGINT NOT NULL,
	passed     BIGINT NOT NULL DEFAULT 0,
	attempts   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS greylist_triplets_first ON greylist_triplets(first_seen);
CREATE INDEX IF NOT EXISTS greylist_triplets_last ON greylist_triplets(last_seen);
CREATE TABLE IF NOT EXISTS greylist_clients (
	key       TEXT PRIMARY KEY,
	count     INTEGER NOT NULL,
	last_seen BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS greylist_clients_last ON greylist_clients(last_seen);
CREATE TABLE IF NOT EXISTS rate_buckets (
	key     TEXT NOT NULL,
	start   BIGINT NOT NULL,
	count   BIGINT NOT NULL,
	expires BIGINT NOT NULL,
	PRIMARY KEY (key, start)
);
CREATE INDEX IF NOT EXISTS rate_buckets_expires ON rate_buckets(expires);
`

// pgSchemaLock is the advisory lock key that serialises schema creation
// between hosts starting at once (CREATE … IF NOT EXISTS races otherwise).
const pgSchemaLock = 0x706b7374 // "pkst"

// PGOptions tunes a PostgreSQL store; the zero value is usable.
type PGOptions struct {
	// MaxConns bounds the pool. Default 8.
	MaxConns int32
	// ConnectTimeout bounds one connection attempt. Default 2s.
	ConnectTimeout time.Duration
	// Password, when set, is the password (read from state.password_file),
	// kept out of the DSN and of argv.
	Password string
}

// PG is the state kept in PostgreSQL, shared by every host that opens the
// same database. The pool reconnects by itself: while the server is down
// every call fails fast (connection refused, or ConnectTimeout, then at
// once for a second: pgpool.Breaker), and the first call after it is back
// succeeds. The schema is created on first successful use, so a host may
// start while the server is down.
//
// Its sessions commit asynchronously (synchronous_commit off): the state
// is worth less than a disk flush per request. A crash of the server (not
// a clean stop or restart) loses at most the last 3 × wal_writer_delay
// (0.6 s by default) of writes — a triplet greylisted once more, a few
// messages not counted; nothing is ever half-written.
type PG struct {
	pool *pgxpool.Pool
	br   pgpool.Breaker

	schema *pgpool.Schema
}

// OpenPG opens a pool on dsn (a libpq URL or key=value string). It does not
// fail when the server is down: the schema is created by the first call
// that reaches it. A malformed DSN is an error.
func OpenPG(ctx context.Context, dsn string, o PGOptions) (*PG, error) {
	pool, err := pgpool.Open(ctx, "state", dsn, pgpool.Options{MaxConns: o.MaxConns, ConnectTimeout: o.ConnectTimeout,
		Password: o.Password, AsyncCommit: true})
	if err != nil {
		return nil, err
	}
	p := &PG{pool: pool, br: pgpool.Breaker{What: "state"}, schema: &pgpool.Schema{What: "state", Lock: pgSchemaLock, DDL: pgSchema}}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_ = p.check(sctx) // the server may be down: the first call retries
	return p, nil
}

func (p *PG) check(ctx context.Context) error {
	if err := p.br.Allow(); err != nil {
		return err
	}
	if p.schema.Ready() {
		return nil
	}
	return p.br.Observe(p.schema.Ensure(ctx, p.pool))
}

// Close closes the pool.
func (p *PG) Close() error { p.pool.Close(); return nil }

// Ping reports whether the server answers.
func (p *PG) Ping(ctx context.Context) error { return p.pool.Ping(ctx) }

// Triplet implements Store.
func (p *PG) Triplet(ctx context.Context, key string) (t Triplet, found bool, err error) {
	if err := p.check(ctx); err != nil {
		return Triplet{}, false, err
	}
	var first, last, passed int64
	err = p.pool.QueryRow(ctx,
		`SELECT first_seen, last_seen, passed, attempts FROM greylist_triplets WHERE key = $1`, key).
		Scan(&first, &last, &passed, &t.Attempts)
	if errors.Is(err, pgx.ErrNoRows) {
		return Triplet{}, false, nil
	}
	if err != nil {
		return Triplet{}, false, fmt.Errorf("state: read greylist triplet: %w", p.br.Observe(err))
	}
	t.First, t.Last, t.Passed = fromUnix(first), fromUnix(last), fromUnix(passed)
	return t, true, nil
}

// PutTriplet implements Store with one atomic upsert: within a round (same
// first_seen) passed never goes back to zero and last_seen never back in
// time, whichever host writes last.
func (p *PG) PutTriplet(ctx context.Context, key string, t Triplet) error {
	if err := p.check(ctx); err != nil {
		return err
	}
	_, err := p.pool.Exec(ctx,
		`INSERT INTO greylist_triplets AS g (key, first_seen, last_seen, passed, attempts) VALUES ($1, $2, $3, $4, $5)
		 ON CONFLICT (key) DO UPDATE SET
		   first_seen = excluded.first_seen,
		   last_seen  = CASE WHEN g.first_seen = excluded.first_seen THEN GREATEST(g.last_seen, excluded.last_seen) ELSE excluded.last_seen END,
		   passed     = CASE WHEN g.first_seen = excluded.first_seen AND g.passed <> 0 AND (excluded.passed = 0 OR g.passed < excluded.passed) THEN g.passed ELSE excluded.passed END,
		   attempts   = CASE WHEN g.first_seen = excluded.first_seen THEN GREATEST(g.attempts, excluded.attempts) ELSE excluded.attempts END`,
		key, unix(t.First), unix(t.Last), unix(t.Passed), t.Attempts)
	if err != nil {
		return fmt.Errorf("state: write greylist triplet: %w", p.br.Observe(err))
	}
	return nil
}

// Client implements Store.
func (p *PG) Client(ctx context.Context, key string) (c Client, found bool, err error) {
	if err := p.check(ctx); err != nil {
		return Client{}, false, err
	}
	var last int64
	err = p.pool.QueryRow(ctx, `SELECT count, last_seen FROM greylist_clients WHERE key = $1`, key).Scan(&c.Count, &last)
	if errors.Is(err, pgx.ErrNoRows) {
		return Client{}, false, nil
	}
	if err != nil {
		return Client{}, false, fmt.Errorf("state: read greylist client: %w", p.br.Observe(err))
	}
	c.Last = fromUnix(last)
	return c, true, nil
}

// PutClient implements Store; of two hosts' writes the larger count stays.
func (p *PG) PutClient(ctx context.Context, key string, c Client) error {
	if err := p.check(ctx); err != nil {
		return err
	}
	_, err := p.pool.Exec(ctx,
		`INSERT INTO greylist_clients AS g (key, count, last_seen) VALUES ($1, $2, $3)
		 ON CONFLICT (key) DO UPDATE SET count = GREATEST(g.count, excluded.count), last_seen = GREATEST(g.last_seen, excluded.last_seen)`,
		key, c.Count, unix(c.Last))
	if err != nil {
		return fmt.Errorf("state: write greylist client: %w", p.br.Observe(err))
	}
	return nil
}

// ExpireGreylist implements Store.
func (p *PG) ExpireGreylist(ctx context.Context, unpassedBefore, idleBefore time.Time) (int64, error) {
	if err := p.check(ctx); err != nil {
		return 0, err
	}
	var n int64
	for _, q := range []struct {
		sql string
		arg int64
	}{
		{`DELETE FROM greylist_triplets WHERE passed = 0 AND first_seen < $1`, unix(unpassedBefore)},
		{`DELETE FROM greylist_triplets WHERE last_seen < $1`, unix(idleBefore)},
		{`DELETE FROM greylist_clients WHERE last_seen < $1`, unix(idleBefore)},
	} {
		tag, err := p.pool.Exec(ctx, q.sql, q.arg)
		if err != nil {
			return n, fmt.Errorf("state: expire greylist rows: %w", p.br.Observe(err))
		}
		n += tag.RowsAffected()
	}
	return n, nil
}

// RateBuckets implements Store.
func (p *PG) RateBuckets(ctx context.Context, key string, since time.Time) ([]Bucket, error) {
	if err := p.check(ctx); err != nil {
		return nil, err
	}
	rows, err := p.pool.Query(ctx,
		`SELECT start, count FROM rate_buckets WHERE key = $1 AND start >= $2 ORDER BY start`, key, since.Unix())
	if err != nil {
		return nil, fmt.Errorf("state: read rate buckets: %w", p.br.Observe(err))
	}
	defer rows.Close()
	var out []Bucket
	for rows.Next() {
		var start, count int64
		if err := rows.Scan(&start, &count); err != nil {
			return nil, fmt.Errorf("state: read rate buckets: %w", p.br.Observe(err))
		}
		out = append(out, Bucket{Start: fromUnix(start), Count: count})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("state: read rate buckets: %w", p.br.Observe(err))
	}
	return out, nil
}

// RateAdd implements Store: one INSERT … ON CONFLICT DO UPDATE, which
// PostgreSQL runs atomically against concurrent upserts of the same row.
func (p *PG) RateAdd(ctx context.Context, key string, start time.Time, n int64, expires time.Time) error {
	if err := p.check(ctx); err != nil {
		return err
	}
	_, err := p.pool.Exec(ctx,
		`INSERT INTO rate_buckets AS b (key, start, count, expires) VALUES ($1, $2, $3, $4)
		 ON CONFLICT (key, start) DO UPDATE SET count = b.count + excluded.count,
		 expires = GREATEST(b.expires, excluded.expires)`,
		key, start.Unix(), n, expires.Unix())
	if err != nil {
		return fmt.Errorf("state: write rate bucket: %w", p.br.Observe(err))
	}
	return nil
}

// ExpireRates implements Store.
func (p *PG) ExpireRates(ctx context.Context, now time.Time) (int64, error) {
	if err := p.check(ctx); err != nil {
		return 0, err
	}
	tag, err := p.pool.Exec(ctx, `DELETE FROM rate_buckets WHERE expires < $1`, now.Unix())
	if err != nil {
		return 0, fmt.Errorf("state: expire rate buckets: %w", p.br.Observe(err))
	}
	return tag.RowsAffected(), nil
}
