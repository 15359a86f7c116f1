package spam

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/publicsuffix"

	"github.com/postkit/postkit/policyd/dnsbl"
	"github.com/postkit/postkit/spam/bayes"
	"github.com/postkit/postkit/spam/bayesdb"
	"github.com/postkit/postkit/spam/content"
	"github.com/postkit/postkit/spam/rules"
)

// Version is written in X-Spam-Status (version=) and X-Spam-Checker-Version.
const Version = "postkit-spam 1.0"

// Hit names the engine itself writes.
const (
	// HitTimeout is the test named when the time budget ran out.
	HitTimeout = "POSTKIT_TIMEOUT"
	// HitError is the test named when scoring failed.
	HitError = "POSTKIT_ERROR"
	// HitBayesDown is the test (score 0) named when the Bayes store could
	// not be read: the message was scored without Bayes, and X-Spam-Status
	// says so.
	HitBayesDown = "POSTKIT_BAYES_DOWN"
)

// ErrTimeout is returned (wrapped) when the time budget ran out; the Result
// then holds what was found so far and the POSTKIT_TIMEOUT test.
var ErrTimeout = errors.New("spam: time budget exhausted")

// Resolver looks up A records. *dnsclient.Resolver and *net.Resolver
// satisfy it. A name that does not exist must fail with a *net.DNSError
// whose IsNotFound is true.
type Resolver interface {
	LookupIP(ctx context.Context, network, host string) ([]net.IP, error)
}

// DNSList is one DNS block list: a client address list (DNSBL, RFC 5782
// §2.1) or a domain list for the hosts of links (URIBL, RFC 5782 §2.2).
type DNSList struct {
	// Name is the test's name in reports, e.g. RCVD_IN_ZEN, URIBL_DBL.
	Name string
	// Zone is the list's zone with an optional answer filter in
	// postscreen_dnsbl_sites syntax, e.g. "zen.spamhaus.org=127.0.0.[2..11]";
	// without a filter any answer in 127.0.0.0/8 counts.
	Zone string
	// Score is added when the list answers.
	Score       float64
	Description string
}

// Config configures an Engine. Zero fields take the defaults named.
type Config struct {
	// RulesDirs are directories whose *.rules files are read after the
	// shipped rules, in order (files in lexical order within each).
	RulesDirs []string
	// Required is the score from which a message is spam. Default 5.
	Required float64

	// WhitelistFrom and BlacklistFrom are sender patterns as in
	// SpamAssassin's local.cf (whitelist_from *@exemple.fr): * and ?
	// wildcards over the whole address, case-insensitive. They are matched
	// against the From, Sender and Reply-To addresses and the envelope
	// sender, and add to those of the rules files. Like SpamAssassin's,
	// they are not authenticated: AllowDomain is.
	WhitelistFrom, BlacklistFrom []string
	// AllowDomain, when set, reports whether mail from a domain is
	// allow-listed (the SQL store's per-domain allow list). It is asked
	// only for the From domain when SPF (envelope sender in the same
	// organizational domain) or a DKIM signature of that domain passed, as
	// this server's Authentication-Results and Received-SPF fields say, so
	// that a forged From gains nothing. An error counts as not listed and
	// is logged.
	AllowDomain func(ctx context.Context, domain string) (bool, error)
	// AuthServID is this server's authserv-id: only Authentication-Results
	// fields with it are read. Empty: the first Authentication-Results
	// field is read (the milter removes forged ones before scoring).
	AuthServID string

	// Resolver answers DNSBL and URIBL queries; nil disables them.
	Resolver Resolver
	DNSBL    []DNSList
	URIBL    []DNSList
	// DNSTimeout bounds all the DNS queries of one message. Default 2s.
	DNSTimeout time.Duration
	// MaxURIQueries bounds the link domains looked up per message.
	// Default 10.
	MaxURIQueries int
	// CheckPrivateClients also looks up loopback and private client
	// addresses in the DNSBLs (tests); public lists never hold them.
	CheckPrivateClients bool

	// BayesPath is the SQLite Bayes store, created if missing; Store, when
	// set, is used instead (and closed by Close). Neither: no Bayes.
	BayesPath string
	Store     bayes.Store
	// BayesDSN, when set, is a PostgreSQL Bayes store shared by several
	// hosts (bayesdb.OpenPG), with BayesPassword when not empty; it takes
	// the place of BayesPath.
	BayesDSN, BayesPassword string
	// Bayes tunes the classifier.
	Bayes bayes.Params
	// MinSpam and MinHam are the learned messages needed before Bayes
	// votes. Default 200 each.
	MinSpam, MinHam int64
	// Autolearn learns messages whose score without Bayes and sender lists
	// is at least AutolearnSpam (default 12) as spam, and at most
	// AutolearnHam (default 0.1) as ham.
	Autolearn                   bool
	AutolearnSpam, AutolearnHam float64
	// TokenTTL: tokens no learning touched for this long are removed,
	// at most once a day, after a learning. Default 180 days; negative:
	// never.
	TokenTTL time.Duration

	// Timeout is the per-message time budget, on top of the caller's
	// context. Default 10s.
	Timeout time.Duration
	// Limits bound the MIME parsing of one message.
	Limits content.Limits

	Logger *slog.Logger
	Now    func() time.Time
}

