package spfcheck

import (
	"sync"
	"time"
)

// ttlCache is a bounded map whose entries each expire at their own time:
// the earliest expiry of the DNS answers the value was built from. A nil
// cache keeps nothing.
type ttlCache[V any] struct {
	mu    sync.Mutex
	max   int
	items map[string]ttlEntry[V]
}

type ttlEntry[V any] struct {
	v       V
	expires time.Time
}

func newTTLCache[V any](max int) *ttlCache[V] {
	return &ttlCache[V]{max: max, items: make(map[string]ttlEntry[V])}
}

// get returns the value of k and its expiry, if k is there and not expired
// at now.
func (c *ttlCache[V]) get(k string, now time.Time) (v V, expires time.Time, ok bool) {
	if c == nil {
		return v, expires, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.items[k]
	if !ok {
		return v, expires, false
	}
	if !now.Before(e.expires) {
		delete(c.items, k)
		return v, expires, false
	}
	return e.v, e.expires, true
}

// put keeps v under k until expires; a value already expired at now (built
// from an answer with TTL 0, say) is not kept.
func (c *ttlCache[V]) put(k string, v V, expires, now time.Time) {
	if c == nil || !now.Before(expires) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.items[k]; !ok && len(c.items) >= c.max {
		// Expired entries first, then arbitrary ones down to 3/4: one
		// sweep pays for the next max/4 insertions.
		for key, old := range c.items {
			if !now.Before(old.expires) {
				delete(c.items, key)
			}
		}
		for key := range c.items {
			if len(c.items) < c.max*3/4 {
				break
			}
			delete(c.items, key)
		}
	}
	c.items[k] = ttlEntry[V]{v, expires}
}

// len returns the number of entries, expired ones included until they are
// next touched or swept.
func (c *ttlCache[V]) len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.items)
}
