package apply

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A file postkit did not write (or that was edited since) is not replaced
// without Force; with Force the edited version is kept beside it.
func TestGuard(t *testing.T) {
	root := t.TempDir()
	live := filepath.Join(root, "etc/postfix/main.cf")
	os.MkdirAll(filepath.Dir(live), 0o755)
	os.WriteFile(live, []byte("mine = 1\n"), 0o644)
	files := []File{
		{Path: "/etc/postfix/main.cf", Data: []byte("a = 1\n"), Mode: 0o644},
		{Path: "/etc/postfix/new.cf", Data: []byte("b = 1\n"), Mode: 0o644},
	}
	cs, err := Apply(files, Options{Root: root, Guard: true})
	if !errors.Is(err, ErrEdited) || !cs[0].Edited || cs[1].Edited {
		t.Fatalf("never written by postkit: %+v, %v; want ErrEdited on main.cf only", cs, err)
	}
	if b, _ := os.ReadFile(live); string(b) != "mine = 1\n" {
		t.Fatalf("refused apply replaced the file: %q", b)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/postfix/new.cf")); err == nil {
		t.Fatal("refused apply wrote new.cf")
	}
	// What postkit wrote, recorded, is replaced without Force.
	written := map[string]string{"/etc/postfix/main.cf": Sum([]byte("mine = 1\n"))}
	if cs, err = Apply(files, Options{Root: root, Guard: true, Written: written, Check: true}); err != nil || cs[0].Edited {
		t.Fatalf("recorded contents: %+v, %v", cs, err)
	}
	// Force keeps the edited file.
	now := func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }
	cs, err = Apply(files, Options{Root: root, Guard: true, Force: true, Now: now})
	if err != nil || !cs[0].Edited || cs[0].Backup != "/etc/postfix/main.cf.postkit-bak.20260102T030405Z" {
		t.Fatalf("--force: %+v, %v", cs, err)
	}
	if b, _ := os.ReadFile(live); string(b) != "a = 1\n" {
		t.Errorf("--force did not replace: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(root, cs[0].Backup)); string(b) != "mine = 1\n" {
		t.Errorf("backup holds %q", b)
	}
	// A live file that already has the new contents is not refused.
	cs, err = Apply(files, Options{Root: root, Guard: true})
	if err != nil || Changed(cs) {
		t.Errorf("same contents, not recorded: %+v, %v", cs, err)
	}
}
