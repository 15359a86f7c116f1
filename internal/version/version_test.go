package version

import (
	"strings"
	"testing"
)

func TestStampedVersionWins(t *testing.T) {
	old := Version
	t.Cleanup(func() { Version = old })
	Version = "1.2.3"
	got := Get()
	if got.Version != "1.2.3" {
		t.Fatalf("Version = %q, want the stamped 1.2.3", got.Version)
	}
	if !strings.HasPrefix(got.String(), "1.2.3 (") {
		t.Fatalf("String() = %q", got.String())
	}
}

func TestUnstampedIsNeverEmpty(t *testing.T) {
	old := Version
	t.Cleanup(func() { Version = old })
	Version = ""
	if v := Get().Version; v == "" {
		t.Fatal("an unstamped build must still report a version")
	}
}
