// Package harness runs a sandboxed copy of the real Debian mail stack (Postfix,
// Dovecot and postkit's daemons, configured by `postkit generate`) on loopback,
// for the end-to-end tests and `make demo`.
//
// Everything lives under one root directory: configuration, queue, logs,
// mailboxes, sockets. Every network service listens on 127.0.0.1; the "outside
// world" is an SMTP sink (Sink) that Postfix relays to, and the test domains
// are served by a loopback DNS server (internal/dnstest) that postkit's daemons
// use directly and Postfix reaches through a private /etc/resolv.conf (a mount
// namespace, see startPostfix). Nothing touches the machine's own mail setup.
//
// Start needs root: Postfix and Dovecot drop privileges to their own users,
// mailboxes belong to the vmail account, which Start creates when missing.
//
// A test package calls Main from TestMain (one stack for all its tests) and
// Need in each test; Options.Set changes postkit.yaml keys and
// Options.Daemons starts postkit's daemons before Postfix (see ExampleMain
// and e2e/daemons); Daemon, KillDaemon and RestartDaemon crash and revive
// them (e2e/fault). Clients: SMTP, Submission, Submissions (go-smtp), IMAP
// (curl), WaitMail/FindMail (the Maildir), Queue (postqueue), Sink (what was
// relayed out).
// The demo (e2e/cmd/demo) uses Start and Stop the same way.
package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/postkit/postkit/internal/dnstest"
	"github.com/postkit/postkit/internal/testlib"
)

// Test names used by the default stack.
const (
	// Hostname is the stack's myhostname.
	Hostname = "mail.example.test"
	// Domain is the first mail domain served by the stack.
	Domain = "example.test"
	// OutsideDomain is a domain of the "outside world": mail to it is relayed
	// to the sink.
	OutsideDomain = "outside.test"
)

// Options describe the stack to start. The zero value (with Root set) is a
// complete stack on random loopback ports.
type Options struct {
	// Root is the absolute directory that receives the whole sandbox. It is
	// created if missing and must be empty or hold an earlier sandbox.
	Root string
	// Postkit is the postkit binary. Empty: built from this module into Root/bin.
	Postkit string
	// Hostname and Domains of the stack. Defaults: Hostname, [Domain].
	Hostname string
	Domains  []string
	// MessageSizeLimit in bytes; 0 keeps 10 MiB.
	MessageSizeLimit int64
	// Ports of the services; a zero port picks a free one.
	Ports Ports
	// IP is the loopback address the services listen on (a second MX on
	// 127.0.0.3, say); empty: 127.0.0.1. The trusted network stays
	// 127.0.0.1/32, the address local clients connect from.
	IP string
	// SinkDir, when set, receives every message the sink accepts as a file.
	SinkDir string
	// Set overrides keys of the generated postkit.yaml, by dotted path
	// ("milter.enabled": true). In string values, {root} is replaced by Root,
	// {dns} by the DNS server's host:port and {sink} by the sink's host:port.
	Set map[string]any
	// Zone holds extra DNS records in presentation format, added to the
	// default records (MX and A for every domain, the outside domain, the host).
	Zone []string
	// Daemons are started after the database is seeded and before Postfix, so
	// that Postfix never sees them missing.
	Daemons []DaemonSpec
	// PostgresDSN, when set, puts the store in that PostgreSQL database
	// (database.driver: postgresql, as several MX hosts share one): Postfix
	// reads it through pgsql maps, Dovecot through its pgsql driver. Empty:
	// the SQLite file Paths.Database, the default.
	PostgresDSN string
	// PostgresPasswordFile is database.password_file with PostgresDSN.
	PostgresPasswordFile string
	// Seed runs after `postkit db init` and before any daemon starts.
	Seed func(*Stack) error
	// Apply provisions the sandbox with `postkit apply` (as on a live host:
	// directories, DKIM keys of milter.dkim.keys, files, units under
	// Paths.Units, database) instead of `postkit generate` and `postkit db
	// init`; Stack.Applied holds its JSON report.
	Apply bool
	// NoPostfixResolver keeps Postfix on the machine's /etc/resolv.conf instead
	// of the test DNS server.
	NoPostfixResolver bool
	// Log receives progress messages. Default: discarded.
	Log *slog.Logger
	// Now is the clock used for the TLS certificate. Default: time.Now.
	Now func() time.Time
}

