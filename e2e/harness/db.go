package harness

import (
	"context"
	"strconv"
)

// The seeding helpers below are thin wrappers over `postkit db`, so that tests
// and the demo exercise the same commands an administrator types.

// AddUser creates a mailbox user with a password (given on stdin, never on
// the command line).
func (s *Stack) AddUser(ctx context.Context, addr, password string) error {
	_, err := s.DB(ctx, password+"\n", "user", "add", addr, "--password-stdin")
	return err
}

// DisableUser keeps a user's row but refuses its mail and its logins.
func (s *Stack) DisableUser(ctx context.Context, addr string) error {
	_, err := s.DB(ctx, "", "user", "disable", addr)
	return err
}

// AddAlias adds a local alias (postfix_alias: local part of the host's own
// domain, e.g. postmaster) to a destination address.
func (s *Stack) AddAlias(ctx context.Context, alias, dest string) error {
	_, err := s.DB(ctx, "", "alias", "add", alias, dest)
	return err
}

// AddVirtualAlias adds a virtual alias (postfix_alias_virtuels).
func (s *Stack) AddVirtualAlias(ctx context.Context, addr, dest string) error {
	_, err := s.DB(ctx, "", "valias", "add", addr, dest)
	return err
}

// BlacklistSender refuses mail from addr with an SMTP code and message
// (postfix_liste_noire_expediteurs).
func (s *Stack) BlacklistSender(ctx context.Context, addr string, code int, message string) error {
	_, err := s.DB(ctx, "", "blacklist", "sender", "add", addr, "--code", strconv.Itoa(code), "--message", message)
	return err
}

// BlacklistRecipient applies an access(5) action to mail for addr
// (postfix_liste_noire_destinataires).
func (s *Stack) BlacklistRecipient(ctx context.Context, addr, action string) error {
	_, err := s.DB(ctx, "", "blacklist", "recipient", "add", addr, "--action", action)
	return err
}