// Engine scores and learns messages. It is safe for concurrent use.
type Engine struct {
	cfg   Config
	rules *rules.Set
	allow []string
	block []string
	bayes *bayes.Classifier
	store bayes.Store
	dnsbl []dnsList
	uribl []dnsList
	log   *slog.Logger

	expireMu   sync.Mutex
	lastExpire time.Time
}

type dnsList struct {
	DNSList
	site dnsbl.Site
}

var (
	_ Scorer  = (*Engine)(nil)
	_ Learner = (*Engine)(nil)
)

// New builds an engine: it reads the rules (errors name file:line), opens
// the Bayes store and checks the DNS lists.
func New(cfg Config) (*Engine, error) {
	if cfg.Required == 0 {
		cfg.Required = 5
	}
	if cfg.DNSTimeout <= 0 {
		cfg.DNSTimeout = 2 * time.Second
	}
	if cfg.MaxURIQueries <= 0 {
		cfg.MaxURIQueries = 10
	}
	if cfg.AutolearnSpam == 0 {
		cfg.AutolearnSpam = 12
	}
	if cfg.AutolearnHam == 0 {
		cfg.AutolearnHam = 0.1
	}
	if cfg.AutolearnHam >= cfg.AutolearnSpam {
		return nil, fmt.Errorf("spam: autolearn ham threshold %g must be below the spam threshold %g", cfg.AutolearnHam, cfg.AutolearnSpam)
	}
	if cfg.TokenTTL == 0 {
		cfg.TokenTTL = 180 * 24 * time.Hour
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	set, err := rules.Load(cfg.RulesDirs...)
	if err != nil {
		return nil, err
	}
	for _, w := range set.Warnings {
		log.Warn("spam rules: " + w)
	}
	e := &Engine{cfg: cfg, rules: set, log: log.With("filter", "spam")}
	for _, p := range append(append([]string(nil), set.Allow...), cfg.WhitelistFrom...) {
		if _, err := path.Match(strings.ToLower(p), ""); err != nil {
			return nil, fmt.Errorf("spam: whitelist_from %q: %w; use * and ? wildcards, e.g. *@exemple.fr", p, err)
		}
		e.allow = append(e.allow, strings.ToLower(p))
	}
	for _, p := range append(append([]string(nil), set.Block...), cfg.BlacklistFrom...) {
		if _, err := path.Match(strings.ToLower(p), ""); err != nil {
			return nil, fmt.Errorf("spam: blacklist_from %q: %w; use * and ? wildcards, e.g. *@spammer.example", p, err)
		}
		e.block = append(e.block, strings.ToLower(p))
	}
	for _, group := range []struct {
		in  []DNSList
		out *[]dnsList
		key string
	}{{cfg.DNSBL, &e.dnsbl, "dnsbl"}, {cfg.URIBL, &e.uribl, "uribl"}} {
		for _, l := range group.in {
			site, err := dnsbl.ParseSite(l.Zone)
			if err != nil {
				return nil, fmt.Errorf("spam: %s %s: %w", group.key, l.Name, err)
			}
			if l.Name == "" || strings.ContainsAny(l.Name, " \t,") {
				return nil, fmt.Errorf("spam: %s %s: want a test name without spaces or commas, e.g. RCVD_IN_LIST", group.key, l.Zone)
			}
			*group.out = append(*group.out, dnsList{DNSList: l, site: site})
		}
	}
	if (len(e.dnsbl) > 0 || len(e.uribl) > 0) && cfg.Resolver == nil {
		return nil, errors.New("spam: DNS lists configured without a resolver")
	}
	switch {
	case cfg.Store != nil:
		e.store = cfg.Store
	case cfg.BayesDSN != "":
		db, err := bayesdb.OpenPG(context.Background(), cfg.BayesDSN, cfg.BayesPassword)
		if err != nil {
			return nil, fmt.Errorf("spam: %w", err)
		}
		e.store = db
	case cfg.BayesPath != "":
		db, err := bayesdb.Open(cfg.BayesPath)
		if err != nil {
			return nil, fmt.Errorf("spam: %w", err)
		}
		e.store = db
	}
	if e.store != nil {
		e.bayes = &bayes.Classifier{Store: e.store, Params: cfg.Bayes, MinSpam: cfg.MinSpam, MinHam: cfg.MinHam, Now: cfg.Now}
	}
	return e, nil
}

// Close closes the Bayes store.
func (e *Engine) Close() error {
	if e.store != nil {
		return e.store.Close()
	}
	return nil
}

// Required returns the score from which a message is spam.
func (e *Engine) Required() float64 { return e.cfg.Required }

// Rules returns the engine's compiled rules.
func (e *Engine) Rules() *rules.Set { return e.rules }

// Score implements Scorer. A message is always scored: damaged MIME is
// read as far as it goes. When the time budget (Config.Timeout or ctx)
// runs out, the result holds what was found so far plus POSTKIT_TIMEOUT,
// and the error wraps ErrTimeout; a Bayes store error leaves Bayes out of
// the result (BayesNote says so) and is only logged.
func (e *Engine) Score(ctx context.Context, in Input) (Result, error) {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.Timeout)
	defer cancel()
	res := Result{Required: e.cfg.Required, Bayes: -1, Autolearn: "no"}

	msg := content.Parse(ctx, in.Raw, e.cfg.Limits)

	// DNS lookups run while the rest is computed.
	dnsDone := make(chan []Hit, 1)
	go func() { dnsDone <- e.dnsHits(ctx, in, msg) }()

	facts := e.facts(ctx, in, msg)
	var toks []bayes.Token
	if e.bayes != nil {
		toks = bayes.Tokenize(msg)
		v, err := e.bayes.Classify(ctx, toks)
		switch {
		case err != nil:
			res.BayesNote = "store error"
			res.Hits = append(res.Hits, Hit{Name: HitBayesDown, Description: "Bayes store unreachable: scored without Bayes"})
			e.log.Warn("bayes store unreachable; scoring without Bayes", "err", err)
		default:
			res.Bayes, res.BayesNote = v.Prob, v.Note
		}
	} else {
		res.BayesNote = "no Bayes store"
	}
	rc := &rules.Context{Msg: msg, Raw: in.Raw, Bayes: res.Bayes, Facts: facts, Now: in.Received, Helo: in.Helo}
	hits, evalErr := e.rules.Eval(ctx, rc)
	for _, h := range hits {
		res.Hits = append(res.Hits, Hit(h))
	}
	res.Hits = append(res.Hits, <-dnsDone...)

	timedOut := evalErr != nil || msg.Partial || ctx.Err() != nil
	if timedOut {
		res.Hits = append(res.Hits, Hit{Name: HitTimeout, Description: "Scoring stopped at its time budget"})
	}
	sort.Slice(res.Hits, func(i, j int) bool { return res.Hits[i].Name < res.Hits[j].Name })
	for _, h := range res.Hits {
		res.Score += h.Score
	}
	if timedOut {
		return res, fmt.Errorf("%w after %v", ErrTimeout, e.cfg.Timeout)
	}
	res.Autolearn = e.autolearn(ctx, res, msg, toks)
	return res, nil
}

