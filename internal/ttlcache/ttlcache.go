// Package ttlcache is a bounded map whose entries expire each at its own
// time (for postkit's caches, the earliest expiry of the DNS answers an
// entry was built from).
//
// It keeps two generations of at most max/2 entries each: new entries go
// into the current one; when it is full it becomes the previous one and
// the old previous one is dropped whole; an entry found in the previous
// generation moves to the current one. So between max/2 and max entries
// are kept, those used recently survive, and nothing is ever swept. A Go
// map that entries are deleted from and inserted into without end keeps
// growing its table (about 1 kB per live entry measured at 4096 entries
// under such churn); dropping a whole map keeps the memory at what the
// live entries need.
package ttlcache

import (
	"sync"
	"time"
)

// Cache is the bounded map; a nil *Cache keeps nothing. Safe for concurrent
// use.
type Cache[K comparable, V any] struct {
	mu        sync.Mutex
	gen       int // entries per generation
	cur, prev map[K]entry[V]
}

type entry[V any] struct {
	v       V
	expires time.Time
}

// New returns a cache of at most max entries; max < 2 gives nil, a cache
// that keeps nothing.
func New[K comparable, V any](max int) *Cache[K, V] {
	if max < 2 {
		return nil
	}
	return &Cache[K, V]{gen: max / 2, cur: make(map[K]entry[V])}
}

// Get returns the value of k and when it expires, if k is there and not
// expired at now.
func (c *Cache[K, V]) Get(k K, now time.Time) (v V, expires time.Time, ok bool) {
	if c == nil {
		return v, expires, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.cur[k]
	if !ok {
		if e, ok = c.prev[k]; !ok {
			return v, expires, false
		}
		delete(c.prev, k)
		if now.Before(e.expires) {
			c.insert(k, e)
		}
	}
	if !now.Before(e.expires) {
		delete(c.cur, k)
		return v, expires, false
	}
	return e.v, e.expires, true
}

// Put keeps v under k until expires. A value already expired at now (built
// from an answer with TTL 0, say) is not kept.
func (c *Cache[K, V]) Put(k K, v V, expires, now time.Time) {
	if c == nil || !now.Before(expires) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.prev, k)
	c.insert(k, entry[V]{v, expires})
}

func (c *Cache[K, V]) insert(k K, e entry[V]) {
	if _, ok := c.cur[k]; !ok && len(c.cur) >= c.gen {
		c.prev, c.cur = c.cur, make(map[K]entry[V], c.gen)
	}
	c.cur[k] = e
}

// Len returns the number of entries kept, expired ones included until
// they are next asked for or dropped with their generation.
func (c *Cache[K, V]) Len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.cur) + len(c.prev)
}
