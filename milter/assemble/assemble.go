// Package assemble builds the milter daemon's chain from postkit.yaml: it
// maps the milter section (with trusted_networks, hostname, dns,
// database.path, sender_logins and paths.postkit_run) onto each filter's
// typed Config, holds the table of filters (Filters) in chain order with
// their time budgets, and returns a milterd.Chain that owns what the filters
// opened (databases, the resolver), so that the daemon closes them with the
// chain. It is the only package of the milter tree that imports
// internal/config.
//
// Adding a filter means writing its package (a filter.Filter with a typed
// Config) and one entry in Filters; nothing else changes.
package assemble

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/internal/dnsclient"
	"github.com/postkit/postkit/milter/dkimsign"
	"github.com/postkit/postkit/milter/dkimverify"
	"github.com/postkit/postkit/milter/filter"
	"github.com/postkit/postkit/milter/milterd"
	"github.com/postkit/postkit/milter/spamcheck"
	"github.com/postkit/postkit/sqlmaps"
)

// Options are what the daemon decides beyond postkit.yaml.
type Options struct {
	// Logger receives the filters' and the daemon's lines. Default
	// slog.Default().
	Logger *slog.Logger
	// NoSeal takes no Received-SPF field for our policy daemon's, for a
	// daemon run without postkit.yaml, which does not know where the
	// policy daemon keeps its seal key. By default the key is seal.KeyFile
	// under paths.postkit_run.
	NoSeal bool
	// Meter counts what the filters do and Observer each message and
	// filter outcome, for the daemon's metrics (milterd.Metrics is both);
	// they outlive the chains a reload builds. Nil counts nothing.
	Meter    filter.Meter
	Observer milterd.Observer
}

// Constructor builds one filter from what b offers: the configuration, the
// logger, the time budget of its entry, the parts the filters share. It
// validates its part of the configuration. A nil filter with a nil error
// leaves the filter out of the chain (turned off; the constructor says why
// in the log when it is not the administrator's explicit choice).
type Constructor func(b *Builder) (filter.Filter, error)

// Entry is one filter of the chain.
type Entry struct {
	// Name is the filter's: its Name() must return it (logs and the
	// daemon's per-filter timings use it).
	Name string
	// Budget bounds each outside question the filter asks for one message
	// (a DNS lookup, a database query); 0 for a filter that asks none.
	// The constructor passes it to the filter's Config.
	Budget time.Duration
	New    Constructor
}

// Table is a chain: its entries in the order every message runs them.
type Table []Entry

// Filters returns the daemon's chain, in order: scrub → dkimsign →
// dkimverify → forged → dmarc → ownfrom → spam. Scrubbing runs before signing so
// that the signature covers the final header; scrub and dkimsign act on
// outbound mail only and dkimverify on inbound mail only, so one chain
// serves both. forged removes at end of headers, before any filter signs
// at end of message, and after dkimverify took the header as received;
// dmarc adds spf= and dmarc= to dkimverify's Authentication-Results at end
// of message, and may refuse or quarantine (spam scores the quarantine
// field); ownfrom reads dkimverify's result at end of message; spam reads it too,
// with our policy daemon's Received-SPF (forged has removed every other),
// and comes last so that mail ownfrom refuses is not scored. The table is
// a fresh copy: a caller may add to it.
func Filters() Table {
	return Table{
		{Name: "scrub", New: newScrub},
		// One sender-login query per authenticated message.
		{Name: "dkimsign", Budget: dkimsign.DefaultSenderTimeout, New: newSigner},
		// Per key lookup; the message as a whole is bounded by
		// dkimverify.DefaultMessageTimeout.
		{Name: "dkimverify", Budget: dkimverify.DefaultLookupTimeout, New: newVerifier},
		{Name: "forged", New: newForged},
		// Policy discovery, a non-existence test for np=, and one SPF
		// evaluation (at most 10 DNS lookups, RFC 7208 section 4.6.4).
		{Name: "dmarc", Budget: 8 * time.Second, New: newDMARC},
		// One SPF evaluation (RFC 7208 section 4.6.4: at most 10 DNS
		// lookups) per domain of ours in From, as the policy daemon's.
		{Name: "ownfrom", Budget: 8 * time.Second, New: newOwnFrom},
		// The whole scoring of one message, DNS lists included; the
		// message goes on by then (milter.spam.time_budget, which
		// defaults to it, sets it).
		{Name: "spam", Budget: spamcheck.DefaultTimeBudget, New: newSpam},
	}
}

// New builds the daemon's chain (Filters) from c.
func New(c *config.Config, o Options) (*milterd.Chain, error) {
	return Filters().Build(c, o)
}

