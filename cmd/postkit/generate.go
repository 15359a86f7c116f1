package main

import (
	"encoding/json"

	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/postkit/postkit/internal/apply"
	"github.com/postkit/postkit/internal/config"
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
(e.g. ROOT/etc/postfix/main.cf). Files are replaced atomically with their modes and
owners; unchanged files are not touched. --check writes nothing; --diff shows what
would change; --json prints {"changed": bool, "files": [{path, action}]} for Ansible.`,
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
			af := make([]apply.File, len(files))
			for i, f := range files {
				af[i] = apply.File{Path: f.Path, Data: f.Data, Mode: fs.FileMode(f.Mode), Owner: f.Owner, Group: f.Group}
			}
			changes, err := apply.Apply(af, apply.Options{Root: root, Check: check, Chown: os.Geteuid() == 0})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if !check {
				if err := compileSieve(cmd, root, cfg, changes); err != nil {
					return err
				}
			}
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
	f.BoolVar(&check, "check", false, "write nothing; report what would change")
	f.BoolVar(&diff, "diff", false, "print unified diffs of the changes")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	f.BoolVar(&openRelay, "i-know-this-is-an-open-relay", false, "generate even if trusted_networks makes an open relay")
	rootCmd.AddCommand(cmd)
}

// compileSieve pre-compiles changed global Sieve scripts with sievec: Dovecot
// cannot write the compiled .svbin next to them as the mailbox user, and
// otherwise logs an error on every delivery.
func compileSieve(cmd *cobra.Command, root string, cfg *config.Config, changes []apply.Change) error {
	for _, c := range changes {
		if !strings.HasSuffix(c.Path, ".sieve") {
			continue
		}
		svbin := filepath.Join(root, strings.TrimSuffix(c.Path, ".sieve")+".svbin")
		if _, err := os.Stat(svbin); c.Action == apply.Unchanged && err == nil {
			continue
		}
		sievec, err := exec.LookPath("sievec")
		if err != nil {
			fmt.Fprintf(cmd.ErrOrStderr(), "postkit: note: sievec not found (apt-get install dovecot-sieve); %s is compiled by Dovecot at first use\n", c.Path)
			continue
		}
		conf := filepath.Join(root, cfg.Paths.DovecotConfig, "dovecot.conf")
		if out, err := exec.Command(sievec, "-c", conf, filepath.Join(root, c.Path)).CombinedOutput(); err != nil {
			return fmt.Errorf("sievec %s: %v: %s", c.Path, err, strings.TrimSpace(string(out)))
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
