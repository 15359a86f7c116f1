package bayesdb

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postkit/postkit/spam/bayes/bayestest"
)

func TestStoreContract(t *testing.T) {
	db, err := Open(filepath.Join(t.TempDir(), "bayes.sqlite"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	bayestest.StoreSuite(t, db)
}

// The store file is created private (it holds what users receive, hashed)
// and in WAL mode; a bad path says what to do.
func TestOpen(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "bayes.sqlite")
	db, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	var mode string
	if err := db.db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode = %q, %v; want wal", mode, err)
	}
	db.Close()
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, %v; want 0600", st.Mode().Perm(), err)
	}
	// Reopening keeps the data and the schema statements are idempotent.
	db, err = Open(p)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(filepath.Join(dir, "missing", "bayes.sqlite")); err == nil || !strings.Contains(err.Error(), "create the directory") {
		t.Errorf("Open in a missing directory = %v; want a hint", err)
	}
	if _, err := Open("x.sqlite?mode=ro"); err == nil {
		t.Error("Open accepted a DSN")
	}
}
