package state

import (
	"context"
	"time"

	"github.com/postkit/postkit/internal/ttlcache"
)

// Cached is a host-local cache in front of a shared Store, for the answers
// whose staleness is harmless:
//
//   - a greylisting triplet that has passed: for at most TTL this host
//     keeps letting it through without asking, and writes its last_seen
//     at most once per TTL (last_seen only serves max_age, which is days);
//     a passed triplet deleted meanwhile by the expiry job (idle for
//     max_age) passes at most TTL longer here;
//   - a client network's auto-allow record: an auto-allow granted on
//     another host is seen here at most TTL later.
//
// Triplets still being greylisted are never cached (the retry on another
// host must see the first attempt), nor are rate-limit counters (every host
// must count every message): those calls go to the store each time. Errors
// are never cached.
type Cached struct {
	Store
	ttl     time.Duration
	now     func() time.Time
	trip    *ttlcache.Cache[string, cachedTriplet]
	clients *ttlcache.Cache[string, Client]
}

type cachedTriplet struct {
	t       Triplet
	written time.Time // when t.Last was last written to the store
}

// NewCached puts a cache of at most size entries of each kind, each kept at
// most ttl, in front of s. ttl <= 0 returns s itself: no cache.
func NewCached(s Store, ttl time.Duration, size int, now func() time.Time) Store {
	if ttl <= 0 || size < 2 {
		return s
	}
	if now == nil {
		now = time.Now
	}
	return &Cached{Store: s, ttl: ttl, now: now,
		trip:    ttlcache.New[string, cachedTriplet](size),
		clients: ttlcache.New[string, Client](size)}
}

// TTL is the cache's bound on staleness.
func (c *Cached) TTL() time.Duration { return c.ttl }

// Triplet answers a passed triplet from the cache.
func (c *Cached) Triplet(ctx context.Context, key string) (Triplet, bool, error) {
	now := c.now()
	if e, _, ok := c.trip.Get(key, now); ok {
		return e.t, true, nil
	}
	t, found, err := c.Store.Triplet(ctx, key)
	if err == nil && found && !t.Passed.IsZero() {
		c.trip.Put(key, cachedTriplet{t: t, written: now}, now.Add(c.ttl), now)
	}
	return t, found, err
}

// PutTriplet skips the write when it would only move a cached passed
// triplet's last_seen forward by less than the TTL.
func (c *Cached) PutTriplet(ctx context.Context, key string, t Triplet) error {
	now := c.now()
	if e, exp, ok := c.trip.Get(key, now); ok && !t.Passed.IsZero() &&
		e.t.First.Equal(t.First) && e.t.Passed.Equal(t.Passed) && t.Last.Sub(e.written) < c.ttl {
		e.t.Last = t.Last
		c.trip.Put(key, e, exp, now)
		return nil
	}
	if err := c.Store.PutTriplet(ctx, key, t); err != nil {
		return err
	}
	if !t.Passed.IsZero() {
		c.trip.Put(key, cachedTriplet{t: t, written: now}, now.Add(c.ttl), now)
	}
	return nil
}

// Client answers from the cache.
func (c *Cached) Client(ctx context.Context, key string) (Client, bool, error) {
	now := c.now()
	if cl, _, ok := c.clients.Get(key, now); ok {
		return cl, true, nil
	}
	cl, found, err := c.Store.Client(ctx, key)
	if err == nil && found {
		c.clients.Put(key, cl, now.Add(c.ttl), now)
	}
	return cl, found, err
}

// PutClient writes through and keeps what it wrote.
func (c *Cached) PutClient(ctx context.Context, key string, cl Client) error {
	if err := c.Store.PutClient(ctx, key, cl); err != nil {
		return err
	}
	now := c.now()
	c.clients.Put(key, cl, now.Add(c.ttl), now)
	return nil
}
