package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/postkit/postkit/internal/pgpool"
	"github.com/postkit/postkit/milter/dmarc"
)

// pgSchema is the PostgreSQL form of schema: the same tables and columns.
const pgSchema = `
CREATE TABLE IF NOT EXISTS dmarc_eval (
  id            BIGSERIAL PRIMARY KEY,
  day           TEXT NOT NULL,
  time          BIGINT NOT NULL,
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
  dkim          TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dmarc_eval_day ON dmarc_eval(day, policy_domain);
CREATE TABLE IF NOT EXISTS dmarc_sent (
  policy_domain TEXT NOT NULL,
  day           TEXT NOT NULL,
  sent          BIGINT NOT NULL,
  claimed       BIGINT NOT NULL DEFAULT 0,
  PRIMARY KEY (policy_domain, day)
);
`

// pgSchemaLock is the advisory lock key that serialises schema creation
// between hosts starting at once (CREATE … IF NOT EXISTS races otherwise).
const pgSchemaLock = 0x706b646d // "pkdm"

// pgColumns are dmarc_eval's columns as Record writes them.
var pgColumns = []string{"day", "time", "policy_domain", "adkim", "aspf", "p", "sp", "np", "pct", "rua",
	"source_ip", "header_from", "envelope_from", "envelope_to", "disposition", "dkim_aligned", "spf_aligned", "override",
	"spf_domain", "spf_scope", "spf_result", "dkim"}

// PG is the Store in PostgreSQL, shared by every host that opens the same
// database: each host's milter records there, and 'postkit dmarc report'
// on any host reports every host's evaluations, each report sent once
// (Claim). Record batches as SQLite's does; while the server is out of reach
// the rows stay queued (within MaxQueued) and Record returns the error, which
// the milter logs: mail is not held up. The schema is created on first
// successful use. Sessions commit asynchronously (synchronous_commit off):
// a server crash loses at most a fraction of a second of rows.
type PG struct {
	*batch
	pool *pgxpool.Pool
	br   pgpool.Breaker

	schema *pgpool.Schema
}

// OpenPG opens a pool on dsn (a libpq URL or key=value string); password,
// when set, is used instead of the DSN's. It does not fail when the server
// is down; a malformed DSN is an error.
func OpenPG(ctx context.Context, dsn, password string) (*PG, error) {
	pool, err := pgpool.Open(ctx, "dmarc store", dsn, pgpool.Options{MaxConns: 4, Password: password, AsyncCommit: true})
	if err != nil {
		return nil, err
	}
	p := &PG{pool: pool, br: pgpool.Breaker{What: "dmarc store"}, schema: &pgpool.Schema{What: "dmarc store", Lock: pgSchemaLock, DDL: pgSchema}}
	p.batch = newBatch(p.insert, retryable)
	return p, nil
}

