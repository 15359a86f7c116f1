package main

import (
	"encoding/json"

	"fmt"

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
			changes, err := generate.Run(cfg, generate.Options{
				Root:  root,
				Check: check,
				Note: func(format string, args ...any) {
					fmt.Fprintf(cmd.ErrOrStderr(), "postkit: note: "+format+"\n", args...)
				},
			})
			if err != nil {
				code, err := generate.Explain(err, root, cfgPath)
				return &exitError{code: code, err: err}
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

// exitError carries an exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) ExitCode() int { return e.code }
func (e *exitError) Unwrap() error { return e.err }
