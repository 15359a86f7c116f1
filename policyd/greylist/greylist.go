// Package greylist is the greylisting policy check, after postgrey(8)'s
// model (Harris, "The Next Step in the Spam Control War: Greylisting",
// 2003): a (client network, sender, recipient) triplet is deferred until it
// retries after a delay; a client that passed often enough is allowed
// without greylisting.
package greylist

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/postkit/postkit/policyd"
	"github.com/postkit/postkit/policyd/access"
	"github.com/postkit/postkit/policyd/state"
)

// Store keeps the greylisting state; every state.Store implements it.
type Store interface {
	Triplet(ctx context.Context, key string) (t state.Triplet, found bool, err error)
	PutTriplet(ctx context.Context, key string, t state.Triplet) error
	Client(ctx context.Context, key string) (c state.Client, found bool, err error)
	PutClient(ctx context.Context, key string, c state.Client) error
	ExpireGreylist(ctx context.Context, unpassedBefore, idleBefore time.Time) (int64, error)
}

var _ Store = (*state.DB)(nil)

// Allowlist tells whether a client is on an allow list kept elsewhere;
// the DNSBL check (*dnsbl.Check) implements it with its DNSWL score.
type Allowlist interface {
	AllowListed(ctx context.Context, r *policyd.Request) bool
}

// Config configures the greylisting check. Delay, RetryWindow and MaxAge
// are required (postkit.yaml's policy.greylist holds their defaults, which
// are postgrey's); the other zero values select the defaults named.
type Config struct {
	// Delay is how long a new triplet is deferred (postgrey --delay).
	// Required: 0 < Delay < RetryWindow.
	Delay time.Duration
	// RetryWindow is how long a triplet that never passed is remembered
	// (postgrey --retry-window). Required: RetryWindow <= MaxAge.
	RetryWindow time.Duration
	// MaxAge is how long a passed triplet, and an auto-allowed client, is
	// kept after it was last seen (postgrey --max-age). Required.
	MaxAge time.Duration
	// AutoAllowClients allows a client network without greylisting once it
	// has passed this many times, counted at most once an hour (postgrey
	// --auto-whitelist-clients). Zero never allows a client outright.
	AutoAllowClients int
	// IPv4Prefix and IPv6Prefix group clients into networks (postgrey
	// --lookup-by-subnet, --ipv4cidr, --ipv6cidr): a retry from another
	// address of the same pool passes. Defaults 24 and 64.
	IPv4Prefix, IPv6Prefix int
	// ExactSender keeps the sender as given; by default it is normalised as
	// postgrey does (see SenderKey) so that VERP, BATV and SRS senders,
	// which change at every retry, still pass.
	ExactSender bool
	// Action is the deferral sent to Postfix; "%s" is replaced by the
	// seconds left, "%r" by the recipient domain. Default
	// "DEFER_IF_PERMIT 4.7.1 Greylisted, please try again in %s seconds".
	Action string
	// Header adds "X-Greylist: delayed N seconds by postkit at HOST; DATE"
	// to a message the first time its triplet passes.
	Header bool
	// Hostname names this host in the header. Default os.Hostname().
	Hostname string
	// AllowClients are client networks never greylisted.
	AllowClients []netip.Prefix
	// AllowClientNames are verified client host names (Postfix's
	// client_name) never greylisted: "example.com" matches example.com and
	// every name under it.
	AllowClientNames []string
	// AllowRecipients are recipients never greylisted: "user@example.com",
	// "example.com" (the domain) or ".example.com" (its subdomains); the
	// recipient's extension is ignored ("user+tag@example.com" matches
	// "user@example.com").
	AllowRecipients []string
	// Clients and Recipients are postgrey's whitelist_clients and
	// whitelist_recipients (see ClientList, RecipientList); nil for none.
	Clients    *ClientList
	Recipients *RecipientList
	// RecipientDelimiter is the address extension delimiter ("+") that
	// Recipients also try without.
	RecipientDelimiter string
	// Privacy stores a SHA-256 digest of each triplet instead of its
	// sender and recipient (postgrey --privacy): the state file holds no
	// address. Client networks are kept, for auto-allowing. Changing it
	// starts every triplet over.
	Privacy bool
	// Allowlist, when set, exempts the clients it lists (e.g. DNSWL-listed
	// clients through the DNSBL check).
	Allowlist Allowlist
	// OnStoreError is the action sent when the state cannot be read or
	// written (its database is down): empty lets the request through
	// (fail open, the default); e.g. "DEFER_IF_PERMIT 4.3.0 …" asks the
	// client to retry. Never a 5xx: validated by New.
	OnStoreError string
	// CleanupInterval is how often expired rows are deleted. Default 1h.
	CleanupInterval time.Duration
	Logger          *slog.Logger
	Now             func() time.Time
}

