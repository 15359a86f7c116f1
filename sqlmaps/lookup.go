package sqlmaps

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/cases"
)

// Fold is how a lookup key is case-folded before the query, as Postfix does
// for every table (postmap(1) without -f).
type Fold int

const (
	// FoldASCII lower-cases ASCII letters only: Postfix with
	// smtputf8_enable = no (postkit's default).
	FoldASCII Fold = iota
	// FoldUTF8 applies Unicode full case folding ("ß" becomes "ss") and
	// refuses malformed UTF-8 keys: Postfix with smtputf8_enable = yes.
	FoldUTF8
)

// Warning is a non-fatal remark Postfix would log for a lookup (empty key,
// empty result); Lookup returns them so callers can print them as postmap does.
type Warning string

// Lookup answers what `postmap -q key sqlite:FILE` answers for m's .cf file
// over this database (sqlite_table(5)): the key is folded; '%s', '%u' and
// '%d' in the query are expanded (a key without "@" suppresses a query using
// %d, an empty local part one using %u); the first column of every row is
// kept, NULL and empty values are skipped (the latter with a warning); the
// values are joined with ",". found is false when nothing is left.
//
// Expansions are bound as parameters rather than spliced with quote
// doubling as Postfix does: the rows matched are the same.
func (s *Store) Lookup(ctx context.Context, m Map, key string, fold Fold) (value string, found bool, warnings []Warning, err error) {
	warn := func(format string, args ...any) {
		warnings = append(warnings, Warning(fmt.Sprintf(format, args...)))
	}
	table := "sqlite:" + m.File
	switch fold {
	case FoldUTF8:
		if !utf8.ValidString(key) {
			warn("%s: non-UTF-8 key %q: malformed UTF-8 or invalid codepoint", table, key)
			return "", false, warnings, nil
		}
		key = cases.Fold().String(key)
	default:
		key = asciiLower(key)
	}
	if key == "" {
		warn("table %q: empty query string -- ignored", table)
		return "", false, warnings, nil
	}
	q := m.Query
	if s.db.d.pg() && m.PGQuery != "" {
		q = m.PGQuery
	}
	query, args, ok, err := expandQuery(q, key)
	if err != nil || !ok {
		return "", false, warnings, err
	}
	stmt, kept, err := s.prepared(ctx, query)
	if err != nil {
		return "", false, warnings, fmt.Errorf("sqlmaps: lookup in %s: %w", m.File, err)
	}
	if !kept {
		defer stmt.Close()
	}
	rows, err := stmt.QueryContext(ctx, args...)
	if err != nil {
		return "", false, warnings, fmt.Errorf("sqlmaps: lookup in %s: %w", m.File, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return "", false, warnings, fmt.Errorf("sqlmaps: lookup in %s: %w", m.File, err)
	}
	// Postfix reads the first column only (sqlite3_column_text(…, 0)).
	var first sql.NullString
	dest := make([]any, len(cols))
	dest[0] = &first
	for i := 1; i < len(dest); i++ {
		dest[i] = new(any)
	}
	var vals []string
	for rows.Next() {
		if err := rows.Scan(dest...); err != nil {
			return "", false, warnings, fmt.Errorf("sqlmaps: lookup in %s: %w", m.File, err)
		}
		switch {
		case !first.Valid: // NULL: skipped silently
		case first.String == "":
			warn("table %q: empty lookup result for: %q -- ignored", table, key)
		default:
			vals = append(vals, first.String)
		}
	}
	if err := rows.Err(); err != nil {
		return "", false, warnings, fmt.Errorf("sqlmaps: lookup in %s: %w", m.File, err)
	}
	if len(vals) == 0 {
		return "", false, warnings, nil
	}
	return strings.Join(vals, ","), true, warnings, nil
}

// maxStmts bounds the prepared statements a Store keeps: one per map query
// shape, so a handful in practice.
const maxStmts = 32

// prepared returns a prepared statement for query, kept for the Store's
// life unless kept is false (then the caller closes it). It holds no data: every execution reads the rows as they are then
// (and SQLite prepares it again by itself if the schema changed). Preparing
// is most of a lookup's cost: about 100 µs for the sender-login query
// against 27 µs to run it (BenchmarkSenderMayUse).
func (s *Store) prepared(ctx context.Context, query string) (st *sql.Stmt, kept bool, err error) {
	s.stmtMu.Lock()
	defer s.stmtMu.Unlock()
	if st, ok := s.stmts[query]; ok {
		return st, true, nil
	}
	if st, err = s.db.PrepareContext(ctx, query); err != nil {
		return nil, false, err
	}
	if s.stmts == nil {
		s.stmts = map[string]*sql.Stmt{}
	}
	if len(s.stmts) >= maxStmts {
		return st, false, nil
	}
	s.stmts[query] = st
	return st, true, nil
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// expandQuery turns a sqlite_table(5) query into a parameterised one: every
// single-quoted literal containing % expansions becomes a ? bound to its
// expansion for key. ok is false when Postfix would skip the query.
func expandQuery(q, key string) (query string, args []any, ok bool, err error) {
	local, domain, hasAt := key, "", false
	if i := strings.LastIndexByte(key, '@'); i >= 0 {
		local, domain, hasAt = key[:i], key[i+1:], true
	}
	var out strings.Builder
	for i := 0; i < len(q); i++ {
		c := q[i]
		if c == '%' {
			return "", nil, false, fmt.Errorf("sqlmaps: query %q: %% expansion outside quotes is not supported", q)
		}
		if c != '\'' {
			out.WriteByte(c)
			continue
		}
		// A literal runs to the next quote not doubled.
		var lit strings.Builder
		j := i + 1
		for ; j < len(q); j++ {
			if q[j] == '\'' {
				if j+1 < len(q) && q[j+1] == '\'' {
					lit.WriteByte('\'')
					j++
					continue
				}
				break
			}
			lit.WriteByte(q[j])
		}
		if j >= len(q) {
			return "", nil, false, fmt.Errorf("sqlmaps: query %q: unterminated string", q)
		}
		text := lit.String()
		if !strings.Contains(text, "%") {
			out.WriteString(q[i : j+1])
			i = j
			continue
		}
		var v strings.Builder
		for k := 0; k < len(text); k++ {
			if text[k] != '%' {
				v.WriteByte(text[k])
				continue
			}
			if k+1 >= len(text) {
				return "", nil, false, fmt.Errorf("sqlmaps: query %q: lone %% at end of literal", q)
			}
			k++
			switch text[k] {
			case '%':
				v.WriteByte('%')
			case 's':
				v.WriteString(key)
			case 'u':
				// sqlite_table(5): "%u … If the localpart is empty, the
				// query is suppressed"; without "@" %u is the whole key.
				if hasAt && local == "" {
					return "", nil, false, nil
				}
				v.WriteString(local)
			case 'd':
				// "%d … If the input key does not contain a domain part,
				// the query is suppressed."
				if !hasAt || domain == "" {
					return "", nil, false, nil
				}
				v.WriteString(domain)
			default:
				return "", nil, false, fmt.Errorf("sqlmaps: query %q: expansion %%%c not supported", q, text[k])
			}
		}
		out.WriteByte('?')
		args = append(args, v.String())
		i = j
	}
	return out.String(), args, true, nil
}
