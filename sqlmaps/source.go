package sqlmaps

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// Drivers database.driver accepts.
const (
	DriverSQLite     = "sqlite"
	DriverPostgreSQL = "postgresql"
)

// ConnectTimeout bounds connecting to PostgreSQL when the DSN names no
// connect_timeout, so that a server that is down fails a command quickly.
const ConnectTimeout = 5 * time.Second

// Source says where the store is: a SQLite file, or a PostgreSQL database.
//
// The PostgreSQL password never sits in the DSN (postkit.yaml refuses one
// there): it is read from PasswordFile (its first line) when set, else
// libpq's conventions apply to postkit's own connections (PGPASSWORD, then
// PGPASSFILE or ~/.pgpass). The generated Postfix and Dovecot files carry
// the password from PasswordFile, since their clients read no other source;
// they are 0640, readable by Postfix's or Dovecot's group only.
type Source struct {
	Driver       string // DriverSQLite ("" too) or DriverPostgreSQL
	Path         string // SQLite file
	DSN          string // PostgreSQL: URL or key=value connection string
	PasswordFile string // PostgreSQL: file whose first line is the password
}

// IsPostgres reports whether the source is a PostgreSQL database.
func (s Source) IsPostgres() bool { return s.Driver == DriverPostgreSQL }

// String names the database for messages, without any password.
func (s Source) String() string {
	if !s.IsPostgres() {
		return s.Path
	}
	p, err := s.Params()
	if err != nil {
		return "PostgreSQL database (database.dsn)"
	}
	return fmt.Sprintf("PostgreSQL database %s at %s", p.DBName, p.HostPort())
}

// Open opens the source for reading and writing (Open for SQLite).
func (s Source) Open() (*Store, error) {
	if s.IsPostgres() {
		return openPostgres(s, false)
	}
	return Open(s.Path)
}

// OpenReadOnly opens the source for lookups only (OpenReadOnly for SQLite;
// on PostgreSQL every transaction of the session is read-only).
func (s Source) OpenReadOnly() (*Store, error) {
	if s.IsPostgres() {
		return openPostgres(s, true)
	}
	return OpenReadOnly(s.Path)
}

// OpenForDaemon opens the source read-only for a daemon that asks it on
// every message: on PostgreSQL it does not wait for the server (connections
// are made, and made again after an outage, when a question comes; a
// question meanwhile gets an error, which the daemon answers with a
// temporary failure), so that a daemon starts and reloads while PostgreSQL
// is down. SQLite: OpenReadOnly.
func (s Source) OpenForDaemon() (*Store, error) {
	if !s.IsPostgres() {
		return OpenReadOnly(s.Path)
	}
	return openPostgresNoPing(s, true)
}

// Configured reports whether a database is named at all.
func (s Source) Configured() bool { return s.IsPostgres() || s.Path != "" }

// Password returns the password from PasswordFile, "" when none is set.
func (s Source) Password() (string, error) {
	if s.PasswordFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(s.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("sqlmaps: database.password_file: %w: create it (mode 0600) with the PostgreSQL password on its first line", err)
	}
	pw, _, _ := strings.Cut(string(b), "\n")
	pw = strings.TrimRight(pw, "\r")
	if pw == "" {
		return "", fmt.Errorf("sqlmaps: database.password_file %s is empty: write the PostgreSQL password on its first line", s.PasswordFile)
	}
	if strings.TrimSpace(pw) != pw {
		return "", fmt.Errorf("sqlmaps: database.password_file %s: the password starts or ends with white space, which Postfix's map files drop: choose another", s.PasswordFile)
	}
	if strings.ContainsFunc(pw, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return "", fmt.Errorf("sqlmaps: database.password_file %s: the password has a control character", s.PasswordFile)
	}
	return pw, nil
}

func (s Source) connConfig() (*pgx.ConnConfig, error) {
	if s.DSN == "" {
		return nil, errors.New("sqlmaps: database.driver is postgresql but database.dsn is empty: set it, e.g. postgres://postkit@127.0.0.1:5432/postkit")
	}
	cfg, err := pgx.ParseConfig(s.DSN)
	if err != nil {
		return nil, fmt.Errorf("sqlmaps: database.dsn: %w", err)
	}
	pw, err := s.Password()
	if err != nil {
		return nil, err
	}
	if pw != "" {
		cfg.Password = pw
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = ConnectTimeout
	}
	return cfg, nil
}

