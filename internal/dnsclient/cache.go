package dnsclient

import (
	"container/list"
	"sync"
	"time"
)

// cache is a bounded LRU of answers, positive and negative, each kept until
// its own expiry (the smallest TTL of the records used, or the RFC 2308
// negative TTL).
type cache struct {
	mu    sync.Mutex
	max   int
	ll    *list.List // front = most recently used
	items map[cacheKey]*list.Element
}

type cacheEntry struct {
	key     cacheKey
	res     result
	err     error
	expires time.Time
}

func newCache(max int) *cache {
	return &cache{max: max, ll: list.New(), items: make(map[cacheKey]*list.Element, max)}
}

func (c *cache) get(k cacheKey, now time.Time) (result, error, time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[k]
	if !ok {
		return result{}, nil, time.Time{}, false
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.expires) {
		c.ll.Remove(el)
		delete(c.items, k)
		return result{}, nil, time.Time{}, false
	}
	c.ll.MoveToFront(el)
	return e.res, e.err, e.expires, true
}

func (c *cache) put(k cacheKey, res result, err error, expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		e := el.Value.(*cacheEntry)
		e.res, e.err, e.expires = res, err, expires
		c.ll.MoveToFront(el)
		return
	}
	c.items[k] = c.ll.PushFront(&cacheEntry{key: k, res: res, err: err, expires: expires})
	for c.ll.Len() > c.max {
		old := c.ll.Back()
		c.ll.Remove(old)
		delete(c.items, old.Value.(*cacheEntry).key)
	}
}

// CacheLen returns the number of cached answers (expired ones included until
// they are next touched or evicted).
func (r *Resolver) CacheLen() int {
	if r.cache == nil {
		return 0
	}
	r.cache.mu.Lock()
	defer r.cache.mu.Unlock()
	return r.cache.ll.Len()
}
