package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/postkit/postkit/sqlmaps"
	"github.com/postkit/postkit/sqlmaps/pwhash"
)

// maxImport bounds an import file: a million users' rows is some 200 MB;
// anything larger is the wrong file.
const maxImport = 256 << 20

func dbImportCmd(o *dbOptions) *cobra.Command {
	var format, scheme string
	var plaintext bool
	cmd := &cobra.Command{
		Use:   "import FILE|-",
		Short: "Add domains, users and aliases from a CSV or JSON file, all or nothing",
		Long: `Reads FILE (- for standard input) and adds every row in one transaction:
domains first, then users, then aliases, whatever their order in the file. Each
row is an idempotent add (a row stored with the same values is "unchanged"; a
row stored with other values is an error), so an import may be run again. Every
problem is reported at its file:line and then nothing at all is changed.

CSV (--format csv, or a .csv file): one row per line, the first field its kind;
lines starting with # are comments:

  domain,exemple.fr,default
  user,test@exemple.fr,{SHA512-CRYPT}$6$…,Test Dupont,utilisateur
  alias,postmaster,test@exemple.fr
  valias,contact@exemple.fr,test@exemple.fr,autre@exemple.fr

JSON (--format json, or a .json file): {"domains": [{"domain": …, "default": …,
"active": …}], "users": [{"user": …, "name": …, "privilege": …, "uid": …, "gid": …,
"active": …, "password_hash": "{SCHEME}…"}], "aliases": [{"source": …,
"destination": …}], "valiases": [...]}: the fields 'list --json' prints.

Users carry password hashes as Dovecot reads them ({SCHEME}…, e.g. from the old
database), stored as they are. A JSON user may instead carry "password" in
plaintext with --allow-plaintext: it is checked against
database.password_policy and hashed with --scheme. Pipe such a file on standard
input (import - < …) rather than leaving plaintext passwords on disk.
uid/gid default to mailbox.uid/gid and must be those.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if format == "" {
				format = strings.TrimPrefix(strings.ToLower(filepath.Ext(args[0])), ".")
				if !slices.Contains(sqlmaps.ImportFormats, format) {
					return fmt.Errorf("db: cannot tell the format of %s from its name: pass --format csv or --format json", name)
				}
			}
			var r io.Reader
			if name == "-" {
				r, name = cmd.InOrStdin(), "stdin"
			} else {
				fh, err := os.Open(name)
				if err != nil {
					return fmt.Errorf("db: %w", err)
				}
				defer fh.Close()
				r = fh
			}
			data, err := io.ReadAll(io.LimitReader(r, maxImport+1))
			if err != nil {
				return fmt.Errorf("db: read %s: %w", name, err)
			}
			if len(data) > maxImport {
				return fmt.Errorf("db: %s is larger than %d MiB: split it", name, maxImport>>20)
			}
			rows, err := sqlmaps.ParseImport(name, data, format)
			if err != nil {
				return err
			}
			s, err := o.open(cmd.Context(), true)
			if err != nil {
				return err
			}
			defer s.Close()
			mb := o.config().Mailbox
			opts := sqlmaps.ImportOptions{UID: mb.UID, GID: mb.GID, CheckIDs: o.checkIDs}
			if plaintext {
				opts.Hash = func(address, pw string) (string, error) { return o.hash(scheme, address, pw) }
			}
			res, err := s.Import(cmd.Context(), rows, opts)
			if err != nil {
				return err
			}
			return o.report(cmd.OutOrStdout(), res...)
		},
	}
	f := cmd.Flags()
	f.StringVar(&format, "format", "", "csv or json (default: from the file name's extension)")
	f.BoolVar(&plaintext, "allow-plaintext", false, "accept \"password\" (plaintext) in JSON users, checked by the password policy and hashed")
	f.StringVar(&scheme, "scheme", pwhash.Default, "scheme for plaintext passwords: "+strings.Join(pwhash.Schemes(), ", "))
	return cmd
}
