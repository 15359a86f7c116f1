package config

import (
	"fmt"
	"os"
	"strings"
)

// State is where the daemons keep what they learn at run time: greylisting
// triplets and rate-limit counters. One host keeps them in its own SQLite
// files (policy.state_file); several MX hosts share them in one PostgreSQL
// database so that a retry on another MX passes greylisting and a sender's
// mail counts against one limit whichever host it went through.
type State struct {
	Driver       string   `yaml:"driver" doc:"sqlite keeps the state in policy.state_file on this host; postgresql keeps it in the database dsn names, shared by every host that names it." enum:"sqlite,postgresql" kind:"enum"`
	DSN          string   `yaml:"dsn" doc:"With driver postgresql: the connection string, e.g. postgres://postkit@db.example:5432/postkit?sslmode=verify-full (no password here: see password_file). The tables are created on first use." kind:"text"`
	PasswordFile string   `yaml:"password_file" doc:"With driver postgresql: a file holding the role's password (first line), readable by the daemons' user only; empty uses the DSN, PGPASSWORD or ~/.pgpass." kind:"path"`
	CacheTTL     Duration `yaml:"cache_ttl" doc:"With driver postgresql: how long a host answers from its own memory what a stale answer cannot harm (a greylisting triplet that already passed, a client's auto-allow count); 0 asks the database every time. Triplets still deferred and rate-limit counters are never cached."`
}

// StateStore returns where the daemons' state lives: the driver, and with
// postgresql the DSN and the password read from state.password_file (never
// from argv). The one place that reads these keys.
func (c *Config) StateStore() (driver, dsn, password string, err error) {
	s := c.State
	switch s.Driver {
	case "", "sqlite":
		return "sqlite", "", "", nil
	case "postgresql":
	default:
		return "", "", "", fmt.Errorf("state.driver %q: want sqlite or postgresql", s.Driver)
	}
	if strings.TrimSpace(s.DSN) == "" {
		return "", "", "", fmt.Errorf("state.dsn: empty with state.driver postgresql; set it, e.g. postgres://postkit@db.example:5432/postkit")
	}
	if s.PasswordFile != "" {
		b, err := os.ReadFile(s.PasswordFile)
		if err != nil {
			return "", "", "", fmt.Errorf("state.password_file: %w; create it (mode 0600) or leave the key empty", err)
		}
		password, _, _ = strings.Cut(string(b), "\n")
		password = strings.TrimRight(password, "\r")
	}
	return "postgresql", s.DSN, password, nil
}

// validateState checks the state section's keys against each other.
func (c *Config) validateState(f *File) []*Error {
	if c.State.Driver == "postgresql" && strings.TrimSpace(c.State.DSN) == "" {
		return []*Error{f.Errorf("state.dsn", "e.g. postgres://postkit@db.example:5432/postkit", "required with state.driver postgresql")}
	}
	if c.State.CacheTTL.D() < 0 {
		return []*Error{f.Errorf("state.cache_ttl", "e.g. 30s, or 0 for no cache", "must not be negative")}
	}
	return nil
}