// Check is the greylisting check.
type Check struct {
	cfg   Config
	store Store
	log   *slog.Logger

	mu          sync.Mutex
	lastCleanup time.Time
	cleaning    bool
}

var _ policyd.Check = (*Check)(nil)

// New returns the greylisting check over store.
func New(cfg Config, store Store) (*Check, error) {
	if store == nil {
		return nil, errors.New("greylist: no state store given; open the state database first")
	}
	if cfg.Delay <= 0 || cfg.RetryWindow <= cfg.Delay || cfg.MaxAge < cfg.RetryWindow {
		return nil, fmt.Errorf("greylist: want 0 < delay (%v) < retry window (%v) <= max age (%v), e.g. 5m, 48h, 840h", cfg.Delay, cfg.RetryWindow, cfg.MaxAge)
	}
	if a := cfg.OnStoreError; a != "" && !policyd.Temporary(a) {
		return nil, fmt.Errorf("greylist: on store error %q: want a temporary answer, e.g. DEFER_IF_PERMIT 4.3.0 State unavailable, or empty to let mail through", a)
	}
	if cfg.AutoAllowClients < 0 {
		return nil, fmt.Errorf("greylist: auto-allow after %d passes: want 0 (never) or more", cfg.AutoAllowClients)
	}
	if cfg.IPv4Prefix == 0 {
		cfg.IPv4Prefix = 24
	}
	if cfg.IPv6Prefix == 0 {
		cfg.IPv6Prefix = 64
	}
	if cfg.IPv4Prefix < 8 || cfg.IPv4Prefix > 32 || cfg.IPv6Prefix < 16 || cfg.IPv6Prefix > 128 {
		return nil, fmt.Errorf("greylist: prefixes /%d and /%d: want IPv4 /8-/32 and IPv6 /16-/128", cfg.IPv4Prefix, cfg.IPv6Prefix)
	}
	if cfg.Action == "" {
		cfg.Action = "DEFER_IF_PERMIT 4.7.1 Greylisted, please try again in %s seconds"
	}
	if d, err := access.ParseAction(strings.NewReplacer("%s", "300", "%r", "example.com").Replace(cfg.Action)); err != nil || !d.Final() {
		return nil, fmt.Errorf("greylist: action %q: want a deferral such as DEFER_IF_PERMIT or 450 text", cfg.Action)
	}
	if cfg.Hostname == "" {
		cfg.Hostname, _ = os.Hostname()
		if cfg.Hostname == "" {
			cfg.Hostname = "localhost"
		}
	}
	names := make([]string, len(cfg.AllowClientNames))
	for i, n := range cfg.AllowClientNames {
		names[i] = strings.ToLower(strings.Trim(n, "."))
	}
	cfg.AllowClientNames = names
	rcpts := make([]string, len(cfg.AllowRecipients))
	for i, a := range cfg.AllowRecipients {
		rcpts[i] = strings.ToLower(a)
	}
	cfg.AllowRecipients = rcpts
	if cfg.CleanupInterval <= 0 {
		cfg.CleanupInterval = time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Check{cfg: cfg, store: store, log: log.With("check", "greylist")}, nil
}

// Name implements policyd.Check.
func (g *Check) Name() string { return "greylist" }

// Check implements policyd.Check. Only RCPT-stage requests are greylisted; SASL
// clients, allowed clients and recipients pass. A store fault is logged and
// gives no opinion: greylisting fails open.
func (g *Check) Check(ctx context.Context, r *policyd.Request) (policyd.Decision, error) {
	if r.Stage() != "RCPT" || r.SASLUser() != "" {
		return policyd.Decision{}, nil
	}
	ip := r.ClientAddr()
	if !ip.IsValid() {
		return policyd.Decision{}, nil
	}
	if g.allowed(ctx, r, ip) {
		return policyd.Decision{Reason: "greylist=allowlisted"}, nil
	}
	now := g.cfg.Now()
	g.maybeCleanup(now)
	d, err := g.decide(ctx, r, ip, now)
	if err != nil {
		if g.cfg.OnStoreError != "" {
			g.log.Error("greylist state unavailable; deferring", "queue_id", r.Get("queue_id"), "err", err)
			return policyd.Decision{Action: g.cfg.OnStoreError, Reason: "greylist=error"}, nil
		}
		g.log.Error("greylist state unavailable; letting the message through", "queue_id", r.Get("queue_id"), "err", err)
		return policyd.Decision{Reason: "greylist=error"}, nil
	}
	return d, nil
}

func (g *Check) allowed(ctx context.Context, r *policyd.Request, ip netip.Addr) bool {
	for _, p := range g.cfg.AllowClients {
		if p.Contains(ip) {
			return true
		}
	}
	if name := strings.ToLower(strings.TrimSuffix(r.Get("client_name"), ".")); name != "" && name != "unknown" {
		for _, n := range g.cfg.AllowClientNames {
			if name == n || strings.HasSuffix(name, "."+n) {
				return true
			}
		}
	}
	if g.cfg.Clients.Match(r.Get("client_name"), ip) {
		return true
	}
	if r.Recipient() != "" && g.cfg.Recipients.Match(r.Recipient(), g.cfg.RecipientDelimiter) {
		return true
	}
	if len(g.cfg.AllowRecipients) > 0 && r.Recipient() != "" {
		keys := access.Keys(r.Recipient(), "+", true)
		for _, a := range g.cfg.AllowRecipients {
			for _, k := range keys {
				if a == k {
					return true
				}
			}
		}
	}
	return g.cfg.Allowlist != nil && g.cfg.Allowlist.AllowListed(ctx, r)
}

// ClientNet returns the network a client address is greylisted under.
func (g *Check) ClientNet(ip netip.Addr) netip.Prefix {
	bits := g.cfg.IPv6Prefix
	if ip.Is4() {
		bits = g.cfg.IPv4Prefix
	}
	p, _ := ip.Prefix(bits)
	return p
}

func (g *Check) decide(ctx context.Context, r *policyd.Request, ip netip.Addr, now time.Time) (policyd.Decision, error) {
	client := g.ClientNet(ip).String()

	// Auto-allowed client (postgrey --auto-whitelist-clients).
	var c state.Client
	var cfound bool
	if g.cfg.AutoAllowClients > 0 {
		var err error
		c, cfound, err = g.store.Client(ctx, client)
		if err != nil {
			return policyd.Decision{}, err
		}
		if cfound && now.Sub(c.Last) > g.cfg.MaxAge {
			c, cfound = state.Client{}, false
		}
		if cfound && c.Count >= g.cfg.AutoAllowClients {
			if now.Sub(c.Last) >= time.Hour {
				c.Count++
				c.Last = now
				if err := g.store.PutClient(ctx, client, c); err != nil {
					return policyd.Decision{}, err
				}
			}
			return policyd.Decision{Reason: "greylist=autoallowed"}, nil
		}
	}

	sender := r.Sender()
	if !g.cfg.ExactSender {
		sender = SenderKey(sender)
	} else if sender == "" {
		sender = "<>"
	}
	key := client + " " + strings.ToLower(sender) + " " + strings.ToLower(r.Recipient())
	if g.cfg.Privacy {
		sum := sha256.Sum256([]byte(key))
		key = client + " " + hex.EncodeToString(sum[:])
	}
	t, found, err := g.store.Triplet(ctx, key)
	if err != nil {
		return policyd.Decision{}, err
	}
	switch {
	case !found:
	case t.Passed.IsZero() && now.Sub(t.First) > g.cfg.RetryWindow:
		// The sender gave up, or came back too late: start over.
		found = false
	case !t.Passed.IsZero() && now.Sub(t.Last) > g.cfg.MaxAge:
		found = false
	case now.Before(t.First):
		// The clock went back: restart the round rather than wait for ever.
		found = false
	}
	if !found {
		t = state.Triplet{First: now}
	}
	t.Last = now
	if wait := g.cfg.Delay - now.Sub(t.First); wait > 0 {
		t.Attempts++
		if err := g.store.PutTriplet(ctx, key, t); err != nil {
			return policyd.Decision{}, err
		}
		secs := int((wait + time.Second - 1) / time.Second)
		action := strings.NewReplacer("%s", strconv.Itoa(secs), "%r", policyd.Domain(r.Recipient()), "%%", "%").Replace(g.cfg.Action)
		g.log.Info("greylisted", "queue_id", r.Get("queue_id"), "client", ip.String(), "sender", r.Sender(), "recipient", r.Recipient(), "retry_in", secs)
		return policyd.Decision{Action: action, Reason: "greylist=defer"}, nil
	}
	d := policyd.Decision{Reason: "greylist=pass"}
	if t.Passed.IsZero() {
		t.Passed = now
		if g.cfg.Header {
			d.Prepend = []string{fmt.Sprintf("X-Greylist: delayed %d seconds by postkit at %s; %s",
				int(now.Sub(t.First)/time.Second), g.cfg.Hostname, now.Format(time.RFC1123Z))}
		}
		g.log.Info("greylist passed", "queue_id", r.Get("queue_id"), "client", ip.String(), "sender", r.Sender(), "recipient", r.Recipient(),
			"delayed", now.Sub(t.First).String(), "attempts", t.Attempts)
	}
	if err := g.store.PutTriplet(ctx, key, t); err != nil {
		return policyd.Decision{}, err
	}
	if g.cfg.AutoAllowClients > 0 && (!cfound || now.Sub(c.Last) >= time.Hour) {
		if err := g.store.PutClient(ctx, client, state.Client{Count: c.Count + 1, Last: now}); err != nil {
			return policyd.Decision{}, err
		}
	}
	return d, nil
}

// maybeCleanup starts the deletion of expired state at most once per
// CleanupInterval, as a job of its own: no request waits for it (with a
// shared store it may take longer than a request may wait).
func (g *Check) maybeCleanup(now time.Time) {
	g.mu.Lock()
	due := now.Sub(g.lastCleanup) >= g.cfg.CleanupInterval && !g.cleaning
	if due {
		g.lastCleanup = now
		g.cleaning = true
	}
	g.mu.Unlock()
	if !due {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if n, err := g.expireAt(ctx, now); err != nil {
			g.log.Warn("greylist cleanup failed; will retry", "err", err)
		} else if n > 0 {
			g.log.Info("greylist cleanup", "deleted", n)
		}
		g.mu.Lock()
		g.cleaning = false
		g.mu.Unlock()
	}()
}

// Expire deletes the triplets whose retry window or maximum age is over and
// the auto-allowed clients not seen for the maximum age.
func (g *Check) Expire(ctx context.Context) (int64, error) {
	return g.expireAt(ctx, g.cfg.Now())
}

func (g *Check) expireAt(ctx context.Context, now time.Time) (int64, error) {
	return g.store.ExpireGreylist(ctx, now.Add(-g.cfg.RetryWindow), now.Add(-g.cfg.MaxAge))
}

var (
	// BATV (draft-levine-smtp-batv §4): "prvs=TAG=user"; also the
	// variants used by Microsoft ("msprvs1=") and Barracuda ("btv1==").
	batvPrefix = regexp.MustCompile(`^(prvs|msprvs1|btv1)=[^=]*=`)
	// SRS (Mong, "Sender Rewriting Scheme"): SRS0=HASH=TT=domain=local.
	srsParts = regexp.MustCompile(`^(srs[01])=[^=]*=[^=]*=`)
	// Numbers in VERP-style localparts: postgrey replaces each \b\d+\b by #.
	verpNumbers = regexp.MustCompile(`\b\d+\b`)
)

// SenderKey normalises a sender the way postgrey does before it builds
// the triplet: lower-cased, the null sender as "<>", BATV tags and SRS hash
// and timestamp removed, the "+extension" stripped, and every stand-alone
// number in the localpart replaced by "#" (VERP bounce addresses carry a
// message number that changes at each retry).
func SenderKey(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "" || s == "<>" {
		return "<>"
	}
	i := strings.LastIndexByte(s, '@')
	if i < 0 {
		return s
	}
	local, domain := s[:i], s[i:]
	local = batvPrefix.ReplaceAllString(local, "")
	local = srsParts.ReplaceAllString(local, "$1=#=#=")
	if j := strings.IndexByte(local, '+'); j > 0 {
		local = local[:j]
	}
	local = verpNumbers.ReplaceAllString(local, "#")
	return local + domain
}
