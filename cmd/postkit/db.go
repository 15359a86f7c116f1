package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/sqlmaps"
)

const dbDefaultConfig = "/etc/postkit/postkit.yaml"

// dbOptions are the flags shared by every `postkit db` command.
type dbOptions struct {
	dbPath  string
	cfgPath string
	asJSON  bool
	cfg     *config.Config // loaded lazily by resolve
}

// resolve finds the database: --db PATH (a SQLite file) wins, else the
// database section of the config file (-c, or /etc/postkit/postkit.yaml
// when it exists): a SQLite path or a PostgreSQL DSN.
func (o *dbOptions) resolve() (sqlmaps.Source, error) {
	if o.dbPath != "" && o.cfgPath == "" {
		return sqlmaps.Source{Driver: sqlmaps.DriverSQLite, Path: o.dbPath}, nil
	}
	path := o.cfgPath
	if path == "" {
		if _, err := os.Stat(dbDefaultConfig); err != nil {
			return sqlmaps.Source{}, errors.New("db: no database given: pass --db PATH or -c postkit.yaml")
		}
		path = dbDefaultConfig
	}
	cfg, _, err := config.Load(path)
	if err != nil {
		return sqlmaps.Source{}, err
	}
	o.cfg = cfg
	if o.dbPath != "" {
		return sqlmaps.Source{Driver: sqlmaps.DriverSQLite, Path: o.dbPath}, nil
	}
	return cfg.Database.Source(), nil
}

// open opens an existing database; write commands migrate it first (a
// no-op once it is current).
func (o *dbOptions) open(ctx context.Context, write bool) (*sqlmaps.Store, error) {
	src, err := o.resolve()
	if err != nil {
		return nil, err
	}
	if !src.IsPostgres() {
		if _, err := os.Stat(src.Path); err != nil {
			return nil, fmt.Errorf("db: %w: create it with 'postkit db init'", err)
		}
	}
	if !write {
		s, err := src.OpenReadOnly()
		if err != nil || !src.IsPostgres() {
			return s, err
		}
		if v, err := s.Version(ctx); err != nil || v == 0 {
			s.Close()
			if err == nil {
				err = fmt.Errorf("db: the %s has no postkit tables: create them with 'postkit db init'", src)
			}
			return nil, err
		}
		return s, nil
	}
	s, err := src.Open()
	if err != nil {
		return nil, err
	}
	if v, err := s.Version(ctx); err != nil || v < sqlmaps.SchemaVersion {
		if err := s.Migrate(ctx); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// report prints one change: a line of text, or JSON with Ansible's
// "changed" key.
// change makes the RunE of a command that makes one change to the store:
// open it for writing, run do, report the result.
func (o *dbOptions) change(do func(ctx context.Context, s *sqlmaps.Store, args []string) (sqlmaps.Result, error)) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		s, err := o.open(cmd.Context(), true)
		if err != nil {
			return err
		}
		defer s.Close()
		r, err := do(cmd.Context(), s, args)
		if err != nil {
			return err
		}
		return o.report(cmd.OutOrStdout(), r)
	}
}

// read makes the RunE of a command that only reads the store.
func (o *dbOptions) read(do func(ctx context.Context, s *sqlmaps.Store, w io.Writer) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		s, err := o.open(cmd.Context(), false)
		if err != nil {
			return err
		}
		defer s.Close()
		return do(cmd.Context(), s, cmd.OutOrStdout())
	}
}

func (o *dbOptions) report(w io.Writer, rs ...sqlmaps.Result) error {
	if o.asJSON {
		changed := false
		for _, r := range rs {
			changed = changed || r.Changed()
		}
		if len(rs) == 1 {
			return json.NewEncoder(w).Encode(struct {
				Changed bool `json:"changed"`
				sqlmaps.Result
			}{changed, rs[0]})
		}
		return json.NewEncoder(w).Encode(struct {
			Changed bool             `json:"changed"`
			Results []sqlmaps.Result `json:"results"`
		}{changed, rs})
	}
	for _, r := range rs {
		fmt.Fprintln(w, r)
		for _, c := range r.Cascaded {
			fmt.Fprintln(w, "  "+c.String())
		}
	}
	return nil
}

