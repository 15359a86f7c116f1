package harness

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/internal/daemon"
)

// startPostfix runs `postfix check` (which creates the queue directories) and
// `postfix start`. Unless Options.NoPostfixResolver, the master runs in its
// own mount namespace where /etc/resolv.conf is the sandbox's, pointing at the
// test DNS server: Postfix's own lookups (sender domains, client names) never
// leave the machine, and the machine's resolv.conf is untouched.
func (s *Stack) startPostfix(ctx context.Context) error {
	dir := s.Paths.PostfixConfig
	if out, err := s.run(ctx, "", "postfix", "-c", dir, "check"); err != nil {
		return fmt.Errorf("harness: postfix -c %s check: %w\n%s", dir, err, out)
	}
	s.mu.Lock()
	s.started.postfix = true
	s.mu.Unlock()
	var out string
	var err error
	if s.ResolverAddr != "" {
		script := `mount --bind "$1" /etc/resolv.conf && exec postfix -c "$2" start`
		out, err = s.run(ctx, "", "unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", s.Paths.Resolv, dir)
	} else {
		out, err = s.run(ctx, "", "postfix", "-c", dir, "start")
	}
	if err != nil {
		return fmt.Errorf("harness: postfix -c %s start: %w\n%s", dir, err, out)
	}
	s.log.Info("postfix started", "config", dir, "smtp", s.Ports.SMTP, "submission", s.Ports.Submission, "submissions", s.Ports.Submissions)
	return nil
}

// startDovecot starts Dovecot's master, which daemonizes.
func (s *Stack) startDovecot(ctx context.Context) error {
	conf := filepath.Join(s.Paths.DovecotConfig, "dovecot.conf")
	s.mu.Lock()
	s.started.dovecot = true
	s.mu.Unlock()
	if out, err := s.run(ctx, "", "dovecot", "-c", conf); err != nil {
		return fmt.Errorf("harness: dovecot -c %s: %w\n%s", conf, err, out)
	}
	s.log.Info("dovecot started", "config", conf, "imap", s.Ports.IMAP, "imaps", s.Ports.IMAPS)
	return nil
}