// Ports are the TCP ports of the stack's services, all on 127.0.0.1.
type Ports struct {
	SMTP, Submission, Submissions, IMAP, IMAPS int
	ManageSieve                                int
}

// Paths are the sandbox's files and directories, all absolute.
type Paths struct {
	Config        string // postkit.yaml
	State         string // stack.json: what Stop needs to find running processes
	Bin           string // directory of built binaries
	LogDir        string // postfix.log, dovecot.log, one NAME.log per daemon
	PostfixConfig string
	PostfixQueue  string
	PostfixData   string
	PostfixLog    string
	DovecotConfig string
	DovecotBase   string
	DovecotState  string
	DovecotLog    string
	PostkitRun    string
	MailBase      string
	SieveDir      string
	Database      string
	Cert, Key     string
	LMTP, Auth    string
	QuotaStatus   string // Dovecot's quota-status socket Postfix asks at RCPT
	Resolv        string // resolv.conf Postfix sees
	Units         string // paths.systemd_units: where postkit apply puts the units
}

// Stack is a running sandbox.
type Stack struct {
	Opts       Options
	Root       string
	PostkitBin string // the postkit binary
	Hostname   string
	Domains    []string
	Ports      Ports
	IP         string // the loopback address the services listen on (Options.IP)
	Paths      Paths
	UID, GID   int // the vmail account
	SizeLimit  int64
	// Applied is the JSON report of `postkit apply` (Options.Apply).
	Applied string

	Sink *Sink
	DNS  *dnstest.Server
	// ResolverAddr is the 127.x.y.z address (port 53) Postfix resolves through;
	// empty when Postfix uses the machine's resolver.
	ResolverAddr string

	log      *slog.Logger
	cert     []byte // PEM, to trust in clients
	relay    *dnsRelay
	reaper   *exec.Cmd
	mu       sync.Mutex
	daemons  []*Daemon
	started  struct{ postfix, dovecot bool }
	stopOnce sync.Once
	stopErr  error
}

// Required lists the Debian programs Start runs.
var Required = []string{"postfix", "postconf", "postmap", "dovecot", "doveadm"}

