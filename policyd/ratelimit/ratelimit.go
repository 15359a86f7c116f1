// Package ratelimit is the rate-limit policy check: it counts messages and
// recipients per SASL user, sender or client address over sliding windows,
// at the stages where Postfix's policy requests carry them
// (SMTPD_POLICY_README: "recipient_count" is set at END-OF-MESSAGE, one
// recipient per RCPT request).
//
// Sliding window scheme: each window of length W is cut into N buckets of
// width w = ceil(W/N) (N = 12 by default: 5 s buckets for a minute, 5 min for
// an hour, 2 h for a day). An event is added to the bucket holding "now". The
// count over the last W is the sum of the buckets that start inside
// (now-W, now], plus the one bucket that straddles now-W weighted by the part
// of it still inside the window, which assumes events were spread evenly
// across that one bucket. The error is thus bounded by one bucket's events
// (1/N of the window), with N+1 rows per key and limit, one SELECT and one
// upsert per event — against the unbounded error of a fixed window and the
// one-row-per-event cost of an exact sliding log.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/postkit/postkit/policyd"
	"github.com/postkit/postkit/policyd/access"
	"github.com/postkit/postkit/policyd/state"
)

// Store keeps the rate-limit counters; every state.Store implements it.
type Store interface {
	RateBuckets(ctx context.Context, key string, since time.Time) ([]state.Bucket, error)
	RateAdd(ctx context.Context, key string, start time.Time, n int64, expires time.Time) error
	ExpireRates(ctx context.Context, now time.Time) (int64, error)
}

var _ Store = (*state.DB)(nil)

// Key is what a limit counts per.
type Key string

// The keys a limit can count per.
const (
	BySASLUser Key = "sasl_username"  // the authenticated SASL user
	BySender   Key = "sender"         // the envelope sender (the null sender is not limited)
	ByClient   Key = "client_address" // the client IP address (IPv6: its /64)
)

// Counter is what a limit counts.
type Counter string

// The counters.
const (
	Messages   Counter = "messages"
	Recipients Counter = "recipients"
)

// Limit is one limit: at most Max events of Counter per Key over any
// sliding Window.
type Limit struct {
	Key     Key
	Counter Counter
	Max     int64
	Window  time.Duration
}

// String renders the limit as the daemon's --ratelimit flag writes it,
// for the logs.
func (l Limit) String() string {
	return fmt.Sprintf("%s:%s=%d/%s", l.Key, l.Counter, l.Max, formatWindow(l.Window))
}

// ParseKey returns the key s names, in any case: sasl_username (or
// sasl_user, as postkit.yaml writes it, or sasl), sender, or client_address
// (or client_ip, client).
func ParseKey(s string) (Key, error) {
	switch strings.ToLower(s) {
	case "sasl_username", "sasl_user", "sasl":
		return BySASLUser, nil
	case "sender":
		return BySender, nil
	case "client_address", "client_ip", "client":
		return ByClient, nil
	}
	return "", errors.New("key must be sasl_username, sender or client_address")
}

// ParseCounter returns the counter s names, in any case: messages or
// recipients.
func ParseCounter(s string) (Counter, error) {
	switch strings.ToLower(s) {
	case "messages":
		return Messages, nil
	case "recipients":
		return Recipients, nil
	}
	return "", errors.New("counter must be messages or recipients")
}

// Validate reports what makes l unusable: a key or counter other than the
// constants, a maximum below 1, or a window that is not whole seconds from
// 1s to 366d (the buckets are whole seconds; state rows expire after a
// year at most).
func (l Limit) Validate() error {
	bad := func(why string) error {
		return fmt.Errorf("ratelimit: limit %s:%s=%d/%v: %s; want e.g. sasl_user:recipients=500/1h", l.Key, l.Counter, l.Max, l.Window, why)
	}
	switch l.Key {
	case BySASLUser, BySender, ByClient:
	default:
		return bad(fmt.Sprintf("key %q must be %s, %s or %s", l.Key, BySASLUser, BySender, ByClient))
	}
	switch l.Counter {
	case Messages, Recipients:
	default:
		return bad(fmt.Sprintf("counter %q must be %s or %s", l.Counter, Messages, Recipients))
	}
	if l.Max < 1 {
		return bad("maximum must be a positive integer")
	}
	if err := checkWindow(l.Window); err != nil {
		return bad(err.Error())
	}
	return nil
}

func checkWindow(w time.Duration) error {
	if w < time.Second || w > 366*24*time.Hour || w%time.Second != 0 {
		return errors.New("window must be whole seconds between 1s and 366d")
	}
	return nil
}

