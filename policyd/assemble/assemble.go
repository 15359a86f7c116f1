// Package assemble builds the policy daemon's chain of checks from
// postkit.yaml: it maps the policy section (with trusted_networks,
// hostname, dns, database.path and paths.postkit_run) onto each check's
// typed Config, holds the name -> constructor table (Checks) with the checks'
// time budgets, and returns a Chain that owns what the checks opened. It is
// the only package of the policyd tree that imports internal/config.
//
// Adding a check means writing its package (a policyd.Check with a typed
// Config) and one entry in Checks; nothing else changes.
package assemble

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/internal/dnsclient"
	"github.com/postkit/postkit/policyd"
	"github.com/postkit/postkit/policyd/state"
)

// Options are what the daemon decides beyond postkit.yaml.
type Options struct {
	// Logger receives the checks' lines. Default slog.Default().
	Logger *slog.Logger
	// NoSeal leaves the Received-SPF fields unmarked, for a daemon run
	// without postkit.yaml, whose milter reads no key. By default they are
	// sealed (internal/seal) with the key seal.KeyFile under
	// paths.postkit_run, created if missing.
	NoSeal bool
}

// Constructor builds one check from what b offers: the configuration, the
// logger, the parts the checks share. It validates its part of the
// configuration. A nil check with a nil error leaves the check out of the
// chain (the constructor says why in the log).
type Constructor func(b *Builder) (policyd.Check, error)

// Table maps the names policy.checks lists to their constructors.
type Table map[string]Constructor

// New builds the checks c.Policy.Checks lists, in that order, with the
// built-in table (Checks).
func New(c *config.Config, o Options) (*Chain, error) {
	return Checks().Build(c, o)
}

// Build builds the checks c.Policy.Checks lists, in that order: the order
// requests run them, the first decisive answer winning. Each name may be
// listed once and must be in t. Every check of the chain shares one
// resolver and one state database, opened on first use. On error nothing
// stays open.
func (t Table) Build(c *config.Config, o Options) (_ *Chain, err error) {
	if c == nil {
		return nil, errors.New("assemble: no configuration given")
	}
	b := &Builder{
		Config:   c,
		Logger:   o.Logger,
		opts:     o,
		table:    t,
		listed:   map[string]bool{},
		built:    map[string]policyd.Check{},
		building: map[string]bool{},
	}
	if b.Logger == nil {
		b.Logger = slog.Default()
	}
	chain := &Chain{}
	defer func() {
		if err != nil {
			chain.closers = b.closers
			chain.Close()
		}
	}()
	for _, name := range c.Policy.Checks {
		if b.listed[name] {
			return nil, fmt.Errorf("policyd: check %q listed twice in policy.checks; list each once", name)
		}
		if t[name] == nil {
			return nil, fmt.Errorf("policyd: unknown check %q in policy.checks: want %s", name, t.names())
		}
		b.listed[name] = true
	}
	if c.Policy.TimeBudget.D() <= 0 {
		return nil, fmt.Errorf("policyd: policy.time_budget %v: want a positive duration such as 10s", c.Policy.TimeBudget.D())
	}
	if b.Trusted, err = prefixes("trusted_networks", c.TrustedNetworks); err != nil {
		return nil, err
	}
	for _, name := range c.Policy.Checks {
		chk, err := b.Check(name)
		if err != nil {
			return nil, err
		}
		if chk != nil {
			chain.checks = append(chain.checks, chk)
		}
	}
	chain.closers = b.closers
	return chain, nil
}

// names lists the table's names for an error message.
func (t Table) names() string {
	ns := make([]string, 0, len(t))
	for n := range t {
		ns = append(ns, n)
	}
	sort.Strings(ns)
	if len(ns) < 2 {
		return strings.Join(ns, "")
	}
	return strings.Join(ns[:len(ns)-1], ", ") + " or " + ns[len(ns)-1]
}

// Builder is what a constructor builds a check from. It lives while one
// chain is built.
type Builder struct {
	// Config is postkit.yaml, as config.Load returned it (with the
	// daemon's overrides).
	Config *config.Config
	// Logger is Options.Logger, else slog.Default().
	Logger *slog.Logger
	// Trusted is trusted_networks: clients never SPF-checked, DNSBL-queried
	// or greylisted.
	Trusted []netip.Prefix

	opts     Options
	table    Table
	listed   map[string]bool
	built    map[string]policyd.Check
	building map[string]bool
	closers  []io.Closer
	res      *dnsclient.Resolver
	st       state.Store
}

