package e2e

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/postkit/postkit/e2e/harness"
)

// The seeded accounts. Passwords are set with `postkit db user add
// --password-stdin`; the IMAP and submission scenarios log in with them.
var (
	alice    = "alice@" + harness.Domain // receives; logs in over IMAP
	bob      = "bob@" + harness.Domain   // target of the virtual alias
	carol    = "carol@" + harness.Domain // disabled
	dave     = "dave@" + harness.Domain  // on the recipient blacklist
	info     = "info@" + harness.Domain  // virtual alias -> bob
	spammer  = "spammer@" + harness.OutsideDomain
	stranger = "someone@" + harness.OutsideDomain

	passwords = map[string]string{
		alice: "Alice-pw-4711",
		bob:   "Bob-pw-08150",
		carol: "Carol-pw-1234",
		dave:  "Dave-pw-9999",
	}
)

const (
	// sizeLimit is message_size_limit: small, so that the size scenario
	// sends little.
	sizeLimit = 100000
	// postmasterAlias is a local alias of the host's own domain.
	postmasterAlias = "postmaster@" + harness.Hostname

	blacklistCode    = 554
	blacklistMessage = "5.7.1 Go away, spammer"
	// recipientAction is an access(5) action with its own text.
	recipientAction = "REJECT mailbox closed by its owner"
)

func TestMain(m *testing.M) {
	os.Exit(harness.Main(m, harness.Options{
		MessageSizeLimit: sizeLimit,
		Seed:             seed,
	}))
}

// seed fills the database the way an administrator would, with postkit db.
func seed(s *harness.Stack) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, u := range []string{alice, bob, carol, dave} {
		if err := s.AddUser(ctx, u, passwords[u]); err != nil {
			return err
		}
	}
	steps := []func() error{
		func() error { return s.DisableUser(ctx, carol) },
		func() error { return s.AddVirtualAlias(ctx, info, bob) },
		func() error { return s.AddAlias(ctx, "postmaster", alice) },
		func() error { return s.BlacklistSender(ctx, spammer, blacklistCode, blacklistMessage) },
		func() error { return s.BlacklistRecipient(ctx, dave, recipientAction) },
	}
	for _, f := range steps {
		if err := f(); err != nil {
			return err
		}
	}
	return nil
}

// ctx returns a context bounded for one scenario.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	t.Cleanup(cancel)
	return c
}