// retryable says whether the rows of a failed write are kept for the next:
// all but those PostgreSQL refused as data (class 22, e.g. a NUL byte),
// which would fail again and hold up the rows behind them.
func retryable(err error) bool {
	var pe *pgconn.PgError
	return !errors.As(err, &pe) || !strings.HasPrefix(pe.Code, "22")
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

// Ping reports whether the server answers and the schema is there.
func (p *PG) Ping(ctx context.Context) error {
	if err := p.pool.Ping(ctx); err != nil {
		return fmt.Errorf("dmarc store: postgresql unreachable: %w", err)
	}
	return p.check(ctx)
}

// pgSQL rewrites ?-placeholders as $n.
func pgSQL(q string) string {
	var b strings.Builder
	n := 0
	for _, c := range q {
		if c == '?' {
			n++
			b.WriteString("$" + strconv.Itoa(n))
			continue
		}
		b.WriteRune(c)
	}
	return b.String()
}

// insert writes rows in one transaction (COPY).
func (p *PG) insert(ctx context.Context, rows []dmarc.Row) error {
	if err := p.check(ctx); err != nil {
		return fmt.Errorf("dmarc store: record: %w", err)
	}
	src := make([][]any, 0, len(rows))
	for _, r := range rows {
		var dk []string
		for _, d := range r.DKIM {
			dk = append(dk, d.Domain+" "+d.Selector+" "+d.Result)
		}
		src = append(src, []any{Day(r.Time), r.Time.Unix(), r.PolicyDomain, r.ADKIM, r.ASPF, r.P, r.SP, r.NP, int32(r.Pct), r.RUA,
			r.SourceIP, r.HeaderFrom, r.EnvelopeFrom, r.EnvelopeTo, r.Disposition, int32(b2i(r.DKIMAligned)), int32(b2i(r.SPFAligned)), r.Override,
			r.SPFDomain, r.SPFScope, r.SPFResult, strings.Join(dk, "\n")})
	}
	// CopyFrom outside a transaction is one statement: all rows or none.
	if _, err := p.pool.CopyFrom(ctx, pgx.Identifier{"dmarc_eval"}, pgColumns, pgx.CopyFromRows(src)); err != nil {
		return fmt.Errorf("dmarc store: record: %w", p.br.Observe(err))
	}
	return nil
}

// Days implements Store.
func (p *PG) Days(ctx context.Context) ([]string, error) {
	p.flush()
	if err := p.check(ctx); err != nil {
		return nil, err
	}
	rows, err := p.pool.Query(ctx, `SELECT DISTINCT day FROM dmarc_eval ORDER BY day`)
	if err != nil {
		return nil, fmt.Errorf("dmarc store: days: %w", p.br.Observe(err))
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("dmarc store: days: %w", p.br.Observe(err))
	}
	return out, nil
}

// Rows implements Store.
func (p *PG) Rows(ctx context.Context, day string) ([]dmarc.Row, error) {
	p.flush()
	if err := p.check(ctx); err != nil {
		return nil, err
	}
	rows, err := p.pool.Query(ctx, `SELECT time, policy_domain, adkim, aspf, p, sp, np, pct, rua, source_ip, header_from,
		envelope_from, envelope_to, disposition, dkim_aligned, spf_aligned, override, spf_domain, spf_scope, spf_result, dkim
		FROM dmarc_eval WHERE day = $1 ORDER BY policy_domain, id`, day)
	if err != nil {
		return nil, fmt.Errorf("dmarc store: rows: %w", p.br.Observe(err))
	}
	defer rows.Close()
	var out []dmarc.Row
	for rows.Next() {
		var r dmarc.Row
		var t int64
		var pct, da, sa int32
		var dk string
		if err := rows.Scan(&t, &r.PolicyDomain, &r.ADKIM, &r.ASPF, &r.P, &r.SP, &r.NP, &pct, &r.RUA, &r.SourceIP, &r.HeaderFrom,
			&r.EnvelopeFrom, &r.EnvelopeTo, &r.Disposition, &da, &sa, &r.Override, &r.SPFDomain, &r.SPFScope, &r.SPFResult, &dk); err != nil {
			return nil, fmt.Errorf("dmarc store: rows: %w", err)
		}
		r.Time, r.Pct, r.DKIMAligned, r.SPFAligned = time.Unix(t, 0).UTC(), int(pct), da == 1, sa == 1
		for _, l := range strings.Split(dk, "\n") {
			if f := strings.Split(l, " "); len(f) == 3 {
				r.DKIM = append(r.DKIM, dmarc.DKIMResult{Domain: f[0], Selector: f[1], Result: f[2]})
			}
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("dmarc store: rows: %w", p.br.Observe(err))
	}
	return out, nil
}

// Sent implements Store.
func (p *PG) Sent(ctx context.Context, domain, day string) (bool, error) {
	if err := p.check(ctx); err != nil {
		return false, err
	}
	var n int64
	err := p.pool.QueryRow(ctx, `SELECT count(*) FROM dmarc_sent WHERE policy_domain = $1 AND day = $2 AND sent <> 0`, domain, day).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("dmarc store: sent: %w", p.br.Observe(err))
	}
	return n > 0, nil
}

// MarkSent implements Store.
func (p *PG) MarkSent(ctx context.Context, domain, day string, at time.Time) error {
	if err := p.check(ctx); err != nil {
		return err
	}
	if _, err := p.pool.Exec(ctx, pgSQL(sqlMarkSent), domain, day, at.Unix()); err != nil {
		return fmt.Errorf("dmarc store: mark sent: %w", p.br.Observe(err))
	}
	return nil
}

// Claim implements Store with one INSERT … ON CONFLICT DO UPDATE … WHERE:
// PostgreSQL makes a second concurrent upsert of the row wait for the
// first and then test its WHERE against the first's row, so exactly one
// host changes a row.
func (p *PG) Claim(ctx context.Context, domain, day string, at time.Time) (bool, error) {
	if err := p.check(ctx); err != nil {
		return false, err
	}
	tag, err := p.pool.Exec(ctx, pgSQL(sqlClaim), domain, day, at.Unix(), at.Add(-ClaimLease).Unix())
	if err != nil {
		return false, fmt.Errorf("dmarc store: claim the report of %s for %s: %w", domain, day, p.br.Observe(err))
	}
	return tag.RowsAffected() == 1, nil
}

// Release implements Store.
func (p *PG) Release(ctx context.Context, domain, day string, at time.Time) error {
	if err := p.check(ctx); err != nil {
		return err
	}
	if _, err := p.pool.Exec(ctx, pgSQL(sqlRelease), domain, day, at.Unix()); err != nil {
		return fmt.Errorf("dmarc store: release the report of %s for %s: %w", domain, day, p.br.Observe(err))
	}
	return nil
}

// Purge implements Store.
func (p *PG) Purge(ctx context.Context, before string) error {
	if err := p.check(ctx); err != nil {
		return err
	}
	for _, q := range []string{`DELETE FROM dmarc_eval WHERE day < $1`, `DELETE FROM dmarc_sent WHERE day < $1`} {
		if _, err := p.pool.Exec(ctx, q, before); err != nil {
			return fmt.Errorf("dmarc store: purge: %w", p.br.Observe(err))
		}
	}
	return nil
}

// Close implements Store: it writes the queued rows and closes the pool.
func (p *PG) Close() error {
	err := p.batch.stop()
	p.pool.Close()
	return err
}

var (
	_ Store          = (*PG)(nil)
	_ dmarc.Recorder = (*PG)(nil)
)
