package assemble

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/internal/seal"
	"github.com/postkit/postkit/policyd"
	"github.com/postkit/postkit/policyd/blacklist"
	"github.com/postkit/postkit/policyd/dnsbl"
	"github.com/postkit/postkit/policyd/greylist"
	"github.com/postkit/postkit/policyd/ratelimit"
	"github.com/postkit/postkit/policyd/spfcheck"
	"github.com/postkit/postkit/sqlmaps"
)

// Checks returns the table of the checks postkit has, by the names
// policy.checks gives them. Each call returns a new map: a caller may add
// to it (a test's check) before Build.
func Checks() Table {
	return Table{
		"blacklist": newBlacklist,
		"spf":       newSPF,
		"dnsbl":     newDNSBL,
		"greylist":  newGreylist,
		"ratelimit": newRateLimit,
	}
}

// The time budgets: policy.time_budget bounds one request, all checks
// together (the server's RequestTimeout and CheckTimeout). Checks that wait
// on DNS get a share of it, so that a slow zone leaves time for the checks
// after them.

// spfBudget bounds the SPF check of one request (both identities): four
// fifths of the request's budget, at most 8s.
func spfBudget(total time.Duration) time.Duration { return min(8*time.Second, total*4/5) }

// dnsblBudget bounds the DNSBL queries of one client: the request's
// budget, at most 5s.
func dnsblBudget(total time.Duration) time.Duration { return min(5*time.Second, total) }

// The DNSBL check implements the greylisting's allow list (its DNSWL
// scores).
var _ greylist.Allowlist = (*dnsbl.Check)(nil)

func newBlacklist(b *Builder) (policyd.Check, error) {
	if b.Config.Policy.Blacklist.Owner == "postfix" {
		b.Logger.Info("policyd: blacklist check skipped: policy.blacklist.owner is postfix (Postfix's check_*_access maps apply the SQL blacklists)")
		return nil, nil
	}
	cfg := blacklistConfig(b.Config)
	cfg.Logger = b.Logger
	store, err := b.Config.Database.Source().OpenForDaemon()
	if err != nil {
		return nil, err
	}
	b.OnClose(store)
	return blacklist.New(cfg, store)
}

// blacklistConfig maps policy.blacklist and recipient_delimiter.
func blacklistConfig(c *config.Config) blacklist.Config {
	return blacklist.Config{
		RecipientDelimiter: c.RecipientDelim,
		// parent_domains: a row for example.org also matches
		// sub.example.org, which is Postfix's default
		// (parent_domain_matches_subdomains); without it only
		// ".example.org" rows match sub-domains.
		SubdomainsNeedDot: !c.Policy.Blacklist.ParentDomains,
	}
}

func newSPF(b *Builder) (policyd.Check, error) {
	cfg, err := spfConfig(b.Config, b.Trusted)
	if err != nil {
		return nil, err
	}
	cfg.Logger = b.Logger
	r, err := b.Resolver()
	if err != nil {
		return nil, err
	}
	if b.Config.Policy.SPF.OwnDomains == "enforce" {
		set := sqlmaps.NewDomainSet(b.Config.Database.Source(), b.Config.Domains)
		b.OnClose(set)
		cfg.OwnDomain = set.Contains
	}
	if !b.opts.NoSeal {
		key, err := seal.LoadOrCreate(filepath.Join(b.Config.Paths.PostkitRun, seal.KeyFile))
		if err != nil {
			return nil, fmt.Errorf("policyd: %w", err)
		}
		cfg.Seal = func(r *policyd.Request, line string) string {
			port, _ := strconv.Atoi(r.Get("client_port"))
			return key.Seal(seal.Tx{Addr: r.ClientAddr(), Port: port, Helo: r.Helo(), Sender: r.Sender()}, line)
		}
	}
	return spfcheck.New(cfg, r)
}

// spfConfig maps policy.spf, hostname, trusted_networks and the SPF time
// budget; own_domains and the seal need the database and the key file, and
// are the constructor's.
func spfConfig(c *config.Config, trusted []netip.Prefix) (spfcheck.Config, error) {
	p := c.Policy.SPF
	allow, err := prefixes("policy.spf.allow_ips", p.AllowIPs)
	if err != nil {
		return spfcheck.Config{}, err
	}
	return spfcheck.Config{
		Mode:                 spfcheck.Mode(p.Mode),
		Hostname:             c.Hostname,
		TempErrorDefer:       p.TempError == "defer",
		PermErrorReject:      p.PermError == "reject",
		HeloReject:           spfcheck.Level(p.HeloReject),
		MailFromReject:       spfcheck.Level(p.MailFromReject),
		RejectNotPassDomains: append([]string{}, p.RejectNotPassDomains...),
		AllowHelos:           append([]string{}, p.HeloWhitelist...),
		HeaderType:           spfcheck.HeaderType(p.HeaderType),
		AuthservID:           c.Milter.DKIM.AuthservID,
		Trusted:              append([]netip.Prefix{}, trusted...),
		AllowIPs:             allow,
		AllowSenderDomains:   append([]string{}, p.AllowDomains...),
		Timeout:              spfBudget(c.Policy.TimeBudget.D()),
	}, nil
}

func newDNSBL(b *Builder) (policyd.Check, error) {
	cfg, err := dnsblConfig(b.Config, b.Trusted)
	if err != nil {
		return nil, err
	}
	cfg.Logger = b.Logger
	r, err := b.Resolver()
	if err != nil {
		return nil, err
	}
	return dnsbl.New(cfg, r)
}

