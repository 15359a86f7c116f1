package sqlmaps

import (
	"context"
	"database/sql"
	"regexp"
	"strconv"
	"strings"
)

// The store runs on SQLite (one host, the default) or PostgreSQL (several
// hosts sharing one database). Every query is written once, in SQLite's
// spelling with ? placeholders; dialect holds everything that differs
// between the two, and nothing else does:
//
//   - placeholders: ? and ?N become $N on PostgreSQL (rebind);
//   - types: the schema file is SQLite's; on PostgreSQL INTEGER PRIMARY KEY
//     AUTOINCREMENT is BIGSERIAL PRIMARY KEY, INTEGER is BIGINT (SQLite's
//     integers are 64-bit: quotas above 2 GiB), and the reference's BOOLEAN
//     defaut is INTEGER, so that the same "= 1" / "= '1'" tests work on both;
//   - catalog: sqlite_master and pragma_table_info against
//     information_schema;
//   - string functions: substr with a negative start, char, instr and
//     COLLATE NOCASE, which PostgreSQL spells right, chr, strpos and lower;
//   - recursion: PostgreSQL allows one reference to the recursive table, so
//     the sender-login query joins its two recursive steps laterally
//     (senderLoginQuery).
//
// Upserts are INSERT … ON CONFLICT DO NOTHING, which both understand.
type dialect struct {
	name     string // "sqlite" or "postgresql"
	numbered bool   // $N placeholders
}

var (
	sqliteDialect   = dialect{name: DriverSQLite}
	postgresDialect = dialect{name: DriverPostgreSQL, numbered: true}
)

func (d dialect) pg() bool { return d.name == DriverPostgreSQL }

// rebind turns ? and ?N placeholders (outside string literals) into $N.
func (d dialect) rebind(q string) string {
	if !d.numbered || !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	n := 0
	inStr := false
	for i := 0; i < len(q); i++ {
		c := q[i]
		if c == '\'' {
			inStr = !inStr
		}
		if c != '?' || inStr {
			b.WriteByte(c)
			continue
		}
		j := i + 1
		for j < len(q) && q[j] >= '0' && q[j] <= '9' {
			j++
		}
		if j > i+1 {
			b.WriteString("$" + q[i+1:j])
			i = j - 1
			continue
		}
		n++
		b.WriteString("$" + strconv.Itoa(n))
	}
	return b.String()
}

var (
	reAutoinc = regexp.MustCompile(`INTEGER PRIMARY KEY AUTOINCREMENT`)
	reInteger = regexp.MustCompile(`\bINTEGER\b`)
	reBoolean = regexp.MustCompile(`\bBOOLEAN\b`)
)

// schema is schema.sql in this dialect's types.
func (d dialect) schema() string {
	if !d.pg() {
		return schemaSQL
	}
	s := reAutoinc.ReplaceAllString(schemaSQL, "BIGSERIAL PRIMARY KEY")
	s = reInteger.ReplaceAllString(s, "BIGINT")
	return reBoolean.ReplaceAllString(s, "INTEGER")
}

// tablesQuery counts the tables named ? in the current schema.
func (d dialect) tableQuery() string {
	if d.pg() {
		return "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = ?"
	}
	return "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?"
}

// columnsQuery lists the column names of table ?.
func (d dialect) columnsQuery() string {
	if d.pg() {
		return "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ?"
	}
	return "SELECT name FROM pragma_table_info(?)"
}

// endsWith is the condition "lower(col) ends with ?1" (?1 is lower case).
func (d dialect) endsWith(col string) string {
	if d.pg() {
		return "lower(right(" + col + ", length(?1))) = ?1"
	}
	return "lower(substr(" + col + ", -length(?1))) = ?1"
}

// nocaseEq compares col with the next placeholder, ignoring ASCII case.
func (d dialect) nocaseEq(col string) string {
	if d.pg() {
		return "lower(" + col + ") = lower(?)"
	}
	return col + " = ? COLLATE NOCASE"
}

// char is the character with code n.
func (d dialect) char(n int) string {
	if d.pg() {
		return "chr(" + strconv.Itoa(n) + ")"
	}
	return "char(" + strconv.Itoa(n) + ")"
}

// instr is the 1-based position of needle in s, 0 when absent.
func (d dialect) instr(s, needle string) string {
	if d.pg() {
		return "strpos(" + s + ", " + needle + ")"
	}
	return "instr(" + s + ", " + needle + ")"
}

// args binds Go booleans as 1 and 0, as SQLite stores them, since the
// reference's flag columns (active, defaut) are integers on both.
func args(a []any) []any {
	for i, v := range a {
		if b, ok := v.(bool); ok {
			if b {
				a[i] = 1
			} else {
				a[i] = 0
			}
		}
	}
	return a
}

// conn and txn run queries written with ? placeholders in their dialect.
type conn struct {
	*sql.DB
	d dialect
}

func (c conn) QueryContext(ctx context.Context, q string, a ...any) (*sql.Rows, error) {
	return c.DB.QueryContext(ctx, c.d.rebind(q), args(a)...)
}

func (c conn) QueryRowContext(ctx context.Context, q string, a ...any) *sql.Row {
	return c.DB.QueryRowContext(ctx, c.d.rebind(q), args(a)...)
}

func (c conn) ExecContext(ctx context.Context, q string, a ...any) (sql.Result, error) {
	return c.DB.ExecContext(ctx, c.d.rebind(q), args(a)...)
}

func (c conn) PrepareContext(ctx context.Context, q string) (*sql.Stmt, error) {
	return c.DB.PrepareContext(ctx, c.d.rebind(q))
}

type txn struct {
	*sql.Tx
	d dialect
}

func (t *txn) QueryContext(ctx context.Context, q string, a ...any) (*sql.Rows, error) {
	return t.Tx.QueryContext(ctx, t.d.rebind(q), args(a)...)
}

func (t *txn) QueryRowContext(ctx context.Context, q string, a ...any) *sql.Row {
	return t.Tx.QueryRowContext(ctx, t.d.rebind(q), args(a)...)
}

func (t *txn) ExecContext(ctx context.Context, q string, a ...any) (sql.Result, error) {
	return t.Tx.ExecContext(ctx, t.d.rebind(q), args(a)...)
}

// isNoTable reports whether err says a table is missing (a database at an
// older schema version).
func isNoTable(err error) bool {
	if err == nil {
		return false
	}
	m := err.Error()
	return strings.Contains(m, "no such table") || strings.Contains(m, "SQLSTATE 42P01")
}

// Query, QueryRow and Exec without a context (tests, reports) rebind too.
func (c conn) Query(q string, a ...any) (*sql.Rows, error) {
	return c.QueryContext(context.Background(), q, a...)
}

func (c conn) QueryRow(q string, a ...any) *sql.Row {
	return c.QueryRowContext(context.Background(), q, a...)
}

func (c conn) Exec(q string, a ...any) (sql.Result, error) {
	return c.ExecContext(context.Background(), q, a...)
}
