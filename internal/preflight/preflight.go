// Package preflight has Postfix and Dovecot read a staged tree of generated
// files before it replaces the live one: postconf(1) reads main.cf and
// master.cf, doveconf(1) reads dovecot.conf and conf.d, and sievec(1)
// compiles the Sieve scripts, each on the staged copies.
//
// The staged files name their live paths (main.cf says
// sqlite:/etc/postfix/sqlite-domaines.cf, not the staged copy), so a program
// that follows such a path reads the live file, or finds none. What is
// expected and what is fatal:
//
//   - a non-zero exit is always fatal;
//   - postconf: `open "TYPE" configuration "PATH"` warnings are expected
//     when PATH is one of the files being installed (the live copy is the
//     old one, or missing until the swap), or when the files are written
//     under a root other than / and ROOT/PATH exists; every other warning
//     is fatal: an unused parameter, a malformed line, a table type Postfix
//     does not know, a map file the configuration names that does not
//     exist;
//   - doveconf and sievec: every line on standard error is fatal (they are
//     silent on a good configuration), unless it names a file being
//     installed;
//   - a program that is not installed is skipped with a note: on a host
//     without Postfix or Dovecot (building a configuration for elsewhere)
//     the files are installed unchecked, as before.
//
// `postfix check` is not run: it creates missing queue directories, changes
// owners and moves queue files (post-install create-missing, postsuper), so
// it writes to the live system. What it verifies of the configuration
// itself, postconf -n and -M read; and that master.cf has the postlog
// service when maillog_file is set is checked here as it does.
package preflight

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// Set is what to check: the stage, the live paths of its files, and where
// the Postfix and Dovecot configurations and the Sieve scripts live.
type Set struct {
	Stage         string   // the staging directory: every file at its live path under it
	Root          string   // where the live paths are; "/" for the live system
	Files         []string // live paths of every staged file
	PostfixConfig string   // live config_directory, e.g. /etc/postfix
	MaillogFile   bool     // main.cf sets maillog_file: master.cf needs postlog
	DovecotConfig string   // live dovecot.conf
	Sieve         []string // live paths of the Sieve scripts
}

