package milterd

import (
	"fmt"
	"runtime/debug"
	"time"

	"github.com/postkit/postkit/milter/filter"
)

// msgState runs one message through a chain in one pass: Headers in order at
// end of headers, every body chunk into every Body, End in order at end of
// message.
type msgState struct {
	st         *Chain
	release    func() // gives st back to the Holder
	filters    []filter.Filter
	timings    []time.Duration
	outcome    []uint8 // per filter: ranNone, ranPass, ranModified, ranDecided
	start      time.Time
	msg        *filter.Message
	changes    *filter.Changes
	headersRun bool
	bodies     []chainBody
	bodyBytes  int64

	fault       error
	faultFilter string
	faultIdx    int
}

type chainBody struct {
	idx   int // index into filters
	b     filter.Body
	ended bool // End was called (or Abort): the body is done
}

func (m *msgState) qid() string {
	if m.msg.QueueID != "" {
		return m.msg.QueueID
	}
	return m.msg.Macro("i")
}

// call runs one filter callback, timing it and turning a panic into a fault.
// On a fault the modifications the failing call recorded are dropped, so
// that an "accept" fault action delivers only complete filters' changes.
func (m *msgState) call(idx int, fn func() error) (ok bool) {
	f := m.filters[idx]
	nops := len(m.changes.Ops)
	before := m.changes.Verdict
	t0 := time.Now()
	defer func() {
		m.timings[idx] += time.Since(t0)
		if r := recover(); r != nil {
			m.st.log.Error("milter filter panicked", "queue_id", m.qid(), "filter", f.Name(), "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			m.setFault(idx, fmt.Errorf("milterd: filter %s panicked: %v", f.Name(), r), nops)
			ok = false
		}
	}()
	if err := fn(); err != nil {
		m.setFault(idx, err, nops)
		return false
	}
	switch {
	case before == filter.Accept && m.changes.Verdict != filter.Accept:
		m.outcome[idx] = ranDecided
	case len(m.changes.Ops) > nops:
		m.outcome[idx] = max(m.outcome[idx], ranModified)
	default:
		m.outcome[idx] = max(m.outcome[idx], ranPass)
	}
	return true
}

func (m *msgState) setFault(idx int, err error, nops int) {
	m.fault, m.faultFilter, m.faultIdx = err, m.filters[idx].Name(), idx
	m.changes.Ops = m.changes.Ops[:nops]
}

// stopped reports whether the chain must not run further: a fault or a refusal.
func (m *msgState) stopped() bool {
	return m.fault != nil || m.changes.Verdict != filter.Accept
}

func (m *msgState) runHeaders() {
	for i, f := range m.filters {
		var body filter.Body
		if !m.call(i, func() (err error) {
			body, err = f.Headers(m.msg, m.changes)
			return err
		}) {
			return
		}
		if body != nil {
			m.bodies = append(m.bodies, chainBody{idx: i, b: body})
		}
		if m.changes.Verdict != filter.Accept {
			return
		}
	}
}

// body streams one chunk into every filter that wants the body. The chunk
// is the connection's read buffer: filters must not keep it (io.Writer rule).
func (m *msgState) body(chunk []byte) {
	m.bodyBytes += int64(len(chunk))
	if m.stopped() {
		return
	}
	for _, cb := range m.bodies {
		if !m.call(cb.idx, func() error { return cb.b.Write(chunk) }) {
			return
		}
	}
}

func (m *msgState) end() {
	if m.stopped() {
		return
	}
	for i := range m.bodies {
		cb := &m.bodies[i]
		cb.ended = true
		if !m.call(cb.idx, func() error { return cb.b.End(m.msg, m.changes) }) {
			return
		}
		if m.changes.Verdict != filter.Accept {
			return
		}
	}
}

// abort releases every Body that will not see End (see filter.Aborter). It is
// safe to call more than once and after end.
func (m *msgState) abort() {
	for i := range m.bodies {
		cb := &m.bodies[i]
		if cb.ended {
			continue
		}
		cb.ended = true
		a, ok := cb.b.(filter.Aborter)
		if !ok {
			continue
		}
		func() {
			defer func() {
				if r := recover(); r != nil {
					m.st.log.Error("milter filter panicked in Abort", "queue_id", m.qid(), "filter", m.filters[cb.idx].Name(), "panic", fmt.Sprint(r))
				}
			}()
			a.Abort()
		}()
	}
}

// verdict is the message's final answer: the configured fault action after a
// fault, else what the filters decided.
func (m *msgState) verdict() (v filter.Verdict, code, ext, text string) {
	if m.fault != nil {
		switch m.st.onError {
		case filter.Reject:
			return filter.Reject, "550", "5.3.0", "postkit milter: message refused after an internal error"
		case filter.Accept:
			return filter.Accept, "", "", ""
		}
		return filter.Tempfail, "451", "4.3.0", "postkit milter: temporary internal error, try again later"
	}
	if m.changes == nil {
		return filter.Accept, "", "", ""
	}
	c := m.changes
	return c.Verdict, c.Code, c.Ext, c.Text
}

// origHeaders is the header list as the MTA sent it.
func (m *msgState) origHeaders(received []filter.Header) []filter.Header { return received }
