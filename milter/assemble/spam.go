package assemble

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/internal/dnsclient"
	"github.com/postkit/postkit/milter/filter"
	"github.com/postkit/postkit/milter/spamcheck"
	"github.com/postkit/postkit/spam"
	"github.com/postkit/postkit/sqlmaps"
)

// SpamConfig maps milter.spam (with database.path, dns and the
// authserv-id) onto the spam engine's Config: the milter's spam filter,
// and any command that reads postkit.yaml (`postkit spam` given the file),
// build their engine from it, so that they read the same rules, Bayes store
// and lists. It creates the Bayes
// store's directory when missing (mode 0750). res answers the DNS
// lists; nil makes one from dns.servers when lists are configured. The
// Closer releases what the mapping opened (the allow lists' database, the
// resolver it made): close it after the engine.
//
// The per-domain allow lists are asked with the recipients of the message
// being scored (spamcheck.Recipients): outside the milter there are none,
// and no domain allows.
func SpamConfig(c *config.Config, res spam.Resolver, log *slog.Logger) (spam.Config, io.Closer, error) {
	s := c.Milter.Spam
	if log == nil {
		log = slog.Default()
	}
	var cl closers
	sc := spam.Config{
		Required:      s.RequiredScore,
		WhitelistFrom: append([]string(nil), s.WhitelistFrom...),
		BlacklistFrom: append([]string(nil), s.BlacklistFrom...),
		AuthServID:    c.Milter.DKIM.AuthservID,
		DNSTimeout:    s.DNSBudget.D(),
		Autolearn:     s.Bayes.Autolearn,
		AutolearnSpam: s.Bayes.AutolearnSpam,
		AutolearnHam:  s.Bayes.AutolearnHam,
		MinSpam:       int64(s.Bayes.MinTrained),
		MinHam:        int64(s.Bayes.MinTrained),
		TokenTTL:      s.Bayes.Expiry.D(),
		Timeout:       engineBudget(s.TimeBudget.D()),
		Logger:        log,
	}
	if s.RulesDir != "" {
		sc.RulesDirs = []string{s.RulesDir}
	}
	if sc.TokenTTL == 0 {
		sc.TokenTTL = -1 // bayes.expiry 0: tokens are kept forever
	}
	if s.Bayes.Enabled {
		driver, dsn, password, err := c.StateStore()
		if err != nil {
			return spam.Config{}, nil, fmt.Errorf("milter: %w", err)
		}
		if driver == "postgresql" {
			// Shared by every host naming the same database (state.dsn).
			sc.BayesDSN, sc.BayesPassword = dsn, password
		} else {
			// As the policy daemon makes its state file's: the store is
			// created at first use, its directory too.
			if err := os.MkdirAll(filepath.Dir(s.Bayes.Path), 0o750); err != nil {
				return spam.Config{}, nil, fmt.Errorf("milter: milter.spam.bayes.path: %w: create the directory, or set paths.postkit_run", err)
			}
			sc.BayesPath = s.Bayes.Path
		}
	}
	for _, l := range s.DNSBL {
		sc.DNSBL = append(sc.DNSBL, spam.DNSList{Name: l.Name, Zone: l.Zone, Score: l.Score, Description: l.Description})
	}
	for _, l := range s.URIBL {
		sc.URIBL = append(sc.URIBL, spam.DNSList{Name: l.Name, Zone: l.Zone, Score: l.Score, Description: l.Description})
	}
	if len(sc.DNSBL)+len(sc.URIBL) > 0 {
		if res == nil {
			r, err := dnsclient.New(dnsclient.Config{Servers: c.DNS.Servers, Timeout: c.DNS.Timeout.D()})
			if err != nil {
				return spam.Config{}, nil, fmt.Errorf("milter: spam DNS lists resolver: %w", err)
			}
			cl = append(cl, r)
			res = r
		}
		sc.Resolver = res
	}
	if s.DomainAllowLists && c.Database.Source().Configured() {
		lists := sqlmaps.NewSpamAllowLists(c.Database.Source())
		cl = append(cl, lists)
		sc.AllowDomain = func(ctx context.Context, domain string) (bool, error) {
			return lists.Allowed(ctx, spamcheck.Recipients(ctx), domain)
		}
	}
	return sc, cl, nil
}

// engineBudget is the engine's own time budget: a little shorter than the
// filter's, so that the engine returns what it found before the filter
// stops waiting.
func engineBudget(d time.Duration) time.Duration {
	margin := d / 10
	if margin < 50*time.Millisecond {
		margin = min(50*time.Millisecond, d/2)
	}
	return d - margin
}

// closers closes in reverse order.
type closers []io.Closer

func (cs closers) Close() error {
	var errs []error
	for i := len(cs) - 1; i >= 0; i-- {
		errs = append(errs, cs[i].Close())
	}
	return errors.Join(errs...)
}

// newSpam is milter.spam: the engine built by SpamConfig, with the chain's
// resolver, behind the spamcheck filter.
func newSpam(b *Builder) (filter.Filter, error) {
	c := b.Config
	s := c.Milter.Spam
	if !s.Enabled {
		return nil, nil
	}
	var res spam.Resolver
	if len(s.DNSBL)+len(s.URIBL) > 0 {
		r, err := b.Resolver()
		if err != nil {
			return nil, fmt.Errorf("milter: spam DNS lists resolver: %w", err)
		}
		res = r
	}
	sc, cl, err := SpamConfig(c, res, b.Logger)
	if err != nil {
		return nil, err
	}
	b.OnClose(cl)
	e, err := spam.New(sc)
	if err != nil {
		return nil, fmt.Errorf("milter: milter.spam: %w", err)
	}
	b.OnClose(e)
	fc := spamcheck.Config{
		Scorer:             e,
		Required:           e.Required(),
		RejectScore:        s.RejectScore,
		RewriteSubject:     s.RewriteSubject,
		Host:               c.Hostname,
		CheckAuthenticated: s.CheckAuthenticated,
		MaxScanBytes:       int(s.MaxScanBytes),
		TimeBudget:         s.TimeBudget.D(),
		Logger:             b.Logger,
		Meter:              b.opts.Meter,
	}
	if fc.OnError, err = spamcheck.ParseOnError(s.OnError); err != nil {
		return nil, fmt.Errorf("milter: %w", err)
	}
	if fc.Report, err = spamcheck.ParseReport(s.Report); err != nil {
		return nil, fmt.Errorf("milter: %w", err)
	}
	f, err := spamcheck.New(fc)
	if err != nil {
		return nil, fmt.Errorf("milter: %w", err)
	}
	return f, nil
}