// learnScore is the score autolearn judges by: without Bayes (it would
// learn from itself) and without the sender lists (an admin's exception
// says nothing about the content).
func learnScore(r Result) float64 {
	var s float64
	for _, h := range r.Hits {
		switch {
		case strings.HasPrefix(h.Name, "BAYES_"), h.Name == "ALLOWLIST_FROM", h.Name == "BLOCKLIST_FROM", h.Name == "ALLOWLIST_DOMAIN":
			continue
		}
		s += h.Score
	}
	return s
}

func (e *Engine) autolearn(ctx context.Context, r Result, msg *content.Message, toks []bayes.Token) string {
	if e.bayes == nil {
		return "unavailable"
	}
	if !e.cfg.Autolearn {
		return "no"
	}
	s := learnScore(r)
	var spam bool
	switch {
	case s >= e.cfg.AutolearnSpam:
		spam = true
	case s <= e.cfg.AutolearnHam:
	default:
		return "no"
	}
	if _, err := e.bayes.Learn(ctx, bayes.MessageKey(msg), toks, spam); err != nil {
		e.log.Warn("autolearn", "err", err)
		return "unavailable"
	}
	e.maybeExpire(ctx)
	if spam {
		return "spam"
	}
	return "ham"
}

// Learn implements Learner.
func (e *Engine) Learn(ctx context.Context, raw []byte, isSpam bool) (bool, error) {
	if e.bayes == nil {
		return false, errors.New("spam: no Bayes store configured; give its path (--bayes, milter.spam.bayes_path)")
	}
	msg := content.Parse(ctx, raw, e.cfg.Limits)
	changed, err := e.bayes.Learn(ctx, bayes.MessageKey(msg), bayes.Tokenize(msg), isSpam)
	if err != nil {
		return false, err
	}
	if changed {
		e.maybeExpire(ctx)
	}
	return changed, nil
}

