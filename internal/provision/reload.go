package provision

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/postkit/postkit/internal/apply"
)

// postfixCheck runs `postfix check` on the installed files (live system
// only: it also creates missing queue directories); a complaint puts every
// file back.
func (r *run) postfixCheck(_ []apply.Change) error {
	if _, err := exec.LookPath("postfix"); err != nil {
		r.note("postfix check not run: postfix is not installed")
		return nil
	}
	out, err := exec.Command("postfix", "-c", r.cfg.Paths.PostfixConfig, "check").CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		return fmt.Errorf("postfix check refused the installed files (%v):\n    %s", err, strings.ReplaceAll(strings.TrimSpace(string(out)), "\n", "\n    "))
	}
	return nil
}

// reload tells what runs to read its configuration again, in order:
// Postfix, Dovecot, postkit's daemons. Nothing is reloaded under another
// root, with --check, or when nothing changed.
func (r *run) reload(s *Step, changed bool, changes []apply.Change) error {
	switch {
	case !r.live:
		s.add(false, "nothing reloaded: --root %s is not the live system", r.o.Root)
		return nil
	case r.o.Check:
		s.add(false, "nothing reloaded: --check")
		return nil
	case !changed:
		s.add(false, "nothing changed: nothing reloaded")
		return nil
	}
	c := r.cfg
	if exec.Command("postfix", "-c", c.Paths.PostfixConfig, "status").Run() == nil {
		if err := command(s, "postfix", "-c", c.Paths.PostfixConfig, "reload"); err != nil {
			return err
		}
		s.add(true, "postfix reload")
	} else {
		s.add(false, "Postfix is not running: not reloaded")
	}
	if pidAlive(path.Join(c.Paths.DovecotBase, "master.pid")) {
		if err := command(s, "doveadm", "-c", path.Join(c.Paths.DovecotConfig, "dovecot.conf"), "reload"); err != nil {
			return err
		}
		s.add(true, "doveadm reload")
	} else {
		s.add(false, "Dovecot is not running: not reloaded")
	}
	systemd := false
	if st, err := os.Stat("/run/systemd/system"); err == nil && st.IsDir() {
		systemd = true
	}
	unitsChanged := false
	for _, ch := range changes {
		if ch.Action != apply.Unchanged && c.Paths.SystemdUnits != "" && path.Dir(ch.Path) == c.Paths.SystemdUnits {
			unitsChanged = true
		}
	}
	if systemd && unitsChanged {
		if err := command(s, "systemctl", "daemon-reload"); err != nil {
			return err
		}
		s.add(true, "systemctl daemon-reload")
	}
	for _, d := range []struct {
		name string
		on   bool
	}{{"milter", c.Milter.Enabled}, {"policyd", c.Policy.Enabled}} {
		if !d.on {
			continue
		}
		unit := "postkit-" + d.name + ".service"
		if systemd && exec.Command("systemctl", "is-active", "--quiet", unit).Run() == nil {
			if err := command(s, "systemctl", "reload", unit); err != nil {
				return err
			}
			s.add(true, "systemctl reload %s", unit)
			continue
		}
		pids := daemonPids(d.name, r.configLive())
		for _, pid := range pids {
			if err := syscall.Kill(pid, syscall.SIGHUP); err == nil {
				s.add(true, "postkit %s (pid %d): SIGHUP", d.name, pid)
			}
		}
		if len(pids) == 0 {
			s.add(false, "postkit %s is not running: not reloaded", d.name)
		}
	}
	return nil
}

func pidAlive(file string) bool {
	b, err := os.ReadFile(file)
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return false
	}
	return syscall.Kill(pid, 0) == nil
}

// daemonPids finds `postkit NAME ... -c CONFIG` processes (daemons run
// outside systemd).
func daemonPids(name, config string) []int {
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var pids []int
	for _, f := range dirs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(args) < 2 || filepath.Base(args[0]) != "postkit" || args[1] != name {
			continue
		}
		for i, a := range args {
			if (a == "-c" || a == "--config") && i+1 < len(args) && sameFile(args[i+1], config) || a == "--config="+config {
				pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(f)))
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

func sameFile(a, b string) bool {
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	if err1 != nil || err2 != nil {
		return a == b
	}
	return os.SameFile(sa, sb)
}
