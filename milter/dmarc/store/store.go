// Package store keeps the DMARC evaluations of the milter for the aggregate
// reports (RFC 7489 section 7.2) in postkit's own WAL SQLite file
// (internal/waldb), or in PostgreSQL shared by several MX hosts (PG,
// state.driver postgresql; OpenConfigured chooses): the milter records, 'postkit dmarc report' reads,
// marks what it sent and forgets what is old. Reports need one row per
// evaluation (grouped when the report is built), the policy as published
// when it was evaluated, and the days already reported.
package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/postkit/postkit/internal/waldb"
	"github.com/postkit/postkit/milter/dmarc"
)

const schema = `
CREATE TABLE IF NOT EXISTS dmarc_eval (
  id            INTEGER PRIMARY KEY,
  day           TEXT NOT NULL,    -- UTC date of the evaluation, YYYY-MM-DD
  time          INTEGER NOT NULL, -- Unix seconds
  policy_domain TEXT NOT NULL,
  adkim TEXT NOT NULL, aspf TEXT NOT NULL, p TEXT NOT NULL, sp TEXT NOT NULL, np TEXT NOT NULL,
  pct           INTEGER NOT NULL,
  rua           TEXT NOT NULL,
  source_ip     TEXT NOT NULL,
  header_from   TEXT NOT NULL,
  envelope_from TEXT NOT NULL,
  envelope_to   TEXT NOT NULL,
  disposition   TEXT NOT NULL,
  dkim_aligned  INTEGER NOT NULL,
  spf_aligned   INTEGER NOT NULL,
  override      TEXT NOT NULL,
  spf_domain    TEXT NOT NULL,
  spf_scope     TEXT NOT NULL,
  spf_result    TEXT NOT NULL,
  dkim          TEXT NOT NULL     -- domain SP selector SP result, one per line
);
CREATE INDEX IF NOT EXISTS dmarc_eval_day ON dmarc_eval(day, policy_domain);
CREATE TABLE IF NOT EXISTS dmarc_sent (
  policy_domain TEXT NOT NULL,
  day           TEXT NOT NULL,
  sent          INTEGER NOT NULL, -- Unix seconds, 0 while only claimed
  claimed       INTEGER NOT NULL DEFAULT 0, -- Unix seconds of the live claim, 0 if none
  PRIMARY KEY (policy_domain, day)
);
`

// Store is what the milter and the report command need of the store of
// evaluations; SQLite and PG implement it.
type Store interface {
	Record(ctx context.Context, r dmarc.Row) error
	// Days lists the UTC days (YYYY-MM-DD) with evaluations, oldest first.
	Days(ctx context.Context) ([]string, error)
	// Rows returns the evaluations of day, by policy domain.
	Rows(ctx context.Context, day string) ([]dmarc.Row, error)
	// Sent reports whether the report of domain for day was sent.
	Sent(ctx context.Context, domain, day string) (bool, error)
	// MarkSent records that the report of domain for day was sent at.
	MarkSent(ctx context.Context, domain, day string, at time.Time) error
	// Claim takes the sending of domain's report for day, atomically: it
	// returns true to exactly one of the hosts (or runs) that ask at
	// once, and false while the report is sent or another claim younger
	// than ClaimLease holds it.
	Claim(ctx context.Context, domain, day string, at time.Time) (bool, error)
	// Release gives up the claim taken at at, when the report could not be
	// sent, so that the next run retries it.
	Release(ctx context.Context, domain, day string, at time.Time) error
	// Purge forgets the evaluations of days before day.
	Purge(ctx context.Context, before string) error
	Close() error
}

// ClaimLease is how long a claim keeps other runs from sending a report:
// a host that dies between Claim and MarkSent delays it that long.
const ClaimLease = time.Hour

