package main

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
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
	var utf8Fold, exact bool
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
--smtputf8.

The two blacklists (liste-noire-expediteurs, liste-noire-destinataires) are
access(5) tables: for them the key is an envelope address and the search is the
one check_sender_access and check_recipient_access make: user+ext@domain,
user@domain, the domain, its parent domains (a stored example.com also blocks
sub.example.com, as parent_domain_matches_subdomains lists smtpd_access_maps by
default), then user+ext@ and user@; the first key found decides and is named.
--exact asks the one key only, as postmap -q does.

--json prints {"map", "key", "found", "value", "matched_key", "tried"}, also
when nothing is found (exit status 1 still).`,
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
			var (
				v, matched string
				found      bool
				tried      []string
				warns      []sqlmaps.Warning
			)
			if sqlmaps.IsAccessMap(m) && !exact {
				v, matched, tried, warns, err = s.AccessLookup(cmd.Context(), m, args[1], fold, accessOptions(o.cfg))
				found = matched != ""
			} else {
				v, found, warns, err = s.Lookup(cmd.Context(), m, args[1], fold)
				tried = []string{args[1]}
				if found {
					matched = args[1]
				}
			}
			s.Close()
			for _, w := range warns {
				fmt.Fprintln(cmd.ErrOrStderr(), "postkit: warning:", w)
			}
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if o.asJSON {
				err = json.NewEncoder(out).Encode(struct {
					Map     string   `json:"map"`
					Key     string   `json:"key"`
					Found   bool     `json:"found"`
					Value   string   `json:"value"`
					Matched string   `json:"matched_key,omitempty"`
					Tried   []string `json:"tried"`
				}{m.Name, args[1], found, v, matched, tried})
				if err != nil {
					return err
				}
			}
			if !found {
				exit(1)
				return nil
			}
			if o.asJSON {
				return nil
			}
			if matched != "" && len(tried) > 1 && matched != tried[0] {
				fmt.Fprintf(cmd.ErrOrStderr(), "postkit: matched key %s\n", matched)
			}
			_, err = fmt.Fprintln(out, v)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dbPath, "db", "", "SQLite database file (default: database.path of the config)")
	f.StringVarP(&o.cfgPath, "config", "c", "", "postkit.yaml to read (default "+dbDefaultConfig+" when --db is not given)")
	f.BoolVar(&exact, "exact", false, "blacklists: ask the key alone, as postmap -q does, not the access(5) search")
	f.BoolVar(&o.asJSON, "json", false, "print the answer as a JSON object")
	f.BoolVar(&utf8Fold, "smtputf8", false, "fold keys as Postfix does with smtputf8_enable = yes (Unicode case folding)")
	return cmd
}

// accessOptions are the main.cf settings of c an access(5) search depends
// on, as generated; a nil c means the defaults.
func accessOptions(c *config.Config) sqlmaps.AccessOptions {
	if c == nil {
		c = config.Defaults()
	}
	o := sqlmaps.AccessOptions{RecipientDelimiter: c.RecipientDelim, ParentMatches: true, NullKey: "<>"}
	for _, p := range c.Postfix.MainCF {
		switch p.Name {
		case "parent_domain_matches_subdomains":
			o.ParentMatches = slices.Contains(strings.FieldsFunc(p.Value, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' }), "smtpd_access_maps")
		case "smtpd_null_access_lookup_key":
			o.NullKey = p.Value
		}
	}
	return o
}

// senderRules are the settings of c the sender-login map depends on, as
// the milter reads them; a nil c means the defaults, for --db alone.
func senderRules(c *config.Config) sqlmaps.SenderRules {
	if c == nil {
		c = config.Defaults()
	}
	return assemble.SenderRules(c)
}
