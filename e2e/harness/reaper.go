package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
)

// reaperScript stops the stack if the process that owns it dies without
// calling Stop (a panicking test, a killed demo): Postfix and Dovecot run as
// daemons and would otherwise outlive it. Arguments: owner pid, Postfix config
// directory, Dovecot base_dir, file of daemon pids.
const reaperScript = `owner=$1 pfconf=$2 dovebase=$3 pids=$4
while kill -0 "$owner" 2>/dev/null; do sleep 1; done
postfix -c "$pfconf" stop >/dev/null 2>&1
[ -r "$dovebase/master.pid" ] && kill "$(cat "$dovebase/master.pid")" 2>/dev/null
[ -r "$pids" ] && for p in $(cat "$pids"); do kill "$p" 2>/dev/null; done
exit 0
`

// startReaper launches the reaper in its own session, detached from the
// caller's terminal and output.
func (s *Stack) startReaper() error {
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	defer null.Close()
	cmd := exec.Command("sh", "-c", reaperScript, "reaper", strconv.Itoa(os.Getpid()),
		s.Paths.PostfixConfig, s.Paths.DovecotBase, s.daemonPidsFile())
	cmd.Stdin, cmd.Stdout, cmd.Stderr = null, null, null
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("harness: start the reaper: %w", err)
	}
	s.reaper = cmd
	go cmd.Wait()
	return nil
}

// stopReaper ends the reaper once Stop has done its work.
func (s *Stack) stopReaper() {
	if s.reaper != nil && s.reaper.Process != nil {
		s.reaper.Process.Kill()
	}
}

func (s *Stack) daemonPidsFile() string { return filepath.Join(s.Root, "daemons.pids") }