// table prints rows as JSON or as aligned columns.
func (o *dbOptions) table(w io.Writer, rows any, header string, lines func(func(...any))) error {
	if o.asJSON {
		e := json.NewEncoder(w)
		e.SetIndent("", "  ")
		if v, ok := rows.([]any); ok && len(v) == 0 {
			rows = []struct{}{}
		}
		return e.Encode(rows)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	lines(func(cols ...any) {
		s := make([]string, len(cols))
		for i, c := range cols {
			switch v := c.(type) {
			case bool:
				s[i] = map[bool]string{true: "yes", false: "no"}[v]
			default:
				s[i] = fmt.Sprint(v)
			}
		}
		fmt.Fprintln(tw, strings.Join(s, "\t"))
	})
	return tw.Flush()
}

func init() { rootCmd.AddCommand(newDBCommand()) }

// newDBCommand builds a fresh `db` command tree (tests build one per run so
// no flag value leaks between runs).
func newDBCommand() *cobra.Command {
	o := &dbOptions{}
	db := &cobra.Command{
		Use:   "db",
		Short: "Manage the SQL store: domains, users, aliases, blacklists",
		Long: `Manage the database Postfix and Dovecot read (the reference installation's
tables): a SQLite file, --db PATH or database.path of -c postkit.yaml, or with
database.driver: postgresql the PostgreSQL database of database.dsn (password from
database.password_file, else PGPASSWORD or ~/.pgpass; never on the command line).

Every change is one transaction: a refused change leaves the database untouched.
'add' of a row that already exists with the same values reports "unchanged" and
exits 0, so playbooks can run it every time; a row that exists with other values
is an error. 'delete' of a row that does not exist reports "absent", 'disable'
of a disabled or absent row "unchanged"/"absent", both exit 0; 'enable' of a
row that does not exist is an error (it cannot be made so). --json prints
{"changed": bool, …} for changes and arrays for lists; a failure prints
{"error": …, "hint": …, "exit": N} on standard output instead.
Passwords are read from standard input (--password-stdin) or a terminal prompt,
never from the command line.`,
	}
	pf := db.PersistentFlags()
	pf.StringVar(&o.dbPath, "db", "", "SQLite database file (default: database.path of the config)")
	pf.StringVarP(&o.cfgPath, "config", "c", "", "postkit.yaml to read (default "+dbDefaultConfig+" when --db is not given)")
	pf.BoolVar(&o.asJSON, "json", false, "print results as JSON")

	db.AddCommand(dbInitCmd(o), dbDomainCmd(o), dbUserCmd(o), dbAliasCmd(o, sqlmaps.Aliases), dbAliasCmd(o, sqlmaps.VirtualAliases), dbBlacklistCmd(o), dbSpamAllowCmd(o), dbImportCmd(o))
	db.AddCommand(dbQuotaCmd(o), dbMigrateCmd(o))
	return db
}

func dbInitCmd(o *dbOptions) *cobra.Command {
	var group string
	cmd := &cobra.Command{
		Use:   "init [DOMAIN...]",
		Short: "Create or upgrade the database and add the config's domains (the first becomes the default)",
		Long: `Creates the database file (0640, group --group) and its directory (0750) when missing,
creates missing tables, records the schema version and adds the domains of
postkit.yaml and any given on the command line. An existing database, including
one made by the reference installation's postfix.sql, is adopted without touching
its rows; its file gets mode 0640 whatever it had (it holds password hashes).
Safe to run again.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			src, err := o.resolve()
			if err != nil {
				return err
			}
			var domains []string
			if o.cfg != nil {
				domains = append(domains, o.cfg.Domains...)
			}
			res, warn, err := sqlmaps.InitSource(ctx, src, sqlmaps.InitOptions{Group: group, Domains: append(domains, args...)})
			if err != nil {
				return err
			}
			if warn != "" {
				fmt.Fprintln(cmd.ErrOrStderr(), "postkit: warning:", warn)
			}
			return o.report(cmd.OutOrStdout(), res...)
		},
	}
	cmd.Flags().StringVar(&group, "group", "postfix", "group that may read the database (Postfix's); empty leaves ownership alone")
	return cmd
}

// article is "a" or "an" before noun.
func article(noun string) string {
	if strings.ContainsRune("aeio", rune(noun[0])) { // "a user": the u of user sounds like "you"
		return "an " + noun
	}
	return "a " + noun
}

func dbToggle(o *dbOptions, parent *cobra.Command, k sqlmaps.Kind, arg string) {
	for _, on := range []bool{true, false} {
		verb := map[bool]string{true: "enable", false: "disable"}[on]
		short := strings.ToUpper(verb[:1]) + verb[1:] + " " + article(k.String()) + " (active = " + map[bool]string{true: "1", false: "0"}[on] + ")"
		if on {
			short += "; an unknown one is an error"
		} else {
			short += "; already disabled or absent reports so and exits 0"
		}
		parent.AddCommand(&cobra.Command{
			Use:   verb + " " + arg,
			Short: short,
			Args:  cobra.ExactArgs(1),
			RunE: o.change(func(ctx context.Context, s *sqlmaps.Store, args []string) (sqlmaps.Result, error) {
				return s.SetActive(ctx, k, args[0], on)
			}),
		})
	}
	if k == sqlmaps.Domains || k == sqlmaps.Users {
		return // domain and user delete have their own flags
	}
	parent.AddCommand(&cobra.Command{
		Use:   "delete " + arg,
		Short: "Delete " + article(k.String()) + "; one that does not exist reports \"absent\" and exits 0",
		Args:  cobra.ExactArgs(1),
		RunE: o.change(func(ctx context.Context, s *sqlmaps.Store, args []string) (sqlmaps.Result, error) {
			return s.Delete(ctx, k, args[0])
		}),
	})
}

func dbDomainCmd(o *dbOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "domain", Short: "Mail domains (postfix_domaines)"}
	var makeDefault, cascade bool
	add := &cobra.Command{
		Use:   "add DOMAIN",
		Short: "Add a domain; the first one becomes the default, --default moves the default to it",
		Args:  cobra.ExactArgs(1),
		RunE: o.change(func(ctx context.Context, s *sqlmaps.Store, args []string) (sqlmaps.Result, error) {
			return s.AddDomain(ctx, args[0], makeDefault)
		}),
	}
	add.Flags().BoolVar(&makeDefault, "default", false, "make this the default domain (exactly one domain is)")
	del := &cobra.Command{
		Use:   "delete DOMAIN",
		Short: "Delete a domain; refused while it has users or virtual aliases unless --cascade; an absent one exits 0",
		Args:  cobra.ExactArgs(1),
		RunE: o.change(func(ctx context.Context, s *sqlmaps.Store, args []string) (sqlmaps.Result, error) {
			return s.DeleteDomain(ctx, args[0], cascade)
		}),
	}
	del.Flags().BoolVar(&cascade, "cascade", false, "also delete the domain's users and virtual aliases, in the same transaction")
	list := &cobra.Command{
		Use:   "list",
		Short: "List domains",
		Args:  cobra.NoArgs,
		RunE: o.read(func(ctx context.Context, s *sqlmaps.Store, w io.Writer) error {
			ds, err := s.ListDomains(ctx)
			if err != nil {
				return err
			}
			return o.table(w, nonNil(ds), "DOMAIN\tDEFAULT\tACTIVE", func(p func(...any)) {
				for _, d := range ds {
					p(d.Name, d.Default, d.Active)
				}
			})
		}),
	}
	cmd.AddCommand(add, del, list)
	dbToggle(o, cmd, sqlmaps.Domains, "DOMAIN")
	return cmd
}

// nonNil makes empty lists print as [] in JSON.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func dbAliasCmd(o *dbOptions, k sqlmaps.Kind) *cobra.Command {
	use, short, src, plural := "alias", "Local aliases for alias_maps (postfix_alias): NAME → destinations", "NAME", "local aliases"
	if k == sqlmaps.VirtualAliases {
		use, short, src, plural = "valias", "Virtual aliases for virtual_alias_maps (postfix_alias_virtuels): ADDRESS or @DOMAIN → destinations", "ADDRESS|@DOMAIN", "virtual aliases"
	}
	cmd := &cobra.Command{Use: use, Short: short}
	add := &cobra.Command{
		Use:   "add " + src + " DESTINATION...",
		Short: "Add " + article(k.String()) + "; several destinations may be given as arguments or as one comma-separated list",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := o.open(cmd.Context(), true)
			if err != nil {
				return err
			}
			defer s.Close()
			dest := strings.Join(args[1:], ",")
			var r sqlmaps.Result
			if k == sqlmaps.Aliases {
				r, err = s.AddAlias(cmd.Context(), args[0], dest)
			} else {
				r, err = s.AddVirtualAlias(cmd.Context(), args[0], dest)
			}
			if err != nil {
				return err
			}
			return o.report(cmd.OutOrStdout(), r)
		},
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List " + plural,
		Args:  cobra.NoArgs,
		RunE: o.read(func(ctx context.Context, s *sqlmaps.Store, w io.Writer) error {
			as, err := s.ListAliases(ctx, k)
			if err != nil {
				return err
			}
			return o.table(w, nonNil(as), "SOURCE\tDESTINATION\tACTIVE", func(p func(...any)) {
				for _, a := range as {
					p(a.Source, a.Destination, a.Active)
				}
			})
		}),
	}
	cmd.AddCommand(add, list)
	dbToggle(o, cmd, k, src)
	return cmd
}

func dbBlacklistCmd(o *dbOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "blacklist", Short: "Sender and recipient blacklists (access(5) tables)"}

	sender := &cobra.Command{Use: "sender", Short: "Sender blacklist (postfix_liste_noire_expediteurs): KEY → CODE MESSAGE"}
	var code int
	var message string
	sadd := &cobra.Command{
		Use:   "add KEY --code 5NN --message TEXT",
		Short: "Refuse mail from KEY (user@domain; a domain, which covers its sub-domains; or user@) with CODE and MESSAGE",
		Args:  cobra.ExactArgs(1),
		RunE: o.change(func(ctx context.Context, s *sqlmaps.Store, args []string) (sqlmaps.Result, error) {
			return s.AddSenderBlacklist(ctx, args[0], code, message)
		}),
	}
	sadd.Flags().IntVar(&code, "code", 554, "SMTP reply code, 4xx or 5xx")
	sadd.Flags().StringVar(&message, "message", "", "reply text (required)")
	slist := &cobra.Command{
		Use: "list", Short: "List the sender blacklist", Args: cobra.NoArgs,
		RunE: o.read(func(ctx context.Context, s *sqlmaps.Store, w io.Writer) error {
			bs, err := s.ListSenderBlacklist(ctx)
			if err != nil {
				return err
			}
			return o.table(w, nonNil(bs), "SENDER\tCODE\tMESSAGE\tACTIVE", func(p func(...any)) {
				for _, b := range bs {
					p(b.Key, b.Code, b.Message, b.Active)
				}
			})
		}),
	}
	sender.AddCommand(sadd, slist)
	dbToggle(o, sender, sqlmaps.SenderBlacklist, "KEY")

	recipient := &cobra.Command{Use: "recipient", Short: "Recipient blacklist (postfix_liste_noire_destinataires): KEY → ACTION"}
	var action string
	radd := &cobra.Command{
		Use:   "add KEY [--action ACTION]",
		Short: "Apply an access(5) ACTION (default REJECT) to mail for KEY",
		Args:  cobra.ExactArgs(1),
		RunE: o.change(func(ctx context.Context, s *sqlmaps.Store, args []string) (sqlmaps.Result, error) {
			return s.AddRecipientBlacklist(ctx, args[0], action)
		}),
	}
	radd.Flags().StringVar(&action, "action", "REJECT", "access(5) action: REJECT [text], DEFER [text], DISCARD, HOLD, 5NN text…")
	rlist := &cobra.Command{
		Use: "list", Short: "List the recipient blacklist", Args: cobra.NoArgs,
		RunE: o.read(func(ctx context.Context, s *sqlmaps.Store, w io.Writer) error {
			bs, err := s.ListRecipientBlacklist(ctx)
			if err != nil {
				return err
			}
			return o.table(w, nonNil(bs), "RECIPIENT\tACTION\tACTIVE", func(p func(...any)) {
				for _, b := range bs {
					p(b.Key, b.Action, b.Active)
				}
			})
		}),
	}
	recipient.AddCommand(radd, rlist)
	dbToggle(o, recipient, sqlmaps.RecipientBlacklist, "KEY")

	cmd.AddCommand(sender, recipient)
	return cmd
}

func dbSpamAllowCmd(o *dbOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "spam-allow", Short: "Per-domain spam allow lists (postkit_liste_blanche_spam): DOMAIN SENDER-DOMAIN"}
	add := &cobra.Command{
		Use:   "add DOMAIN SENDER-DOMAIN",
		Short: "Never mark as spam mail to DOMAIN's users whose From is in SENDER-DOMAIN (or a sub-domain) and passes SPF or DKIM",
		Args:  cobra.ExactArgs(2),
		RunE: o.change(func(ctx context.Context, s *sqlmaps.Store, args []string) (sqlmaps.Result, error) {
			return s.AddSpamAllow(ctx, args[0], args[1])
		}),
	}
	del := &cobra.Command{
		Use:   "delete DOMAIN SENDER-DOMAIN",
		Short: "Remove a spam allow list entry; one that does not exist reports \"absent\" and exits 0",
		Args:  cobra.ExactArgs(2),
		RunE: o.change(func(ctx context.Context, s *sqlmaps.Store, args []string) (sqlmaps.Result, error) {
			return s.DeleteSpamAllow(ctx, args[0], args[1])
		}),
	}
	list := &cobra.Command{
		Use: "list", Short: "List the spam allow lists", Args: cobra.NoArgs,
		RunE: o.read(func(ctx context.Context, s *sqlmaps.Store, w io.Writer) error {
			as, err := s.ListSpamAllow(ctx)
			if err != nil {
				return err
			}
			return o.table(w, nonNil(as), "DOMAIN\tSENDER DOMAIN\tACTIVE", func(p func(...any)) {
				for _, a := range as {
					p(a.Domain, a.Sender, a.Active)
				}
			})
		}),
	}
	cmd.AddCommand(add, del, list)
	return cmd
}
