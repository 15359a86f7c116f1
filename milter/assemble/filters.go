package assemble

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/internal/seal"
	"github.com/postkit/postkit/milter/dkimsign"
	"github.com/postkit/postkit/milter/dkimverify"
	"github.com/postkit/postkit/milter/filter"
	"github.com/postkit/postkit/milter/forged"
	"github.com/postkit/postkit/milter/ownfrom"
	"github.com/postkit/postkit/milter/scrub"
	"github.com/postkit/postkit/policyd/spfcheck"
	"github.com/postkit/postkit/sqlmaps"
)

// newScrub is milter.scrub: the built-in rules unless rules are given.
func newScrub(b *Builder) (filter.Filter, error) {
	sc := b.Config.Milter.Scrub
	if !sc.Enabled {
		return nil, nil
	}
	var rules []scrub.Rule
	for _, r := range sc.Rules {
		rules = append(rules, scrub.Rule{Header: r.Header, Match: r.Match, Action: r.Action, Replace: r.With})
	}
	f, err := scrub.New(scrub.Config{Rules: rules})
	if err != nil {
		return nil, fmt.Errorf("milter: %w", err)
	}
	return f, nil
}

// newSigner is milter.dkim's signing half: the keys, and the sender-login
// check over database.path for authenticated mail.
func newSigner(b *Builder) (filter.Filter, error) {
	c := b.Config
	d := c.Milter.DKIM
	if !d.Sign {
		return nil, nil
	}
	var keys []dkimsign.Key
	for _, k := range d.Keys {
		dom := normDomain(k.Domain)
		file := k.KeyFile
		if file == "" {
			// The layout of `postkit dkim keygen` and Debian's /etc/dkimkeys.
			file = filepath.Join(d.KeyDir, dom, k.Selector+".private")
		}
		keys = append(keys, dkimsign.Key{Domain: dom, Selector: k.Selector, KeyFile: file, Disabled: k.Disabled, From: k.From})
	}
	if len(keys) == 0 {
		b.Logger.Warn("milter: no DKIM key configured (milter.dkim.keys or --dkim-key): outbound mail is not DKIM-signed")
		return nil, nil
	}
	cfg := dkimsign.Config{Keys: keys, Canonicalization: d.Canonicalization, Subdomains: d.Subdomains,
		SenderTimeout: b.Budget, Logger: b.Logger, Meter: b.opts.Meter}
	var err error
	if cfg.Unowned, err = dkimsign.ParseUnowned(d.UnownedFrom); err != nil {
		return nil, fmt.Errorf("milter: %w", err)
	}
	if !c.Database.Source().Configured() {
		b.Logger.Warn("milter: no database (--db or -c): authenticated mail is signed whatever its From says")
	} else {
		rules := SenderRules(c)
		// The map is built now so that a bad grant stops the (re)load
		// rather than a message.
		m, _ := sqlmaps.MapByName(sqlmaps.SenderLoginMap)
		if _, err := m.With(rules); err != nil {
			return nil, fmt.Errorf("milter: sender_logins: %w", err)
		}
		fold := sqlmaps.FoldASCII
		if c.SMTPUTF8 {
			fold = sqlmaps.FoldUTF8
		}
		s := newSenders(c.Database.Source(), rules, fold)
		b.OnClose(s)
		cfg.Senders = s
	}
	s, err := dkimsign.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("milter: %w", err)
	}
	return s, nil
}

// newVerifier is milter.dkim's verifying half, with the chain's resolver.
func newVerifier(b *Builder) (filter.Filter, error) {
	d := b.Config.Milter.DKIM
	if !d.Verify {
		return nil, nil
	}
	res, err := b.Resolver()
	if err != nil {
		return nil, fmt.Errorf("milter: DKIM verification resolver: %w", err)
	}
	bl, err := dkimverify.ParseBodyLength(d.BodyLength)
	if err != nil {
		return nil, fmt.Errorf("milter: milter.dkim.body_length: %w", err)
	}
	return dkimverify.New(dkimverify.Config{Resolver: res, AuthservID: d.AuthservID, LookupTimeout: b.Budget, BodyLength: bl, Sealed: sealed(b), Logger: b.Logger, Meter: b.opts.Meter})
}

// authservID is the id of our Authentication-Results: milter.dkim.authserv_id,
// else the host name, as dkimverify takes it.
func authservID(b *Builder) string {
	if id := b.Config.Milter.DKIM.AuthservID; id != "" {
		return id
	}
	id, _ := os.Hostname()
	return id
}

// newForged removes the verdicts only this server may write; a
// Received-SPF, or an Authentication-Results with our authserv-id, is ours
// when it carries the seal of the policy daemon's key.
func newForged(b *Builder) (filter.Filter, error) {
	fc := forged.Config{AuthservID: authservID(b), Sealed: sealed(b), Logger: b.Logger}
	f, err := forged.New(fc)
	if err != nil {
		return nil, fmt.Errorf("milter: %w", err)
	}
	return f, nil
}

// sealed is the check of the policy daemon's seal on a field, or nil
// without seals (Options.NoSeal).
func sealed(b *Builder) func(m *filter.Message, name, value string) bool {
	if b.opts.NoSeal {
		return nil
	}
	kf := seal.NewFile(filepath.Join(b.Config.Paths.PostkitRun, seal.KeyFile))
	log := b.Logger
	var warned sync.Once
	return func(m *filter.Message, name, value string) bool {
		k, err := kf.Key()
		if err != nil {
			warned.Do(func() {
				log.Warn("milter: no seal key: every Received-SPF is removed, including our policy daemon's; start postkit policyd -c with the same paths.postkit_run", "err", err)
			})
			return false
		}
		return k.Verify(seal.Tx{Addr: m.Conn.Addr, Port: m.Conn.Port, Helo: m.Conn.Helo, Sender: m.MailFrom}, name, value)
	}
}

// newOwnFrom is milter.own_from: our domains (domains and the database's)
// in From, for clients outside policy.spf.allow_ips, with SPF through the
// chain's resolver.
func newOwnFrom(b *Builder) (filter.Filter, error) {
	c := b.Config
	if c.Milter.OwnFrom != "enforce" {
		return nil, nil
	}
	res, err := b.Resolver()
	if err != nil {
		return nil, fmt.Errorf("milter: From check resolver: %w", err)
	}
	spf, err := spfcheck.New(spfcheck.Config{Hostname: c.Hostname, Trusted: []netip.Prefix{}, Timeout: b.Budget, Logger: b.Logger}, res)
	if err != nil {
		return nil, fmt.Errorf("milter: %w", err)
	}
	own := sqlmaps.NewDomainSet(c.Database.Source(), c.Domains)
	b.OnClose(own)
	oc := ownfrom.Config{
		Own: own.Contains,
		SPF: func(ctx context.Context, ip netip.Addr, helo, sender string) string {
			return string(spf.CheckHost(ctx, ip, helo, sender).Result)
		},
		Logger: b.Logger,
	}
	if c.Milter.DKIM.Verify {
		oc.AuthservID = authservID(b)
	}
	for _, n := range c.Policy.SPF.AllowIPs {
		p, err := config.ParseCIDR(string(n))
		if err != nil {
			return nil, fmt.Errorf("milter: policy.spf.allow_ips %q: want a CIDR such as 192.0.2.0/24 (%v)", n, err)
		}
		oc.Exempt = append(oc.Exempt, p)
	}
	f, err := ownfrom.New(oc)
	if err != nil {
		return nil, fmt.Errorf("milter: %w", err)
	}
	return f, nil
}
