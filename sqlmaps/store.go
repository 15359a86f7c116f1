// Package sqlmaps is postkit's SQL store of domains, mailbox users,
// aliases and blacklists, together with the queries Postfix (sqlite_table(5),
// SQLITE_README; pgsql_table(5)) and Dovecot (Authentication > SQL,
// dovecot-sql.conf.ext) run against it, so that schema and queries cannot
// drift apart. The store is a SQLite file (one host) or a PostgreSQL
// database (several hosts; Source, dialect.go); what follows about files
// and journals is SQLite's.
//
// The tables are the reference installation's (postfix_domaines,
// postfix_utilisateurs, postfix_alias, postfix_alias_virtuels,
// postfix_liste_noire_expediteurs, postfix_liste_noire_destinataires) with
// their exact names, so an existing database is adopted unchanged.
//
// # Journal mode and file access
//
// The database uses SQLite's rollback journal (journal_mode=DELETE), not WAL.
// Measured on Debian 12 (Postfix 3.7, Dovecot 2.3, SQLite 3.40), see
// TestPostfixReadsWhileWriting and TestDovecotAuth:
//
//   - Postfix's sqlite client opens the file read-only as user postfix and
//     sets no busy timeout: a lookup that meets a lock fails at once
//     ("SQL prepare failed: database is locked", a fatal error: the smtpd or
//     cleanup process restarts and the client gets a temporary failure; no
//     mail is lost).
//   - With WAL, readers never meet a writer's lock, but a reader needs the
//     -wal and -shm files, and read-only it cannot create them. SQLite
//     deletes them whenever the last connection closes, and Dovecot's
//     auth-worker (which opens the file read-write as root) does exactly
//     that when it exits; from then on every Postfix lookup fails ("attempt
//     to write a readonly database") until some writer reopens the file.
//     Making the directory writable by postfix would let a compromised
//     Postfix process replace the user table.
//   - With a rollback journal, readers need nothing but read permission.
//     The cost is the collision above: a commit holds its exclusive lock for
//     about a millisecond here, and a burst of commits every 25 ms made
//     roughly one lookup in four fail; a single change made now and then
//     almost never collides.
//
// So writers keep each change to one short transaction taking the write lock
// up front (BEGIN IMMEDIATE, busy timeout BusyTimeout for other writers), and
// commands that only read never write (not even the schema version).
//
// Recommended access, as `postkit db init` sets it: database file 0640
// root:postfix (FileMode, which every write open enforces) in a directory
// 0750 root:postfix. Postfix's smtpd, cleanup and trivial-rewrite read it
// through the postfix group; Dovecot 2.3's auth-worker, which runs the SQL
// passdb/userdb queries, runs as root (the auth process itself runs as
// dovecot and only talks to auth-worker). If auth-worker is made to run as
// another user (service auth-worker { user = … }), add that user to the
// database's group.
package sqlmaps

import (
	"context"
	"database/sql"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	_ "github.com/mattn/go-sqlite3" // the store's only driver
)

//go:embed schema.sql
var schemaSQL string

// SchemaVersion is the schema version this package writes.
const SchemaVersion = 3

// BusyTimeout is how long a writer waits for another connection's lock.
const BusyTimeout = 5 * time.Second

// Store is an open database. It is safe for concurrent use.
type Store struct {
	db       conn   // queries in the store's dialect (dialect.go)
	path     string // SQLite file, or the PostgreSQL database's name for messages
	readOnly bool
	now      func() time.Time

	stmtMu sync.Mutex
	stmts  map[string]*sql.Stmt // Lookup's prepared statements, by query

	batch *txn // set on the Store Batch hands to its function
}

// Errors callers test with errors.Is. Each is wrapped with a message naming
// the row and what to do.
var (
	ErrInvalid  = errors.New("invalid value")
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflicts with an existing row")
	ErrInUse    = errors.New("still in use")
	ErrSchema   = errors.New("unexpected database schema")
)

// Open opens (creating if needed) the database at path for reading and
// writing. The file gets FileMode whatever mode it had, before anything is
// written to it. It does not create tables: call Migrate.
func Open(path string) (*Store, error) { return open(path, false) }

// FileMode is the database file's mode: it holds password hashes, so only
// its owner and group (Postfix's) may read it, and only the owner write it.
// SQLite gives its rollback journal the same mode.
const FileMode os.FileMode = 0o640