// waitReady waits for the SMTP banners and IMAP greetings of every service.
func (s *Stack) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	checks := []struct {
		name   string
		port   int
		tls    bool
		prefix string
	}{
		{"smtp", s.Ports.SMTP, false, "220 "},
		{"submission", s.Ports.Submission, false, "220 "},
		{"submissions", s.Ports.Submissions, true, "220 "},
		{"imap", s.Ports.IMAP, false, "* OK"},
		{"imaps", s.Ports.IMAPS, true, "* OK"},
	}
	cfg, _, err := config.Load(s.Paths.Config)
	if err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	if cfg.Sieve.Enabled && cfg.Sieve.ManageSieve != "" {
		checks = append(checks, struct {
			name   string
			port   int
			tls    bool
			prefix string
		}{"managesieve", s.Ports.ManageSieve, false, `"IMPLEMENTATION"`})
	}
	for _, c := range checks {
		var last error
		for {
			line, err := s.greeting(c.port, c.tls)
			if err == nil && strings.HasPrefix(line, c.prefix) {
				break
			}
			if err == nil {
				err = fmt.Errorf("unexpected greeting %q", line)
			}
			last = err
			select {
			case <-ctx.Done():
				return fmt.Errorf("harness: %s on %s never greeted: %v", c.name, s.Addr(c.port), last)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	// Delivery goes through these sockets: they exist once Dovecot is up.
	sockets := []string{s.Paths.LMTP, s.Paths.Auth}
	if q := cfg.Mailbox.Quota; q.StatusCheck() && strings.HasPrefix(q.Status, "unix:") {
		sockets = append(sockets, strings.TrimPrefix(q.Status, "unix:"))
	}
	for _, p := range sockets {
		if err := waitDial(ctx, "unix", p); err != nil {
			return fmt.Errorf("harness: dovecot socket %s: %w", p, err)
		}
	}
	return nil
}

// greeting reads the first line a service sends.
func (s *Stack) greeting(port int, implicitTLS bool) (string, error) {
	c, err := net.DialTimeout("tcp", s.Addr(port), 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if implicitTLS {
		tc := tls.Client(c, s.TLSConfig())
		if err := tc.Handshake(); err != nil {
			return "", err
		}
		c = tc
	}
	return bufio.NewReader(c).ReadString('\n')
}

func waitDial(ctx context.Context, network, addr string) error {
	for {
		c, err := net.DialTimeout(network, addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// DaemonSpec describes a long-running process of the stack.
type DaemonSpec struct {
	// Name labels the daemon; its output goes to LogDir/NAME.log.
	Name string
	// Args are the postkit arguments, e.g. "milter", "-c", s.Paths.Config.
	// In each argument {config} is replaced by the postkit.yaml path and
	// {root} by the root. If Command is set, Args are its arguments instead.
	Args    []string
	Command string
	// Ready is the address that accepts connections once the daemon is
	// ready, in Postfix syntax (unix:/path or inet:host:port; {root} allowed).
	// Empty: ready as soon as it runs.
	Ready string
}

// Daemon is a process started by StartDaemon.
type Daemon struct {
	Name string
	Log  string     // its stdout and stderr
	Spec DaemonSpec // what started it, for RestartDaemon
	cmd  *exec.Cmd
	done chan struct{}
	err  error // valid after done is closed
}

// Pid is the daemon's process id.
func (d *Daemon) Pid() int { return d.cmd.Process.Pid }

// Running reports whether the process has not exited.
func (d *Daemon) Running() bool {
	select {
	case <-d.done:
		return false
	default:
		return true
	}
}

// StartDaemon starts a postkit daemon (or spec.Command) and waits until its
// Ready address accepts a connection. The daemon is stopped by Stop, and its
// log is part of Tails.
func (s *Stack) StartDaemon(ctx context.Context, spec DaemonSpec) (*Daemon, error) {
	r := strings.NewReplacer("{config}", s.Paths.Config, "{root}", s.Root)
	name := spec.Command
	if name == "" {
		name = s.PostkitBin
	}
	args := make([]string, len(spec.Args))
	for i, a := range spec.Args {
		args[i] = r.Replace(a)
	}
	logPath := filepath.Join(s.Paths.LogDir, spec.Name+".log")
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("harness: daemon %s: %w", spec.Name, err)
	}
	defer lf.Close()
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	// Its own process group: a Ctrl-C in the demo's terminal reaches only the
	// demo, which then stops the daemons in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("harness: start %s: %w", spec.Name, err)
	}
	d := &Daemon{Name: spec.Name, Log: logPath, Spec: spec, cmd: cmd, done: make(chan struct{})}
	go func() { d.err = cmd.Wait(); close(d.done) }()
	s.mu.Lock()
	s.daemons = append(s.daemons, d)
	s.mu.Unlock()
	if err := s.saveState(); err != nil {
		return d, err
	}
	if spec.Ready == "" {
		return d, nil
	}
	a, err := daemon.ParseAddr(r.Replace(spec.Ready))
	if err != nil {
		return d, fmt.Errorf("harness: daemon %s: %w", spec.Name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for {
		c, err := net.DialTimeout(a.Network, a.Address, time.Second)
		if err == nil {
			c.Close()
			s.log.Info("daemon ready", "name", spec.Name, "pid", d.Pid(), "addr", a.String())
			return d, nil
		}
		select {
		case <-d.done:
			return d, fmt.Errorf("harness: daemon %s exited before listening on %s: %v\n%s", spec.Name, a, d.err, tailFile(logPath, 30))
		case <-ctx.Done():
			return d, fmt.Errorf("harness: daemon %s does not answer on %s: %v\n%s", spec.Name, a, err, tailFile(logPath, 30))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// StopDaemon stops one daemon (SIGTERM, then SIGKILL after 10 s).
func (s *Stack) StopDaemon(d *Daemon) error {
	if !d.Running() {
		return nil
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		return nil
	case <-time.After(10 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
		return fmt.Errorf("harness: daemon %s ignored SIGTERM for 10s and was killed", d.Name)
	}
}

// Daemon returns the daemon last started under name (by Options.Daemons
// or StartDaemon), or nil.
func (s *Stack) Daemon(name string) *Daemon {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.daemons) - 1; i >= 0; i-- {
		if s.daemons[i].Name == name {
			return s.daemons[i]
		}
	}
	return nil
}

// KillDaemon kills a daemon with SIGKILL, as a crash or the kernel's OOM
// killer would: it cleans nothing up (a unix socket file stays behind), and
// waits for it to be gone.
func (s *Stack) KillDaemon(d *Daemon) error {
	if !d.Running() {
		return fmt.Errorf("harness: daemon %s is not running: %v", d.Name, d.err)
	}
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("harness: kill %s: %w", d.Name, err)
	}
	select {
	case <-d.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("harness: daemon %s (pid %d) still running 10s after SIGKILL", d.Name, d.Pid())
	}
}

// RestartDaemon starts a stopped or killed daemon again with the same spec,
// and waits until it is ready.
func (s *Stack) RestartDaemon(ctx context.Context, d *Daemon) (*Daemon, error) {
	if d.Running() {
		return nil, fmt.Errorf("harness: daemon %s (pid %d) is still running", d.Name, d.Pid())
	}
	return s.StartDaemon(ctx, d.Spec)
}

// Stop stops everything Start started, in reverse order: Dovecot, Postfix,
// daemons, DNS, sink. It is safe to call more than once.
func (s *Stack) Stop() error {
	s.stopOnce.Do(func() { s.stopErr = s.stop() })
	return s.stopErr
}

func (s *Stack) stop() error {
	var errs []error
	s.mu.Lock()
	started := s.started
	daemons := append([]*Daemon(nil), s.daemons...)
	s.mu.Unlock()
	if started.dovecot {
		errs = append(errs, stopDovecot(s.Paths.DovecotBase))
	}
	if started.postfix {
		errs = append(errs, stopPostfix(s.Paths.PostfixConfig, s.Paths.PostfixQueue))
	}
	for i := len(daemons) - 1; i >= 0; i-- {
		errs = append(errs, s.StopDaemon(daemons[i]))
	}
	s.stopReaper()
	if s.relay != nil {
		s.relay.Close()
	}
	if s.DNS != nil {
		s.DNS.Close()
	}
	if s.Sink != nil {
		s.Sink.Close()
	}
	return errors.Join(errs...)
}

func stopDovecot(base string) error {
	pid := readPid(filepath.Join(base, "master.pid"))
	if pid == 0 {
		return nil
	}
	return terminate(pid, 10*time.Second)
}

func stopPostfix(config, queue string) error {
	pid := readPid(filepath.Join(queue, "pid", "master.pid"))
	if !pidAlive(pid) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "postfix", "-c", config, "stop").CombinedOutput()
	if err != nil {
		return errors.Join(fmt.Errorf("harness: postfix stop: %w: %s", err, strings.TrimSpace(string(out))), terminate(pid, 5*time.Second))
	}
	if !waitGone(pid, 15*time.Second) {
		return terminate(pid, 5*time.Second)
	}
	return nil
}

// state is what another process needs to stop a stack (demo-stop).
type state struct {
	Root          string `json:"root"`
	PostfixConfig string `json:"postfix_config"`
	PostfixQueue  string `json:"postfix_queue"`
	DovecotBase   string `json:"dovecot_base"`
	Daemons       []int  `json:"daemons"`
}

func (s *Stack) saveState() error {
	st := state{Root: s.Root, PostfixConfig: s.Paths.PostfixConfig, PostfixQueue: s.Paths.PostfixQueue, DovecotBase: s.Paths.DovecotBase}
	s.mu.Lock()
	for _, d := range s.daemons {
		st.Daemons = append(st.Daemons, d.Pid())
	}
	s.mu.Unlock()
	var pids strings.Builder
	for _, p := range st.Daemons {
		fmt.Fprintln(&pids, p)
	}
	if err := os.WriteFile(s.daemonPidsFile(), []byte(pids.String()), 0o644); err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	if err := os.WriteFile(s.Paths.State, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	return nil
}

// StopRoot stops a stack from its root directory alone, using the state file
// Start wrote: Dovecot, Postfix, then the daemons. It is how a stack left
// running by another process (the detached demo) is stopped.
func StopRoot(root string) error {
	b, err := os.ReadFile(filepath.Join(root, "stack.json"))
	if err != nil {
		return fmt.Errorf("harness: no stack state in %s: %w", root, err)
	}
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("harness: %s/stack.json: %w", root, err)
	}
	errs := []error{stopDovecot(st.DovecotBase), stopPostfix(st.PostfixConfig, st.PostfixQueue)}
	for _, pid := range st.Daemons {
		errs = append(errs, terminate(pid, 10*time.Second))
	}
	return errors.Join(errs...)
}

// LogFiles lists the stack's logs: Postfix, Dovecot, then each daemon's.
func (s *Stack) LogFiles() []string {
	files := []string{s.Paths.PostfixLog, s.Paths.DovecotLog}
	more, _ := filepath.Glob(filepath.Join(s.Paths.LogDir, "*.log"))
	sort.Strings(more)
	for _, f := range more {
		if f != s.Paths.PostfixLog && f != s.Paths.DovecotLog {
			files = append(files, f)
		}
	}
	return files
}

// Tails returns the last n lines of every log, each under a title.
func (s *Stack) Tails(n int) string {
	var b strings.Builder
	for _, f := range s.LogFiles() {
		fmt.Fprintf(&b, "==> %s (last %d lines) <==\n%s\n", f, n, tailFile(f, n))
	}
	return b.String()
}

// Offsets returns the current size of every log, for TailsSince.
func (s *Stack) Offsets() map[string]int64 {
	m := map[string]int64{}
	for _, f := range s.LogFiles() {
		if fi, err := os.Stat(f); err == nil {
			m[f] = fi.Size()
		}
	}
	return m
}

// TailsSince is Tails restricted to what each log gained after the offsets.
func (s *Stack) TailsSince(off map[string]int64, n int) string {
	var b strings.Builder
	for _, f := range s.LogFiles() {
		data, err := os.ReadFile(f)
		if err != nil {
			fmt.Fprintf(&b, "==> %s: %v <==\n", f, err)
			continue
		}
		if o := off[f]; o <= int64(len(data)) {
			data = data[o:]
		}
		fmt.Fprintf(&b, "==> %s (last %d new lines) <==\n%s\n", f, n, lastLines(string(data), n))
	}
	return b.String()
}

func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	return lastLines(string(data), n)
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return "(empty)"
	}
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
