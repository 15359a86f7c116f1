package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/internal/dnsclient"
	"github.com/postkit/postkit/internal/seal"
	"github.com/postkit/postkit/milter/filter"
	"github.com/postkit/postkit/milter/forged"
	"github.com/postkit/postkit/milter/ownfrom"
	"github.com/postkit/postkit/policyd/spfcheck"
	"github.com/postkit/postkit/sqlmaps"
)

// inboundOptions configure the last two filters of the chain, which guard
// what only this server may claim: forged (verdict and trace fields a
// message brings along) and ownfrom (our domains in the header From).
type inboundOptions struct {
	// SealKey is the policy daemon's seal key file; "" (no -c): no
	// Received-SPF is taken for ours.
	SealKey string
	// OwnFrom enables ownfrom over Domains and those of Database, for
	// clients outside Exempt (CIDRs). Off without -c.
	OwnFrom  bool
	Domains  []string
	Database string
	Exempt   []string
	Hostname string // receiver name in SPF macros
}

func inboundOptionsFromConfig(c *config.Config) inboundOptions {
	o := inboundOptions{
		SealKey:  filepath.Join(c.Paths.PostkitRun, sealKeyFile),
		OwnFrom:  c.Milter.OwnFrom == "enforce",
		Domains:  append([]string{}, c.Domains...),
		Database: c.Database.Path,
		Hostname: c.Hostname,
	}
	for _, n := range c.Policy.SPF.AllowIPs {
		o.Exempt = append(o.Exempt, string(n))
	}
	return o
}

// ownDomainSets keeps one sqlmaps.DomainSet per database and domain list
// for the life of the process: a reload that keeps them reuses the open
// database instead of leaving one more handle behind.
var ownDomainSets sync.Map

func ownDomainSet(path string, domains []string) *sqlmaps.DomainSet {
	key := path + "\x00" + strings.Join(domains, ",")
	if s, ok := ownDomainSets.Load(key); ok {
		return s.(*sqlmaps.DomainSet)
	}
	s, _ := ownDomainSets.LoadOrStore(key, sqlmaps.NewDomainSet(path, domains))
	return s.(*sqlmaps.DomainSet)
}

// buildInbound returns the forged and ownfrom filters, in that order; they
// come after dkimverify, whose results ownfrom reads.
func buildInbound(o milterOptions, log *slog.Logger) ([]filter.Filter, error) {
	in := o.Inbound
	id := o.AuthservID
	if id == "" {
		id, _ = os.Hostname() // as dkimverify does
	}
	fc := forged.Config{AuthservID: id, Logger: log}
	if in.SealKey != "" {
		kf := seal.NewFile(in.SealKey)
		var warned sync.Once
		fc.Sealed = func(m *filter.Message, value string) bool {
			k, err := kf.Key()
			if err != nil {
				warned.Do(func() {
					log.Warn("milter: no seal key: every Received-SPF is removed, including our policy daemon's; start postkit policyd -c with the same paths.postkit_run", "err", err)
				})
				return false
			}
			return k.Verify(seal.Tx{Addr: m.Conn.Addr, Port: m.Conn.Port, Helo: m.Conn.Helo, Sender: m.MailFrom}, "Received-SPF", value)
		}
	}
	fg, err := forged.New(fc)
	if err != nil {
		return nil, fmt.Errorf("milter: %w", err)
	}
	out := []filter.Filter{fg}
	if !in.OwnFrom {
		return out, nil
	}
	res, err := dnsclient.New(dnsclient.Config{Servers: o.DNSServers, Timeout: o.DNSTimeout})
	if err != nil {
		return nil, fmt.Errorf("milter: From check resolver: %w", err)
	}
	spf, err := spfcheck.New(spfcheck.Config{Hostname: in.Hostname, Trusted: []netip.Prefix{}, Timeout: 8 * time.Second, Logger: log}, res)
	if err != nil {
		return nil, fmt.Errorf("milter: %w", err)
	}
	oc := ownfrom.Config{
		Own: ownDomainSet(in.Database, in.Domains).Contains,
		SPF: func(ctx context.Context, ip netip.Addr, helo, sender string) string {
			return string(spf.CheckHost(ctx, ip, helo, sender).Result)
		},
		Logger: log,
	}
	if o.Verify {
		oc.AuthservID = id
	}
	for _, s := range in.Exempt {
		p, err := config.ParseCIDR(s)
		if err != nil {
			return nil, fmt.Errorf("milter: policy.spf.allow_ips %q: want a CIDR such as 192.0.2.0/24 (%v)", s, err)
		}
		oc.Exempt = append(oc.Exempt, p)
	}
	of, err := ownfrom.New(oc)
	if err != nil {
		return nil, fmt.Errorf("milter: %w", err)
	}
	return append(out, of), nil
}
