package milterd

import (
	"time"

	"github.com/postkit/postkit/milter/filter"
)

// Observer receives what the daemon's metrics count. It must be safe for
// concurrent use and quick: it runs on the message's path.
type Observer interface {
	// ObserveMessage counts one message answered at end of data: its
	// verdict (accept, reject, tempfail, discard), whether it was
	// outbound, and the time from MAIL FROM to the answer.
	ObserveMessage(verdict string, outbound bool, elapsed time.Duration)
	// ObserveFilter counts what one filter did to one message (see
	// Outcomes) and the time it took.
	ObserveFilter(name, outcome string, elapsed time.Duration)
	// ObserveError counts a connection dropped on an error (not a normal
	// close by the MTA).
	ObserveError(kind string)
}

// Outcomes a filter can have on a message, for ObserveFilter: pass (no
// change), modified (header or envelope changes), reject, tempfail,
// discard (it decided the verdict), error (it failed, or panicked), and
// skipped (the chain stopped, on an earlier filter's verdict or fault,
// before this filter was done with the message).
var Outcomes = []string{"pass", "modified", "reject", "tempfail", "discard", "error", "skipped"}

// per-filter state kept while a message runs (msgState.outcome).
const (
	ranNone uint8 = iota
	ranPass
	ranModified
	ranDecided
)

// observe reports a finished message to the chain's Observer.
func (m *msgState) observe(v filter.Verdict) {
	o := m.st.observer
	if o == nil {
		return
	}
	// A filter that wanted the body but was not given its end (the chain
	// stopped first) did not finish the message.
	unfinished := make([]bool, len(m.filters))
	for _, cb := range m.bodies {
		unfinished[cb.idx] = !cb.ended
	}
	for i, f := range m.filters {
		outcome := "skipped"
		switch {
		case m.fault != nil && m.faultFilter == f.Name() && i == m.faultIdx:
			outcome = "error"
		case m.outcome[i] == ranDecided:
			outcome = verdictName(m.changes.Verdict)
		case m.outcome[i] == ranModified:
			outcome = "modified"
		case m.outcome[i] == ranPass && !unfinished[i]:
			outcome = "pass"
		}
		o.ObserveFilter(f.Name(), outcome, m.timings[i])
	}
	o.ObserveMessage(verdictName(v), m.msg.Outbound, m.st.now().Sub(m.start))
}