// secureFile creates the database file with FileMode when it is missing and
// gives an existing one FileMode, through the open descriptor so that the
// mode lands on the file SQLite will open. An existing file this user may
// not chmod is accepted only if it is closed to other users already.
func secureFile(path string) error {
	// O_NONBLOCK: a FIFO in its place must not hang the command.
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|syscall.O_NONBLOCK, FileMode)
	if err != nil {
		return fmt.Errorf("sqlmaps: open %s: %w: check the path and that this user may write it", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("sqlmaps: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("sqlmaps: %s is not a regular file: give database.path a file name", path)
	}
	if st.Mode().Perm() == FileMode {
		return nil
	}
	if err := f.Chmod(FileMode); err != nil {
		if st.Mode().Perm()&0o007 == 0 {
			return nil
		}
		return fmt.Errorf("sqlmaps: %s has mode %04o, so every user can read the password hashes, and this user cannot change it (%w): chmod %04o %s as its owner", path, st.Mode().Perm(), err, FileMode, path)
	}
	return nil
}

// OpenReadOnly opens an existing database for lookups only (the policy
// daemon, `postkit lookup`). It never creates, migrates or locks for writing.
func OpenReadOnly(path string) (*Store, error) { return open(path, true) }

func open(path string, ro bool) (*Store, error) {
	if path == "" {
		return nil, errors.New("sqlmaps: no database path: set database.path in postkit.yaml or pass --db")
	}
	if ro {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("sqlmaps: %w: create it with 'postkit db init'", err)
		}
	}
	mode := "rw"
	if ro {
		mode = "ro"
	} else if err := secureFile(path); err != nil {
		return nil, err
	}
	// A file: URI lets us ask for read-only mode; '%', '?' and '#' in the
	// path are escaped as RFC 3986 and SQLite's URI rules require.
	esc := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
	dsn := fmt.Sprintf("file:%s?mode=%s&_busy_timeout=%d&_txlock=immediate", esc, mode, BusyTimeout.Milliseconds())
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, fmt.Errorf("sqlmaps: open %s: %w", path, err)
	}
	// One writer connection is all SQLite allows anyway; readers in the
	// policy daemon may use a few.
	if ro {
		db.SetMaxOpenConns(4)
	} else {
		db.SetMaxOpenConns(1)
	}
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlmaps: open %s: %w: check the path and that this user may read it", path, err)
	}
	return &Store{db: conn{db, sqliteDialect}, path: path, readOnly: ro, now: time.Now}, nil
}

// Close closes the database.
func (s *Store) Close() error {
	s.stmtMu.Lock()
	for _, st := range s.stmts {
		st.Close()
	}
	s.stmts = nil
	s.stmtMu.Unlock()
	return s.db.Close()
}

// Path returns the database file name (SQLite) or the database's name and
// server (PostgreSQL), for messages.
func (s *Store) Path() string { return s.path }

// Driver returns DriverSQLite or DriverPostgreSQL.
func (s *Store) Driver() string { return s.db.d.name }

// DB returns the underlying handle, for tests and read-only reports.
func (s *Store) DB() *sql.DB { return s.db.DB }

// expected lists the columns Postfix, Dovecot and this package rely on.
var expected = map[string][]string{
	"postfix_alias":                     {"id", "alias", "destination", "active"},
	"postfix_alias_virtuels":            {"id", "courriel", "destination", "active"},
	"postfix_domaines":                  {"id", "domaine", "defaut", "active"},
	"postfix_liste_noire_destinataires": {"id", "courriel", "action", "active"},
	"postfix_liste_noire_expediteurs":   {"id", "courriel", "code_retour", "message", "active"},
	"postfix_utilisateurs":              {"id", "utilisateur", "mot_de_passe", "nom_complet", "rep_perso", "uid", "gid", "privilege", "prefixe", "active"},
	"postkit_liste_blanche_spam":        {"id", "domaine", "domaine_expediteur", "active"},
	"postkit_quotas":                    {"id", "cible", "octets", "active"},
	"postkit_schema_version":            {"version", "applied_at"},
}

// Migrate creates missing tables, checks that existing ones have the
// expected columns, switches the journal to rollback mode (see the package
// documentation) and records the schema version. It is idempotent and never
// changes existing rows, so it adopts a database made by the reference
// installation's postfix.sql.
func (s *Store) Migrate(ctx context.Context) error {
	if s.readOnly {
		return errors.New("sqlmaps: database opened read-only: open it with Open to migrate")
	}
	if !s.db.d.pg() {
		// journal_mode cannot change inside a transaction.
		var mode string
		if err := s.db.QueryRowContext(ctx, "PRAGMA journal_mode=DELETE").Scan(&mode); err != nil {
			return fmt.Errorf("sqlmaps: set journal mode on %s: %w", s.path, err)
		}
		if mode != "delete" {
			return fmt.Errorf("sqlmaps: %s stays in journal mode %q: close every other program using it and retry", s.path, mode)
		}
	}
	return s.tx(ctx, func(tx *txn) error {
		if s.db.d.pg() {
			// Hosts migrating at once take turns (a transaction-scoped
			// advisory lock; the key is arbitrary but fixed).
			if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(7304112)"); err != nil {
				return fmt.Errorf("sqlmaps: lock %s for migration: %w", s.path, err)
			}
		}
		var cur sql.NullInt64
		if s.tableExists(ctx, tx, "postkit_schema_version") {
			if err := tx.QueryRowContext(ctx, "SELECT max(version) FROM postkit_schema_version").Scan(&cur); err != nil {
				return fmt.Errorf("sqlmaps: read schema version: %w", err)
			}
			if cur.Int64 > SchemaVersion {
				return errf(ErrSchema, "%s has schema version %d, newer than this postkit's %d: upgrade postkit", s.path, cur.Int64, SchemaVersion)
			}
		}
		if _, err := tx.ExecContext(ctx, s.db.d.schema()); err != nil {
			return fmt.Errorf("sqlmaps: create tables in %s: %w", s.path, err)
		}
		if err := checkColumns(ctx, tx, s.db.d); err != nil {
			return err
		}
		if cur.Int64 < SchemaVersion {
			if _, err := tx.ExecContext(ctx, "INSERT INTO postkit_schema_version (version, applied_at) VALUES (?, ?)",
				SchemaVersion, s.now().UTC().Format(time.RFC3339)); err != nil {
				return fmt.Errorf("sqlmaps: record schema version: %w", err)
			}
		}
		return nil
	})
}