// Error is a program refusing the staged files.
type Error struct {
	Program string // postconf, doveconf, sievec
	Command string // the command line, on staged paths
	Lines   []string
	Err     error // the exit status, if it failed
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s refused the generated files (%s", e.Program, e.Command)
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	b.WriteString(")")
	for _, l := range e.Lines {
		b.WriteString("\n    " + l)
	}
	return b.String()
}

// Note is called for each program that is missing.
type Note func(format string, args ...any)

// Check runs postconf, doveconf and sievec over s.Stage and returns the
// first refusal. In its message the stage, which is gone by the time it is
// read, is written <staged>: <staged>/etc/postfix/main.cf is the main.cf
// that was about to be installed.
func Check(s Set, note Note) error {
	for _, step := range []func(Set, Note) error{postconf, doveconf, sievec} {
		if err := step(s, note); err != nil {
			var pe *Error
			if errors.As(err, &pe) {
				pe.Command = strings.ReplaceAll(pe.Command, s.Stage, "<staged>")
				for i, l := range pe.Lines {
					pe.Lines[i] = strings.ReplaceAll(l, s.Stage, "<staged>")
				}
			}
			return err
		}
	}
	return nil
}

func (s Set) staged(p string) string { return filepath.Join(s.Stage, p) }

// installing reports whether p is the live path of a staged file.
func (s Set) installing(p string) bool {
	for _, f := range s.Files {
		if f == p {
			return true
		}
	}
	return false
}

// underRoot reports whether p exists under a root other than /.
func (s Set) underRoot(p string) bool {
	if s.Root == "" || s.Root == "/" {
		return false
	}
	_, err := os.Stat(filepath.Join(s.Root, p))
	return err == nil
}

// run runs a program and returns its standard error; a start failure or a
// non-zero exit is an *Error.
func run(name, path string, args ...string) ([]string, error) {
	cmd := exec.Command(path, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	lines := nonEmpty(stderr.String())
	if err != nil {
		if len(lines) == 0 {
			lines = []string{"(no message)"}
		}
		return nil, &Error{Program: name, Command: name + " " + strings.Join(args, " "), Lines: lines, Err: err}
	}
	return lines, nil
}

func nonEmpty(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

func find(name, pkg string, note Note, what string) (string, bool) {
	p, err := exec.LookPath(name)
	if err != nil {
		if note != nil {
			note("%s not found (apt-get install %s): %s not checked before being installed", name, pkg, what)
		}
		return "", false
	}
	return p, true
}

var openConfRE = regexp.MustCompile(`warning: open "[a-z0-9_]+" configuration "([^"]+)": `)

func postconf(s Set, note Note) error {
	bin, ok := find("postconf", "postfix", note, "main.cf and master.cf")
	if !ok {
		return nil
	}
	dir := s.staged(s.PostfixConfig)
	for _, flag := range []string{"-n", "-M"} {
		lines, err := run("postconf", bin, "-c", dir, flag)
		if err != nil {
			return err
		}
		var fatal []string
		for _, l := range lines {
			if m := openConfRE.FindStringSubmatch(l); m != nil && (s.installing(m[1]) || s.underRoot(m[1])) {
				continue
			}
			fatal = append(fatal, l)
		}
		if len(fatal) > 0 {
			return &Error{Program: "postconf", Command: "postconf -c " + dir + " " + flag, Lines: fatal}
		}
	}
	if s.MaillogFile {
		out, err := exec.Command(bin, "-c", dir, "-M", "postlog/unix-dgram").Output()
		if err != nil || len(bytes.TrimSpace(out)) == 0 {
			return &Error{Program: "postconf", Command: "postconf -c " + dir + " -M postlog/unix-dgram",
				Lines: []string{"maillog_file is set but master.cf has no postlog service: Postfix would log nothing"}, Err: err}
		}
	}
	return nil
}

// fatalLines keeps the lines of doveconf or sievec that are not about a
// file being installed.
func (s Set) fatalLines(lines []string) []string {
	var fatal []string
	for _, l := range lines {
		expected := false
		for _, f := range s.Files {
			if strings.Contains(l, f) && !strings.Contains(l, s.Stage) {
				expected = true
			}
		}
		if !expected {
			fatal = append(fatal, l)
		}
	}
	return fatal
}

func doveconf(s Set, note Note) error {
	if s.DovecotConfig == "" {
		return nil
	}
	bin, ok := find("doveconf", "dovecot-core", note, "Dovecot's configuration")
	if !ok {
		return nil
	}
	conf := s.staged(s.DovecotConfig)
	lines, err := run("doveconf", bin, "-c", conf, "-n")
	if err != nil {
		return err
	}
	if fatal := s.fatalLines(lines); len(fatal) > 0 {
		return &Error{Program: "doveconf", Command: "doveconf -c " + conf + " -n", Lines: fatal}
	}
	return nil
}

// sievec compiles each staged script, always (not only when it changed),
// with the staged Dovecot configuration, into the stage.
func sievec(s Set, note Note) error {
	if len(s.Sieve) == 0 {
		return nil
	}
	bin, ok := find("sievec", "dovecot-sieve", note, strings.Join(s.Sieve, ", "))
	if !ok {
		return nil
	}
	conf := s.staged(s.DovecotConfig)
	for _, script := range s.Sieve {
		src := s.staged(script)
		out := strings.TrimSuffix(src, ".sieve") + ".svbin"
		lines, err := run("sievec", bin, "-c", conf, src, out)
		if err != nil {
			return err
		}
		if fatal := s.fatalLines(lines); len(fatal) > 0 {
			return &Error{Program: "sievec", Command: "sievec -c " + conf + " " + src, Lines: fatal}
		}
	}
	return nil
}

// CompileSieve compiles a live Sieve script next to itself (SCRIPT.svbin),
// as an administrator must: Dovecot runs global scripts as the mailbox
// user, who may not write the binary, and would otherwise compile it in
// memory and log an error on every delivery. The binary records the path it
// was compiled from, so it is compiled at the live path once the script is
// in place, not in the stage. A missing sievec is a note.
func CompileSieve(root, dovecotConf, script string, note Note) error {
	bin, ok := find("sievec", "dovecot-sieve", note, script+" (Dovecot compiles it at first use)")
	if !ok {
		return nil
	}
	_, err := run("sievec", bin, "-c", filepath.Join(root, dovecotConf), filepath.Join(root, script))
	return err
}
