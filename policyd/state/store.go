package state

import (
	"context"
	"time"
)

// Store is the policy daemon's state, wherever it is kept: *DB (SQLite, one
// host, the default), *PG (PostgreSQL, shared by several hosts) and *Cached
// (a host-local cache in front of either) implement it. Every method is safe
// for concurrent use; an error means the state could not be read or
// written, and the checks then fail open (see greylist and ratelimit).
type Store interface {
	// Triplet returns the greylisting record stored under key; found is
	// false if there is none.
	Triplet(ctx context.Context, key string) (t Triplet, found bool, err error)
	// PutTriplet stores t under key. Within one greylisting round (the
	// same First) a triplet that passed stays passed, whichever host
	// writes last.
	PutTriplet(ctx context.Context, key string, t Triplet) error
	// Client returns the auto-allow record of a client network.
	Client(ctx context.Context, key string) (c Client, found bool, err error)
	// PutClient stores c under key.
	PutClient(ctx context.Context, key string, c Client) error
	// ExpireGreylist deletes the greylisting rows that are over (see
	// DB.ExpireGreylist) and returns how many it deleted.
	ExpireGreylist(ctx context.Context, unpassedBefore, idleBefore time.Time) (int64, error)
	// RateBuckets returns key's buckets that start at or after since,
	// oldest first.
	RateBuckets(ctx context.Context, key string, since time.Time) ([]Bucket, error)
	// RateAdd adds n to key's bucket starting at start, atomically: adds
	// from several connections or hosts all count.
	RateAdd(ctx context.Context, key string, start time.Time, n int64, expires time.Time) error
	// ExpireRates deletes the buckets whose expiry is before now.
	ExpireRates(ctx context.Context, now time.Time) (int64, error)
	// Close releases the store's connections.
	Close() error
}

var (
	_ Store = (*DB)(nil)
	_ Store = (*PG)(nil)
	_ Store = (*Cached)(nil)
)
