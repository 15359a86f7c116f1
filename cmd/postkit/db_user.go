package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/postkit/postkit/internal/bytesize"
	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/sqlmaps"
	"github.com/postkit/postkit/sqlmaps/pwhash"
)

// dbPassword reads a new password: one line of stdin with --password-stdin,
// else twice from the terminal without echo. Never from argv.
func dbPassword(cmd *cobra.Command, fromStdin bool) (string, error) {
	if fromStdin {
		line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("db: read password from stdin: %w", err)
		}
		pw := strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		if pw == "" {
			return "", errors.New("db: empty password on stdin: write the password followed by a newline")
		}
		return pw, nil
	}
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return "", errors.New("db: no terminal to ask the password on: pipe it with --password-stdin")
	}
	ask := func(prompt string) (string, error) {
		fmt.Fprint(cmd.ErrOrStderr(), prompt)
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(cmd.ErrOrStderr())
		return string(b), err
	}
	a, err := ask("New password: ")
	if err != nil {
		return "", fmt.Errorf("db: read password: %w", err)
	}
	b, err := ask("Retype password: ")
	if err != nil {
		return "", fmt.Errorf("db: read password: %w", err)
	}
	if a != b {
		return "", errors.New("db: the passwords differ: nothing changed; try again")
	}
	if a == "" {
		return "", errors.New("db: empty password: nothing changed")
	}
	return a, nil
}

