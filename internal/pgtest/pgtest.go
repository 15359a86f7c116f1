// Package pgtest starts a real PostgreSQL server from Debian's packages for a test:
// initdb and pg_ctl in a temporary directory, run as the postgres user, listening on
// a loopback port and a unix socket in that directory. One server per call; it is
// stopped when the test ends.
package pgtest

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postkit/postkit/internal/testlib"
)

// BinDir is where Debian's postgresql-15 installs its server programs.
const BinDir = "/usr/lib/postgresql/15/bin"

// Server is a running PostgreSQL cluster.
type Server struct {
	Dir    string // data directory
	Socket string // directory holding the unix socket
	Host   string // 127.0.0.1
	Port   int
	User   string // superuser role, "postgres"

	t testing.TB
}

// Start runs a fresh cluster for t (skipped under -short; under POSTKIT_E2E=1 a
// missing PostgreSQL or missing root fails the test).
func Start(t testing.TB) *Server {
	t.Helper()
	testlib.NeedRoot(t)
	testlib.NeedBinary(t, filepath.Join(BinDir, "initdb"), filepath.Join(BinDir, "pg_ctl"), "psql")
	pg, err := user.Lookup("postgres")
	if err != nil {
		testlib.Skip(t, "no postgres user: is postgresql-15 installed?")
	}
	uid, _ := strconv.Atoi(pg.Uid)
	gid, _ := strconv.Atoi(pg.Gid)

	base := testlib.PublicTempDir(t)
	s := &Server{Dir: filepath.Join(base, "data"), Socket: filepath.Join(base, "run"),
		Host: "127.0.0.1", Port: testlib.FreePort(t), User: "postgres", t: t}
	for _, d := range []string{s.Dir, s.Socket} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	s.asPostgres("initdb", "-D", s.Dir, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8")
	opts := fmt.Sprintf("-c listen_addresses=%s -c port=%d -c unix_socket_directories=%s -c fsync=off -c max_connections=200",
		s.Host, s.Port, s.Socket)
	s.asPostgres("pg_ctl", "-D", s.Dir, "-l", filepath.Join(s.Dir, "server.log"), "-o", opts, "-w", "-t", "60", "start")
	t.Cleanup(s.Stop)
	return s
}

// DSN is a connection string for database db as the superuser over TCP.
func (s *Server) DSN(db string) string {
	return fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", s.User, s.Host, s.Port, db)
}

// CreateDatabase creates database name and returns its DSN.
func (s *Server) CreateDatabase(name string) string {
	s.t.Helper()
	s.Psql("postgres", "CREATE DATABASE "+name)
	return s.DSN(name)
}

// Psql runs one SQL command with psql against database db and returns its output.
func (s *Server) Psql(db, sql string) string {
	s.t.Helper()
	out, err := exec.Command("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
		"-h", s.Socket, "-p", strconv.Itoa(s.Port), "-U", s.User, "-d", db, "-c", sql).CombinedOutput()
	if err != nil {
		s.t.Fatalf("psql %q: %v\n%s", sql, err, out)
	}
	return strings.TrimSpace(string(out))
}

// Stop shuts the server down (fast mode); a stopped server can be started again.
func (s *Server) Stop() {
	cmd := s.command("pg_ctl", "-D", s.Dir, "-m", "fast", "-w", "-t", "30", "stop")
	_ = cmd.Run()
}

// Restart starts a stopped server again on the same port.
func (s *Server) Restart() {
	s.t.Helper()
	opts := fmt.Sprintf("-c listen_addresses=%s -c port=%d -c unix_socket_directories=%s -c fsync=off -c max_connections=200",
		s.Host, s.Port, s.Socket)
	s.asPostgres("pg_ctl", "-D", s.Dir, "-l", filepath.Join(s.Dir, "server.log"), "-o", opts, "-w", "-t", "60", "start")
}

func (s *Server) command(prog string, args ...string) *exec.Cmd {
	cmd := exec.Command("runuser", append([]string{"-u", "postgres", "--", filepath.Join(BinDir, prog)}, args...)...)
	cmd.Dir = "/"
	return cmd
}

func (s *Server) asPostgres(prog string, args ...string) {
	s.t.Helper()
	start := time.Now()
	out, err := s.command(prog, args...).CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(s.Dir, "server.log"))
		s.t.Fatalf("%s %s (after %s): %v\n%s\n%s", prog, strings.Join(args, " "), time.Since(start).Round(time.Millisecond), err, out, log)
	}
}
