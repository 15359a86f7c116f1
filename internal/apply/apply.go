// Package apply writes generated files the way configuration management
// expects: all or nothing, with their modes and owners, leaving unchanged
// files untouched, and able to report or diff what it would do without
// writing anything.
//
// Apply works in three steps. It stages every file in a temporary tree that
// mirrors the live one (STAGE/etc/postfix/main.cf) and hands it to
// Options.Verify, which runs the programs that read the files; a refusal
// stops everything before the live tree is touched. It then writes each
// changed file next to its live copy (a temporary file, fsynced) and keeps a
// hard link to the old one. Last it renames the new files into place one by
// one and runs Options.Finish. If a rename or Finish fails, the files
// already replaced are renamed back from their links (new files removed,
// directories it created removed), so the live tree is as it was; only when
// that also fails are the leftover copies named in the error.
//
// With Options.Guard, a file whose live contents are not what postkit last
// wrote there (Options.Written, kept by the caller in a manifest) is not
// replaced: Apply returns ErrEdited before writing anything, unless
// Options.Force, when the edited version is kept as FILE.postkit-bak.STAMP.
package apply

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/postkit/postkit/internal/daemon"
)

// File is one file to put in place, at its live absolute path.
type File struct {
	Path  string
	Data  []byte
	Mode  fs.FileMode
	Owner string // "" keeps the current or default owner
	Group string
	// Unguarded files are replaced whatever their contents (the manifest
	// itself); see Options.Guard.
	Unguarded bool
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
	// Edited: the live file is not what postkit last wrote there (changed
	// by hand, or never written by postkit); see Options.Guard.
	Edited bool `json:"edited,omitempty"`
	// Backup is where the edited version was kept (with Options.Force).
	Backup string `json:"backup,omitempty"`
	Old    []byte `json:"-"`
	New    []byte `json:"-"`
}

// Options control Apply.
type Options struct {
	Root  string // prefix for every path; "/" for the live system
	Check bool   // compute changes and verify, write nothing under Root
	// Chown applies owners and groups; it needs root. Unknown users or
	// groups are an error.
	Chown bool
	// Verify, when set, is given a temporary directory holding every file
	// (changed or not) at its live path under it, before anything under
	// Root changes, with Check too. An error stops Apply: nothing is
	// written, and the error wraps ErrRefused.
	Verify func(stage string) error
	// Finish, when set, runs once every changed file is in place, before
	// the old versions are dropped, with the changes; an error puts every
	// file back. Finish
	// may write the live paths listed in Extra (e.g. a compiled Sieve
	// binary): they are saved first and put back with the rest.
	Finish func(changes []Change) error
	Extra  []string
	// Guard refuses to replace a file whose live contents are not what
	// postkit last wrote there (Written holds the SHA-256 of each, by live
	// path; see Sum): such a change is marked Edited and Apply returns
	// ErrEdited before writing anything, unless Force is set, when the
	// edited version is kept as FILE.postkit-bak.TIMESTAMP. A live file
	// that already has the new contents is never refused.
	Guard   bool
	Written map[string]string
	Force   bool
	Now     func() time.Time // for backup names; default time.Now
}

// Sum is the checksum Options.Written holds for a file's contents.
func Sum(data []byte) string {
	h := sha256.Sum256(data)
	return hex.EncodeToString(h[:])
}

var (
	// ErrRefused wraps the error of Options.Verify: nothing was written.
	ErrRefused = errors.New("apply: the staged files were refused; nothing was written")
	// ErrRestored wraps an error while writing or finishing: every file
	// was put back as it was.
	ErrRestored = errors.New("apply: every file was put back as it was")
	// ErrInconsistent means that putting the files back failed too: the
	// error names what is left where.
	ErrInconsistent = errors.New("apply: files could not all be put back")
	// ErrEdited means that files changed by hand (or never written by
	// postkit) would have been replaced: nothing was written.
	ErrEdited = errors.New("apply: files changed since postkit wrote them would be replaced; nothing was written")
)

// rename is os.Rename; tests make it fail.
var rename = os.Rename

