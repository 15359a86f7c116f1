// Package apply writes generated files the way configuration management
// expects: atomically (temporary file, fsync, rename), with their modes and
// owners, leaving unchanged files untouched, and able to report or diff what
// it would do without writing anything.
package apply

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/postkit/postkit/internal/daemon"
)

// File is one file to put in place, at its live absolute path.
type File struct {
	Path  string
	Data  []byte
	Mode  fs.FileMode
	Owner string // "" keeps the current or default owner
	Group string
}

// Action says what happens to a file.
type Action string

const (
	Create    Action = "create"
	Update    Action = "update"
	Unchanged Action = "unchanged"
)

// Change is the outcome for one file.
type Change struct {
	Path   string `json:"path"` // live path (without the root)
	Action Action `json:"action"`
	Old    []byte `json:"-"`
	New    []byte `json:"-"`
}

// Options control Apply.
type Options struct {
	Root  string // prefix for every path; "/" for the live system
	Check bool   // compute changes, write nothing
	// Chown applies owners and groups; it needs root. Unknown users or
	// groups are an error.
	Chown bool
}

// Apply puts files under root. It returns the change for each file, in order.
func Apply(files []File, o Options) ([]Change, error) {
	changes := make([]Change, 0, len(files))
	for _, f := range files {
		dst := filepath.Join(o.Root, f.Path)
		uid, gid, err := ids(f, o.Chown)
		if err != nil {
			return changes, fmt.Errorf("apply: %s: %w", f.Path, err)
		}
		old, st, err := read(dst)
		if err != nil {
			return changes, fmt.Errorf("apply: %w", err)
		}
		ch := Change{Path: f.Path, New: f.Data, Old: old}
		switch {
		case st == nil:
			ch.Action = Create
		case !bytes.Equal(old, f.Data) || st.Mode().Perm() != f.Mode.Perm() || !ownedBy(st, uid, gid):
			ch.Action = Update
		default:
			ch.Action = Unchanged
		}
		changes = append(changes, ch)
		if o.Check || ch.Action == Unchanged {
			continue
		}
		if err := writeAtomic(dst, f.Data, f.Mode.Perm(), uid, gid); err != nil {
			return changes, fmt.Errorf("apply: %w", err)
		}
	}
	return changes, nil
}

// Changed reports whether any change is not Unchanged.
func Changed(cs []Change) bool {
	for _, c := range cs {
		if c.Action != Unchanged {
			return true
		}
	}
	return false
}

func ids(f File, chown bool) (uid, gid int, err error) {
	uid, gid = -1, -1
	if !chown {
		return
	}
	if f.Owner != "" {
		if uid, err = daemon.LookupUID(f.Owner); err != nil {
			return
		}
	}
	if f.Group != "" {
		if gid, err = daemon.LookupGID(f.Group); err != nil {
			return
		}
	}
	return
}

func ownedBy(st fs.FileInfo, uid, gid int) bool {
	s, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return true
	}
	return (uid < 0 || int(s.Uid) == uid) && (gid < 0 || int(s.Gid) == gid)
}

func read(path string) ([]byte, fs.FileInfo, error) {
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%s exists and is not a regular file; move it away first", path)
	}
	data, err := os.ReadFile(path)
	return data, st, err
}

func writeAtomic(dst string, data []byte, mode fs.FileMode, uid, gid int) error {
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(dst)+".postkit-*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	defer os.Remove(name) // no-op after a successful rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if uid >= 0 || gid >= 0 {
		if err := tmp.Chown(uid, gid); err != nil {
			tmp.Close()
			return err
		}
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(name, dst); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