// Check reports why the stack cannot run on this machine, or nil: Start needs
// root and the Postfix and Dovecot programs.
func Check() error {
	var missing []string
	for _, b := range Required {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	var errs []error
	if os.Geteuid() != 0 {
		errs = append(errs, errors.New("harness: needs root (Postfix and Dovecot switch users, mailboxes belong to vmail): run as root"))
	}
	if len(missing) > 0 {
		errs = append(errs, fmt.Errorf("harness: missing %s: apt-get install postfix postfix-sqlite dovecot-core dovecot-imapd dovecot-lmtpd dovecot-sqlite dovecot-sieve dovecot-managesieved", strings.Join(missing, ", ")))
	}
	return errors.Join(errs...)
}

// Start builds the sandbox described by o and starts it: DNS server, sink,
// `postkit generate` (the same provisioning as on a live system, Sieve
// compilation included), `postkit db init`, o.Seed, o.Daemons, Postfix,
// Dovecot.
// It returns once every service answers. On error everything already started
// is stopped and the error carries the tail of every log.
func Start(ctx context.Context, o Options) (*Stack, error) {
	if err := Check(); err != nil {
		return nil, err
	}
	if !filepath.IsAbs(o.Root) {
		return nil, fmt.Errorf("harness: root %q must be an absolute path (Postfix refuses relative ones)", o.Root)
	}
	// A port picked free can be bound by a concurrent test before Postfix or
	// Dovecot binds it; such a start is tried again with new ports.
	for attempt := 1; ; attempt++ {
		s := newStack(o)
		err := s.start(ctx)
		if err == nil {
			return s, nil
		}
		tails := s.Tails(50)
		s.Stop()
		if attempt < 3 && strings.Contains(err.Error()+tails, "Address already in use") {
			s.log.Warn("harness: a port was taken before the stack bound it; starting again with new ports", "attempt", attempt)
			continue
		}
		return nil, fmt.Errorf("%w\n%s", err, tails)
	}
}

func newStack(o Options) *Stack {
	s := &Stack{Opts: o, Root: filepath.Clean(o.Root), Hostname: o.Hostname, Domains: o.Domains, Ports: o.Ports, SizeLimit: o.MessageSizeLimit, IP: o.IP}
	if s.IP == "" {
		s.IP = "127.0.0.1"
	}
	if s.Hostname == "" {
		s.Hostname = Hostname
	}
	if len(s.Domains) == 0 {
		s.Domains = []string{Domain}
	}
	if s.SizeLimit == 0 {
		s.SizeLimit = 10 << 20
	}
	s.log = o.Log
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s.Paths = layout(s.Root)
	return s
}

func (s *Stack) start(ctx context.Context) error {
	if s.Opts.PostgresDSN != "" {
		for _, f := range []string{"/usr/lib/postfix/postfix-pgsql.so", "/usr/lib/dovecot/modules/auth/libdriver_pgsql.so"} {
			if _, err := os.Stat(f); err != nil {
				return fmt.Errorf("harness: PostgresDSN needs %s: run scripts/install-deps.sh (postfix-pgsql, dovecot-pgsql)", f)
			}
		}
	}
	if err := prepareRoot(s.Root); err != nil {
		return err
	}
	if err := s.makeDirs(); err != nil {
		return err
	}
	if err := s.pickPorts(); err != nil {
		return err
	}
	uid, gid, err := ensureVmail(s.vmailUser())
	if err != nil {
		return err
	}
	s.UID, s.GID = uid, gid
	if err := s.chownMail(); err != nil {
		return err
	}
	now := time.Now
	if s.Opts.Now != nil {
		now = s.Opts.Now
	}
	if s.cert, err = writeSelfSigned(s.Paths.Cert, s.Paths.Key, s.Hostname, now()); err != nil {
		return err
	}
	if err := s.startDNS(); err != nil {
		return err
	}
	if s.Sink, err = StartSink("127.0.0.1:0", s.Opts.SinkDir); err != nil {
		return err
	}
	s.log.Info("outside world sink", "addr", s.Sink.Addr())
	if s.PostkitBin = s.Opts.Postkit; s.PostkitBin == "" {
		if s.PostkitBin, err = BuildPostkit(ctx, s.Paths.Bin); err != nil {
			return err
		}
	}
	if err := s.writeConfig(); err != nil { // names the binary (paths.postkit)
		return err
	}
	if err := s.saveState(); err != nil {
		return err
	}
	if err := s.startReaper(); err != nil {
		return err
	}
	if s.Opts.Apply {
		if s.Applied, err = s.Apply(ctx); err != nil {
			return err
		}
	} else {
		if out, err := s.run(ctx, "", s.PostkitBin, "generate", "-c", s.Paths.Config, "--root", "/"); err != nil {
			return fmt.Errorf("harness: postkit generate: %w\n%s", err, out)
		}
		if out, err := s.run(ctx, "", s.PostkitBin, "db", "-c", s.Paths.Config, "init"); err != nil {
			return fmt.Errorf("harness: postkit db init: %w\n%s", err, out)
		}
	}
	if err := s.checkSieve(); err != nil {
		return err
	}
	if s.Opts.Seed != nil {
		if err := s.Opts.Seed(s); err != nil {
			return fmt.Errorf("harness: seed: %w", err)
		}
	}
	if err := s.checkDatabase(); err != nil {
		return err
	}
	for _, d := range s.Opts.Daemons {
		if _, err := s.StartDaemon(ctx, d); err != nil {
			return err
		}
	}
	if err := s.startPostfix(ctx); err != nil {
		return err
	}
	if err := s.startDovecot(ctx); err != nil {
		return err
	}
	return s.waitReady(ctx)
}

func (s *Stack) vmailUser() vmail {
	v := vmail{Name: "vmail", UID: 3000, GID: 3000}
	if u, ok := s.Opts.Set["mailbox.user"].(string); ok && u != "" {
		v.Name = u
	}
	if n, ok := s.Opts.Set["mailbox.uid"].(int); ok {
		v.UID = n
	}
	if n, ok := s.Opts.Set["mailbox.gid"].(int); ok {
		v.GID = n
	}
	return v
}

// layout places every path of the sandbox under root.
func layout(root string) Paths {
	j := func(p ...string) string { return filepath.Join(append([]string{root}, p...)...) }
	return Paths{
		Config:        j("postkit.yaml"),
		State:         j("stack.json"),
		Bin:           j("bin"),
		LogDir:        j("log"),
		PostfixConfig: j("etc", "postfix"),
		PostfixQueue:  j("spool", "postfix"),
		PostfixData:   j("lib", "postfix"),
		PostfixLog:    j("log", "postfix.log"),
		DovecotConfig: j("etc", "dovecot"),
		DovecotBase:   j("run", "dovecot"),
		DovecotState:  j("lib", "dovecot"),
		DovecotLog:    j("log", "dovecot.log"),
		PostkitRun:    j("lib", "postkit"),
		MailBase:      j("mail"),
		SieveDir:      j("sieve"),
		Database:      j("db", "postfix.sqlite"),
		Cert:          j("tls", "cert.pem"),
		Key:           j("tls", "key.pem"),
		// Under the queue directory, as a chrooted Postfix would need.
		LMTP: j("spool", "postfix", "private", "dovecot-lmtp"),
		Auth: j("spool", "postfix", "private", "auth"),
		// Likewise.
		QuotaStatus: j("spool", "postfix", "private", "quota-status"),
		Resolv:      j("etc", "resolv.conf"),
		Units:       j("systemd"),
	}
}

// marker proves a directory holds a sandbox of ours, so that prepareRoot may
// empty it.
const marker = ".postkit-sandbox"

// prepareRoot creates root, or empties one left by an earlier run. A non-empty
// directory without our marker is refused: it may be someone's data.
func prepareRoot(root string) error {
	entries, err := os.ReadDir(root)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("harness: %w", err)
	case len(entries) > 0:
		if _, err := os.Stat(filepath.Join(root, marker)); err != nil {
			return fmt.Errorf("harness: %s is not empty and holds no earlier sandbox: choose another directory", root)
		}
		if pidAlive(readPid(filepath.Join(root, "spool", "postfix", "pid", "master.pid"))) ||
			pidAlive(readPid(filepath.Join(root, "run", "dovecot", "master.pid"))) {
			return fmt.Errorf("harness: a stack is still running in %s: stop it first", root)
		}
		for _, e := range entries {
			if err := os.RemoveAll(filepath.Join(root, e.Name())); err != nil {
				return fmt.Errorf("harness: clean %s: %w", root, err)
			}
		}
	}
	// 0755 on the root and every parent we create: Postfix and Dovecot run
	// as their own users and must traverse it.
	if err := os.MkdirAll(root, 0o755); err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	if err := os.Chmod(root, 0o755); err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	return os.WriteFile(filepath.Join(root, marker), []byte("a postkit sandbox; removed by the next run\n"), 0o644)
}

