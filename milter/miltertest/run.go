package miltertest

import (
	"testing"

	"github.com/postkit/postkit/milter/filter"
)

// ChunkSize is the body chunk the MTA sends (Postfix's MILTER_CHUNK_SIZE).
const ChunkSize = 65536

// Run passes one message through filters in one pass, as the daemon's
// chain does, without the protocol: Headers in order (m.Headers holds the
// header as received; each filter sees the changes of the ones before),
// every chunk of body (chunk bytes each; 0 means ChunkSize) to every filter
// that returned a Body, then End in order. A refusal stops the chain as in
// the daemon, and the Bodies that will not see End are aborted
// (filter.Aborter). A filter error fails t. It returns the message's
// changes; m.Headers is left as the last filter saw it.
func Run(t testing.TB, m *filter.Message, body string, chunk int, filters ...filter.Filter) *filter.Changes {
	t.Helper()
	if chunk <= 0 {
		chunk = ChunkSize
	}
	c := filter.NewChanges(m)
	type pending struct {
		name string
		b    filter.Body
	}
	var bodies []pending
	defer func() {
		// Whatever remains was not ended: the daemon aborts it.
		for _, b := range bodies {
			if a, ok := b.b.(filter.Aborter); ok {
				a.Abort()
			}
		}
	}()
	for _, f := range filters {
		b, err := f.Headers(m, c)
		if err != nil {
			t.Fatalf("filter %s: Headers: %v", f.Name(), err)
		}
		if b != nil {
			bodies = append(bodies, pending{f.Name(), b})
		}
		if c.Verdict != filter.Accept {
			return c
		}
	}
	for p := []byte(body); len(p) > 0 && len(bodies) > 0; {
		n := min(chunk, len(p))
		for _, b := range bodies {
			if err := b.b.Write(p[:n]); err != nil {
				t.Fatalf("filter %s: Write: %v", b.name, err)
			}
		}
		p = p[n:]
	}
	for len(bodies) > 0 {
		b := bodies[0]
		bodies = bodies[1:]
		if err := b.b.End(m, c); err != nil {
			t.Fatalf("filter %s: End: %v", b.name, err)
		}
		if c.Verdict != filter.Accept {
			return c
		}
	}
	return c
}
