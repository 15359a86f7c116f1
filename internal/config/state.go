package config

import (
	"fmt"
	"os"
	"strings"
)

// State is where the daemons keep what they learn at run time: greylisting
// triplets, rate-limit counters, the Bayes tokens and learned messages. One
// host keeps them in its own SQLite files (policy.state_file,
// milter.spam.bayes.path); several MX hosts share them in one PostgreSQL
// database so that a retry on another MX passes greylisting, a sender's
// mail counts against one limit whichever host it went through, and a
// message learned through one host's IMAP is known to every host's Bayes.
type State struct {
	Driver       string   `yaml:"driver" doc:"sqlite keeps the state in policy.state_file, milter.spam.bayes.path and milter.dmarc.report.path on this host; postgresql keeps it in the database dsn names, shared by every host that names it. While PostgreSQL is down no mail is refused for it: greylisting and rate limits let mail through, the spam filter scores without Bayes (POSTKIT_BAYES_DOWN in X-Spam-Status); both reconnect by themselves." enum:"sqlite,postgresql" kind:"enum"`
	DSN          string   `yaml:"dsn" doc:"With driver postgresql: the connection URL, e.g. postgres://postkit@db.example:5432/postkit?sslmode=verify-full (no password here: see password_file; no spaces, quotes, $ or braces: it is written into Dovecot's learning service). The tables are created on first use." kind:"pgdsn"`
	PasswordFile string   `yaml:"password_file" doc:"With driver postgresql: a file holding the role's password (first line), readable by the daemons' user only; empty uses the DSN, PGPASSWORD or ~/.pgpass." kind:"path"`
	OnError      string   `yaml:"on_error" doc:"What greylisting and rate limits answer while their state cannot be read or written (PostgreSQL down, a broken SQLite file): accept lets the mail through unchecked (they fail open); defer answers DEFER_IF_PERMIT 4.3.0 so that the client retries later. Never a refusal: an outage costs no mail." enum:"accept,defer" kind:"enum"`
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

// StateErrorAction is the policy answer while the state is out of reach:
// "" (let the request through) or a temporary refusal (state.on_error).
func (c *Config) StateErrorAction() string {
	if c.State.OnError == "defer" {
		return "DEFER_IF_PERMIT 4.3.0 Service temporarily unavailable, please try again later"
	}
	return ""
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
