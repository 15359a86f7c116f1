//go:build linux && race

package milterd

// rawSocketIO is off under the race detector: it learns that a send
// happens before the matching receive from the syscall package's read and
// write, which the raw calls of rawIO bypass, and would then report every
// exchange between a test's client and the daemon as a race. (TCP then
// also goes without TCP_QUICKACK: slower replies, same bytes.)
const rawSocketIO = false
