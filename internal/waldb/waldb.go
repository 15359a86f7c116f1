// Package waldb opens postkit's own SQLite files — the policy daemon's
// greylisting and rate-limit state, the spam filter's Bayes store — as
// opposed to the map database Postfix and Dovecot read (sqlmaps, which stays
// in rollback-journal mode, see its package doc). Only postkit's daemons and
// commands open these, as one user, so they use WAL: readers never wait for
// the writer.
package waldb

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strings"
	"time"

	_ "github.com/mattn/go-sqlite3" // database/sql driver "sqlite3"
)

// Open opens the database at path (":memory:" for tests), creating the file
// with mode 0600 when missing (these files hold client and sender addresses,
// or what users' mail says), in WAL mode with a 5 s busy timeout and
// immediate write transactions, with at most conns connections, and runs
// schema (CREATE … IF NOT EXISTS statements). what names the database in
// errors, e.g. "state", "bayesdb".
func Open(path, what, schema string, conns int) (*sql.DB, error) {
	if path == "" || strings.ContainsRune(path, '?') {
		return nil, fmt.Errorf("%s: database path %q: want a file path without '?', e.g. /var/lib/postkit/%s.sqlite", what, path, what)
	}
	if path == ":memory:" {
		conns = 1 // each connection would be a database of its own
	} else {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("%s: %w; create the directory or fix its permissions", what, err)
		}
		f.Close()
	}
	db, err := sql.Open("sqlite3", path+"?_journal_mode=WAL&_busy_timeout=5000&_synchronous=NORMAL&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("%s: open %s: %w", what, path, err)
	}
	db.SetMaxOpenConns(max(conns, 1))
	db.SetConnMaxIdleTime(0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := db.ExecContext(ctx, schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("%s: create schema in %s: %w; is it a postkit %s database?", what, path, err, what)
	}
	return db, nil
}
