package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/milter/assemble"
	"github.com/postkit/postkit/sqlmaps"
)

func init() { rootCmd.AddCommand(newLookupCommand(os.Exit)) }

// newLookupCommand builds the `lookup` command; exit ends the process when
// the key is not found (postmap prints nothing and exits 1, while main
// would print an error's text).
func newLookupCommand(exit func(int)) *cobra.Command {
	o := &dbOptions{}
	var utf8Fold bool
	cmd := &cobra.Command{
		Use:   "lookup MAP KEY",
		Short: "Answer what 'postmap -q KEY sqlite:MAP.cf' answers, straight from the database",
		Long: `Runs the query of one of postkit's Postfix maps (` + strings.Join(sqlmaps.MapNames(), ", ") + `;
the file name sqlite-NAME.cf or its path work too) as Postfix does: the key is folded
to lower case, %s/%u/%d are expanded, the first column of every row is printed,
joined with commas. Exit status 0 when found, 1 with nothing printed when not.
The sender-login map (smtpd_sender_login_maps) answers the logins that may use a
sender address, with the sender_logins and recipient_delimiter of postkit.yaml
(the defaults with --db alone).
Case folding follows smtputf8 in postkit.yaml (ASCII only unless it is true), or
--smtputf8.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, ok := sqlmaps.MapByName(args[0])
			if !ok {
				return fmt.Errorf("lookup: unknown map %q: use one of %s", args[0], strings.Join(sqlmaps.MapNames(), ", "))
			}
			s, err := o.open(cmd.Context(), false)
			if err != nil {
				return err
			}
			// The sender-login map depends on sender_logins and
			// recipient_delimiter, as generated.
			if m, err = m.With(senderRules(o.cfg)); err != nil {
				s.Close()
				return err
			}
			fold := sqlmaps.FoldASCII
			if utf8Fold || (o.cfg != nil && o.cfg.SMTPUTF8 && !cmd.Flags().Changed("smtputf8")) {
				fold = sqlmaps.FoldUTF8
			}
			v, found, warns, err := s.Lookup(cmd.Context(), m, args[1], fold)
			s.Close()
			for _, w := range warns {
				fmt.Fprintln(cmd.ErrOrStderr(), "postkit: warning:", w)
			}
			if err != nil {
				return err
			}
			if !found {
				exit(1)
				return nil
			}
			_, err = fmt.Fprintln(cmd.OutOrStdout(), v)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dbPath, "db", "", "SQLite database file (default: database.path of the config)")
	f.StringVarP(&o.cfgPath, "config", "c", "", "postkit.yaml to read (default "+dbDefaultConfig+" when --db is not given)")
	f.BoolVar(&utf8Fold, "smtputf8", false, "fold keys as Postfix does with smtputf8_enable = yes (Unicode case folding)")
	return cmd
}

// senderRules are the settings of c the sender-login map depends on, as
// the milter reads them; a nil c means the defaults, for --db alone.
func senderRules(c *config.Config) sqlmaps.SenderRules {
	if c == nil {
		c = config.Defaults()
	}
	return assemble.SenderRules(c)
}
