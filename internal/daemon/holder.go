package daemon

import (
	"io"
	"sync"
)

// Holder holds the chain a server runs (the milter's filters, the policy
// daemon's checks, with the resources they own: databases, resolvers) and
// retires the one a reload replaces: every message or request takes the
// current chain with Acquire and gives it back with the function Acquire
// returns; Swap installs a new chain for what starts next, and the old one is
// closed as soon as the last message or request that took it is done, so a
// reload never closes a database under a message still using it and never
// leaves the old one open.
type Holder[C io.Closer] struct {
	mu  sync.Mutex
	cur *generation[C]
}

type generation[C io.Closer] struct {
	chain   C
	refs    int
	retired bool
	done    chan error // receives Close's result, then is closed
}

// NewHolder returns a Holder serving c.
func NewHolder[C io.Closer](c C) *Holder[C] {
	return &Holder[C]{cur: newGeneration(c)}
}

func newGeneration[C io.Closer](c C) *generation[C] {
	return &generation[C]{chain: c, done: make(chan error, 1)}
}

// Acquire returns the current chain and the function that gives it back;
// call it exactly once when the message or request is done (extra calls do
// nothing).
func (h *Holder[C]) Acquire() (C, func()) {
	h.mu.Lock()
	g := h.cur
	g.refs++
	h.mu.Unlock()
	var once sync.Once
	return g.chain, func() { once.Do(func() { h.release(g) }) }
}

// Current returns the chain new messages and requests get, without taking
// it (for logs and tests).
func (h *Holder[C]) Current() C {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cur.chain
}

func (h *Holder[C]) release(g *generation[C]) {
	h.mu.Lock()
	g.refs--
	last := g.retired && g.refs == 0
	h.mu.Unlock()
	if last {
		g.close()
	}
}

func (g *generation[C]) close() {
	g.done <- g.chain.Close()
	close(g.done)
}

// Swap makes c the chain of what starts from now on and retires the
// previous one. The returned channel receives the previous chain's Close
// error once it is closed: at once if nothing holds it, else when the last
// holder gives it back.
func (h *Holder[C]) Swap(c C) <-chan error {
	h.mu.Lock()
	old := h.cur
	h.cur = newGeneration(c)
	h.mu.Unlock()
	return h.retire(old)
}

// Close retires the current chain (at shutdown): it is closed at once if
// nothing holds it, else when the last holder gives it back. The returned
// channel receives Close's error then.
func (h *Holder[C]) Close() <-chan error {
	h.mu.Lock()
	g := h.cur
	h.mu.Unlock()
	return h.retire(g)
}

func (h *Holder[C]) retire(g *generation[C]) <-chan error {
	h.mu.Lock()
	if g.retired {
		h.mu.Unlock()
		return g.done
	}
	g.retired = true
	now := g.refs == 0
	h.mu.Unlock()
	if now {
		g.close()
	}
	return g.done
}
