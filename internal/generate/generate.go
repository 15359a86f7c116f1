// Package generate puts the files of the mail stack in place from
// postkit.yaml, all or nothing: render them (templates), have Postfix and
// Dovecot read the staged set (internal/preflight), swap the changed files in
// (internal/apply), compile the Sieve script where it is installed. `postkit
// generate` is a thin command over Run.
package generate

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path"
	"path/filepath"
	"strings"

	"github.com/postkit/postkit/internal/apply"
	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/internal/preflight"
	"github.com/postkit/postkit/templates"
)

// Options control Run.
type Options struct {
	Root  string // prefix of every live path; "/" for the live system
	Check bool   // check the staged files and report what would change; write nothing
	// Note receives what could not be checked (a validator that is not
	// installed); nil drops it.
	Note preflight.Note
	// Force replaces files changed by hand since postkit wrote them (or
	// never written by postkit), keeping them as FILE.postkit-bak.STAMP;
	// without it they stop the run (ErrEdited) before anything is written.
	Force bool
	// AccountsMade: the caller creates the service accounts (postkit
	// apply), so they are not required to exist yet.
	AccountsMade bool
	// Extra files written with the generated ones, all or nothing (the
	// systemd units of postkit apply).
	Extra []apply.File
	// Finish runs once every changed file is in place, before the old
	// versions are dropped; an error puts every file back (postkit apply
	// runs `postfix check` on the live system there).
	Finish func(changes []apply.Change) error
}

// Run renders cfg and puts it under o.Root:
//
//  1. every file is rendered into a staging directory, and Postfix and
//     Dovecot read that staged set: postconf -n and -M, doveconf -n, and
//     sievec on the Sieve script (always, changed or not); a program that is
//     not installed is skipped with a note;
//  2. the changed files are written next to the live ones and swapped in,
//     with their modes and owners; unchanged files are not touched;
//  3. the Sieve script is compiled in place when it changed.
//
// If any step fails, nothing under o.Root is left changed; the error is
// one of apply's (ErrRefused, ErrRestored, ErrInconsistent), which ExitCode
// maps to the command's exit status.
func Run(cfg *config.Config, o Options) ([]apply.Change, error) {
	note := o.Note
	if note == nil {
		note = func(string, ...any) {}
	}
	files, err := templates.Render(cfg)
	if err != nil {
		return nil, err
	}
	if !o.AccountsMade {
		if err := accounts(cfg, o.Root); err != nil {
			return nil, err
		}
	}
	if err := mailboxChecks(cfg, o.Root, note); err != nil {
		return nil, err
	}
	set := preflight.Set{
		Root:          o.Root,
		PostfixConfig: cfg.Paths.PostfixConfig,
		MaillogFile:   cfg.Paths.PostfixLog != "",
		DovecotConfig: path.Join(cfg.Paths.DovecotConfig, "dovecot.conf"),
	}
	af := make([]apply.File, len(files), len(files)+len(o.Extra)+1)
	var svbins []string
	for i, f := range files {
		af[i] = apply.File{Path: f.Path, Data: f.Data, Mode: fs.FileMode(f.Mode), Owner: f.Owner, Group: f.Group}
		set.Files = append(set.Files, f.Path)
		if strings.HasSuffix(f.Path, ".sieve") {
			set.Sieve = append(set.Sieve, f.Path)
			svbins = append(svbins, strings.TrimSuffix(f.Path, ".sieve")+".svbin")
		}
	}
	af = append(af, o.Extra...)
	mpath := ManifestPath(cfg)
	recorded, adopted, err := readManifest(cfg, o.Root, mpath, af)
	if err != nil {
		return nil, err
	}
	// What postkit wrote and what it may replace as if it had.
	written := make(map[string]string, len(recorded)+len(adopted))
	for p, sum := range recorded {
		written[p] = sum
	}
	for p, sum := range adopted {
		written[p] = sum
	}
	af = append(af, manifestFile(mpath, recorded, af))
	return apply.Apply(af, apply.Options{
		Root:    o.Root,
		Check:   o.Check,
		Chown:   os.Geteuid() == 0,
		Guard:   true,
		Written: written,
		Force:   o.Force,
		Verify: func(stage string) error {
			set.Stage = stage
			return preflight.Check(set, note)
		},
		Finish: func(changes []apply.Change) error {
			if err := compileSieve(o.Root, set.DovecotConfig, changes, note); err != nil {
				return err
			}
			if o.Finish != nil {
				return o.Finish(changes)
			}
			return nil
		},
		Extra: svbins,
	})
}