// Apply puts files under root, all or nothing. It returns the change for
// each file, in order.
func Apply(files []File, o Options) ([]Change, error) {
	changes := make([]Change, 0, len(files))
	var todo []*pending
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
		if o.Guard && !f.Unguarded && ch.Action == Update && !bytes.Equal(old, f.Data) && o.Written[f.Path] != Sum(old) {
			ch.Edited = true
		}
		changes = append(changes, ch)
		if ch.Action != Unchanged {
			todo = append(todo, &pending{f: f, dst: dst, uid: uid, gid: gid, existed: st != nil, keep: ch.Edited, change: len(changes) - 1})
		}
	}
	var edited []string
	for _, c := range changes {
		if c.Edited {
			edited = append(edited, c.Path)
		}
	}
	if len(edited) > 0 && !o.Force {
		return changes, fmt.Errorf("%w: %s", ErrEdited, strings.Join(edited, ", "))
	}
	if o.Verify != nil {
		if err := verify(files, o.Verify); err != nil {
			return changes, err
		}
	}
	if o.Check {
		return changes, nil
	}
	var extra []*saved
	for _, p := range o.Extra {
		extra = append(extra, &saved{path: filepath.Join(o.Root, p)})
	}
	var finish func() error
	if o.Finish != nil {
		finish = func() error { return o.Finish(changes) }
	}
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	stamp := now().UTC().Format("20060102T150405Z")
	err := install(todo, extra, finish, stamp)
	if err == nil {
		for _, p := range todo {
			if p.kept != "" {
				changes[p.change].Backup = p.f.Path + strings.TrimPrefix(p.kept, p.dst)
			}
		}
	}
	return changes, err
}

// verify stages every file under a temporary directory and calls fn on it.
// The staged files are dated a few seconds back: Postfix, reading a file
// modified in the current second, waits until that second is over (about
// 1 s per file) in case it is still being written.
func verify(files []File, fn func(stage string) error) error {
	past := time.Now().Add(-5 * time.Second)
	stage, err := os.MkdirTemp("", "postkit-stage-")
	if err != nil {
		return fmt.Errorf("apply: staging: %w", err)
	}
	defer os.RemoveAll(stage)
	for _, f := range files {
		p := filepath.Join(stage, f.Path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("apply: staging: %w", err)
		}
		if err := os.WriteFile(p, f.Data, f.Mode.Perm()); err != nil {
			return fmt.Errorf("apply: staging: %w", err)
		}
		if err := os.Chmod(p, f.Mode.Perm()); err != nil {
			return fmt.Errorf("apply: staging: %w", err)
		}
		if err := os.Chtimes(p, past, past); err != nil {
			return fmt.Errorf("apply: staging: %w", err)
		}
	}
	if err := fn(stage); err != nil {
		return fmt.Errorf("%w: %w", ErrRefused, err)
	}
	return nil
}

// pending is one changed file on its way in.
type pending struct {
	f        File
	dst      string
	uid, gid int
	existed  bool
	tmp      string // the new contents, next to dst
	backup   string // a hard link to the old file
	swapped  bool
	keep     bool   // keep the old file as dst.postkit-bak.STAMP
	kept     string // where it was kept
	change   int    // index in the changes
}

// saved is an Extra path: a copy of it before Finish, or none if it did
// not exist.
type saved struct {
	path, copy string
}