// formatWindow renders a window in the largest whole unit.
func formatWindow(w time.Duration) string {
	switch {
	case w%(24*time.Hour) == 0:
		return strconv.Itoa(int(w/(24*time.Hour))) + "d"
	case w%time.Hour == 0:
		return strconv.Itoa(int(w/time.Hour)) + "h"
	case w%time.Minute == 0:
		return strconv.Itoa(int(w/time.Minute)) + "m"
	}
	return strconv.Itoa(int(w/time.Second)) + "s"
}

// describeWindow renders a window for people: "hour", "10 minutes".
func describeWindow(w time.Duration) string {
	for _, u := range []struct {
		d    time.Duration
		name string
	}{{24 * time.Hour, "day"}, {time.Hour, "hour"}, {time.Minute, "minute"}, {time.Second, "second"}} {
		if w%u.d == 0 {
			if n := int(w / u.d); n != 1 {
				return strconv.Itoa(n) + " " + u.name + "s"
			}
			return u.name
		}
	}
	return w.String()
}

// Config configures the rate-limit check.
type Config struct {
	// Limits are checked together: an event exceeding any of them is
	// refused and counted in none.
	Limits []Limit
	// MessageStage is where messages are counted: "END-OF-MESSAGE" (the
	// default; needs check_policy_service in smtpd_end_of_data_restrictions)
	// or "RCPT" (a message counts at the first RCPT request of its
	// "instance").
	MessageStage string
	// RecipientStage is where recipients are counted: "RCPT" (the default,
	// one per request) or "END-OF-MESSAGE" (recipient_count at once).
	RecipientStage string
	// ExemptClients, ExemptSASLUsers and ExemptSenders are never limited.
	// A sender entry is an address, a domain or ".domain" (its subdomains).
	ExemptClients   []netip.Prefix
	ExemptSASLUsers []string
	ExemptSenders   []string
	// OnStoreError is the action sent when the counters cannot be read or
	// written (their database is down): empty lets the message through
	// (fail open, the default); e.g. "DEFER_IF_PERMIT 4.3.0 …" asks the
	// client to retry. Never a 5xx: validated by New.
	OnStoreError string
	// Code starts the refusal. Default "450 4.7.1" (temporary: the client
	// retries later, when the window has moved).
	Code string
	// Buckets per window (see the package comment). Default 12.
	Buckets int
	// CleanupInterval is how often expired buckets are deleted. Default 10m.
	CleanupInterval time.Duration
	Logger          *slog.Logger
	Now             func() time.Time
}

// Check is the rate-limit check.
type Check struct {
	cfg   Config
	store Store
	log   *slog.Logger

	mu          sync.Mutex // guards lastCleanup, cleaning and seen
	lastCleanup time.Time
	cleaning    bool
	seen        map[string]time.Time // message instances already counted at RCPT
	// keyLocks serialise read-check-add per counter key on this host, so
	// that concurrent requests for one key cannot both take the last slot
	// while requests for other keys run in parallel. Between hosts sharing
	// a store the check and the add are two statements: a limit may be
	// overshot by the requests that other hosts answer between them (one
	// round trip), never undercounted, since every add is atomic.
	keyLocks [64]sync.Mutex
}

var _ policyd.Check = (*Check)(nil)

