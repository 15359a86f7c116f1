package daemon

import (
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
)

// StartProfiles writes a CPU profile of the daemon to cpuPath, and its
// allocations to memPath, until the returned function runs (at shutdown).
// They are debugging aids set by the environment (POSTKIT_CPUPROFILE,
// POSTKIT_MEMPROFILE), not flags: "%p" in a path becomes the process id, so
// that several daemons started with the same environment write distinct
// files. Read them with `go tool pprof BINARY FILE` (-sample_index=alloc_space
// for allocations). Empty paths profile nothing.
func StartProfiles(cpuPath, memPath string) (stop func(), err error) {
	expand := func(p string) string { return strings.ReplaceAll(p, "%p", strconv.Itoa(os.Getpid())) }
	stopCPU := func() {}
	if cpuPath != "" {
		f, err := os.Create(expand(cpuPath))
		if err != nil {
			return nil, fmt.Errorf("postkit: POSTKIT_CPUPROFILE: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return nil, fmt.Errorf("postkit: POSTKIT_CPUPROFILE: %w", err)
		}
		stopCPU = func() {
			pprof.StopCPUProfile()
			f.Close()
		}
	}
	if memPath == "" {
		return stopCPU, nil
	}
	memPath = expand(memPath)
	return func() {
		stopCPU()
		f, err := os.Create(memPath)
		if err != nil {
			slog.Error("postkit: POSTKIT_MEMPROFILE", "err", err)
			return
		}
		defer f.Close()
		if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
			slog.Error("postkit: POSTKIT_MEMPROFILE", "err", err)
		}
	}, nil
}
