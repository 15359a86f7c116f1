package bayesdb

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postkit/postkit/spam/bayes"
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

func TestParseCounts(t *testing.T) {
	out := map[bayes.Token]bayes.Count{}
	if err := parseCounts("-5 1 2 7 0 3", out); err != nil {
		t.Fatal(err)
	}
	if out[bayes.Token(1<<64-5)] != (bayes.Count{Spam: 1, Ham: 2}) || out[7] != (bayes.Count{Ham: 3}) || len(out) != 2 {
		t.Errorf("parseCounts = %v", out)
	}
	for _, bad := range []string{"1 2", "1 x 2", "1 2 3 4"} {
		if err := parseCounts(bad, map[bayes.Token]bayes.Count{}); err == nil {
			t.Errorf("parseCounts(%q): no error", bad)
		}
	}
	if err := parseCounts("", out); err != nil {
		t.Errorf("parseCounts(\"\"): %v", err)
	}
}
