package apply

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestApplyIdempotent(t *testing.T) {
	root := t.TempDir()
	files := []File{
		{Path: "/etc/postfix/main.cf", Data: []byte("a = 1\n"), Mode: 0o644},
		{Path: "/etc/dovecot/dovecot-sql.conf.ext", Data: []byte("driver = sqlite\n"), Mode: 0o640},
	}
	cs, err := Apply(files, Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if c.Action != Create {
			t.Errorf("first run: %s %s; want create", c.Path, c.Action)
		}
	}
	st, err := os.Stat(filepath.Join(root, "etc/dovecot/dovecot-sql.conf.ext"))
	if err != nil || st.Mode().Perm() != 0o640 {
		t.Fatalf("mode = %v, %v; want 0640", st.Mode(), err)
	}
	before := st.ModTime()
	time.Sleep(10 * time.Millisecond)
	cs, err = Apply(files, Options{Root: root})
	if err != nil {
		t.Fatal(err)
	}
	if Changed(cs) {
		t.Errorf("second run changed something: %+v", cs)
	}
	st, _ = os.Stat(filepath.Join(root, "etc/dovecot/dovecot-sql.conf.ext"))
	if !st.ModTime().Equal(before) {
		t.Error("unchanged file was rewritten")
	}
	// A mode change alone is an update.
	os.Chmod(filepath.Join(root, "etc/postfix/main.cf"), 0o600)
	cs, _ = Apply(files, Options{Root: root, Check: true})
	if cs[0].Action != Update {
		t.Errorf("mode drift: %s; want update", cs[0].Action)
	}
	st, _ = os.Stat(filepath.Join(root, "etc/postfix/main.cf"))
	if st.Mode().Perm() != 0o600 {
		t.Error("--check wrote the file")
	}
}

func TestApplyCheckWritesNothing(t *testing.T) {
	root := t.TempDir()
	cs, err := Apply([]File{{Path: "/a/b.cf", Data: []byte("x\n"), Mode: 0o644}}, Options{Root: root, Check: true})
	if err != nil || len(cs) != 1 || cs[0].Action != Create {
		t.Fatalf("Apply = %+v, %v", cs, err)
	}
	if _, err := os.Stat(filepath.Join(root, "a")); !os.IsNotExist(err) {
		t.Errorf("check mode created %s", filepath.Join(root, "a"))
	}
}

func TestApplyRefusesNonRegular(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc/main.cf"), 0o755)
	_, err := Apply([]File{{Path: "/etc/main.cf", Data: []byte("x"), Mode: 0o644}}, Options{Root: root})
	if err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("err = %v; want a 'not a regular file' error", err)
	}
}

func TestApplyUnknownGroup(t *testing.T) {
	_, err := Apply([]File{{Path: "/x", Data: []byte("x"), Mode: 0o644, Group: "no-such-group-postkit"}}, Options{Root: t.TempDir(), Chown: true})
	if err == nil || !strings.Contains(err.Error(), "unknown group") {
		t.Errorf("err = %v; want unknown group", err)
	}
}

func TestUnified(t *testing.T) {
	old := "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n"
	new := "a\nb\nc\nd\nE\nf\ng\nh\ni\nj\nk\n"
	got := Unified("main.cf", []byte(old), []byte(new))
	want := `--- main.cf
+++ main.cf
@@ -2,9 +2,10 @@
 b
 c
 d
-e
+E
 f
 g
 h
 i
 j
+k
`
	if got != want {
		t.Errorf("Unified =\n%s\nwant\n%s", got, want)
	}
	if Unified("x", []byte(old), []byte(old)) != "" {
		t.Error("equal inputs gave a diff")
	}
	if got := Unified("x", nil, []byte("a\n")); got != "--- x\n+++ x\n@@ -0,0 +1 @@\n+a\n" {
		t.Errorf("new file diff = %q", got)
	}
}