func (s *Stack) makeDirs() error {
	p := s.Paths
	for _, d := range []string{p.Bin, p.LogDir, p.PostfixConfig, p.PostfixQueue, p.DovecotConfig,
		p.DovecotBase, p.DovecotState, p.PostkitRun, p.MailBase, p.SieveDir, filepath.Dir(p.Database),
		filepath.Dir(p.Cert)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("harness: %w", err)
		}
	}
	// data_directory must belong to the mail owner, mode 0700, or master
	// fails on master.lock (see the stack notes).
	if err := os.MkdirAll(p.PostfixData, 0o700); err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	uid, gid, err := lookupIDs("postfix")
	if err != nil {
		return err
	}
	if err := os.Chown(p.PostfixData, uid, gid); err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	return os.Chmod(p.PostfixData, 0o700)
}

func (s *Stack) chownMail() error {
	if err := os.Chown(s.Paths.MailBase, s.UID, s.GID); err != nil {
		return fmt.Errorf("harness: chown mailbox base: %w", err)
	}
	return os.Chmod(s.Paths.MailBase, 0o770)
}

// checkSieve makes sure `postkit generate` compiled the global Sieve
// scripts, as it does on a live system: Dovecot runs them as vmail, which
// may not write the compiled .svbin next to a root-owned script (it then
// compiles them in memory for every message and logs an error each time).
// generate skips the compilation, with a note, only when sievec is missing.
func (s *Stack) checkSieve() error {
	scripts, _ := filepath.Glob(filepath.Join(s.Paths.SieveDir, "*", "*.sieve"))
	for _, f := range scripts {
		if _, err := os.Stat(strings.TrimSuffix(f, ".sieve") + ".svbin"); err != nil {
			return fmt.Errorf("harness: postkit generate did not compile %s (%v): is sievec installed? apt-get install dovecot-sieve", f, err)
		}
	}
	return nil
}

