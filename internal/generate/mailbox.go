package generate

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/internal/preflight"
)

// mailboxChecks looks at the live mail store before files change, for what
// the new configuration would silently break:
//
//   - with quotas on, Dovecot's SQL userdb queries the postkit_quotas table
//     (schema version 3): on an older database every login and delivery
//     would fail, so generate refuses until 'postkit db init' upgraded it;
//   - users' active Sieve scripts at another well-known location than
//     sieve.user_active (the reference installation's ~/sieve/.dovecot.sieve,
//     Dovecot's ~/.dovecot.sieve) would stop running: each such user is
//     counted in a note naming the fix.
//
// Files written under another root are for another host: nothing is looked
// at.
func mailboxChecks(cfg *config.Config, root string, note preflight.Note) error {
	if filepath.Clean(root) != "/" {
		return nil
	}
	if err := quotaSchema(cfg); err != nil {
		return err
	}
	for _, n := range strayActiveScripts(cfg, 5) {
		note("%s", n)
	}
	return nil
}

// quotaSchema refuses quotas over a database older than schema version 3.
// A database that does not exist yet is left to 'postkit db init'.
func quotaSchema(cfg *config.Config) error {
	src := cfg.Database.Source()
	if !cfg.Mailbox.Quota.Enabled || !src.Configured() {
		return nil
	}
	if !src.IsPostgres() {
		if _, err := os.Stat(src.Path); errors.Is(err, fs.ErrNotExist) {
			return nil
		}
	}
	s, err := src.OpenReadOnly()
	if err != nil {
		return fmt.Errorf("generate: mailbox.quota needs the database's quota table: %w", err)
	}
	defer s.Close()
	v, err := s.Version(context.Background())
	if err != nil {
		return fmt.Errorf("generate: mailbox.quota needs the database's quota table: %w", err)
	}
	if v == 0 && src.IsPostgres() {
		return nil // no tables yet: left to 'postkit db init'
	}
	if v < 3 {
		return fmt.Errorf("generate: mailbox.quota is enabled but %s is at schema version %d, without the quota table Dovecot's user queries read (every login and delivery would fail): upgrade it first with 'postkit db init -c CONFIG', or set mailbox.quota.enabled: false", src, v)
	}
	return nil
}

// layoutVar is a Dovecot variable of mailbox.layout (%d, %Ln, %2.256Hn…).
var layoutVar = regexp.MustCompile(`%[A-Za-z0-9.]*[A-Za-z]`)

// knownActive are the places users' active scripts are found in existing
// installations: the reference installation's and Dovecot's default.
var knownActive = []string{"~/sieve/.dovecot.sieve", "~/.dovecot.sieve"}

// strayActiveScripts lists, at most max examples deep, the users whose
// active Sieve script is at a known location other than sieve.user_active
// while they have none there. It returns the notes to print ("" none).
func strayActiveScripts(cfg *config.Config, max int) []string {
	s := cfg.Sieve
	if !s.Enabled || s.UserActive == "" || !strings.HasPrefix(s.UserActive, "~/") {
		return nil
	}
	pattern := filepath.Join(cfg.Mailbox.BaseDir, layoutVar.ReplaceAllString(cfg.Mailbox.Layout, "*"))
	homes, err := filepath.Glob(pattern)
	if err != nil {
		return nil
	}
	var notes []string
	for _, other := range knownActive {
		if other == s.UserActive {
			continue
		}
		var found []string
		for _, h := range homes {
			if _, err := os.Lstat(filepath.Join(h, s.UserActive[2:])); err == nil {
				continue
			}
			if _, err := os.Lstat(filepath.Join(h, other[2:])); err == nil {
				found = append(found, h)
			}
		}
		if len(found) == 0 {
			continue
		}
		ex := found
		if len(ex) > max {
			ex = ex[:max]
		}
		notes = append(notes, fmt.Sprintf("WARNING: %d mailbox(es) have their active Sieve script at %s, which Dovecot will not run: sieve.user_active is %s. Set sieve.user_active: %s (and sieve.user_dir to where their scripts are), or move each script there. Mailboxes: %s",
			len(found), other, s.UserActive, other, strings.Join(ex, ", ")))
	}
	return notes
}
