// Package pgpool opens the PostgreSQL connection pools of postkit's shared
// daemon state (policyd/state, spam/bayesdb, milter/dmarc/store) with the same settings, and
// holds their breaker: once the server could not be reached, calls fail at
// once for a short pause instead of each waiting for a connect timeout, so
// that an outage costs the mail flowing meanwhile nothing but the state.
package pgpool

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Options tunes a pool; the zero value is usable.
type Options struct {
	// MaxConns bounds the pool. Default 8.
	MaxConns int32
	// ConnectTimeout bounds one connection attempt. Default 2s.
	ConnectTimeout time.Duration
	// Password, when set, is used instead of the DSN's (read from a file:
	// never from argv).
	Password string
	// Pause is how long calls fail at once after the server could not be
	// reached. Default 1s.
	Pause time.Duration
	// AsyncCommit commits without waiting for the WAL flush
	// (synchronous_commit off), for state whose last fraction of a second
	// may be lost when the server crashes.
	AsyncCommit bool
}

// Open parses dsn and returns a pool that connects on first use; it does
// not fail when the server is down. what names the store in errors.
func Open(ctx context.Context, what, dsn string, o Options) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("%s: postgresql DSN: %v; want e.g. postgres://postkit@db.example:5432/postkit", what, err)
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 8
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 2 * time.Second
	}
	cfg.MaxConns = o.MaxConns
	cfg.ConnConfig.ConnectTimeout = o.ConnectTimeout
	cfg.HealthCheckPeriod = 5 * time.Second
	if o.Password != "" {
		cfg.ConnConfig.Password = o.Password
	}
	if o.AsyncCommit {
		cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: postgresql pool: %w", what, err)
	}
	return pool, nil
}

// Breaker remembers that the server could not be reached.
type Breaker struct {
	Pause time.Duration // default 1s
	What  string        // names the store in errors

	mu    sync.Mutex
	until time.Time
}

// Allow returns an error while the pause after an unreachable server runs.
func (b *Breaker) Allow() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if wait := time.Until(b.until); wait > 0 {
		return fmt.Errorf("%s: postgresql unreachable; retrying in %v", b.What, wait.Round(time.Millisecond))
	}
	return nil
}

// Observe starts the pause when err says the server could not be reached
// (a failed connection, not a failed statement), and returns err.
func (b *Breaker) Observe(err error) error {
	if err == nil || !Unreachable(err) {
		return err
	}
	pause := b.Pause
	if pause <= 0 {
		pause = time.Second
	}
	b.mu.Lock()
	b.until = time.Now().Add(pause)
	b.mu.Unlock()
	return err
}

// Unreachable reports whether err is a connection failure rather than an
// error of the statement.
func Unreachable(err error) bool {
	var ce *pgconn.ConnectError
	var ne net.Error
	return errors.As(err, &ce) || errors.As(err, &ne) || pgconn.SafeToRetry(err)
}

// Schema creates a store's tables on the first call that reaches the
// server, once per process, under a PostgreSQL advisory lock so that hosts
// starting together take turns. The DDL must be idempotent (CREATE … IF NOT
// EXISTS): every host runs it once.
type Schema struct {
	What string // the store, in errors: "state", "bayesdb", "dmarc store"
	Lock int64  // advisory lock key, one per store
	DDL  string

	done atomic.Bool
	mu   sync.Mutex
}

// Ready reports whether the tables were created (or found) by this process.
func (s *Schema) Ready() bool { return s.done.Load() }

// Ensure creates the tables unless this process already did.
func (s *Schema) Ensure(ctx context.Context, pool *pgxpool.Pool) error {
	if s.done.Load() {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done.Load() {
		return nil
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("%s: postgresql unreachable: %w", s.What, err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, s.Lock); err != nil {
		return fmt.Errorf("%s: postgresql schema lock: %w", s.What, err)
	}
	defer conn.Exec(context.Background(), `SELECT pg_advisory_unlock($1)`, s.Lock)
	if _, err := conn.Exec(ctx, s.DDL); err != nil {
		return fmt.Errorf("%s: create the schema in postgresql: %w; does the role own the database or have CREATE on it?", s.What, err)
	}
	s.done.Store(true)
	return nil
}