// Forget implements Learner.
func (e *Engine) Forget(ctx context.Context, raw []byte) (bool, error) {
	if e.bayes == nil {
		return false, errors.New("spam: no Bayes store configured; give its path (--bayes, milter.spam.bayes_path)")
	}
	msg := content.Parse(ctx, raw, e.cfg.Limits)
	return e.bayes.Forget(ctx, bayes.MessageKey(msg))
}

// Stats returns the Bayes store's totals.
func (e *Engine) Stats(ctx context.Context) (bayes.Stats, error) {
	if e.store == nil {
		return bayes.Stats{}, errors.New("spam: no Bayes store configured; give its path (--bayes, milter.spam.bayes_path)")
	}
	return e.store.Stats(ctx)
}

// Expire removes the tokens no learning touched within the token TTL and
// returns how many.
func (e *Engine) Expire(ctx context.Context) (int64, error) {
	if e.store == nil || e.cfg.TokenTTL < 0 {
		return 0, nil
	}
	now := e.cfg.Now()
	n, err := e.store.Expire(ctx, now.Add(-e.cfg.TokenTTL))
	if err == nil {
		e.expireMu.Lock()
		e.lastExpire = now
		e.expireMu.Unlock()
	}
	return n, err
}

// maybeExpire runs Expire when the last run is a day old.
func (e *Engine) maybeExpire(ctx context.Context) {
	if e.cfg.TokenTTL < 0 {
		return
	}
	e.expireMu.Lock()
	due := e.cfg.Now().Sub(e.lastExpire) >= 24*time.Hour
	e.expireMu.Unlock()
	if !due {
		return
	}
	if n, err := e.Expire(ctx); err != nil {
		e.log.Warn("bayes expiry", "err", err)
	} else if n > 0 {
		e.log.Info("bayes expiry", "tokens_removed", n)
	}
}