func openPostgres(src Source, ro bool) (*Store, error) {
	st, err := openPostgresNoPing(src, ro)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), ConnectTimeout+time.Second)
	defer cancel()
	if err := st.db.PingContext(ctx); err != nil {
		st.Close()
		return nil, fmt.Errorf("sqlmaps: cannot reach the %s: %w: check that PostgreSQL runs, database.dsn and the password (database.password_file or PGPASSWORD)", src, err)
	}
	return st, nil
}

func openPostgresNoPing(src Source, ro bool) (*Store, error) {
	cfg, err := src.connConfig()
	if err != nil {
		return nil, err
	}
	if ro {
		cfg.RuntimeParams["default_transaction_read_only"] = "on"
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(4)
	db.SetMaxIdleConns(2)
	db.SetConnMaxIdleTime(time.Minute)
	return &Store{db: conn{db, postgresDialect}, path: src.String(), readOnly: ro, now: time.Now}, nil
}

// PGParams are the connection parameters Postfix's pgsql_table(5) and
// Dovecot's pgsql driver need, taken from the DSN.
type PGParams struct {
	Host     string // host name, address, or unix socket directory (starts with /)
	Port     uint16
	User     string
	DBName   string
	Password string // from PasswordFile only
	SSLMode  string // as written in the DSN, "" when absent
}

// HostPort is host:port, or the socket directory and port.
func (p PGParams) HostPort() string {
	return p.Host + ":" + strconv.Itoa(int(p.Port))
}

// Params parses the DSN for the generated files. Unlike Open it reads no
// environment: what Postfix and Dovecot get is what postkit.yaml says.
func (s Source) Params() (PGParams, error) {
	if s.DSN == "" {
		return PGParams{}, errors.New("sqlmaps: database.driver is postgresql but database.dsn is empty")
	}
	p := PGParams{Port: 5432}
	set := func(k, v string) error {
		switch k {
		case "host":
			p.Host = v
		case "port":
			n, err := strconv.ParseUint(v, 10, 16)
			if err != nil || n == 0 {
				return fmt.Errorf("sqlmaps: database.dsn: bad port %q", v)
			}
			p.Port = uint16(n)
		case "user":
			p.User = v
		case "dbname":
			p.DBName = v
		case "sslmode":
			p.SSLMode = v
		case "password":
			return errors.New("sqlmaps: database.dsn holds a password: remove it and put it in database.password_file")
		}
		return nil
	}
	if strings.HasPrefix(s.DSN, "postgres://") || strings.HasPrefix(s.DSN, "postgresql://") {
		u, err := url.Parse(s.DSN)
		if err != nil {
			return PGParams{}, fmt.Errorf("sqlmaps: database.dsn: %w", err)
		}
		if _, has := u.User.Password(); has {
			return PGParams{}, errors.New("sqlmaps: database.dsn holds a password: remove it and put it in database.password_file")
		}
		p.User = u.User.Username()
		p.Host = u.Hostname()
		if port := u.Port(); port != "" {
			if err := set("port", port); err != nil {
				return PGParams{}, err
			}
		}
		p.DBName = strings.TrimPrefix(u.Path, "/")
		for k, vs := range u.Query() {
			if len(vs) > 0 {
				if err := set(k, vs[0]); err != nil {
					return PGParams{}, err
				}
			}
		}
	} else {
		for _, f := range strings.Fields(s.DSN) {
			k, v, ok := strings.Cut(f, "=")
			if !ok {
				return PGParams{}, fmt.Errorf("sqlmaps: database.dsn: %q is not key=value", f)
			}
			if err := set(k, strings.Trim(v, "'")); err != nil {
				return PGParams{}, err
			}
		}
	}
	if p.Host == "" {
		p.Host = "/var/run/postgresql"
	}
	if p.DBName == "" || p.User == "" {
		return PGParams{}, errors.New("sqlmaps: database.dsn must name the user and the database (postgres://USER@HOST:PORT/DBNAME)")
	}
	pw, err := s.Password()
	if err != nil {
		return PGParams{}, err
	}
	p.Password = pw
	return p, nil
}