// The statements on dmarc_sent, the same in SQLite and PostgreSQL
// (?-placeholders are rewritten for PostgreSQL). An upsert is one atomic
// statement in both: of two hosts claiming at once, the second sees the
// first's row and its WHERE fails, so it changes no row.
const (
	sqlMarkSent = `INSERT INTO dmarc_sent (policy_domain, day, sent, claimed) VALUES (?, ?, ?, 0)
		ON CONFLICT (policy_domain, day) DO UPDATE SET sent = excluded.sent`
	sqlClaim = `INSERT INTO dmarc_sent (policy_domain, day, sent, claimed) VALUES (?, ?, 0, ?)
		ON CONFLICT (policy_domain, day) DO UPDATE SET claimed = excluded.claimed
		WHERE dmarc_sent.sent = 0 AND dmarc_sent.claimed < ?`
	sqlRelease = `UPDATE dmarc_sent SET claimed = 0 WHERE policy_domain = ? AND day = ? AND sent = 0 AND claimed = ?`
)

// SQLite is the Store in a WAL SQLite file.
//
// Record does not write: it queues the row, and a writer inserts what is
// queued in one transaction every FlushEvery (or as soon as FlushRows are
// waiting), so that a message costs the milter an append, not a
// transaction (measured in bench/milter TestDMARCCost: a transaction per
// row doubled DMARC's CPU per message). Close writes what is left; a crash
// loses at most the last FlushEvery of rows, a day's report a few
// messages short. Past MaxQueued waiting rows (the disk stalls), Record
// refuses rows rather than hold the milter's memory.
type SQLite struct {
	*batch
	db *sql.DB
}

// Open opens (creating it if needed) the store at path.
func Open(path string) (*SQLite, error) {
	db, err := waldb.Open(path, "dmarc", schema, 2)
	if err != nil {
		return nil, err
	}
	if err := addClaimed(db); err != nil {
		db.Close()
		return nil, err
	}
	s := &SQLite{db: db}
	s.batch = newBatch(s.insert, nil)
	return s, nil
}

// addClaimed adds dmarc_sent.claimed to a file made before it existed.
func addClaimed(db *sql.DB) error {
	var n int
	q := `SELECT count(*) FROM pragma_table_info('dmarc_sent') WHERE name = 'claimed'`
	if err := db.QueryRow(q).Scan(&n); err != nil {
		return fmt.Errorf("dmarc store: %w", err)
	}
	if n > 0 {
		return nil
	}
	if _, err := db.Exec(`ALTER TABLE dmarc_sent ADD COLUMN claimed INTEGER NOT NULL DEFAULT 0`); err != nil {
		// Another process may have added it meanwhile.
		if db.QueryRow(q).Scan(&n) == nil && n > 0 {
			return nil
		}
		return fmt.Errorf("dmarc store: add dmarc_sent.claimed: %w", err)
	}
	return nil
}

