package daemon

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// Both profiles are written at stop, "%p" naming the process; empty paths
// write nothing; a path that cannot be created stops the start.
func TestStartProfiles(t *testing.T) {
	dir := t.TempDir()
	stop, err := StartProfiles(filepath.Join(dir, "cpu-%p.prof"), filepath.Join(dir, "mem-%p.prof"))
	if err != nil {
		t.Fatal(err)
	}
	stop()
	pid := strconv.Itoa(os.Getpid())
	for _, name := range []string{"cpu-" + pid + ".prof", "mem-" + pid + ".prof"} {
		if st, err := os.Stat(filepath.Join(dir, name)); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v; want a profile", name, err)
		}
	}
	stop, err = StartProfiles("", "")
	if err != nil {
		t.Fatal(err)
	}
	stop()
	if _, err := StartProfiles(filepath.Join(dir, "missing", "cpu.prof"), ""); err == nil {
		t.Error("StartProfiles into a missing directory = nil error")
	}
}
