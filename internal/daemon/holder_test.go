package daemon

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
)

type fakeChain struct {
	name   string
	closed atomic.Int32
	err    error
}

func (c *fakeChain) Close() error { c.closed.Add(1); return c.err }

func TestHolderSwapDrainsThenCloses(t *testing.T) {
	a, b := &fakeChain{name: "a"}, &fakeChain{name: "b", err: errors.New("b failed")}
	h := NewHolder(a)
	got, release := h.Acquire() // a message in flight on a
	if got != a {
		t.Fatalf("Acquire = %s; want a", got.name)
	}
	done := h.Swap(b)
	if c, r := h.Acquire(); c != b {
		t.Errorf("after Swap, Acquire = %s; want b", c.name)
	} else {
		r()
	}
	select {
	case <-done:
		t.Fatal("a closed while a message still held it")
	default:
	}
	if a.closed.Load() != 0 {
		t.Fatal("a closed while held")
	}
	release()
	release() // a second call does nothing
	if err := <-done; err != nil || a.closed.Load() != 1 {
		t.Errorf("a: Close error %v, closed %d times; want nil, 1", err, a.closed.Load())
	}
	if b.closed.Load() != 0 {
		t.Error("b closed while current")
	}
	if err := <-h.Close(); err == nil || b.closed.Load() != 1 {
		t.Errorf("Close: error %v, b closed %d times; want b's error, 1", err, b.closed.Load())
	}
	if err, ok := <-h.Close(); ok || err != nil || b.closed.Load() != 1 {
		t.Errorf("second Close closed again (ok=%v err=%v, %d)", ok, err, b.closed.Load())
	}
}

// Many goroutines acquire while chains are swapped: every retired chain is
// closed exactly once, and never while held.
func TestHolderConcurrent(t *testing.T) {
	first := &fakeChain{}
	h := NewHolder(first)
	var wg sync.WaitGroup
	var bad atomic.Int32
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2000 {
				c, release := h.Acquire()
				if c.closed.Load() != 0 {
					bad.Add(1)
				}
				release()
			}
		}()
	}
	var chains []*fakeChain
	var dones []<-chan error
	for range 200 {
		c := &fakeChain{}
		chains = append(chains, c)
		dones = append(dones, h.Swap(c))
	}
	wg.Wait()
	for _, d := range dones {
		<-d
	}
	<-h.Close()
	if bad.Load() != 0 {
		t.Errorf("%d acquisitions got a closed chain", bad.Load())
	}
	for i, c := range append([]*fakeChain{first}, chains...) {
		if n := c.closed.Load(); n != 1 {
			t.Errorf("chain %d closed %d times; want 1", i, n)
		}
	}
}
