package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// vmail is the account that owns the mailboxes.
type vmail struct {
	Name     string
	UID, GID int
}

// ensureVmail returns the uid and gid of the mailbox account, creating the
// group and the user (no home, no shell) when they are missing. An existing
// account keeps its ids.
func ensureVmail(v vmail) (uid, gid int, err error) {
	if u, err := user.Lookup(v.Name); err == nil {
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		return uid, gid, nil
	}
	// Another test package may be creating the same account right now:
	// a failed add is an error only if the account still does not exist.
	if _, err := user.LookupGroup(v.Name); err != nil {
		if out, err := exec.Command("groupadd", "--system", "--gid", strconv.Itoa(v.GID), v.Name).CombinedOutput(); err != nil && !groupExists(v.Name) {
			return 0, 0, fmt.Errorf("harness: groupadd %s (gid %d): %w: %s; create the group by hand or set mailbox.gid", v.Name, v.GID, err, strings.TrimSpace(string(out)))
		}
	}
	out, err := exec.Command("useradd", "--system", "--uid", strconv.Itoa(v.UID), "--gid", v.Name,
		"--home-dir", "/nonexistent", "--no-create-home", "--shell", "/usr/sbin/nologin", v.Name).CombinedOutput()
	if _, lerr := user.Lookup(v.Name); err != nil && lerr != nil {
		return 0, 0, fmt.Errorf("harness: useradd %s (uid %d): %w: %s; create the user by hand or set mailbox.uid", v.Name, v.UID, err, strings.TrimSpace(string(out)))
	}
	return lookupIDs(v.Name)
}

func groupExists(name string) bool {
	_, err := user.LookupGroup(name)
	return err == nil
}

// lookupIDs returns a user's uid and primary gid.
func lookupIDs(name string) (int, int, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, 0, fmt.Errorf("harness: no user %q: is the Debian package that creates it installed?", name)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid, nil
}

// readPid reads a pid file (Postfix pads it with spaces); 0 if unreadable.
func readPid(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	return n
}

// pidAlive reports whether a process exists and is not a zombie.
func pidAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state is the field after the parenthesised command name.
	if i := strings.LastIndexByte(string(b), ')'); i >= 0 && i+2 < len(b) {
		return b[i+2] != 'Z' && b[i+2] != 'X'
	}
	return true
}

// waitGone waits until pid exits, up to d; it reports whether it did.
func waitGone(pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if !pidAlive(pid) {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return !pidAlive(pid)
}

// terminate sends SIGTERM, then SIGKILL after grace, and waits for the exit.
func terminate(pid int, grace time.Duration) error {
	if !pidAlive(pid) {
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("harness: kill %d: %w", pid, err)
	}
	if waitGone(pid, grace) {
		return nil
	}
	syscall.Kill(pid, syscall.SIGKILL)
	if !waitGone(pid, 5*time.Second) {
		return fmt.Errorf("harness: process %d survived SIGKILL", pid)
	}
	return fmt.Errorf("harness: process %d ignored SIGTERM for %s and was killed", pid, grace)
}

// ModuleRoot returns the directory of this module's go.mod, found with
// `go env GOMOD` from the working directory.
func ModuleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("harness: go env GOMOD: %w (is the Go toolchain on PATH?)", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("harness: not inside the postkit module: run from the source tree or set the postkit binary")
	}
	return filepath.Dir(mod), nil
}

// BuildPostkit builds ./cmd/postkit of this module into dir and returns the
// binary's path. POSTKIT_BIN, when set, is returned instead.
func BuildPostkit(ctx context.Context, dir string) (string, error) {
	if b := os.Getenv("POSTKIT_BIN"); b != "" {
		return filepath.Abs(b)
	}
	root, err := ModuleRoot(ctx)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	out := filepath.Join(dir, "postkit")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/postkit")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("harness: go build ./cmd/postkit: %w\n%s", err, b)
	}
	return out, nil
}
