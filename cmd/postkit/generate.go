package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/postkit/postkit/internal/apply"
	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/internal/generate"
)

func init() {
	var (
		cfgPath   string
		root      string
		check     bool
		diff      bool
		asJSON    bool
		openRelay bool
		force     bool
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
{"changed": bool, "files": [{path, action, edited, backup}]} for Ansible.

What was written is recorded in PATHS.POSTKIT_RUN/manifest.json (SHA-256 of
every file). A file whose contents are no longer the recorded ones (edited by
hand) or that postkit never wrote is not replaced: its diff is shown and
nothing is written (exit 6). --force replaces it and keeps the old version as
FILE.postkit-bak.TIMESTAMP.

Exit status: 0 done (or, with --check, nothing would change); 1 postkit.yaml
is invalid or an open relay; 2 --check: something would change; 3 Postfix or
Dovecot refused the generated files (nothing written); 4 writing failed and
every file was put back; 5 writing failed and some files could not be put
back (the message names them and where their old versions are); 6 files
changed by hand would be replaced (nothing written; --force replaces them).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, file, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			if err := cfg.OpenRelay(file); err != nil && !openRelay {
				return err
			}
			changes, err := generate.Run(cfg, generate.Options{
				Root:  root,
				Check: check,
				Force: force,
				Note: func(format string, args ...any) {
					fmt.Fprintf(cmd.ErrOrStderr(), "postkit: note: "+format+"\n", args...)
				},
			})
			if err != nil && !errors.Is(err, apply.ErrEdited) {
				code, err := generate.Explain(err, root, cfgPath)
				return &exitError{code: code, err: err}
			}
			printChanges(cmd.OutOrStdout(), changes, diff, asJSON, err == nil)
			if err != nil {
				code, err := generate.Explain(err, root, cfgPath)
				return &exitError{code: code, err: err}
			}
			if check && apply.Changed(changes) {
				return &exitError{code: generate.ExitPending, err: errors.New("generate --check: files would change (exit 2); run generate without --check to write them")}
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
	f.BoolVar(&force, "force", false, "replace files changed by hand since postkit wrote them, keeping each as FILE.postkit-bak.TIMESTAMP")
	f.BoolVar(&openRelay, "i-know-this-is-an-open-relay", false, "generate even if trusted_networks makes an open relay")
	rootCmd.AddCommand(cmd)
}

// printChanges reports file changes: unified diffs with diff (always for
// files edited by hand), a JSON document with asJSON, else one line per
// file. ok is false when nothing was written because of edited files.
func printChanges(out io.Writer, changes []apply.Change, diff, asJSON, ok bool) {
	for _, c := range changes {
		if c.Action != apply.Unchanged && (diff || c.Edited && !asJSON) {
			if c.Edited {
				fmt.Fprintf(out, "# %s was changed since postkit wrote it (or postkit never wrote it); - is the file now, + what postkit writes\n", c.Path)
			}
			fmt.Fprint(out, apply.Unified(c.Path, c.Old, c.New))
		}
	}
	if asJSON {
		json.NewEncoder(out).Encode(struct {
			Changed bool           `json:"changed"`
			Files   []apply.Change `json:"files"`
		}{apply.Changed(changes) && ok, changes})
		return
	}
	if !diff {
		for _, c := range changes {
			note := ""
			if c.Edited {
				note = " (edited by hand)"
			}
			if c.Backup != "" {
				note += "; kept as " + c.Backup
			}
			fmt.Fprintf(out, "%-9s %s%s\n", c.Action, c.Path, note)
		}
	}
}

// exitError carries an exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) ExitCode() int { return e.code }
func (e *exitError) Unwrap() error { return e.err }