// New returns the rate-limit check over store.
func New(cfg Config, store Store) (*Check, error) {
	if store == nil {
		return nil, errors.New("ratelimit: no state store given; open the state database first")
	}
	if len(cfg.Limits) == 0 {
		return nil, errors.New("ratelimit: no limits; give at least one, e.g. sasl_user:recipients=500/1h")
	}
	for _, l := range cfg.Limits {
		if err := l.Validate(); err != nil {
			return nil, err
		}
	}
	cfg.Limits = append([]Limit(nil), cfg.Limits...)
	if cfg.MessageStage == "" {
		cfg.MessageStage = "END-OF-MESSAGE"
	}
	if cfg.RecipientStage == "" {
		cfg.RecipientStage = "RCPT"
	}
	for _, s := range []string{cfg.MessageStage, cfg.RecipientStage} {
		if s != "RCPT" && s != "END-OF-MESSAGE" {
			return nil, fmt.Errorf("ratelimit: stage %q: want RCPT or END-OF-MESSAGE", s)
		}
	}
	if a := cfg.OnStoreError; a != "" && !policyd.Temporary(a) {
		return nil, fmt.Errorf("ratelimit: on store error %q: want a temporary answer, e.g. DEFER_IF_PERMIT 4.3.0 State unavailable, or empty to let mail through", a)
	}
	if cfg.Code == "" {
		cfg.Code = "450 4.7.1"
	}
	if !access.IsRefusalCode(cfg.Code) {
		return nil, fmt.Errorf("ratelimit: code %q: want a 4xx or 5xx code, e.g. 450 4.7.1", cfg.Code)
	}
	if cfg.Buckets <= 0 {
		cfg.Buckets = 12
	}
	if cfg.CleanupInterval <= 0 {
		cfg.CleanupInterval = 10 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	users := make([]string, len(cfg.ExemptSASLUsers))
	for i, u := range cfg.ExemptSASLUsers {
		users[i] = strings.ToLower(u)
	}
	cfg.ExemptSASLUsers = users
	senders := make([]string, len(cfg.ExemptSenders))
	for i, s := range cfg.ExemptSenders {
		senders[i] = strings.ToLower(s)
	}
	cfg.ExemptSenders = senders
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Check{cfg: cfg, store: store, log: log.With("check", "ratelimit"), seen: map[string]time.Time{}}, nil
}

// Name implements policyd.Check.
func (rl *Check) Name() string { return "ratelimit" }

// keyValue returns the value a request is counted under for k, "" if the
// request has none.
func keyValue(k Key, r *policyd.Request) string {
	switch k {
	case BySASLUser:
		return strings.ToLower(r.SASLUser())
	case BySender:
		return strings.ToLower(r.Sender())
	case ByClient:
		ip := r.ClientAddr()
		if !ip.IsValid() {
			return ""
		}
		if ip.Is6() {
			p, _ := ip.Prefix(64)
			return p.String()
		}
		return ip.String()
	}
	return ""
}

func (rl *Check) exempt(r *policyd.Request) bool {
	ip := r.ClientAddr()
	for _, p := range rl.cfg.ExemptClients {
		if ip.IsValid() && p.Contains(ip) {
			return true
		}
	}
	if u := strings.ToLower(r.SASLUser()); u != "" {
		for _, e := range rl.cfg.ExemptSASLUsers {
			if u == e {
				return true
			}
		}
	}
	if s := r.Sender(); s != "" && len(rl.cfg.ExemptSenders) > 0 {
		for _, k := range access.Keys(s, "+", true) {
			for _, e := range rl.cfg.ExemptSenders {
				if k == e {
					return true
				}
			}
		}
	}
	return false
}

// events returns how many messages and recipients r adds at its stage.
func (rl *Check) events(r *policyd.Request, now time.Time) (msgs, rcpts int64, markSeen string) {
	switch r.Stage() {
	case "RCPT":
		if rl.cfg.RecipientStage == "RCPT" {
			rcpts = 1
		}
		if rl.cfg.MessageStage == "RCPT" {
			inst := r.Get("instance")
			if inst == "" {
				inst = r.Get("client_address") + "/" + r.Get("queue_id") + "/" + r.Sender()
			}
			if _, dup := rl.seen[inst]; !dup {
				msgs, markSeen = 1, inst
			}
		}
	case "END-OF-MESSAGE":
		if rl.cfg.MessageStage == "END-OF-MESSAGE" {
			msgs = 1
		}
		if rl.cfg.RecipientStage == "END-OF-MESSAGE" {
			n, err := strconv.ParseInt(r.Get("recipient_count"), 10, 64)
			if err == nil && n > 0 {
				rcpts = n
			}
		}
	}
	return msgs, rcpts, markSeen
}

// Check implements policyd.Check: it refuses the event (a recipient at RCPT, a
// message at END-OF-MESSAGE, as configured) that would take any limit over
// its maximum, and counts it otherwise. A store fault is logged and gives no
// opinion: rate limiting fails open.
func (rl *Check) Check(ctx context.Context, r *policyd.Request) (policyd.Decision, error) {
	now := rl.cfg.Now()
	rl.mu.Lock()
	rl.maybeCleanup(now)
	msgs, rcpts, markSeen := rl.events(r, now)
	rl.mu.Unlock()
	if msgs == 0 && rcpts == 0 || rl.exempt(r) {
		return policyd.Decision{}, nil
	}
	defer rl.lockKeys(r)()

	type pending struct {
		l     Limit
		key   string
		n     int64
		value string
	}
	var todo []pending
	for _, l := range rl.cfg.Limits {
		n := msgs
		if l.Counter == Recipients {
			n = rcpts
		}
		v := keyValue(l.Key, r)
		if n == 0 || v == "" {
			continue
		}
		key := string(l.Key) + ":" + string(l.Counter) + ":" + strconv.FormatInt(int64(l.Window/time.Second), 10) + ":" + v
		used, err := rl.count(ctx, key, l.Window, now)
		if err != nil {
			return rl.storeError(r, err), nil
		}
		if used+float64(n) > float64(l.Max) {
			action := fmt.Sprintf("%s Rate limit reached: %s %s may send %d %s per %s; please try again later",
				rl.cfg.Code, keyNoun(l.Key), v, l.Max, l.Counter, describeWindow(l.Window))
			rl.log.Info("rate limit reached", "queue_id", r.Get("queue_id"), "limit", l.String(),
				"key", v, "used", math.Round(used*10)/10, "adding", n)
			return policyd.Decision{Action: action, Reason: "ratelimit=exceeded"}, nil
		}
		todo = append(todo, pending{l, key, n, v})
	}
	for _, p := range todo {
		w := rl.bucketWidth(p.l.Window)
		start := now.Truncate(w)
		if err := rl.store.RateAdd(ctx, p.key, start, p.n, start.Add(p.l.Window+w)); err != nil {
			return rl.storeError(r, err), nil
		}
	}
	if markSeen != "" {
		rl.mu.Lock()
		rl.seen[markSeen] = now
		rl.mu.Unlock()
	}
	return policyd.Decision{}, nil
}

// storeError is the answer when the counters are out of reach: no opinion
// (fail open) or the configured temporary answer.
func (rl *Check) storeError(r *policyd.Request, err error) policyd.Decision {
	if rl.cfg.OnStoreError != "" {
		rl.log.Error("rate counters unavailable; deferring", "queue_id", r.Get("queue_id"), "err", err)
		return policyd.Decision{Action: rl.cfg.OnStoreError, Reason: "ratelimit=error"}
	}
	rl.log.Error("rate counters unavailable; not limiting", "queue_id", r.Get("queue_id"), "err", err)
	return policyd.Decision{Reason: "ratelimit=error"}
}

func keyNoun(k Key) string {
	switch k {
	case BySASLUser:
		return "user"
	case BySender:
		return "sender"
	}
	return "client"
}

func (rl *Check) bucketWidth(window time.Duration) time.Duration {
	w := (window + time.Duration(rl.cfg.Buckets) - 1) / time.Duration(rl.cfg.Buckets)
	w = (w + time.Second - 1).Truncate(time.Second)
	if w < time.Second {
		w = time.Second
	}
	return w
}

// count estimates the events of key over (now-window, now] (see the
// package comment for the scheme).
func (rl *Check) count(ctx context.Context, key string, window time.Duration, now time.Time) (float64, error) {
	w := rl.bucketWidth(window)
	from := now.Add(-window)
	// Buckets starting after from-w still overlap the window.
	buckets, err := rl.store.RateBuckets(ctx, key, from.Add(-w).Add(time.Second).Truncate(time.Second))
	if err != nil {
		return 0, err
	}
	var sum float64
	for _, b := range buckets {
		switch {
		case b.Start.After(now):
			// A bucket from the future (the clock went back): count it,
			// erring on the side of limiting.
			sum += float64(b.Count)
		case !b.Start.Before(from):
			sum += float64(b.Count)
		case b.Start.Add(w).After(from):
			inside := b.Start.Add(w).Sub(from)
			sum += float64(b.Count) * float64(inside) / float64(w)
		}
	}
	return sum, nil
}

// maybeCleanup forgets old message instances and starts the deletion of
// expired buckets at most once per CleanupInterval. The deletion runs as a
// job of its own, never inside a request: with a shared store it may take
// longer than a request may wait. rl.mu is held.
func (rl *Check) maybeCleanup(now time.Time) {
	if now.Sub(rl.lastCleanup) < rl.cfg.CleanupInterval || rl.cleaning {
		return
	}
	rl.lastCleanup = now
	for k, t := range rl.seen {
		// An SMTP transaction never lasts an hour: Postfix times out long before.
		if now.Sub(t) > time.Hour {
			delete(rl.seen, k)
		}
	}
	rl.cleaning = true
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := rl.store.ExpireRates(ctx, now); err != nil {
			rl.log.Warn("rate counter cleanup failed; will retry", "err", err)
		}
		rl.mu.Lock()
		rl.cleaning = false
		rl.mu.Unlock()
	}()
}

// lockKeys takes the key locks of every value r is counted under, in
// order, and returns their release.
func (rl *Check) lockKeys(r *policyd.Request) func() {
	var idx []int
	for _, l := range rl.cfg.Limits {
		v := keyValue(l.Key, r)
		if v == "" {
			continue
		}
		h := fnv.New32a()
		h.Write([]byte(string(l.Key) + ":" + v))
		i := int(h.Sum32() % uint32(len(rl.keyLocks)))
		if !slices.Contains(idx, i) {
			idx = append(idx, i)
		}
	}
	slices.Sort(idx)
	for _, i := range idx {
		rl.keyLocks[i].Lock()
	}
	return func() {
		for _, i := range idx {
			rl.keyLocks[i].Unlock()
		}
	}
}
