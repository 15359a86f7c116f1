package ttlcache

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

var t0 = time.Unix(1_700_000_000, 0)

func TestExpiry(t *testing.T) {
	c := New[string, int](10)
	c.Put("a", 1, t0.Add(30*time.Second), t0)
	c.Put("zero", 2, t0, t0) // expires at once: not kept
	c.Put("past", 3, t0.Add(-time.Second), t0)
	tests := []struct {
		key string
		at  time.Duration
		ok  bool
	}{
		{"a", 0, true},
		{"a", 29 * time.Second, true},
		{"zero", 0, false},
		{"past", 0, false},
		{"a", 30 * time.Second, false}, // expiry is exclusive
		{"a", 0, false},                // and the entry is gone
	}
	for _, tt := range tests {
		v, exp, ok := c.Get(tt.key, t0.Add(tt.at))
		if ok != tt.ok {
			t.Errorf("Get(%s) at t0+%v: ok %v, want %v", tt.key, tt.at, ok, tt.ok)
		}
		if ok && (v != 1 || !exp.Equal(t0.Add(30*time.Second))) {
			t.Errorf("Get(%s) = %d, expires t0+%v", tt.key, v, exp.Sub(t0))
		}
	}
	if n := c.Len(); n != 0 {
		t.Errorf("Len = %d, want 0", n)
	}
}

func TestBound(t *testing.T) {
	c := New[int, int](100)
	later := t0.Add(time.Hour)
	for i := range 1000 {
		c.Put(i, i, later, t0)
		if n := c.Len(); n > 100 {
			t.Fatalf("after %d puts: %d entries, want at most 100", i+1, n)
		}
		// A key asked for all along survives the churn.
		c.Put(-1, -1, later, t0)
		if _, _, ok := c.Get(-1, t0); !ok {
			t.Fatalf("after %d puts: the key in use was dropped", i+1)
		}
	}
	if n := c.Len(); n < 50 {
		t.Errorf("Len = %d, want at least half the bound", n)
	}
	// The most recent entries are there, the oldest are not.
	if _, _, ok := c.Get(999, t0); !ok {
		t.Error("the newest entry is gone")
	}
	if _, _, ok := c.Get(0, t0); ok {
		t.Error("the oldest entry is still there")
	}
}

func TestNil(t *testing.T) {
	for _, max := range []int{-1, 0, 1} {
		c := New[string, int](max)
		c.Put("a", 1, t0.Add(time.Hour), t0)
		if _, _, ok := c.Get("a", t0); ok || c.Len() != 0 {
			t.Errorf("New(%d) keeps entries", max)
		}
	}
}

// Under endless churn the memory stays what the live entries need.
func TestMemoryUnderChurn(t *testing.T) {
	if testing.Short() {
		t.Skip("measures the heap over 400,000 insertions")
	}
	const max = 4096
	c := New[string, [64]byte](max)
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	for i := range 400_000 {
		c.Put(fmt.Sprintf("key-%d-of-some-realistic-length", i), [64]byte{}, t0.Add(time.Hour), t0)
	}
	// An entry: a key of ~40 bytes, 64 bytes of value, its expiry; the
	// maps' tables at most double that.
	grown := heap() - before
	t.Logf("heap grew by %d kB for %d entries", grown>>10, c.Len())
	if grown > max*400 {
		t.Errorf("heap grew by %d kB for %d entries, want under %d kB", grown>>10, c.Len(), max*400>>10)
	}
	runtime.KeepAlive(c)
}
