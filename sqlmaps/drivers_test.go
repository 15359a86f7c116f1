package sqlmaps

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postkit/postkit/internal/pgtest"
)

// testDrivers are the drivers every store test runs against: the same test
// body, once on a SQLite file and once on a real PostgreSQL 15 (internal/pgtest,
// skipped with -short).
var testDrivers = []string{DriverSQLite, DriverPostgreSQL}

// testDB makes stores of one driver for one test.
type testDB struct {
	driver string
	pg     *pgtest.Server
	n      int
	last   Source // of the last store New made
}

// eachDriver runs body once per driver, as a subtest named after it.
func eachDriver(t *testing.T, body func(t *testing.T, db *testDB)) {
	for _, d := range testDrivers {
		t.Run(d, func(t *testing.T) {
			db := &testDB{driver: d}
			if d == DriverPostgreSQL {
				db.pg = pgtest.Start(t)
			}
			body(t, db)
		})
	}
}

// Source returns a new empty database of the driver.
func (db *testDB) Source(t *testing.T) Source {
	t.Helper()
	if db.driver == DriverSQLite {
		return Source{Driver: DriverSQLite, Path: filepath.Join(t.TempDir(), "postfix.sqlite")}
	}
	db.n++
	return Source{Driver: DriverPostgreSQL, DSN: db.pg.CreateDatabase(fmt.Sprintf("postkit%d", db.n))}
}

// New returns a migrated, empty store, closed when t ends.
func (db *testDB) New(t *testing.T) *Store {
	t.Helper()
	db.last = db.Source(t)
	s, err := db.last.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	s.now = func() time.Time { return time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC) }
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// ReadOnly opens the last store's database again, read-only.
func (db *testDB) ReadOnly(t *testing.T) *Store {
	t.Helper()
	ro, err := db.last.OpenReadOnly()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ro.Close() })
	return ro
}

// schemaText describes the reference tables' definitions, to prove a
// migration leaves them alone.
func schemaText(t *testing.T, s *Store) string {
	t.Helper()
	q := "SELECT group_concat(sql, ';') FROM sqlite_master WHERE name LIKE 'postfix_%'"
	if s.db.d.pg() {
		q = "SELECT string_agg(table_name || '.' || column_name || ' ' || data_type, ';' ORDER BY table_name, ordinal_position) FROM information_schema.columns WHERE table_schema = current_schema() AND table_name LIKE 'postfix_%'"
	}
	var out string
	if err := s.db.QueryRow(q).Scan(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestRebind(t *testing.T) {
	for in, want := range map[string]string{
		"SELECT a FROM t WHERE b = ? AND c = ?":               "SELECT a FROM t WHERE b = $1 AND c = $2",
		"WHERE lower(right(k, length(?1))) = ?1":              "WHERE lower(right(k, length($1))) = $1",
		"SELECT '?' || x FROM t WHERE y = ?":                  "SELECT '?' || x FROM t WHERE y = $1",
		"SELECT 'it''s?' FROM t WHERE y IN (?, ?, ?)":         "SELECT 'it''s?' FROM t WHERE y IN ($1, $2, $3)",
		"INSERT INTO t (a) VALUES (?) ON CONFLICT DO NOTHING": "INSERT INTO t (a) VALUES ($1) ON CONFLICT DO NOTHING",
	} {
		if got := postgresDialect.rebind(in); got != want {
			t.Errorf("rebind(%q) = %q; want %q", in, got, want)
		}
		if got := sqliteDialect.rebind(in); got != in {
			t.Errorf("sqlite rebind changed %q to %q", in, got)
		}
	}
	pg := postgresDialect.schema()
	for _, bad := range []string{"AUTOINCREMENT", "BOOLEAN", "octets INTEGER"} {
		if strings.Contains(pg, bad) {
			t.Errorf("PostgreSQL schema still has %q", bad)
		}
	}
	if !strings.Contains(pg, "id BIGSERIAL PRIMARY KEY") || !strings.Contains(pg, "defaut INTEGER NOT NULL") {
		t.Errorf("PostgreSQL schema lacks its types:\n%s", pg)
	}
}
