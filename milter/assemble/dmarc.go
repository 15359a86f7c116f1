package assemble

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/milter/dmarc"
	"github.com/postkit/postkit/milter/dmarc/store"
	"github.com/postkit/postkit/milter/filter"
	"github.com/postkit/postkit/policyd/spfcheck"
)

// newDMARC is milter.dmarc: SPF through the policy daemon's check
// (policyd/spfcheck) over the chain's resolver, in header mode (a HELO fail
// must not hide the MAIL FROM result DMARC aligns), and the evaluations
// recorded in milter.dmarc.report.path, or in PostgreSQL with state.driver
// postgresql (store.OpenConfigured).
func newDMARC(b *Builder) (filter.Filter, error) {
	c := b.Config
	d := c.Milter.DMARC
	if !d.Enabled {
		return nil, nil
	}
	res, err := b.Resolver()
	if err != nil {
		return nil, fmt.Errorf("milter: DMARC resolver: %w", err)
	}
	spf, err := spfcheck.New(spfcheck.Config{Mode: spfcheck.Header, Hostname: c.Hostname, Trusted: []netip.Prefix{}, Timeout: b.Budget, Logger: b.Logger}, res)
	if err != nil {
		return nil, fmt.Errorf("milter: %w", err)
	}
	dc := dmarc.Config{
		Resolver:   res,
		AuthservID: authservID(b),
		Action:     d.Action,
		BadFrom:    d.BadFrom,
		Sealed:     sealed(b),
		SPF: func(ctx context.Context, ip netip.Addr, helo, sender string) (string, string) {
			var o spfcheck.Outcome
			if sender == "" {
				o = spf.Evaluate(ctx, ip, helo, "").MailFrom
			} else {
				o = spf.CheckHost(ctx, ip, helo, sender)
			}
			return string(o.Result), o.Domain
		},
		Timeout: b.Budget,
		Logger:  b.Logger,
	}
	for _, n := range d.TrustedForwarders {
		p, err := config.ParseCIDR(string(n))
		if err != nil {
			return nil, fmt.Errorf("milter: milter.dmarc.trusted_forwarders %q: want a CIDR such as 192.0.2.0/24 (%v)", n, err)
		}
		dc.TrustedForwarders = append(dc.TrustedForwarders, p)
	}
	for _, r := range d.ExemptRecipients {
		dc.ExemptRecipients = append(dc.ExemptRecipients, strings.TrimPrefix(r, "@"))
	}
	dc.ExemptListIDs = append(dc.ExemptListIDs, d.ExemptListIDs...)
	if d.Report.Enabled {
		st, err := store.OpenConfigured(context.Background(), c, true)
		if err != nil {
			return nil, fmt.Errorf("milter: %w", err)
		}
		b.OnClose(st)
		dc.Recorder = st
	}
	f, err := dmarc.New(dc)
	if err != nil {
		return nil, fmt.Errorf("milter: %w", err)
	}
	return f, nil
}