// senderAddrs are the addresses whitelist_from and blacklist_from match.
func senderAddrs(in Input, msg *content.Message) []string {
	var out []string
	for _, f := range []string{"From", "Sender", "Reply-To"} {
		for _, a := range msg.Addresses(f) {
			if a.Addr != "" {
				out = append(out, strings.ToLower(a.Addr))
			}
		}
	}
	if in.MailFrom != "" {
		out = append(out, strings.ToLower(in.MailFrom))
	}
	return out
}

func matchAny(patterns, addrs []string) bool {
	for _, a := range addrs {
		for _, p := range patterns {
			if ok, _ := path.Match(p, a); ok {
				return true
			}
		}
	}
	return false
}

// facts establishes what rules read through fact(NAME).
func (e *Engine) facts(ctx context.Context, in Input, msg *content.Message) map[string]bool {
	f := map[string]bool{}
	addrs := senderAddrs(in, msg)
	if len(e.allow) > 0 && matchAny(e.allow, addrs) {
		f["from_allowlisted"] = true
	}
	if len(e.block) > 0 && matchAny(e.block, addrs) {
		f["from_blocklisted"] = true
	}
	if in.Truncated || msg.Truncated {
		f["truncated"] = true
	}
	auth := readAuth(msg, e.cfg.AuthServID)
	if auth.spf != "" {
		f["spf_"+auth.spf] = true
	}
	var fromDom string
	if from := msg.Addresses("From"); len(from) > 0 {
		fromDom = content.Domain(from[0].Addr)
	}
	for _, d := range auth.dkim {
		f["dkim_valid"] = true
		if fromDom != "" && orgDomain(d) == orgDomain(fromDom) {
			f["dkim_valid_from"] = true
		}
	}
	if e.cfg.AllowDomain != nil && fromDom != "" {
		authed := f["dkim_valid_from"] ||
			auth.spf == "pass" && in.MailFrom != "" && orgDomain(content.Domain(in.MailFrom)) == orgDomain(fromDom)
		if authed {
			ok, err := e.cfg.AllowDomain(ctx, fromDom)
			if err != nil {
				e.log.Warn("allow-list lookup", "domain", fromDom, "err", err)
			}
			f["domain_allowlisted"] = ok && err == nil
		}
	}
	return f
}

// orgDomain is the registered domain (public suffix plus one label).
func orgDomain(d string) string {
	d = strings.ToLower(strings.TrimSuffix(d, "."))
	if o, err := publicsuffix.EffectiveTLDPlusOne(d); err == nil {
		return o
	}
	return d
}

type authInfo struct {
	spf  string   // pass, fail, softfail, neutral, none…
	dkim []string // d= of passing signatures
}

// readAuth reads this server's Authentication-Results (RFC 8601) for dkim
// and spf results, and falls back to Received-SPF (RFC 7208 §9.1) for SPF.
func readAuth(msg *content.Message, servID string) authInfo {
	var a authInfo
	for _, v := range msg.Values("Authentication-Results") {
		id, rest, _ := strings.Cut(v, ";")
		id = strings.TrimSpace(id)
		if sp := strings.IndexAny(id, " \t"); sp >= 0 {
			id = id[:sp]
		}
		if servID != "" && !strings.EqualFold(id, servID) {
			continue
		}
		for _, res := range strings.Split(rest, ";") {
			res = strings.TrimSpace(res)
			method, val, ok := strings.Cut(res, "=")
			if !ok {
				continue
			}
			result := strings.ToLower(strings.Fields(val + " ")[0])
			switch strings.ToLower(strings.TrimSpace(method)) {
			case "dkim":
				if result == "pass" {
					for _, p := range strings.Fields(val) {
						if d, ok := strings.CutPrefix(strings.ToLower(p), "header.d="); ok {
							a.dkim = append(a.dkim, strings.Trim(d, ";"))
						}
					}
				}
			case "spf":
				if a.spf == "" {
					a.spf = result
				}
			}
		}
		if servID == "" {
			break
		}
	}
	if a.spf == "" {
		if v := msg.Get("Received-SPF"); v != "" {
			a.spf = strings.ToLower(strings.Fields(v + " ")[0])
		}
	}
	return a
}

