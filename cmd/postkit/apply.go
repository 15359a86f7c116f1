package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/postkit/postkit/internal/apply"
	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/internal/generate"
	"github.com/postkit/postkit/internal/provision"
)

func init() {
	var (
		cfgPath   string
		root      string
		check     bool
		diff      bool
		asJSON    bool
		force     bool
		openRelay bool
		liveCfg   string
	)
	cmd := &cobra.Command{
		Use:   "apply",
		Short: "Provision the host from postkit.yaml: accounts, directories, keys, certificate, files, units, database, reloads",
		Long: `Does everything a mail host needs from postkit.yaml, idempotently (a second
run changes nothing and says so):

  1. accounts: the mailbox owner (mailbox.user, uid, gid) and the account
     postkit's daemons run as (milter.spam.learn.user, in Postfix's group);
  2. directories with owners and modes: mailbox.base_dir 0770, paths.postkit_run
     0750, the daemons' socket directories 0750 (ACCOUNT:postfix),
     milter.dkim.key_dir 0750 root:ACCOUNT;
  3. a SELF-SIGNED certificate when tls.cert does not exist (said loudly), DKIM
     keys for milter.dkim.keys that do not exist (0640 root:ACCOUNT, the TXT
     record beside them), existing keys made readable by ACCOUNT;
  4. the database (postkit db init), before the files whose queries need it;
  5. the generated files (as postkit generate: checked by postconf and doveconf
     first, all or nothing) and the systemd units in paths.systemd_units; on
     the live system 'postfix check' runs before the old files are dropped: if
     anything refuses them, every file, key, certificate and database apply
     made is put back as it was;
  6. postkit.yaml 0640 root:ACCOUNT, so the daemons can read it;
  7. reloads, in order, of what runs: postfix reload, doveadm reload, postkit's
     daemons (systemctl reload under systemd, else SIGHUP).

A generated file changed by hand since postkit wrote it (or that postkit never
wrote) is not replaced: its diff is shown, nothing is written (exit 6);
--force replaces it and keeps it as FILE.postkit-bak.TIMESTAMP.

--root DIR works on a directory tree standing for another host (tests, images):
accounts are reported, not created; owners are set when running as root and
the account exists here, else reported; nothing is reloaded. --check changes
nothing and reports what would change (exit 2 if anything would); --diff shows
the changes of files; --json prints {"changed", "steps": [{name, changed,
detail}], "files": [{path, action, edited, backup}], "diff", "exit", "error"}
for Ansible (one document, also when apply fails after reporting).
--config-live names the path postkit.yaml will have on the host when -c reads
another copy (Ansible's check mode): the units pass it to the daemons.

Exit status: as postkit generate: 0 done (nothing pending with --check); 1
invalid configuration or a step failed; 2 --check: something would change; 3
Postfix or Dovecot refused the files (nothing written); 4 writing failed and
every file was put back; 5 some files could not be put back; 6 files changed by
hand would be replaced.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, file, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			if err := cfg.OpenRelay(file); err != nil && !openRelay {
				return err
			}
			errOut := cmd.ErrOrStderr()
			rep, err := provision.Run(cmd.Context(), cfg, provision.Options{
				Root:       root,
				Check:      check,
				Force:      force,
				ConfigPath: cfgPath,
				ConfigLive: liveCfg,
				Note: func(format string, args ...any) {
					fmt.Fprintf(errOut, "postkit: "+format+"\n", args...)
				},
			})
			out := cmd.OutOrStdout()
			edited := errors.Is(err, apply.ErrEdited)
			// The command's outcome; with --json it goes into the report
			// (one JSON document), not after it.
			var fail *exitError
			switch {
			case err != nil:
				code, xerr := generate.Explain(err, root, cfgPath)
				fail = &exitError{code: code, err: fmt.Errorf("apply: %w", xerr)}
			case check && rep.Changed:
				fail = &exitError{code: generate.ExitPending, err: errors.New("apply --check: changes pending (exit 2); run apply without --check to make them")}
			}
			if err == nil || edited {
				var diffs strings.Builder
				for _, c := range rep.Files {
					if c.Action != apply.Unchanged && (diff || c.Edited) {
						if c.Edited {
							fmt.Fprintf(&diffs, "# %s was changed since postkit wrote it (or postkit never wrote it); - is the file now, + what postkit writes\n", c.Path)
						}
						diffs.WriteString(apply.Unified(c.Path, c.Old, c.New))
					}
				}
				if asJSON {
					doc := struct {
						*provision.Report
						Diff  string `json:"diff,omitempty"`
						Error string `json:"error,omitempty"`
						Exit  int    `json:"exit"`
					}{Report: rep, Diff: diffs.String()}
					if fail != nil {
						doc.Error, doc.Exit, fail.reported = fail.err.Error(), fail.code, true
					}
					json.NewEncoder(out).Encode(doc)
				} else {
					fmt.Fprint(out, diffs.String())
					for _, s := range rep.Steps {
						state := "ok"
						if s.Changed && check {
							state = "would change"
						} else if s.Changed {
							state = "changed"
						}
						fmt.Fprintf(out, "%-11s %s\n", s.Name+":", state)
						for _, d := range s.Detail {
							fmt.Fprintf(out, "    %s\n", d)
						}
					}
					switch {
					case edited:
					case check && rep.Changed:
						fmt.Fprintln(out, "apply --check: changes pending (nothing was changed)")
					case rep.Changed:
						fmt.Fprintln(out, "apply: changed")
					default:
						fmt.Fprintln(out, "apply: nothing to change")
					}
				}
			}
			if fail != nil {
				return fail
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&cfgPath, "config", "c", "/etc/postkit/postkit.yaml", "postkit.yaml to read")
	f.StringVar(&root, "root", "/", "directory standing for the host's /: accounts are reported, not created, and nothing is reloaded unless it is /")
	f.BoolVar(&check, "check", false, "report what would change; change nothing (exit 2 when something would)")
	f.BoolVar(&diff, "diff", false, "print unified diffs of the files that change")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	f.BoolVar(&force, "force", false, "replace generated files changed by hand, keeping each as FILE.postkit-bak.TIMESTAMP")
	f.StringVar(&liveCfg, "config-live", "", "live path of postkit.yaml, as the units name it (default: the -c path, without --root)")
	f.BoolVar(&openRelay, "i-know-this-is-an-open-relay", false, "apply even if trusted_networks makes an open relay")
	rootCmd.AddCommand(cmd)
}
