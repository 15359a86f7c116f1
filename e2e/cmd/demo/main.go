// Command demo runs the postkit stack (Postfix, Dovecot, postkit's daemons) in a
// sandbox directory on loopback, seeds a demo user, sends a message through it
// and shows where it landed. It shares its implementation with the end-to-end
// tests (package harness). `make demo` runs it through scripts/demo.sh.
//
//	demo up   [-root DIR] [-postkit BIN] [-detach]   start (foreground until Ctrl-C, or detached)
//	demo down [-root DIR]                            stop a running demo
package main

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/postkit/postkit/e2e/harness"
)

// Fixed ports, so that the printed instructions stay true from run to run.
var demoPorts = harness.Ports{SMTP: 2525, Submission: 2587, Submissions: 2465, IMAP: 2143, IMAPS: 2993}

const (
	reportFD   = "POSTKIT_DEMO_REPORT_FD"
	milterSock = "unix:{root}/run/postkit/milter.sock"
	policySock = "unix:{root}/run/postkit/policy.sock"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "up":
		err = up(os.Args[2:])
	case "down":
		err = down(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: demo up [-root DIR] [-postkit BIN] [-detach] | demo down [-root DIR]")
	os.Exit(2)
}

func rootFlag(fs *flag.FlagSet) *string {
	return fs.String("root", "demo", "sandbox directory (emptied first if it holds an earlier demo)")
}

func up(args []string) error {
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	root := rootFlag(fs)
	bin := fs.String("postkit", "", "postkit binary (default: go build ./cmd/postkit)")
	detach := fs.Bool("detach", false, "leave the stack running in the background and exit")
	fs.Parse(args)
	if err := harness.Check(); err != nil {
		return err
	}
	dir, err := filepath.Abs(*root)
	if err != nil {
		return err
	}
	if *bin != "" {
		if *bin, err = filepath.Abs(*bin); err != nil {
			return err
		}
	}
	if pid := readPid(pidFile(dir)); pidAlive(pid) {
		return fmt.Errorf("a demo is already running in %s (pid %d): stop it with `make demo-stop`", dir, pid)
	}
	if *detach {
		return spawn(dir, *bin)
	}
	return serve(dir, *bin)
}

// spawn starts `demo up` again in its own session, shows what it reports
// until the stack is up, and returns, leaving it running.
func spawn(dir, bin string) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer null.Close()
	cmd := exec.Command(self, "up", "-root", dir, "-postkit", bin)
	cmd.Env = append(os.Environ(), reportFD+"=3")
	cmd.ExtraFiles = []*os.File{w}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = null, null, null
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	w.Close()
	io.Copy(os.Stdout, r) // until the child closes its report
	r.Close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return fmt.Errorf("the demo stack did not stay up (%v); see above and %s", err, filepath.Join(dir, "log"))
	case <-time.After(500 * time.Millisecond):
	}
	fmt.Printf("\nThe stack keeps running in the background (pid %d). Stop it with: make demo-stop\n", cmd.Process.Pid)
	return nil
}

