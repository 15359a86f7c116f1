package waldb

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.sqlite")
	db, err := Open(path, "x", "CREATE TABLE IF NOT EXISTS t (v INTEGER)", 2)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var mode string
	if err := db.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Errorf("journal_mode %q, %v; want wal", mode, err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("new file mode %v, %v; want 0600", st.Mode().Perm(), err)
	}
	for _, bad := range []string{"", "/x?mode=rw"} {
		if _, err := Open(bad, "x", "", 1); err == nil || !strings.HasPrefix(err.Error(), "x: database path") {
			t.Errorf("Open(%q): %v; want a refusal naming the path", bad, err)
		}
	}
	if _, err := Open(filepath.Join(t.TempDir(), "y.sqlite"), "x", "NOT SQL", 1); err == nil || !strings.Contains(err.Error(), "is it a postkit x database?") {
		t.Errorf("bad schema: %v", err)
	}
}