// Check returns the check policy.checks lists under name, building it on
// the first call: a constructor asks it for a check its own depends on
// (greylisting asks for the DNSBL, whose allow-list scores it uses). It is
// nil when policy.checks does not list name.
func (b *Builder) Check(name string) (policyd.Check, error) {
	if !b.listed[name] {
		return nil, nil
	}
	if chk, ok := b.built[name]; ok {
		return chk, nil
	}
	if b.building[name] {
		return nil, fmt.Errorf("policyd: check %q depends on itself", name)
	}
	b.building[name] = true
	chk, err := b.table[name](b)
	delete(b.building, name)
	if err != nil {
		return nil, err
	}
	b.built[name] = chk
	return chk, nil
}

// OnClose has the chain close c when it is closed (or when building it
// fails): a check's database, connection pool or file.
func (b *Builder) OnClose(c io.Closer) {
	b.closers = append(b.closers, c)
}

// Resolver returns the chain's DNS resolver (dns.servers, dns.timeout),
// made on first use.
func (b *Builder) Resolver() (*dnsclient.Resolver, error) {
	if b.res != nil {
		return b.res, nil
	}
	r, err := dnsclient.New(dnsclient.Config{Servers: b.Config.DNS.Servers, Timeout: b.Config.DNS.Timeout.D()})
	if err != nil {
		return nil, fmt.Errorf("policyd: dns: %w", err)
	}
	b.res = r
	return r, nil
}

// State returns the chain's state store (greylisting, rate limits), opened
// on first use and closed with the chain: this host's SQLite file
// (policy.state_file), or the PostgreSQL database of state.dsn behind a
// host-local cache of state.cache_ttl.
func (b *Builder) State() (state.Store, error) {
	if b.st != nil {
		return b.st, nil
	}
	driver, dsn, password, err := b.Config.StateStore()
	if err != nil {
		return nil, fmt.Errorf("policyd: %w", err)
	}
	var st state.Store
	switch driver {
	case "postgresql":
		pg, err := state.OpenPG(context.Background(), dsn, state.PGOptions{Password: password})
		if err != nil {
			return nil, fmt.Errorf("policyd: %w", err)
		}
		st = state.NewCached(pg, b.Config.State.CacheTTL.D(), 100000, nil)
	default:
		path := b.Config.Policy.StateFile
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			return nil, fmt.Errorf("policyd: state directory: %w; set policy.state_file (--state) to a file in a directory the daemon may write", err)
		}
		db, err := state.Open(path)
		if err != nil {
			return nil, err
		}
		st = db
	}
	b.st = st
	b.OnClose(st)
	return st, nil
}

// Chain is one built list of checks with the resources they opened. It
// implements policyd.Chain: a policyd.Server runs it through a
// daemon.Holder, which closes it after a reload once its last request is
// answered.
type Chain struct {
	checks  []policyd.Check
	closers []io.Closer
	once    sync.Once
	err     error
}

var _ policyd.Chain = (*Chain)(nil)

// Checks returns the checks in the order requests run them.
func (c *Chain) Checks() []policyd.Check { return c.checks }

// Names returns the checks' names in order, for the logs.
func (c *Chain) Names() []string {
	out := make([]string, len(c.checks))
	for i, chk := range c.checks {
		out[i] = chk.Name()
	}
	return out
}

// Close releases every resource the chain's checks opened (databases, the
// state database). Later calls return the first call's result.
func (c *Chain) Close() error {
	c.once.Do(func() {
		var errs []error
		for i := len(c.closers) - 1; i >= 0; i-- {
			errs = append(errs, c.closers[i].Close())
		}
		c.err = errors.Join(errs...)
	})
	return c.err
}

// prefixes parses a list of networks of postkit.yaml.
func prefixes(key string, cidrs []config.CIDR) ([]netip.Prefix, error) {
	out := []netip.Prefix{}
	for _, n := range cidrs {
		p, err := config.ParseCIDR(string(n))
		if err != nil {
			return nil, fmt.Errorf("policyd: %s %q: want a CIDR such as 192.0.2.0/24 or an address", key, n)
		}
		out = append(out, p)
	}
	return out, nil
}
