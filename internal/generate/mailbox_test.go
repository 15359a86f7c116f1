package generate

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/sqlmaps"
)

// Users whose active script sits where the configuration no longer looks
// are counted, with the fix; users with a script at the configured place
// are not.
func TestStrayActiveScripts(t *testing.T) {
	base := t.TempDir()
	cfg := config.Defaults()
	cfg.Mailbox.BaseDir = base
	mk := func(home, file string) {
		p := filepath.Join(base, home, file)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte("keep;\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mk("exemple.fr/ancien", "sieve/.dovecot.sieve") // the reference's place
	mk("exemple.fr/dovecot", ".dovecot.sieve")      // Dovecot's default
	mk("exemple.fr/both", ".dovecot.sieve")
	mk("exemple.fr/both", "sieve/.dovecot.sieve")
	os.MkdirAll(filepath.Join(base, "exemple.fr/none"), 0o755)

	notes := strayActiveScripts(cfg, 5) // user_active: ~/sieve/.dovecot.sieve
	if len(notes) != 1 || !strings.Contains(notes[0], "1 mailbox(es) have their active Sieve script at ~/.dovecot.sieve") ||
		!strings.Contains(notes[0], filepath.Join(base, "exemple.fr/dovecot")) || strings.Contains(notes[0], "both") {
		t.Errorf("notes with the reference's location: %q", notes)
	}
	cfg.Sieve.UserActive = "~/.dovecot.sieve"
	notes = strayActiveScripts(cfg, 5)
	if len(notes) != 1 || !strings.Contains(notes[0], "at ~/sieve/.dovecot.sieve") || !strings.Contains(notes[0], "Set sieve.user_active: ~/sieve/.dovecot.sieve") ||
		!strings.Contains(notes[0], "ancien") {
		t.Errorf("notes with Dovecot's location: %q", notes)
	}
	cfg.Sieve.Enabled = false
	if notes := strayActiveScripts(cfg, 5); notes != nil {
		t.Errorf("Sieve off: %q", notes)
	}
}

// Quotas over a database without the quota table are refused before any
// file changes; a current database or none at all passes.
func TestQuotaSchema(t *testing.T) {
	ctx := context.Background()
	cfg := config.Defaults()
	cfg.Database.Path = filepath.Join(t.TempDir(), "postfix.sqlite")
	if err := quotaSchema(cfg); err != nil {
		t.Errorf("no database yet: %v", err)
	}
	s, err := sqlmaps.Open(cfg.Database.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := quotaSchema(cfg); err != nil {
		t.Errorf("schema 3: %v", err)
	}
	s.DB().Exec("DROP TABLE postkit_quotas")
	s.DB().Exec("DELETE FROM postkit_schema_version")
	s.DB().Exec("INSERT INTO postkit_schema_version VALUES (2, 'x')")
	if err := quotaSchema(cfg); err == nil || !strings.Contains(err.Error(), "schema version 2") || !strings.Contains(err.Error(), "postkit db init") {
		t.Errorf("schema 2: %v; want a refusal naming postkit db init", err)
	}
	cfg.Mailbox.Quota.Enabled = false
	if err := quotaSchema(cfg); err != nil {
		t.Errorf("quotas off: %v", err)
	}
}