// accounts refuses a configuration that names a service account missing
// from the live system: doveconf accepts `service { user = NAME }` for any
// NAME, but Dovecot then refuses to start at all. Files written under
// another root are for another host, which is not checked.
func accounts(cfg *config.Config, root string) error {
	if filepath.Clean(root) != "/" || !cfg.LearnFromMoves() {
		return nil
	}
	u := cfg.Milter.Spam.Learn.User
	if _, err := user.Lookup(u); err != nil {
		return fmt.Errorf("generate: milter.spam.learn.user: account %q does not exist here (%v), and Dovecot would not start with a service running as it: create it (useradd --system --no-create-home %s; it must be able to write %s), name the account the milter runs as, or set milter.spam.learn.imapsieve: false",
			u, err, u, cfg.Milter.Spam.Bayes.Path)
	}
	return nil
}

// compileSieve compiles the global Sieve scripts at their live path when
// they changed or have no binary yet (see preflight.CompileSieve); the
// staged copies were already compiled by preflight.Check.
func compileSieve(root, dovecotConf string, changes []apply.Change, note preflight.Note) error {
	for _, c := range changes {
		if !strings.HasSuffix(c.Path, ".sieve") {
			continue
		}
		svbin := filepath.Join(root, strings.TrimSuffix(c.Path, ".sieve")+".svbin")
		if _, err := os.Stat(svbin); c.Action == apply.Unchanged && err == nil {
			continue
		}
		if err := preflight.CompileSieve(root, dovecotConf, c.Path, note); err != nil {
			return fmt.Errorf("compiling the installed %s: %w", c.Path, err)
		}
	}
	return nil
}

// Exit statuses of a failed Run.
const (
	ExitRefused      = 3 // Postfix or Dovecot refused the staged files: nothing written
	ExitRestored     = 4 // writing failed and every file was put back
	ExitInconsistent = 5 // writing failed and some files could not be put back
	ExitPending      = 2 // --check: something would change
	ExitEdited       = 6 // files changed by hand would be replaced: nothing written (--force replaces them)
)

// Explain returns the exit status of Run's error and a message that says
// what to do; cfgPath names postkit.yaml in it. Other errors give 1.
func Explain(err error, root, cfgPath string) (int, error) {
	switch {
	case errors.Is(err, apply.ErrRefused):
		var pe *preflight.Error
		if errors.As(err, &pe) {
			err = pe
		}
		return ExitRefused, fmt.Errorf("generate: %w\nnothing under %s was changed: fix what the message names (a value of %s, a file it refers to, or the program itself) and run generate again", err, root, cfgPath)
	case errors.Is(err, apply.ErrRestored):
		return ExitRestored, fmt.Errorf("generate: %w; nothing under %s is left changed: fix the cause and run generate again", err, root)
	case errors.Is(err, apply.ErrEdited):
		return ExitEdited, fmt.Errorf("generate: %w\nthey were changed since postkit wrote them, or postkit never wrote them; nothing under %s was changed. Move the change into %s (see --diff for it), or run again with --force to replace them (each is kept as FILE.postkit-bak.TIMESTAMP)", err, root, cfgPath)
	case errors.Is(err, apply.ErrInconsistent):
		return ExitInconsistent, fmt.Errorf("generate: %w: move the old versions back by hand (or run generate again once the cause is fixed)", err)
	}
	return 1, err
}
