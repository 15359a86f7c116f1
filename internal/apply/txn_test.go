package apply

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// snapshot is every entry under root: path -> mode and contents.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		v := st.Mode().String()
		if st.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			v += " " + string(b)
		}
		m[strings.TrimPrefix(p, root)] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// live is a tree with two files; the new set changes both and adds one in
// a directory that does not exist yet.
func live(t *testing.T) (root string, files []File) {
	t.Helper()
	root = t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc/postfix"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/postfix/main.cf"), []byte("old main\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc/postfix/master.cf"), []byte("old master\n"), 0o600)
	return root, []File{
		{Path: "/etc/postfix/main.cf", Data: []byte("new main\n"), Mode: 0o644},
		{Path: "/etc/postfix/master.cf", Data: []byte("new master\n"), Mode: 0o644},
		{Path: "/etc/dovecot/conf.d/10-mail.conf", Data: []byte("new mail\n"), Mode: 0o644},
	}
}

// failRename makes the n-th rename (1-based) and every later one fail when
// all is true.
func failRename(t *testing.T, n int, all bool) {
	t.Helper()
	calls := 0
	rename = func(a, b string) error {
		calls++
		if calls == n || (all && calls > n) {
			return fmt.Errorf("rename %s: injected failure %d", b, calls)
		}
		return os.Rename(a, b)
	}
	t.Cleanup(func() { rename = os.Rename })
}

// A rename that fails midway puts back what was already replaced: the tree
// is byte for byte what it was, without leftovers.
func TestApplyRestoresWhenARenameFails(t *testing.T) {
	for n := 1; n <= 3; n++ {
		t.Run(fmt.Sprint("rename ", n), func(t *testing.T) {
			root, files := live(t)
			before := snapshot(t, root)
			failRename(t, n, false)
			_, err := Apply(files, Options{Root: root})
			if !errors.Is(err, ErrRestored) || !strings.Contains(err.Error(), fmt.Sprintf("injected failure %d", n)) {
				t.Fatalf("Apply = %v; want ErrRestored naming the failure", err)
			}
			if after := snapshot(t, root); !reflect.DeepEqual(before, after) {
				t.Errorf("tree changed:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}

// When putting back fails too, the error says so and names where the old
// version is.
func TestApplyInconsistent(t *testing.T) {
	root, files := live(t)
	failRename(t, 2, true) // main.cf is swapped, master.cf fails, main.cf cannot go back
	_, err := Apply(files, Options{Root: root})
	if !errors.Is(err, ErrInconsistent) || !strings.Contains(err.Error(), filepath.Join(root, "etc/postfix/main.cf")+" (the old version is at ") {
		t.Fatalf("Apply = %v; want ErrInconsistent naming main.cf and its old version", err)
	}
}

// Finish fails: the files and what Finish wrote among Extra are put back.
func TestApplyRestoresWhenFinishFails(t *testing.T) {
	root, files := live(t)
	os.WriteFile(filepath.Join(root, "etc/postfix/extra.bin"), []byte("old extra"), 0o640)
	before := snapshot(t, root)
	_, err := Apply(files, Options{
		Root:  root,
		Extra: []string{"/etc/postfix/extra.bin", "/etc/dovecot/conf.d/new.bin"},
		Finish: func([]Change) error {
			os.WriteFile(filepath.Join(root, "etc/postfix/extra.bin.tmp"), []byte("new extra"), 0o644)
			os.Rename(filepath.Join(root, "etc/postfix/extra.bin.tmp"), filepath.Join(root, "etc/postfix/extra.bin"))
			os.WriteFile(filepath.Join(root, "etc/dovecot/conf.d/new.bin"), []byte("x"), 0o644)
			return errors.New("sievec: failed")
		},
	})
	if !errors.Is(err, ErrRestored) || !strings.Contains(err.Error(), "sievec: failed") {
		t.Fatalf("Apply = %v; want ErrRestored with Finish's error", err)
	}
	if after := snapshot(t, root); !reflect.DeepEqual(before, after) {
		t.Errorf("tree changed:\nbefore %v\nafter  %v", before, after)
	}
	// Finish succeeds: everything is in place and no copy is left.
	_, err = Apply(files, Options{Root: root, Extra: []string{"/etc/postfix/extra.bin"}, Finish: func([]Change) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	after := snapshot(t, root)
	for p := range after {
		if strings.Contains(p, ".postkit-") {
			t.Errorf("leftover %s", p)
		}
	}
	if after["/etc/postfix/master.cf"] != "-rw-r--r-- new master\n" || after["/etc/postfix/extra.bin"] != "-rw-r----- old extra" {
		t.Errorf("after a good run: %v", after)
	}
}

// Verify sees every file, changed or not, at its live path under the stage;
// its refusal leaves the tree untouched, with Check or without.
func TestApplyVerify(t *testing.T) {
	root, files := live(t)
	os.WriteFile(filepath.Join(root, "etc/postfix/main.cf"), []byte("new main\n"), 0o644) // unchanged
	before := snapshot(t, root)
	var staged string
	for _, check := range []bool{true, false} {
		_, err := Apply(files, Options{Root: root, Check: check, Verify: func(stage string) error {
			staged = stage
			for _, f := range files {
				b, err := os.ReadFile(filepath.Join(stage, f.Path))
				st, _ := os.Stat(filepath.Join(stage, f.Path))
				if err != nil || !bytes.Equal(b, f.Data) || st.Mode().Perm() != f.Mode {
					t.Errorf("stage %s: %q %v", f.Path, b, err)
				}
			}
			return errors.New("postconf: refused")
		}})
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "postconf: refused") {
			t.Fatalf("Apply(check=%v) = %v; want ErrRefused", check, err)
		}
		if after := snapshot(t, root); !reflect.DeepEqual(before, after) {
			t.Errorf("check=%v: tree changed", check)
		}
		if _, err := os.Stat(staged); !os.IsNotExist(err) {
			t.Errorf("the stage %s was left behind", staged)
		}
	}
}