// install writes, swaps and finishes; on failure it puts everything back.
func install(todo []*pending, extra []*saved, finish func() error, stamp string) error {
	var made []string // directories created, parents first
	undo := func(cause error) error {
		var left []string
		for i := len(todo) - 1; i >= 0; i-- {
			o := todo[i]
			switch {
			case o.swapped && o.existed:
				if err := rename(o.backup, o.dst); err != nil {
					left = append(left, fmt.Sprintf("%s (the old version is at %s)", o.dst, o.backup))
					continue
				}
			case o.swapped:
				if err := os.Remove(o.dst); err != nil && !errors.Is(err, fs.ErrNotExist) {
					left = append(left, o.dst+" (new; remove it)")
				}
			default:
				if o.backup != "" {
					os.Remove(o.backup)
				}
			}
			if o.tmp != "" {
				os.Remove(o.tmp)
			}
		}
		for _, s := range extra {
			if err := s.restore(); err != nil {
				left = append(left, err.Error())
			}
		}
		for i := len(made) - 1; i >= 0; i-- {
			os.Remove(made[i]) // only if empty
		}
		if len(left) > 0 {
			return fmt.Errorf("%w: %w; still changed: %s", ErrInconsistent, cause, strings.Join(left, ", "))
		}
		return fmt.Errorf("%w: %w", ErrRestored, cause)
	}
	// Write every new file and link every old one; the live tree does not
	// change yet.
	for _, o := range todo {
		dirs, err := mkdirAll(filepath.Dir(o.dst))
		made = append(made, dirs...)
		if err != nil {
			return undo(fmt.Errorf("apply: %w", err))
		}
		if o.tmp, err = writeTemp(o.dst, o.f.Data, o.f.Mode.Perm(), o.uid, o.gid); err != nil {
			return undo(fmt.Errorf("apply: %s: %w", o.f.Path, err))
		}
		if o.existed {
			if o.backup, err = linkBackup(o.dst); err != nil {
				return undo(fmt.Errorf("apply: %s: keeping the old version: %w", o.f.Path, err))
			}
		}
	}
	for _, s := range extra {
		if err := s.save(); err != nil {
			return undo(fmt.Errorf("apply: %w", err))
		}
	}
	// Swap.
	for _, o := range todo {
		if err := rename(o.tmp, o.dst); err != nil {
			return undo(fmt.Errorf("apply: %s: %w", o.f.Path, err))
		}
		o.swapped, o.tmp = true, ""
	}
	if finish != nil {
		if err := finish(); err != nil {
			return undo(err)
		}
	}
	// Commit: drop the old versions, make the renames durable.
	synced := map[string]bool{}
	for _, o := range todo {
		if o.backup != "" && o.keep {
			if kept, err := keepBackup(o.backup, o.dst, stamp); err == nil {
				o.kept = kept
			}
		}
		if o.backup != "" {
			os.Remove(o.backup)
		}
		if dir := filepath.Dir(o.dst); !synced[dir] {
			synced[dir] = true
			syncDir(dir)
		}
	}
	for _, s := range extra {
		if s.copy != "" {
			os.Remove(s.copy)
		}
	}
	return nil
}

func (s *saved) save() error {
	data, st, err := read(s.path)
	if err != nil || st == nil {
		return err
	}
	uid, gid := -1, -1
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		uid, gid = int(sys.Uid), int(sys.Gid)
	}
	s.copy, err = writeTemp(s.path, data, st.Mode().Perm(), uid, gid)
	return err
}

func (s *saved) restore() error {
	if s.copy == "" {
		if err := os.Remove(s.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s (new; remove it)", s.path)
		}
		return nil
	}
	if err := rename(s.copy, s.path); err != nil {
		return fmt.Errorf("%s (the old version is at %s)", s.path, s.copy)
	}
	return nil
}

// mkdirAll is os.MkdirAll that returns the directories it created, parents
// first, so that they can be removed again.
func mkdirAll(dir string) ([]string, error) {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		missing = append(missing, d)
		if d == filepath.Dir(d) {
			break
		}
	}
	var made []string
	for i := len(missing) - 1; i >= 0; i-- {
		if err := os.Mkdir(missing[i], 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return made, err
		}
		made = append(made, missing[i])
	}
	return made, nil
}

// linkBackup makes a hard link to dst next to it, under a name no one uses.
func linkBackup(dst string) (string, error) {
	for i := 0; ; i++ {
		name := filepath.Join(filepath.Dir(dst), fmt.Sprintf(".%s.postkit-old-%d", filepath.Base(dst), rand.Uint32()))
		err := os.Link(dst, name)
		if err == nil || !errors.Is(err, fs.ErrExist) || i == 100 {
			return name, err
		}
	}
}

// keepBackup links the old version of dst (at link) as
// dst.postkit-bak.STAMP, or with a suffix if that name is taken.
func keepBackup(link, dst, stamp string) (string, error) {
	name := dst + ".postkit-bak." + stamp
	for i := 1; ; i++ {
		err := os.Link(link, name)
		if err == nil || !errors.Is(err, fs.ErrExist) || i == 100 {
			return name, err
		}
		name = fmt.Sprintf("%s.postkit-bak.%s.%d", dst, stamp, i)
	}
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

// writeTemp writes data to a new temporary file next to dst, with its mode
// and owner, and fsyncs it.
func writeTemp(dst string, data []byte, mode fs.FileMode, uid, gid int) (string, error) {
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".postkit-*")
	if err != nil {
		return "", err
	}
	name := tmp.Name()
	err = func() error {
		if _, err := tmp.Write(data); err != nil {
			return err
		}
		if err := tmp.Chmod(mode); err != nil {
			return err
		}
		if uid >= 0 || gid >= 0 {
			if err := tmp.Chown(uid, gid); err != nil {
				return err
			}
		}
		return tmp.Sync()
	}()
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(name)
		return "", err
	}
	return name, nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}