// serve runs the stack in this process until SIGINT or SIGTERM.
func serve(dir, bin string) error {
	out := io.Writer(os.Stdout)
	var report *os.File
	if fd, err := strconv.Atoi(os.Getenv(reportFD)); err == nil {
		// Not inherited by Postfix and Dovecot, which would keep the
		// parent waiting on the pipe for as long as they run.
		syscall.CloseOnExec(fd)
		report = os.NewFile(uintptr(fd), "report")
		out = report
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	password := randomPassword()
	user := "demo@" + harness.Domain
	fmt.Fprintf(out, "postkit demo: sandbox in %s\n", dir)
	log := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelInfo}))
	s, err := harness.Start(ctx, harness.Options{
		Root:    dir,
		Postkit: bin,
		Ports:   demoPorts,
		SinkDir: filepath.Join(dir, "outside"),
		Log:     log,
		// postkit's own daemons, wired into Postfix by `postkit generate`:
		// the milter scrubs and DKIM-signs outbound mail and verifies
		// inbound signatures; the policy service checks the SQL blacklists
		// and SPF at RCPT time.
		Set: map[string]any{
			"milter.enabled":      true,
			"milter.listen":       milterSock,
			"milter.dkim.key_dir": "{root}/dkimkeys",
			"milter.dkim.keys": []any{
				map[string]any{"domain": harness.Domain, "selector": "ed1"},
				map[string]any{"domain": harness.Domain, "selector": "rsa1"},
			},
			"policy.enabled":         true,
			"policy.listen":          policySock,
			"policy.checks":          []any{"blacklist", "spf"},
			"policy.blacklist.owner": "policy",
		},
		Zone: []string{harness.OutsideDomain + `. 300 IN TXT "v=spf1 ip4:127.0.0.2 -all"`},
		Seed: func(s *harness.Stack) error {
			if err := s.AddUser(ctx, user, password); err != nil {
				return err
			}
			if err := s.AddVirtualAlias(ctx, "info@"+harness.Domain, user); err != nil {
				return err
			}
			for sel, algo := range map[string]string{"ed1": "ed25519", "rsa1": "rsa"} {
				if _, err := s.Postkit(ctx, "", "dkim", "keygen", "--domain", harness.Domain, "--selector", sel,
					"--algo", algo, "--dir", filepath.Join(s.Root, "dkimkeys", harness.Domain)); err != nil {
					return err
				}
			}
			return nil
		},
		Daemons: []harness.DaemonSpec{
			{Name: "milter", Args: []string{"milter", "-c", "{config}"}, Ready: milterSock},
			{Name: "policyd", Args: []string{"policyd", "-c", "{config}"}, Ready: policySock},
		},
	})
	if err != nil {
		fmt.Fprintln(out, "demo:", err)
		return errors.New("the stack did not start")
	}
	defer func() {
		fmt.Println("stopping the stack…")
		if err := s.Stop(); err != nil {
			fmt.Println("demo:", err)
		}
		os.Remove(pidFile(dir))
	}()
	if err := os.WriteFile(pidFile(dir), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return err
	}
	showcase(ctx, out, s, user, password)
	if report != nil {
		fmt.Fprintf(out, "\nLogs: %s\n", s.Paths.LogDir)
		report.Close()
	} else {
		fmt.Fprintf(out, "\nThe stack runs until Ctrl-C (or `make demo-stop` from another terminal).\n")
	}
	<-ctx.Done()
	return nil
}

