package dnsclient

import (
	"context"
	"sync"
	"time"
)

// Expiry collects when the DNS answers a computation used stop being valid,
// so that a result derived from them (an SPF verdict, say) is kept no longer
// than the shortest-lived of them: "a cache never outlives what it was
// built from". The resolver is the one source of truth: every answer it
// returns under a context made by WithExpiry, from its cache or from a
// server, positive or negative, notes its own expiry there — the smallest
// TTL of the records used, capped by Config.MaxTTL, or the RFC 2308 §5
// negative TTL. Answers it may not cache at all (TTL 0, SERVFAIL,
// timeouts, negative answers without a SOA) note "now": nothing built on
// them may be kept.
//
// Expiries nest: an Expiry made under a context that already carries one
// notes into both, so that a result cached per identity and a decision
// built from several identities are each bounded by what they used.
type Expiry struct {
	parent *Expiry
	mu     sync.Mutex
	at     time.Time
	set    bool
}

type expiryKey struct{}

// WithExpiry returns a context whose lookups note their expiry in the
// returned Expiry (and in that of ctx, if any).
func WithExpiry(ctx context.Context) (context.Context, *Expiry) {
	e := &Expiry{}
	e.parent, _ = ctx.Value(expiryKey{}).(*Expiry)
	return context.WithValue(ctx, expiryKey{}, e), e
}

// NoteExpiry records t in the Expiry of ctx, if any, and its parents. A
// cache of results built on DNS answers calls it when it serves one, with
// the entry's expiry, so that what is built on the cached result is bounded
// by the same answers.
func NoteExpiry(ctx context.Context, t time.Time) {
	e, _ := ctx.Value(expiryKey{}).(*Expiry)
	for ; e != nil; e = e.parent {
		e.mu.Lock()
		if !e.set || t.Before(e.at) {
			e.at, e.set = t, true
		}
		e.mu.Unlock()
	}
}

// Earliest returns the earliest expiry noted; ok is false when nothing was
// noted (no answer from this resolver was used: a result may then be kept
// only if it depends on no DNS data at all).
func (e *Expiry) Earliest() (t time.Time, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.at, e.set
}