// Version returns the recorded schema version, 0 for a database postkit has
// not migrated yet (e.g. the reference installation's).
func (s *Store) Version(ctx context.Context) (int, error) {
	var v sql.NullInt64
	var n int
	if err := s.db.QueryRowContext(ctx, s.db.d.tableQuery(), "postkit_schema_version").Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlmaps: read schema version of %s: %w", s.path, err)
	}
	if n == 0 {
		return 0, nil
	}
	if err := s.db.QueryRowContext(ctx, "SELECT max(version) FROM postkit_schema_version").Scan(&v); err != nil {
		return 0, fmt.Errorf("sqlmaps: read schema version of %s: %w", s.path, err)
	}
	return int(v.Int64), nil
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func (s *Store) tableExists(ctx context.Context, q querier, name string) bool {
	var n int
	err := q.QueryRowContext(ctx, s.db.d.tableQuery(), name).Scan(&n)
	return err == nil && n == 1
}

func checkColumns(ctx context.Context, q querier, d dialect) error {
	for table, cols := range expected {
		rows, err := q.QueryContext(ctx, d.columnsQuery(), table)
		if err != nil {
			return fmt.Errorf("sqlmaps: inspect %s: %w", table, err)
		}
		have := map[string]bool{}
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				rows.Close()
				return fmt.Errorf("sqlmaps: inspect %s: %w", table, err)
			}
			have[strings.ToLower(n)] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("sqlmaps: inspect %s: %w", table, err)
		}
		for _, c := range cols {
			if !have[c] {
				return errf(ErrSchema, "table %s has no column %s: the database was not made from the reference schema; fix it by hand", table, c)
			}
		}
	}
	return nil
}

// tx runs fn in one write transaction (SQLite: BEGIN IMMEDIATE through the
// DSN's _txlock): every change commits together or not at all.
func (s *Store) tx(ctx context.Context, fn func(*txn) error) error {
	if s.readOnly {
		return errors.New("sqlmaps: database opened read-only: open it with Open to change it")
	}
	if s.batch != nil {
		return fn(s.batch)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlmaps: begin transaction on %s: %w", s.path, err)
	}
	if err := fn(&txn{tx, s.db.d}); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlmaps: commit to %s: %w", s.path, err)
	}
	return nil
}

// Batch runs fn with a Store whose changes all belong to one transaction:
// it commits when fn returns nil, and nothing of it remains otherwise. The
// Store given to fn is valid only during the call and only for changes
// (Add*, SetActive, SetUser, Delete*).
func (s *Store) Batch(ctx context.Context, fn func(b *Store) error) error {
	return s.tx(ctx, func(tx *txn) error {
		return fn(&Store{db: s.db, path: s.path, now: s.now, batch: tx})
	})
}

// SetAccess gives the database file mode 0640 and group gid (the postfix
// group), and, when dirOwned is true, its directory mode 0750 and the same
// group. Owner stays the caller (root in production). See the package
// documentation for why readers need no write access.
func SetAccess(path string, gid int, dirOwned bool) error {
	if err := os.Chown(path, -1, gid); err != nil {
		return fmt.Errorf("sqlmaps: %w: run as root or give the group yourself", err)
	}
	if err := os.Chmod(path, FileMode); err != nil {
		return fmt.Errorf("sqlmaps: %w", err)
	}
	if dirOwned {
		dir := filepath.Dir(path)
		if err := os.Chown(dir, -1, gid); err != nil {
			return fmt.Errorf("sqlmaps: %w", err)
		}
		if err := os.Chmod(dir, 0o750); err != nil {
			return fmt.Errorf("sqlmaps: %w", err)
		}
	}
	return nil
}

// storeError carries one of the Err* kinds behind a full message.
type storeError struct {
	kind error
	msg  string
}

func (e *storeError) Error() string { return "sqlmaps: " + e.msg }
func (e *storeError) Unwrap() error { return e.kind }

func errf(kind error, format string, args ...any) error {
	return &storeError{kind: kind, msg: fmt.Sprintf(format, args...)}
}
