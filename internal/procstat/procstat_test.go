package procstat

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"
)

// A shell's child is its descendant; CPU spent by a child the shell reaped
// counts in the shell's tree.
func TestTree(t *testing.T) {
	// The shell burns some CPU in a child that exits, then waits in a
	// second child that stays.
	cmd := exec.Command("sh", "-c", `sh -c 'i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done'; sleep 5 & wait`)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	pid := cmd.Process.Pid
	var kids []int
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if kids = Descendants(pid); len(kids) == 1 {
			if b, _ := os.ReadFile("/proc/" + itoa(kids[0]) + "/comm"); string(b) == "sleep\n" {
				break
			}
		}
	}
	if len(kids) != 1 {
		t.Fatalf("descendants of the shell: %v, want the sleep", kids)
	}
	own, err := CPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	tree, err := TreeCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	if tree <= own {
		t.Errorf("tree CPU %v, own %v: the reaped child's time is missing", tree, own)
	}
	rss, peak, err := Mem(pid)
	if err != nil || rss <= 0 || peak < rss {
		t.Errorf("Mem = %d %d %v", rss, peak, err)
	}
	tr, err := TreeRSS(pid)
	if err != nil || tr <= rss {
		t.Errorf("TreeRSS = %d %v, want more than the shell's own %d", tr, err, rss)
	}
	if pt, err := TreePSS(pid); err != nil || pt <= 0 || pt > tr {
		t.Errorf("TreePSS = %d %v, want between 0 and the tree's RSS %d", pt, err, tr)
	}
	if _, err := CPU(1 << 30); err == nil {
		t.Error("no error for a missing process")
	}
}

func itoa(n int) string { return fmt.Sprint(n) }