func dbUserCmd(o *dbOptions) *cobra.Command {
	cmd := &cobra.Command{Use: "user", Short: "Mailbox users (postfix_utilisateurs), their passwords and privileges"}
	var (
		name, scheme, privilege, domain string
		uid, gid                        int
		stdin                           bool
	)
	add := &cobra.Command{
		Use:   "add USER@DOMAIN",
		Short: "Add a mailbox user; the password comes from --password-stdin or a prompt",
		Long: `Adds a user whose domain is already in the database. uid/gid default to the
config's mailbox.uid/gid (3000); the generated Dovecot accepts no other
(first_valid_uid = last_valid_uid = mailbox.uid), so another is refused. If the
user exists with the same name, uid, gid and privilege, nothing changes
("unchanged", the password is neither read nor changed: use 'passwd'); other
differences are an error: change them with 'user set'. The password must satisfy
database.password_policy (at least 12 characters by default, not the address).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			s, err := o.open(ctx, true)
			if err != nil {
				return err
			}
			defer s.Close()
			mb := o.config().Mailbox
			if !cmd.Flags().Changed("uid") {
				uid = mb.UID
			}
			if !cmd.Flags().Changed("gid") {
				gid = mb.GID
			}
			u := sqlmaps.NewUser{Address: args[0], Name: name, UID: uid, GID: gid, Privilege: privilege}
			// Ask for the password only when the user is really created:
			// re-running a playbook must not need it.
			if _, err := s.GetUser(ctx, args[0]); err == nil {
				// Exists: AddUser compares the other fields only.
			} else if !errors.Is(err, sqlmaps.ErrNotFound) {
				return err
			} else {
				if _, err := sqlmaps.CheckAddress(args[0]); err != nil {
					return err
				}
				if err := o.checkIDs(uid, gid); err != nil {
					return err
				}
				pw, err := dbPassword(cmd, stdin)
				if err != nil {
					return err
				}
				if u.PasswordHash, err = o.hash(scheme, args[0], pw); err != nil {
					return err
				}
			}
			r, err := s.AddUser(ctx, u)
			if err != nil {
				return err
			}
			return o.report(cmd.OutOrStdout(), r)
		},
	}
	af := add.Flags()
	af.StringVar(&name, "name", "", "full name (nom_complet)")
	af.IntVar(&uid, "uid", 0, "mailbox owner uid (default mailbox.uid)")
	af.IntVar(&gid, "gid", 0, "mailbox owner gid (default mailbox.gid)")
	af.StringVar(&privilege, "privilege", sqlmaps.PrivilegeUser, "utilisateur or administrateur")

	passwd := &cobra.Command{
		Use:   "passwd USER@DOMAIN",
		Short: "Set a user's password (from --password-stdin or a prompt)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			s, err := o.open(ctx, true)
			if err != nil {
				return err
			}
			defer s.Close()
			if _, err := s.GetUser(ctx, args[0]); err != nil {
				return err
			}
			pw, err := dbPassword(cmd, stdin)
			if err != nil {
				return err
			}
			h, err := o.hash(scheme, args[0], pw)
			if err != nil {
				return err
			}
			r, err := s.SetPassword(ctx, args[0], h)
			if err != nil {
				return err
			}
			return o.report(cmd.OutOrStdout(), r)
		},
	}
	for _, c := range []*cobra.Command{add, passwd} {
		c.Flags().BoolVar(&stdin, "password-stdin", false, "read the password from the first line of standard input")
		c.Flags().StringVar(&scheme, "scheme", pwhash.Default, "password scheme: "+strings.Join(pwhash.Schemes(), ", "))
	}

	list := &cobra.Command{
		Use:   "list",
		Short: "List users (never their password hashes)",
		Args:  cobra.NoArgs,
		RunE: o.read(func(ctx context.Context, s *sqlmaps.Store, w io.Writer) error {
			us, err := s.ListUsers(ctx, domain)
			if err != nil {
				return err
			}
			return o.table(w, nonNil(us), "USER\tNAME\tUID:GID\tPRIVILEGE\tACTIVE", func(p func(...any)) {
				for _, u := range us {
					p(u.Address, u.Name, fmt.Sprintf("%d:%d", u.UID, u.GID), u.Privilege, u.Active)
				}
			})
		}),
	}
	list.Flags().StringVar(&domain, "domain", "", "only users of this domain")
	cmd.AddCommand(add, passwd, list, dbUserSetCmd(o), dbUserShowCmd(o), dbUserDeleteCmd(o))
	dbToggle(o, cmd, sqlmaps.Users, "USER@DOMAIN")
	return cmd
}

// config is the loaded postkit.yaml, or the defaults with --db alone.
func (o *dbOptions) config() *config.Config {
	if o.cfg != nil {
		return o.cfg
	}
	return config.Defaults()
}

// checkIDs refuses a uid/gid the generated stack would not accept: Dovecot
// runs with first_valid_uid = last_valid_uid = mailbox.uid (and the same
// for gid) in conf.d/10-mail.conf, and refuses a login whose userdb uid is
// outside that range; Postfix's virtual(8) uses the static mailbox.uid.
func (o *dbOptions) checkIDs(uid, gid int) error {
	mb := o.config().Mailbox
	if uid != mb.UID || gid != mb.GID {
		return fmt.Errorf("db: uid:gid %d:%d: the generated Dovecot accepts only mailbox.uid:gid %d:%d (first_valid_uid = last_valid_uid = %d in conf.d/10-mail.conf) and would refuse this user's logins; leave --uid/--gid out, or change mailbox.uid/gid in postkit.yaml and run 'postkit generate'", uid, gid, mb.UID, mb.GID, mb.UID)
	}
	return nil
}

// policy is database.password_policy.
func (o *dbOptions) policy() sqlmaps.PasswordPolicy {
	p := o.config().Database.PasswordPolicy
	return sqlmaps.PasswordPolicy{MinLength: p.MinLength, MaxLength: p.MaxLength, RefuseAddress: p.RefuseAddress}
}

// hash checks pw against the password policy for address, then hashes it.
func (o *dbOptions) hash(scheme, address, pw string) (string, error) {
	if err := o.policy().Check(address, pw); err != nil {
		return "", err
	}
	return pwhash.Hash(scheme, pw)
}

func dbUserSetCmd(o *dbOptions) *cobra.Command {
	var (
		name, privilege, quota string
		uid, gid               int
		active                 bool
	)
	var cmd *cobra.Command
	cmd = &cobra.Command{
		Use:   "set USER@DOMAIN [--name N] [--privilege P] [--uid N --gid N] [--active=true|false] [--quota SIZE]",
		Short: "Change a user's name, privilege, uid/gid, active flag or quota (only the flags given)",
		Long: `Changes the fields given; the others are kept. Asking for
the stored values reports "unchanged" and exits 0. uid/gid must be mailbox.uid/gid
of postkit.yaml: the generated Dovecot refuses any other. --quota sets the user's
own storage limit (500M, 2G; 0 means none, overriding the domain's), as
'postkit db quota set' does; 'postkit db quota clear' gives them their domain's
again. The password has its own 'passwd'.`,
		Args: cobra.ExactArgs(1),
		RunE: o.change(func(ctx context.Context, s *sqlmaps.Store, args []string) (sqlmaps.Result, error) {
			var c sqlmaps.UserChange
			f := func(n string) bool { return cmd.Flags().Changed(n) }
			if f("name") {
				c.Name = &name
			}
			if f("privilege") {
				c.Privilege = &privilege
			}
			if f("uid") || f("gid") {
				u, err := s.GetUser(ctx, args[0])
				if err != nil {
					return sqlmaps.Result{}, err
				}
				if !f("uid") {
					uid = u.UID
				}
				if !f("gid") {
					gid = u.GID
				}
				if err := o.checkIDs(uid, gid); err != nil {
					return sqlmaps.Result{}, err
				}
				c.UID, c.GID = &uid, &gid
			}
			if f("active") {
				c.Active = &active
			}
			var bytes int64
			if f("quota") {
				n, err := bytesize.Parse(quota)
				if err != nil {
					return sqlmaps.Result{}, fmt.Errorf("db: --quota %q: %w", quota, err)
				}
				bytes = n
			}
			if c == (sqlmaps.UserChange{}) {
				if f("quota") {
					return s.SetQuota(ctx, args[0], bytes)
				}
				return sqlmaps.Result{}, errors.New("db: nothing to set: give --name, --privilege, --uid, --gid, --active or --quota")
			}
			res, err := s.SetUser(ctx, args[0], c)
			if err != nil || !f("quota") {
				return res, err
			}
			q, err := s.SetQuota(ctx, args[0], bytes)
			if err != nil {
				return res, err
			}
			res.Cascaded = append(res.Cascaded, q)
			return res, nil
		}),
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "full name (nom_complet); \"\" clears it")
	f.StringVar(&privilege, "privilege", "", "utilisateur or administrateur")
	f.IntVar(&uid, "uid", 0, "mailbox owner uid (must be mailbox.uid)")
	f.IntVar(&gid, "gid", 0, "mailbox owner gid (must be mailbox.gid)")
	f.BoolVar(&active, "active", true, "enable (true) or disable (false) the user")
	f.StringVar(&quota, "quota", "", "the user's storage limit: 500M, 2G, 0 for none")
	return cmd
}

func dbUserShowCmd(o *dbOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "show USER@DOMAIN",
		Short: "Show one user and the aliases that deliver to it (never the password hash)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			s, err := o.open(ctx, false)
			if err != nil {
				return err
			}
			defer s.Close()
			u, err := s.GetUser(ctx, args[0])
			if err != nil {
				return err
			}
			refs, err := s.AliasesOf(ctx, u.Address)
			if err != nil {
				return err
			}
			scheme, _ := pwhash.Split(u.PasswordHash)
			type alias struct {
				Kind   string `json:"kind"`
				Source string `json:"source"`
			}
			out := struct {
				sqlmaps.User
				Scheme  string  `json:"password_scheme"`
				Aliases []alias `json:"aliases"`
			}{User: u, Scheme: scheme, Aliases: []alias{}}
			for _, r := range refs {
				out.Aliases = append(out.Aliases, alias{r.Kind.String(), r.Source})
			}
			w := cmd.OutOrStdout()
			if o.asJSON {
				e := json.NewEncoder(w)
				e.SetIndent("", "  ")
				return e.Encode(out)
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			yes := map[bool]string{true: "yes", false: "no"}
			fmt.Fprintf(tw, "user:\t%s\n", u.Address)
			fmt.Fprintf(tw, "name:\t%s\n", u.Name)
			fmt.Fprintf(tw, "active:\t%s\n", yes[u.Active])
			fmt.Fprintf(tw, "privilege:\t%s\n", u.Privilege)
			fmt.Fprintf(tw, "uid:gid:\t%d:%d\n", u.UID, u.GID)
			fmt.Fprintf(tw, "home:\t%s\n", u.Home)
			fmt.Fprintf(tw, "password scheme:\t%s\n", scheme)
			for _, a := range out.Aliases {
				fmt.Fprintf(tw, "%s:\t%s\n", a.Kind, a.Source)
			}
			return tw.Flush()
		},
	}
}

func dbUserDeleteCmd(o *dbOptions) *cobra.Command {
	var cascade, keep bool
	cmd := &cobra.Command{
		Use:   "delete USER@DOMAIN [--cascade | --keep-aliases]",
		Short: "Delete a user; refused while aliases deliver to it unless --cascade or --keep-aliases; an absent one exits 0",
		Long: `Deletes the user's row (the Maildir stays on disk). While local or virtual
aliases name the user in their destination, the delete is refused: mail to them
would bounce. --cascade removes the user from those destinations in the same
transaction (an alias left with no destination is deleted); --keep-aliases leaves
them as they are. A user that does not exist reports "absent" and exits 0.`,
		Args: cobra.ExactArgs(1),
		RunE: o.change(func(ctx context.Context, s *sqlmaps.Store, args []string) (sqlmaps.Result, error) {
			p := sqlmaps.AliasesRefuse
			switch {
			case cascade && keep:
				return sqlmaps.Result{}, errors.New("db: --cascade and --keep-aliases exclude each other: choose one")
			case cascade:
				p = sqlmaps.AliasesCascade
			case keep:
				p = sqlmaps.AliasesKeep
			}
			return s.DeleteUser(ctx, args[0], p)
		}),
	}
	cmd.Flags().BoolVar(&cascade, "cascade", false, "remove the user from every alias destination (deleting aliases left empty)")
	cmd.Flags().BoolVar(&keep, "keep-aliases", false, "delete the user and leave the aliases that name it")
	return cmd
}