// checkDatabase makes sure `postkit db init` left a database the postfix
// user can read (smtpd, cleanup and trivial-rewrite open it); it does not
// loosen the permissions postkit chose.
func (s *Stack) checkDatabase() error {
	if s.Opts.PostgresDSN != "" {
		return nil // readers connect over the network: nothing to read on disk
	}
	if _, err := os.Stat(s.Paths.Database); err != nil {
		return fmt.Errorf("harness: database not created by postkit db init: %w", err)
	}
	out, err := exec.Command("runuser", "-u", "postfix", "--", "test", "-r", s.Paths.Database).CombinedOutput()
	if err != nil {
		return fmt.Errorf("harness: the postfix user cannot read %s (%v %s): fix the permissions postkit db init sets", s.Paths.Database, err, out)
	}
	return nil
}

// pickPorts fills every zero port with a free one.
func (s *Stack) pickPorts() error {
	for _, p := range []*int{&s.Ports.SMTP, &s.Ports.Submission, &s.Ports.Submissions, &s.Ports.IMAP, &s.Ports.IMAPS, &s.Ports.ManageSieve} {
		if *p != 0 {
			continue
		}
		n, err := FreePort()
		if err != nil {
			return err
		}
		*p = n
	}
	return nil
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago, below
// the kernel's ephemeral range (testlib.FreeLoopbackPort).
func FreePort() (int, error) {
	p, err := testlib.FreeLoopbackPort()
	if err != nil {
		return 0, fmt.Errorf("harness: %w", err)
	}
	return p, nil
}

// Addr returns "127.0.0.1:port".
func Addr(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }

// Addr returns the stack's address for port: "IP:port".
func (s *Stack) Addr(port int) string { return net.JoinHostPort(s.IP, strconv.Itoa(port)) }

// run runs a command with a bounded time and returns its combined output.
// The output goes through a file, not a pipe: `postfix start` and `dovecot`
// leave daemons behind that inherit it, and a pipe would stay open until they
// exit.
func (s *Stack) run(ctx context.Context, stdin string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	f, err := os.CreateTemp("", "postkit-harness-out-")
	if err != nil {
		return "", fmt.Errorf("harness: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	cmd.Stdout, cmd.Stderr = f, f
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Run()
	out, _ := os.ReadFile(f.Name())
	s.log.Debug("ran", "cmd", name+" "+strings.Join(args, " "), "err", err)
	return string(out), err
}

// Postkit runs the postkit binary with args (no -c is added) and returns its
// combined output; stdin may be empty.
func (s *Stack) Postkit(ctx context.Context, stdin string, args ...string) (string, error) {
	out, err := s.run(ctx, stdin, s.PostkitBin, args...)
	if err != nil {
		return out, fmt.Errorf("harness: postkit %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out))
	}
	return out, nil
}

// Apply runs `postkit apply -c CONFIG --root / --json args...` on the
// sandbox (every path of its postkit.yaml is inside it) and returns the
// JSON report; the error carries the output.
func (s *Stack) Apply(ctx context.Context, args ...string) (string, error) {
	out, err := s.run(ctx, "", s.PostkitBin, append([]string{"apply", "-c", s.Paths.Config, "--root", "/", "--json"}, args...)...)
	if err != nil {
		return out, fmt.Errorf("harness: postkit apply %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return out, nil
}

// DB runs `postkit db -c CONFIG args...`.
func (s *Stack) DB(ctx context.Context, stdin string, args ...string) (string, error) {
	return s.Postkit(ctx, stdin, append([]string{"db", "-c", s.Paths.Config}, args...)...)
}