// showcase sends a message through the stack, prints it as delivered, and
// says how to use the stack.
func showcase(ctx context.Context, out io.Writer, s *harness.Stack, user, password string) {
	fmt.Fprintf(out, `
== The stack is up (everything on 127.0.0.1) ==
  SMTP, port 25 role      127.0.0.1:%d   (STARTTLS offered; mail for %s)
  Submission (587 role)   127.0.0.1:%d   (STARTTLS + AUTH required)
  Submissions (465 role)  127.0.0.1:%d   (implicit TLS + AUTH)
  IMAP (143 role)         127.0.0.1:%d   (STARTTLS)
  IMAPS (993 role)        127.0.0.1:%d
  Demo user               %s
  Password                %s
  Outside world (sink)    %s -> %s
  Configuration           %s (generated: %s, %s)
`, s.Ports.SMTP, harness.Domain, s.Ports.Submission, s.Ports.Submissions, s.Ports.IMAP, s.Ports.IMAPS,
		user, password, s.Sink.Addr(), filepath.Join(s.Root, "outside"), s.Paths.Config, s.Paths.PostfixConfig, s.Paths.DovecotConfig)

	tok := harness.Token()
	from := "visitor@" + harness.OutsideDomain
	args := []string{"--server", "127.0.0.1", "--port", strconv.Itoa(s.Ports.SMTP), "--local-interface", harness.OutsideIP,
		"--ehlo", "client." + harness.OutsideDomain, "--from", from, "--to", user,
		"--header", "Subject: Hello from the postkit demo " + tok, "--body", "It works. (" + tok + ")"}
	fmt.Fprintf(out, "\n== Sending a message from the outside with swaks ==\n$ swaks %s\n", strings.Join(quote(args), " "))
	if _, err := exec.LookPath("swaks"); err != nil {
		fmt.Fprintln(out, "swaks is not installed; sending with the built-in client instead")
		c, err := s.SMTP(harness.OutsideIP)
		if err == nil {
			err = harness.Send(c, from, []string{user}, harness.Message(from, user, tok))
			c.Close()
		}
		if err != nil {
			fmt.Fprintln(out, "send failed:", err)
			return
		}
	} else {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		b, err := exec.CommandContext(sctx, "swaks", args...).CombinedOutput()
		cancel()
		fmt.Fprint(out, lastLines(string(b), 6))
		if err != nil {
			fmt.Fprintln(out, "swaks failed:", err)
			return
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	m, err := s.WaitMail(wctx, user, "", tok)
	cancel()
	if err != nil {
		fmt.Fprintln(out, "not delivered:", err)
		fmt.Fprint(out, s.Tails(20))
		return
	}
	fmt.Fprintf(out, "\n== Delivered by Dovecot LMTP to %s ==\n%s\n", m.Path, strings.ReplaceAll(string(m.Data), "\r\n", "\n"))

	// Spam: the GTUBE test string scores 1000 with the shipped rules; the
	// generated Sieve rule files X-Spam-Flag: YES into Spam.
	tok = harness.Token()
	spamMsg := append(harness.Message(from, user, tok), []byte(gtube+"\r\n")...)
	if c, err := s.SMTP(harness.OutsideIP); err == nil {
		err = harness.Send(c, from, []string{user}, spamMsg)
		c.Close()
		if err == nil {
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			sm, err := s.WaitMail(wctx, user, "Spam", tok)
			cancel()
			if err == nil {
				fmt.Fprintf(out, "== A GTUBE test message, filed into Spam (%s); its spam fields ==\n", sm.Path)
				in := false // within an X-Spam-* field, continuation lines included
				for _, line := range strings.Split(strings.ReplaceAll(string(sm.Data), "\r\n", "\n"), "\n") {
					if line == "" {
						break
					}
					if cont := strings.HasPrefix(line, "\t") || strings.HasPrefix(line, " "); !cont {
						in = strings.HasPrefix(line, "X-Spam-") || strings.HasPrefix(line, "Subject:")
					}
					if in {
						fmt.Fprintln(out, line)
					}
				}
				fmt.Fprintln(out)
			}
		}
	}

	// The other way: the demo user submits (587, STARTTLS, AUTH) to the
	// outside world; the milter signs on the way out.
	tok = harness.Token()
	to := "friend@" + harness.OutsideDomain
	c, err := s.Submission(harness.OutsideIP, true)
	if err == nil {
		err = c.Auth(harness.Plain(user, password))
		if err == nil {
			err = harness.Send(c, user, []string{to}, harness.Message(user, to, tok, "X-Mailer: postkit demo"))
		}
		c.Close()
	}
	if err != nil {
		fmt.Fprintln(out, "submission failed:", err)
		return
	}
	wctx, cancel = context.WithTimeout(ctx, 30*time.Second)
	sm, err := s.Sink.Wait(wctx, func(m harness.SinkMessage) bool { return strings.Contains(string(m.Data), tok) })
	cancel()
	if err != nil {
		fmt.Fprintln(out, "not relayed:", err)
		return
	}
	hdr, _, _ := strings.Cut(strings.ReplaceAll(string(sm.Data), "\r\n", "\n"), "\n\n")
	fmt.Fprintf(out, "== Submitted by %s on port %d, as the outside world received it (headers) ==\n%s\n\n", user, s.Ports.Submission, hdr)

	fmt.Fprintf(out, `== Try it yourself ==
  # Mail from the outside (127.0.0.2 is not a trusted network):
  swaks --server 127.0.0.1 --port %[1]d --local-interface 127.0.0.2 --ehlo client.%[2]s --from you@%[2]s --to %[3]s
  # Submission with authentication, relayed to the outside world (see %[9]s):
  swaks --server 127.0.0.1 --port %[4]d -tls --auth PLAIN --auth-user %[3]s --auth-password '%[5]s' --from %[3]s --to friend@%[2]s
  # ... as an address that is not yours: refused at MAIL FROM (553 5.7.1); info@%[12]s, an alias of yours, is allowed:
  swaks --server 127.0.0.1 --port %[4]d -tls --auth PLAIN --auth-user %[3]s --auth-password '%[5]s' --from billing@%[12]s --to friend@%[2]s
  %[10]s lookup -c %[11]s sender-login info@%[12]s
  # Read the mailbox over IMAP:
  curl -k --ssl-reqd --url 'imap://127.0.0.1:%[6]d/INBOX' --user '%[3]s:%[5]s' -X 'SEARCH ALL'
  curl -k --url 'imaps://127.0.0.1:%[7]d/INBOX;MAILINDEX=1' --user '%[3]s:%[5]s'
  # A mail client: IMAP 127.0.0.1:%[7]d (SSL/TLS) and SMTP 127.0.0.1:%[4]d (STARTTLS),
  # user %[3]s, normal password; accept the self-signed certificate %[8]s.
  # Add users:  printf 'a-long-passphrase\n' | %[10]s db -c %[11]s user add you@%[12]s --password-stdin
  # Spam: GTUBE lands in Spam; moving a message into Spam over IMAP teaches the Bayes store:
  swaks --server 127.0.0.1 --port %[1]d --local-interface 127.0.0.2 --ehlo client.%[2]s --from you@%[2]s --to %[3]s --body '%[13]s'
  curl -k --url 'imaps://127.0.0.1:%[7]d/INBOX' --user '%[3]s:%[5]s' -X 'MOVE 1 Spam'
  %[10]s spam stats --bayes %[14]s
`, s.Ports.SMTP, harness.OutsideDomain, user, s.Ports.Submission, password, s.Ports.IMAP, s.Ports.IMAPS,
		s.Paths.Cert, filepath.Join(s.Root, "outside"), s.PostkitBin, s.Paths.Config, harness.Domain, gtube,
		filepath.Join(s.Paths.PostkitRun, "bayes.sqlite"))
}

// gtube is the GTUBE test string (split: this file is not spam).
var gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-" + "ANTI-UBE-TEST-EMAIL*C.34X"

// down stops the demo running in the sandbox: its process if it is alive
// (it then stops the stack in order), otherwise the stack's processes.
func down(args []string) error {
	fs := flag.NewFlagSet("down", flag.ExitOnError)
	root := rootFlag(fs)
	fs.Parse(args)
	dir, err := filepath.Abs(*root)
	if err != nil {
		return err
	}
	if pid := readPid(pidFile(dir)); pidAlive(pid) {
		syscall.Kill(pid, syscall.SIGTERM)
		deadline := time.Now().Add(60 * time.Second)
		for pidAlive(pid) && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if pidAlive(pid) {
			return fmt.Errorf("demo process %d did not stop within 60s", pid)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "stack.json")); err != nil {
		fmt.Println("no demo stack in", dir)
		return nil
	}
	// Whatever the demo process left behind (it may have been killed).
	if err := harness.StopRoot(dir); err != nil {
		return err
	}
	os.Remove(pidFile(dir))
	fmt.Println("demo stopped; its files stay in", dir)
	return nil
}

func pidFile(dir string) string { return filepath.Join(dir, "demo.pid") }

func readPid(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

func pidAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func randomPassword() string {
	var b [10]byte
	rand.Read(b[:])
	return strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}

func quote(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " '\"()$") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		out[i] = a
	}
	return out
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n") + "\n"
}
