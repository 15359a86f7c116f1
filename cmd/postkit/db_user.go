package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"

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
config's mailbox.uid/gid (3000). If the user exists with the same name, uid, gid
and privilege, nothing changes ("unchanged", the password is neither read nor
changed: use 'passwd'); other differences are an error.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			s, err := o.open(ctx, true)
			if err != nil {
				return err
			}
			defer s.Close()
			mb := config.Defaults().Mailbox
			if o.cfg != nil {
				mb = o.cfg.Mailbox
			}
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
				pw, err := dbPassword(cmd, stdin)
				if err != nil {
					return err
				}
				if u.PasswordHash, err = pwhash.Hash(scheme, pw); err != nil {
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
			h, err := pwhash.Hash(scheme, pw)
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
	cmd.AddCommand(add, passwd, list)
	dbToggle(o, cmd, sqlmaps.Users, "USER@DOMAIN")
	return cmd
}
