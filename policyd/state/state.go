// Package state keeps the policy daemon's persistent state — greylisting
// triplets and auto-allowed clients (postgrey's model), and rate-limit counters —
// in one SQLite database (https://sqlite.org/wal.html: write-ahead log, busy
// timeout), so that a restart loses neither greylisting history nor counters.
//
// The schema is created on Open. Times are stored as Unix seconds: the policy
// checks never need finer resolution.
package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/postkit/postkit/internal/waldb"
)

// schema is applied on every Open; every statement is idempotent.
const schema = `
CREATE TABLE IF NOT EXISTS greylist_triplets (
	key        TEXT PRIMARY KEY,
	first_seen INTEGER NOT NULL,
	last_seen  INTEGER NOT NULL,
	passed     INTEGER NOT NULL DEFAULT 0,
	attempts   INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS greylist_triplets_first ON greylist_triplets(first_seen);
CREATE INDEX IF NOT EXISTS greylist_triplets_last ON greylist_triplets(last_seen);
CREATE TABLE IF NOT EXISTS greylist_clients (
	key       TEXT PRIMARY KEY,
	count     INTEGER NOT NULL,
	last_seen INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS greylist_clients_last ON greylist_clients(last_seen);
CREATE TABLE IF NOT EXISTS rate_buckets (
	key     TEXT NOT NULL,
	start   INTEGER NOT NULL,
	count   INTEGER NOT NULL,
	expires INTEGER NOT NULL,
	PRIMARY KEY (key, start)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rate_buckets_expires ON rate_buckets(expires);
`

// DB is the state database. It is safe for concurrent use.
type DB struct {
	db   *sql.DB
	path string
}

// Open opens (creating if needed) the state database at path, switches it to
// WAL mode with a 5 s busy timeout and creates the schema. A new file is
// created with mode 0600: it holds client addresses and sender addresses.
func Open(path string) (*DB, error) {
	// One connection: SQLite serialises writers anyway, and a single
	// connection never waits on its own lock.
	db, err := waldb.Open(path, "state", schema, 1)
	if err != nil {
		return nil, err
	}
	return &DB{db: db, path: path}, nil
}

// Close closes the database.
func (d *DB) Close() error { return d.db.Close() }

// Path returns the file the database was opened from.
func (d *DB) Path() string { return d.path }

