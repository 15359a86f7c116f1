// Package procstat reads what the benchmarks and the memory tests measure of
// a process and of its descendants from /proc (proc(5)): CPU time and
// resident memory. A
// daemon measured as a tree (Postfix's master, spamd and its children,
// rspamd's workers, spamass-milter and the spamc it runs per message)
// counts its children that exited (cutime, cstime: reaped by their parent)
// and those still running.
package procstat

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is CLK_TCK: 100 on Linux.
const clockTick = 100

// stat returns the fields of /proc/PID/stat after the command name, so
// that f[0] is the state, f[1] the parent pid, f[11..14] utime, stime,
// cutime and cstime; nil when the process is gone.
func stat(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 > len(s) {
		return nil
	}
	return strings.Fields(s[i+2:])
}

func ticks(f []string, idx ...int) (n int64) {
	for _, i := range idx {
		v, _ := strconv.ParseInt(f[i], 10, 64)
		n += v
	}
	return n
}

// CPU returns the user and system time pid used so far.
func CPU(pid int) (time.Duration, error) {
	f := stat(pid)
	if f == nil {
		return 0, fmt.Errorf("procstat: process %d is gone", pid)
	}
	return time.Duration(ticks(f, 11, 12)) * time.Second / clockTick, nil
}

// TreeCPU returns the CPU time of pid, of its children that exited and it
// reaped, and of its descendants still running.
func TreeCPU(pid int) (time.Duration, error) {
	f := stat(pid)
	if f == nil {
		return 0, fmt.Errorf("procstat: process %d is gone", pid)
	}
	total := ticks(f, 11, 12, 13, 14)
	for _, c := range Descendants(pid) {
		if f := stat(c); f != nil {
			total += ticks(f, 11, 12, 13, 14)
		}
	}
	return time.Duration(total) * time.Second / clockTick, nil
}

// Descendants returns the pids of pid's children, theirs, and so on.
func Descendants(pid int) []int {
	parent := map[int]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := stat(p); f != nil {
			pp, _ := strconv.Atoi(f[1])
			parent[p] = pp
		}
	}
	var out []int
	for p := range parent {
		for a := parent[p]; a > 1; a = parent[a] {
			if a == pid {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

// Mem returns VmRSS (resident now) and VmHWM (the peak) of pid, in bytes.
func Mem(pid int) (rss, peak int64, err error) {
	st, err := status(pid)
	if err != nil {
		return 0, 0, err
	}
	if _, ok := st["VmRSS"]; !ok {
		return 0, 0, fmt.Errorf("procstat: no VmRSS in /proc/%d/status", pid)
	}
	return st["VmRSS"], st["VmHWM"], nil
}

// RSSSplit returns RssAnon (the heap, stacks and other private memory) and
// RssFile (mapped files: the binary and its libraries) of pid, in bytes.
func RSSSplit(pid int) (anon, file int64, err error) {
	st, err := status(pid)
	if err != nil {
		return 0, 0, err
	}
	return st["RssAnon"], st["RssFile"], nil
}

// status reads the sizes of /proc/PID/status ("VmRSS:  1234 kB"), in bytes,
// by field name without the colon.
func status(pid int) (map[string]int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, fmt.Errorf("procstat: %w", err)
	}
	out := map[string]int64{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[2] == "kB" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			out[strings.TrimSuffix(f[0], ":")] = n << 10
		}
	}
	return out, nil
}

// TreeRSS returns the resident memory of pid and its running descendants
// (pages shared between them counted in each, as the kernel reports them).
func TreeRSS(pid int) (int64, error) {
	total, _, err := Mem(pid)
	if err != nil {
		return 0, err
	}
	for _, c := range Descendants(pid) {
		if r, _, err := Mem(c); err == nil {
			total += r
		}
	}
	return total, nil
}

// PSS returns the proportional set size of pid in bytes (smaps_rollup):
// its private pages plus its share of the pages it shares, so that the
// PSS of a process tree adds up to the memory the tree holds.
func PSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, fmt.Errorf("procstat: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "Pss:" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n << 10, nil
		}
	}
	return 0, fmt.Errorf("procstat: no Pss in /proc/%d/smaps_rollup", pid)
}

// TreePSS is PSS over pid and its running descendants.
func TreePSS(pid int) (int64, error) {
	total, err := PSS(pid)
	if err != nil {
		return 0, err
	}
	for _, c := range Descendants(pid) {
		if p, err := PSS(c); err == nil {
			total += p
		}
	}
	return total, nil
}