// Day is the UTC report day of t.
func Day(t time.Time) string { return t.UTC().Format(time.DateOnly) }

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// insert writes rows in one transaction.
func (s *SQLite) insert(ctx context.Context, rows []dmarc.Row) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("dmarc store: record: %w", err)
	}
	defer tx.Rollback()
	st, err := tx.PrepareContext(ctx, `INSERT INTO dmarc_eval (day, time, policy_domain, adkim, aspf, p, sp, np, pct, rua,
		source_ip, header_from, envelope_from, envelope_to, disposition, dkim_aligned, spf_aligned, override,
		spf_domain, spf_scope, spf_result, dkim) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`)
	if err != nil {
		return fmt.Errorf("dmarc store: record: %w", err)
	}
	defer st.Close()
	for _, r := range rows {
		var dk []string
		for _, d := range r.DKIM {
			dk = append(dk, d.Domain+" "+d.Selector+" "+d.Result)
		}
		if _, err := st.ExecContext(ctx, Day(r.Time), r.Time.Unix(), r.PolicyDomain, r.ADKIM, r.ASPF, r.P, r.SP, r.NP, r.Pct, r.RUA,
			r.SourceIP, r.HeaderFrom, r.EnvelopeFrom, r.EnvelopeTo, r.Disposition, b2i(r.DKIMAligned), b2i(r.SPFAligned), r.Override,
			r.SPFDomain, r.SPFScope, r.SPFResult, strings.Join(dk, "\n")); err != nil {
			return fmt.Errorf("dmarc store: record: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("dmarc store: record: %w", err)
	}
	return nil
}

// Days implements Store.
func (s *SQLite) Days(ctx context.Context) ([]string, error) {
	s.flush()
	rows, err := s.db.QueryContext(ctx, `SELECT DISTINCT day FROM dmarc_eval ORDER BY day`)
	if err != nil {
		return nil, fmt.Errorf("dmarc store: days: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			return nil, fmt.Errorf("dmarc store: days: %w", err)
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// Rows implements Store.
func (s *SQLite) Rows(ctx context.Context, day string) ([]dmarc.Row, error) {
	s.flush()
	rows, err := s.db.QueryContext(ctx, `SELECT time, policy_domain, adkim, aspf, p, sp, np, pct, rua, source_ip, header_from,
		envelope_from, envelope_to, disposition, dkim_aligned, spf_aligned, override, spf_domain, spf_scope, spf_result, dkim
		FROM dmarc_eval WHERE day = ? ORDER BY policy_domain, id`, day)
	if err != nil {
		return nil, fmt.Errorf("dmarc store: rows: %w", err)
	}
	defer rows.Close()
	var out []dmarc.Row
	for rows.Next() {
		var r dmarc.Row
		var t int64
		var da, sa int
		var dk string
		if err := rows.Scan(&t, &r.PolicyDomain, &r.ADKIM, &r.ASPF, &r.P, &r.SP, &r.NP, &r.Pct, &r.RUA, &r.SourceIP, &r.HeaderFrom,
			&r.EnvelopeFrom, &r.EnvelopeTo, &r.Disposition, &da, &sa, &r.Override, &r.SPFDomain, &r.SPFScope, &r.SPFResult, &dk); err != nil {
			return nil, fmt.Errorf("dmarc store: rows: %w", err)
		}
		r.Time, r.DKIMAligned, r.SPFAligned = time.Unix(t, 0).UTC(), da == 1, sa == 1
		for _, l := range strings.Split(dk, "\n") {
			if f := strings.Split(l, " "); len(f) == 3 {
				r.DKIM = append(r.DKIM, dmarc.DKIMResult{Domain: f[0], Selector: f[1], Result: f[2]})
			}
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Sent implements Store.
func (s *SQLite) Sent(ctx context.Context, domain, day string) (bool, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM dmarc_sent WHERE policy_domain = ? AND day = ? AND sent <> 0`, domain, day).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("dmarc store: sent: %w", err)
	}
	return n > 0, nil
}

// MarkSent implements Store.
func (s *SQLite) MarkSent(ctx context.Context, domain, day string, at time.Time) error {
	if _, err := s.db.ExecContext(ctx, sqlMarkSent, domain, day, at.Unix()); err != nil {
		return fmt.Errorf("dmarc store: mark sent: %w", err)
	}
	return nil
}

// Claim implements Store: one upsert, which SQLite runs under the file's
// write lock.
func (s *SQLite) Claim(ctx context.Context, domain, day string, at time.Time) (bool, error) {
	res, err := s.db.ExecContext(ctx, sqlClaim, domain, day, at.Unix(), at.Add(-ClaimLease).Unix())
	if err != nil {
		return false, fmt.Errorf("dmarc store: claim the report of %s for %s: %w", domain, day, err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// Release implements Store.
func (s *SQLite) Release(ctx context.Context, domain, day string, at time.Time) error {
	if _, err := s.db.ExecContext(ctx, sqlRelease, domain, day, at.Unix()); err != nil {
		return fmt.Errorf("dmarc store: release the report of %s for %s: %w", domain, day, err)
	}
	return nil
}

// Purge implements Store.
func (s *SQLite) Purge(ctx context.Context, before string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM dmarc_eval WHERE day < ?`, before); err != nil {
		return fmt.Errorf("dmarc store: purge: %w", err)
	}
	if _, err := s.db.ExecContext(ctx, `DELETE FROM dmarc_sent WHERE day < ?`, before); err != nil {
		return fmt.Errorf("dmarc store: purge: %w", err)
	}
	return nil
}

// Close implements Store: it writes the queued rows and closes the file.
func (s *SQLite) Close() error {
	err := s.batch.stop()
	if cerr := s.db.Close(); err == nil {
		err = cerr
	}
	return err
}

var (
	_ Store          = (*SQLite)(nil)
	_ dmarc.Recorder = (*SQLite)(nil)
)