// Build builds the chain of t from c: milterd's settings (which mail is
// outbound, what a filter fault answers) and every filter of t, in order.
// The chain owns what the filters opened and closes it with its Close (the
// daemon's Holder calls it once the last message using the chain is done).
// On error nothing stays open.
func (t Table) Build(c *config.Config, o Options) (_ *milterd.Chain, err error) {
	if c == nil {
		return nil, errors.New("milter: no configuration given")
	}
	b := &Builder{Config: c, Logger: o.Logger, opts: o}
	if b.Logger == nil {
		b.Logger = slog.Default()
	}
	res := &resources{}
	defer func() {
		if err != nil {
			res.closers = b.closers
			res.Close()
		}
	}()
	cfg := milterd.Config{Logger: b.Logger, Observer: o.Observer, Originating: append([]string{}, c.Milter.Originating...), OnErrorSet: true}
	if cfg.OnError, err = milterd.ParseFaultAction(c.Milter.OnError); err != nil {
		return nil, fmt.Errorf("milter: milter.on_error: %w", err)
	}
	cfg.Trusted = []netip.Prefix{}
	for _, n := range c.TrustedNetworks {
		p, err := config.ParseCIDR(string(n))
		if err != nil {
			return nil, fmt.Errorf("milter: trusted_networks %q: want a CIDR such as 192.0.2.0/24 (%v)", n, err)
		}
		cfg.Trusted = append(cfg.Trusted, p)
	}
	seen := map[string]bool{}
	var fs []filter.Filter
	for _, e := range t {
		if seen[e.Name] || e.New == nil {
			return nil, fmt.Errorf("milter: filter %q is in the table twice or without a constructor", e.Name)
		}
		seen[e.Name] = true
		b.Budget = e.Budget
		f, err := e.New(b)
		if err != nil {
			return nil, err
		}
		if f == nil {
			continue
		}
		if f.Name() != e.Name {
			return nil, fmt.Errorf("milter: table entry %q built a filter named %q", e.Name, f.Name())
		}
		fs = append(fs, f)
	}
	cfg.Chains = map[string][]filter.Filter{milterd.DefaultChain: fs}
	res.closers = b.closers
	cfg.Closer = res
	return milterd.NewChain(cfg)
}

// Names returns the names of the filters ch runs, in order, for the logs.
func Names(ch *milterd.Chain) []string {
	var out []string
	for _, f := range ch.Filters(milterd.DefaultChain) {
		out = append(out, f.Name())
	}
	return out
}

// Builder is what a constructor builds a filter from. It lives while one
// chain is built.
type Builder struct {
	// Config is postkit.yaml, as config.Load returned it (with the
	// daemon's overrides).
	Config *config.Config
	// Logger is Options.Logger, else slog.Default().
	Logger *slog.Logger
	// Budget is the time budget of the entry being built.
	Budget time.Duration

	opts    Options
	closers []io.Closer
	res     *dnsclient.Resolver
}

// OnClose has the chain close c when it is closed (or when building it
// fails): a filter's database, connection pool or file.
func (b *Builder) OnClose(c io.Closer) {
	b.closers = append(b.closers, c)
}

// Resolver returns the chain's DNS resolver (dns.servers, dns.timeout),
// made on first use and closed with the chain: the filters of one chain
// share it and its cache.
func (b *Builder) Resolver() (*dnsclient.Resolver, error) {
	if b.res != nil {
		return b.res, nil
	}
	r, err := dnsclient.New(dnsclient.Config{Servers: b.Config.DNS.Servers, Timeout: b.Config.DNS.Timeout.D()})
	if err != nil {
		return nil, err
	}
	b.res = r
	b.OnClose(r)
	return r, nil
}

// resources are what a chain's filters opened, closed in reverse order.
type resources struct{ closers []io.Closer }

func (r *resources) Close() error {
	var errs []error
	for i := len(r.closers) - 1; i >= 0; i-- {
		errs = append(errs, r.closers[i].Close())
	}
	r.closers = nil
	return errors.Join(errs...)
}

// SenderRules are the settings of c the sender-login map depends on (the
// map Postfix reads and the milter's From check): sender_logins and
// recipient_delimiter.
func SenderRules(c *config.Config) sqlmaps.SenderRules {
	r := sqlmaps.SenderRules{Delimiter: c.RecipientDelim}
	for _, g := range c.SenderLogins {
		r.Grants = append(r.Grants, sqlmaps.SenderGrant{Sender: g.Sender, Logins: append([]string(nil), g.Logins...)})
	}
	return r
}

// normDomain lowercases a domain and drops a final dot.
func normDomain(d string) string { return strings.ToLower(strings.TrimSuffix(d, ".")) }