// dnsHits queries the DNS lists within the DNS budget.
func (e *Engine) dnsHits(ctx context.Context, in Input, msg *content.Message) []Hit {
	if e.cfg.Resolver == nil || len(e.dnsbl)+len(e.uribl) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, e.cfg.DNSTimeout)
	defer cancel()
	type query struct {
		list *dnsList
		name string
	}
	var qs []query
	if ip := in.Client.Unmap(); ip.IsValid() && (e.cfg.CheckPrivateClients || !(ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsUnspecified())) {
		rev := dnsbl.ReverseName(ip)
		for i := range e.dnsbl {
			qs = append(qs, query{&e.dnsbl[i], rev + "." + e.dnsbl[i].site.Domain})
		}
	}
	if len(e.uribl) > 0 {
		seen := map[string]bool{}
		for _, u := range msg.URIs {
			if len(seen) >= e.cfg.MaxURIQueries {
				break
			}
			h := content.Host(u)
			if h == "" {
				continue
			}
			name := orgDomain(h)
			if ip, err := netip.ParseAddr(h); err == nil {
				name = dnsbl.ReverseName(ip)
			}
			if seen[name] {
				continue
			}
			seen[name] = true
			for i := range e.uribl {
				qs = append(qs, query{&e.uribl[i], name + "." + e.uribl[i].site.Domain})
			}
		}
	}
	listed := make([]bool, len(qs))
	var wg sync.WaitGroup
	for i, q := range qs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ips, err := e.cfg.Resolver.LookupIP(ctx, "ip4", q.name)
			if err != nil {
				var de *net.DNSError
				if !errors.As(err, &de) || !de.IsNotFound {
					e.log.Debug("dns list query", "name", q.name, "err", err)
				}
				return
			}
			for _, ip := range ips {
				a, ok := netip.AddrFromSlice(ip)
				if !ok {
					continue
				}
				a = a.Unmap()
				if !a.Is4() || a.As4()[0] != 127 {
					continue
				}
				if q.list.site.Filter.Match(a) {
					listed[i] = true
				}
			}
		}()
	}
	wg.Wait()
	var hits []Hit
	done := map[string]bool{}
	for i, q := range qs {
		if listed[i] && !done[q.list.Name] {
			done[q.list.Name] = true
			hits = append(hits, Hit{Name: q.list.Name, Score: q.list.Score, Description: q.list.Description})
		}
	}
	return hits
}

// Clue is a Bayes token that weighed on a message, for reports.
type Clue struct {
	Token     string
	Prob      float64
	Spam, Ham int64
}

// BayesClues returns the classifier's verdict on raw and its strongest n
// clues (all when n <= 0), as `postkit spam check --clues` prints them.
func (e *Engine) BayesClues(ctx context.Context, raw []byte, n int) (float64, []Clue, error) {
	if e.bayes == nil {
		return -1, nil, errors.New("spam: no Bayes store configured; give its path (--bayes, milter.spam.bayes_path)")
	}
	msg := content.Parse(ctx, raw, e.cfg.Limits)
	words := bayes.Words(msg)
	byTok := make(map[bayes.Token]string, len(words))
	toks := make([]bayes.Token, 0, len(words))
	for _, w := range words {
		t := bayes.Hash(w)
		if _, ok := byTok[t]; !ok {
			byTok[t] = w
			toks = append(toks, t)
		}
	}
	v, err := e.bayes.Classify(ctx, toks)
	if err != nil {
		return -1, nil, err
	}
	var out []Clue
	for _, c := range v.Clues {
		if n > 0 && len(out) >= n {
			break
		}
		out = append(out, Clue{Token: byTok[c.Token], Prob: c.Prob, Spam: c.Count.Spam, Ham: c.Count.Ham})
	}
	return v.Prob, out, nil
}