// dnsblConfig maps policy.dnsbl, trusted_networks (never queried) and the
// DNSBL time budget.
func dnsblConfig(c *config.Config, trusted []netip.Prefix) (dnsbl.Config, error) {
	p := c.Policy.DNSBL
	sites, err := dnsbl.ParseSites(strings.Join(p.Sites, " "))
	if err != nil {
		return dnsbl.Config{}, fmt.Errorf("policyd: policy.dnsbl.sites: %w", err)
	}
	return dnsbl.Config{
		Sites:        sites,
		Threshold:    p.Threshold,
		CheckPrivate: p.CheckPrivate,
		SkipClients:  append([]netip.Prefix{}, trusted...),
		Timeout:      dnsblBudget(c.Policy.TimeBudget.D()),
	}, nil
}

func newGreylist(b *Builder) (policyd.Check, error) {
	cfg, err := greylistConfig(b.Config, b.Trusted)
	if err != nil {
		return nil, err
	}
	cfg.Logger = b.Logger
	// Clients the DNSBL allow-lists (DNSWL) are not greylisted, when
	// policy.checks lists the DNSBL, wherever it runs.
	d, err := b.Check("dnsbl")
	if err != nil {
		return nil, err
	}
	if al, ok := d.(greylist.Allowlist); ok {
		cfg.Allowlist = al
	}
	db, err := b.State()
	if err != nil {
		return nil, err
	}
	return greylist.New(cfg, db)
}

// greylistConfig maps policy.greylist, hostname and trusted_networks (never
// greylisted).
func greylistConfig(c *config.Config, trusted []netip.Prefix) (greylist.Config, error) {
	p := c.Policy.Greylist
	allow, err := prefixes("policy.greylist.allow_ips", p.AllowIPs)
	if err != nil {
		return greylist.Config{}, err
	}
	clients, rcpts := &greylist.ClientList{}, &greylist.RecipientList{}
	for i, e := range p.Clients {
		if err := clients.Add(e); err != nil {
			return greylist.Config{}, fmt.Errorf("policyd: policy.greylist.clients[%d]: %w", i, err)
		}
	}
	for _, f := range p.ClientFiles {
		if err := clients.ReadClientFile(f); err != nil {
			return greylist.Config{}, fmt.Errorf("policyd: policy.greylist.client_files: %w", err)
		}
	}
	for i, e := range p.Recipients {
		if err := rcpts.Add(e); err != nil {
			return greylist.Config{}, fmt.Errorf("policyd: policy.greylist.recipients[%d]: %w", i, err)
		}
	}
	for _, f := range p.RecipientFiles {
		if err := rcpts.ReadRecipientFile(f); err != nil {
			return greylist.Config{}, fmt.Errorf("policyd: policy.greylist.recipient_files: %w", err)
		}
	}
	action := ""
	if p.Text != "" {
		action = "DEFER_IF_PERMIT 4.7.1 " + p.Text
	}
	return greylist.Config{
		OnStoreError:       c.StateErrorAction(),
		Delay:              p.Delay.D(),
		RetryWindow:        p.RetryWindow.D(),
		MaxAge:             p.MaxAge.D(),
		AutoAllowClients:   p.AutoAllow,
		AllowClients:       append(allow, trusted...),
		Clients:            clients,
		Recipients:         rcpts,
		RecipientDelimiter: c.RecipientDelim,
		Privacy:            p.Privacy,
		Action:             action,
		Hostname:           c.Hostname,
	}, nil
}

func newRateLimit(b *Builder) (policyd.Check, error) {
	cfg, err := rateLimitConfig(b.Config)
	if err != nil {
		return nil, err
	}
	cfg.Logger = b.Logger
	db, err := b.State()
	if err != nil {
		return nil, err
	}
	return ratelimit.New(cfg, db)
}

// rateLimitConfig maps policy.ratelimit, each limit checked where it is
// written.
func rateLimitConfig(c *config.Config) (ratelimit.Config, error) {
	cfg := ratelimit.Config{
		// The generated main.cf asks the daemon at RCPT only about inbound
		// mail (permit_sasl_authenticated and permit_mynetworks come
		// first) and at END-OF-MESSAGE about every message: both counters
		// count there, so that authenticated users, who are what limits
		// are mostly about, are counted at all.
		MessageStage:   "END-OF-MESSAGE",
		RecipientStage: "END-OF-MESSAGE",
		OnStoreError:   c.StateErrorAction(),
	}
	for i, l := range c.Policy.RateLimit.Limits {
		where := fmt.Sprintf("policy.ratelimit.limits[%d]", i)
		key, err := ratelimit.ParseKey(l.Key)
		if err != nil {
			return cfg, fmt.Errorf("policyd: %s.key %q: %w", where, l.Key, err)
		}
		count := l.Count
		if count == "" {
			count = string(ratelimit.Messages) // count: left out counts messages
		}
		counter, err := ratelimit.ParseCounter(count)
		if err != nil {
			return cfg, fmt.Errorf("policyd: %s.count %q: %w", where, l.Count, err)
		}
		lim := ratelimit.Limit{Key: key, Counter: counter, Max: int64(l.Max), Window: l.Window.D()}
		if err := lim.Validate(); err != nil {
			return cfg, fmt.Errorf("policyd: %s: %w", where, err)
		}
		cfg.Limits = append(cfg.Limits, lim)
	}
	return cfg, nil
}