func unix(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

func fromUnix(s int64) time.Time {
	if s == 0 {
		return time.Time{}
	}
	return time.Unix(s, 0).UTC()
}

// Triplet is the greylisting record of one (client network, sender,
// recipient) triplet.
type Triplet struct {
	First    time.Time // first attempt in the current greylisting round
	Last     time.Time // latest attempt
	Passed   time.Time // first attempt let through after the delay; zero until then
	Attempts int       // attempts deferred in the current round
}

// Triplet returns the record stored under key; found is false if there is none.
func (d *DB) Triplet(ctx context.Context, key string) (t Triplet, found bool, err error) {
	var first, last, passed int64
	err = d.db.QueryRowContext(ctx,
		`SELECT first_seen, last_seen, passed, attempts FROM greylist_triplets WHERE key = ?`, key).
		Scan(&first, &last, &passed, &t.Attempts)
	if errors.Is(err, sql.ErrNoRows) {
		return Triplet{}, false, nil
	}
	if err != nil {
		return Triplet{}, false, fmt.Errorf("state: read greylist triplet: %w", err)
	}
	t.First, t.Last, t.Passed = fromUnix(first), fromUnix(last), fromUnix(passed)
	return t, true, nil
}

// PutTriplet stores t under key, replacing any previous record.
func (d *DB) PutTriplet(ctx context.Context, key string, t Triplet) error {
	_, err := d.db.ExecContext(ctx,
		`INSERT OR REPLACE INTO greylist_triplets (key, first_seen, last_seen, passed, attempts) VALUES (?, ?, ?, ?, ?)`,
		key, unix(t.First), unix(t.Last), unix(t.Passed), t.Attempts)
	if err != nil {
		return fmt.Errorf("state: write greylist triplet: %w", err)
	}
	return nil
}

// Client is the auto-allow record of one client network: how many times it
// passed greylisting, and when that count last changed.
type Client struct {
	Count int
	Last  time.Time
}

// Client returns the record stored under key; found is false if there is none.
func (d *DB) Client(ctx context.Context, key string) (c Client, found bool, err error) {
	var last int64
	err = d.db.QueryRowContext(ctx,
		`SELECT count, last_seen FROM greylist_clients WHERE key = ?`, key).Scan(&c.Count, &last)
	if errors.Is(err, sql.ErrNoRows) {
		return Client{}, false, nil
	}
	if err != nil {
		return Client{}, false, fmt.Errorf("state: read greylist client: %w", err)
	}
	c.Last = fromUnix(last)
	return c, true, nil
}

// PutClient stores c under key, replacing any previous record.
func (d *DB) PutClient(ctx context.Context, key string, c Client) error {
	_, err := d.db.ExecContext(ctx,
		`INSERT OR REPLACE INTO greylist_clients (key, count, last_seen) VALUES (?, ?, ?)`,
		key, c.Count, unix(c.Last))
	if err != nil {
		return fmt.Errorf("state: write greylist client: %w", err)
	}
	return nil
}

// ExpireGreylist deletes the triplets that never passed and were first seen
// before unpassedBefore (their retry window is over), the triplets and client
// records last seen before idleBefore (older than the maximum age), and
// returns how many rows it deleted.
func (d *DB) ExpireGreylist(ctx context.Context, unpassedBefore, idleBefore time.Time) (int64, error) {
	var n int64
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`DELETE FROM greylist_triplets WHERE passed = 0 AND first_seen < ?`, []any{unix(unpassedBefore)}},
		{`DELETE FROM greylist_triplets WHERE last_seen < ?`, []any{unix(idleBefore)}},
		{`DELETE FROM greylist_clients WHERE last_seen < ?`, []any{unix(idleBefore)}},
	} {
		res, err := d.db.ExecContext(ctx, q.sql, q.args...)
		if err != nil {
			return n, fmt.Errorf("state: expire greylist rows: %w", err)
		}
		k, _ := res.RowsAffected()
		n += k
	}
	return n, nil
}

// Bucket is one rate-limit counter bucket: the events counted from Start for
// the bucket's width (which the caller encodes in the key).
type Bucket struct {
	Start time.Time
	Count int64
}

// RateBuckets returns key's buckets that start at or after since, oldest first.
func (d *DB) RateBuckets(ctx context.Context, key string, since time.Time) ([]Bucket, error) {
	rows, err := d.db.QueryContext(ctx,
		`SELECT start, count FROM rate_buckets WHERE key = ? AND start >= ? ORDER BY start`, key, since.Unix())
	if err != nil {
		return nil, fmt.Errorf("state: read rate buckets: %w", err)
	}
	defer rows.Close()
	var out []Bucket
	for rows.Next() {
		var start, count int64
		if err := rows.Scan(&start, &count); err != nil {
			return nil, fmt.Errorf("state: read rate buckets: %w", err)
		}
		out = append(out, Bucket{Start: fromUnix(start), Count: count})
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("state: read rate buckets: %w", err)
	}
	return out, nil
}

// RateAdd adds n to key's bucket starting at start, creating it if needed;
// the bucket may be deleted by ExpireRates once expires has passed.
func (d *DB) RateAdd(ctx context.Context, key string, start time.Time, n int64, expires time.Time) error {
	_, err := d.db.ExecContext(ctx,
		`INSERT INTO rate_buckets (key, start, count, expires) VALUES (?, ?, ?, ?)
		 ON CONFLICT (key, start) DO UPDATE SET count = count + excluded.count,
		 expires = max(expires, excluded.expires)`,
		key, start.Unix(), n, expires.Unix())
	if err != nil {
		return fmt.Errorf("state: write rate bucket: %w", err)
	}
	return nil
}

// ExpireRates deletes the buckets whose expiry is before now and returns how
// many it deleted.
func (d *DB) ExpireRates(ctx context.Context, now time.Time) (int64, error) {
	res, err := d.db.ExecContext(ctx, `DELETE FROM rate_buckets WHERE expires < ?`, now.Unix())
	if err != nil {
		return 0, fmt.Errorf("state: expire rate buckets: %w", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}
