package config

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/postkit/postkit/sqlmaps"
)

// database.dsn ends up in the generated Postfix pgsql map files (hosts,
// user, dbname) and in Dovecot's connect string, so only the URL form is
// accepted, with names made of safe characters and no password: a password
// comes from database.password_file (or, for postkit alone, libpq's
// PGPASSWORD and ~/.pgpass), never from postkit.yaml or a command line.

var pgNameRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$`)

var pgSSLModes = map[string]bool{"disable": true, "allow": true, "prefer": true, "require": true, "verify-ca": true, "verify-full": true}

func checkPGDSN(s string) string {
	if !strings.HasPrefix(s, "postgres://") && !strings.HasPrefix(s, "postgresql://") {
		return fmt.Sprintf("%q is not a postgres:// URL", s)
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Sprintf("%q: %v", s, err)
	}
	if _, has := u.User.Password(); has {
		return "holds a password: remove it and put the password in the password_file beside this key"
	}
	if u.User == nil || !pgNameRE.MatchString(u.User.Username()) {
		return fmt.Sprintf("%q names no user (letters, digits, _ . -) before @", s)
	}
	db := strings.TrimPrefix(u.Path, "/")
	if !pgNameRE.MatchString(db) {
		return fmt.Sprintf("%q names no database (letters, digits, _ . -) after the host", s)
	}
	if h := u.Hostname(); h != "" && net.ParseIP(h) == nil && checkDomain("host name")(h) != "" && h != "localhost" {
		return fmt.Sprintf("%q: host %q is neither an address nor a host name", s, h)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Sprintf("%q: port %q is not a number from 1 to 65535", s, p)
		}
	}
	for k, vs := range u.Query() {
		if len(vs) != 1 {
			return fmt.Sprintf("%q: %s given %d times", s, k, len(vs))
		}
		v := vs[0]
		switch k {
		case "sslmode":
			if !pgSSLModes[v] {
				return fmt.Sprintf("%q: sslmode %q is not one of disable, allow, prefer, require, verify-ca, verify-full", s, v)
			}
		case "host":
			if u.Hostname() != "" {
				return fmt.Sprintf("%q: a host in the URL and ?host= both", s)
			}
			if msg := checkPath(v); msg != "" {
				return "?host= (socket directory): " + msg
			}
		case "connect_timeout":
			if n, err := strconv.Atoi(v); err != nil || n < 1 || n > 600 {
				return fmt.Sprintf("%q: connect_timeout %q is not a number of seconds (1 to 600)", s, v)
			}
		default:
			return fmt.Sprintf("%q: parameter %s is not one postkit passes on (sslmode, host, connect_timeout)", s, k)
		}
	}
	if u.Fragment != "" || u.Opaque != "" {
		return fmt.Sprintf("%q is not a plain postgres:// URL", s)
	}
	return ""
}

// validateDatabase checks that the driver has what it needs. dsn and
// password_file are ignored with driver sqlite, so switching back and forth
// is one key.
func (c *Config) validateDatabase(f *File, bad map[string]bool) []*Error {
	var errs []*Error
	d := c.Database
	if d.PostgreSQL() && d.DSN == "" && !bad["database.dsn"] {
		errs = append(errs, f.Errorf("database.dsn", "e.g. postgres://postkit@127.0.0.1:5432/postkit", "is required with database.driver: postgresql"))
	}
	return errs
}

// PostgreSQL reports whether the store is a PostgreSQL database.
func (d Database) PostgreSQL() bool { return d.Driver == "postgresql" }

// Source says where the store is, for sqlmaps.
func (d Database) Source() sqlmaps.Source {
	return sqlmaps.Source{Driver: d.Driver, Path: d.Path, DSN: d.DSN, PasswordFile: d.PasswordFile}
}
