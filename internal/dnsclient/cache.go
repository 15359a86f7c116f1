package dnsclient

import (
	"time"

	"github.com/postkit/postkit/internal/ttlcache"
)

// cache keeps answers, positive and negative, each until its own expiry
// (the smallest TTL of the records used, or the RFC 2308 negative TTL),
// at most max of them (ttlcache: the recently used ones survive).
type cache struct {
	c *ttlcache.Cache[cacheKey, cacheEntry]
}

type cacheEntry struct {
	res result
	err error
}

func newCache(max int) *cache {
	return &cache{c: ttlcache.New[cacheKey, cacheEntry](max)}
}

func (c *cache) get(k cacheKey, now time.Time) (result, error, time.Time, bool) {
	e, expires, ok := c.c.Get(k, now)
	return e.res, e.err, expires, ok
}

func (c *cache) put(k cacheKey, res result, err error, expires time.Time, now time.Time) {
	c.c.Put(k, cacheEntry{res, err}, expires, now)
}

// CacheLen returns the number of cached answers (expired ones included until
// they are next asked for or dropped).
func (r *Resolver) CacheLen() int {
	if r.cache == nil {
		return 0
	}
	return r.cache.c.Len()
}
