package main

import (
	"encoding/json"
	"errors"
	"path"

	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/postkit/postkit/internal/apply"
	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/internal/preflight"
	"github.com/postkit/postkit/templates"
)

func init() {
	var (
		cfgPath   string
		root      string
		check     bool
		diff      bool
		asJSON    bool
		openRelay bool
	)
	cmd := &cobra.Command{
		Use:   "generate",
		Short: "Write main.cf, master.cf, the SQL maps, Dovecot's configuration and the Sieve rule from postkit.yaml",
		Long: `Renders every file of the stack and writes it under --root at its live path
(e.g. ROOT/etc/postfix/main.cf), all or nothing:

  1. every file is rendered into a staging directory, and Postfix and Dovecot
     read that staged set: postconf -n and -M, doveconf -n, and sievec on the
     Sieve script (always, changed or not); a program that is not installed
     is skipped with a note;
  2. the changed files are written next to the live ones and swapped in, with
     their modes and owners; unchanged files are not touched;
  3. the Sieve script is compiled in place when it changed.

If any step fails, nothing under --root is left changed. --check does step 1
and writes nothing; --diff shows what would change; --json prints
{"changed": bool, "files": [{path, action}]} for Ansible.

Exit status: 0 done; 1 postkit.yaml is invalid or an open relay; 3 Postfix or
Dovecot refused the generated files (nothing written); 4 writing failed and
every file was put back; 5 writing failed and some files could not be put
back (the message names them and where their old versions are).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, file, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			if err := cfg.OpenRelay(file); err != nil && !openRelay {
				return err
			}
			files, err := templates.Render(cfg)
			if err != nil {
				return err
			}
			note := func(format string, args ...any) {
				fmt.Fprintf(cmd.ErrOrStderr(), "postkit: note: "+format+"\n", args...)
			}
			set := preflight.Set{
				Root:          root,
				PostfixConfig: cfg.Paths.PostfixConfig,
				MaillogFile:   cfg.Paths.PostfixLog != "",
				DovecotConfig: path.Join(cfg.Paths.DovecotConfig, "dovecot.conf"),
			}
			af := make([]apply.File, len(files))
			var svbins []string
			for i, f := range files {
				af[i] = apply.File{Path: f.Path, Data: f.Data, Mode: fs.FileMode(f.Mode), Owner: f.Owner, Group: f.Group}
				set.Files = append(set.Files, f.Path)
				if strings.HasSuffix(f.Path, ".sieve") {
					set.Sieve = append(set.Sieve, f.Path)
					svbins = append(svbins, strings.TrimSuffix(f.Path, ".sieve")+".svbin")
				}
			}
			changes, err := apply.Apply(af, apply.Options{
				Root:  root,
				Check: check,
				Chown: os.Geteuid() == 0,
				Verify: func(stage string) error {
					set.Stage = stage
					return preflight.Check(set, note)
				},
				Finish: func(changes []apply.Change) error {
					return compileSieve(root, set.DovecotConfig, changes, note)
				},
				Extra: svbins,
			})
			if err != nil {
				return generateError(err, root, cfgPath)
			}
			out := cmd.OutOrStdout()
			if diff {
				for _, c := range changes {
					if c.Action != apply.Unchanged {
						fmt.Fprint(out, apply.Unified(c.Path, c.Old, c.New))
					}
				}
			}
			if asJSON {
				return json.NewEncoder(out).Encode(struct {
					Changed bool           `json:"changed"`
					Files   []apply.Change `json:"files"`
				}{apply.Changed(changes), changes})
			}
			if !diff {
				for _, c := range changes {
					fmt.Fprintf(out, "%-9s %s\n", c.Action, c.Path)
				}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&cfgPath, "config", "c", "/etc/postkit/postkit.yaml", "postkit.yaml to read")
	f.StringVar(&root, "root", "/", "directory the live paths are written under")
	f.BoolVar(&check, "check", false, "check the generated files and report what would change; write nothing")
	f.BoolVar(&diff, "diff", false, "print unified diffs of the changes")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	f.BoolVar(&openRelay, "i-know-this-is-an-open-relay", false, "generate even if trusted_networks makes an open relay")
	rootCmd.AddCommand(cmd)
}

// generateError gives a failed Apply its exit status and says what to do.
func generateError(err error, root, cfgPath string) error {
	switch {
	case errors.Is(err, apply.ErrRefused):
		var pe *preflight.Error
		if errors.As(err, &pe) {
			err = pe
		}
		return &exitError{code: 3, err: fmt.Errorf("generate: %w\nnothing under %s was changed: fix what the message names (a value of %s, a file it refers to, or the program itself) and run generate again", err, root, cfgPath)}
	case errors.Is(err, apply.ErrRestored):
		return &exitError{code: 4, err: fmt.Errorf("generate: %w; nothing under %s is left changed: fix the cause and run generate again", err, root)}
	case errors.Is(err, apply.ErrInconsistent):
		return &exitError{code: 5, err: fmt.Errorf("generate: %w: move the old versions back by hand (or run generate again once the cause is fixed)", err)}
	}
	return err
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

// exitError carries an exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) ExitCode() int { return e.code }
func (e *exitError) Unwrap() error { return e.err }
