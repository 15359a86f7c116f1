// Package bayes is a Bayesian spam classifier in the line of Paul Graham's
// "A Plan for Spam" as refined by Gary Robinson ("A Statistical Approach to
// the Spam Problem", Linux Journal 2003) and SpamBayes: each token's spam
// probability is Robinson's f(w), shrunk towards an unknown-word prior by how
// often the token was seen, and the strongest clues are combined with Fisher's
// chi-square method, which answers "unsure" (near 0.5) when a message carries
// strong evidence both ways instead of flipping to an extreme.
//
// Tokens come from Tokenize over a content.Message (header fields, decoded
// text and rendered HTML, links, MIME structure); token counts and the
// records of learned messages live in a Store (SQLite in package bayesdb, an
// in-memory one here for tests).
package bayes

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"time"
)

// Token is a hashed token (FNV-1a, 64 bits).
type Token uint64

// Count is how many learned spam and ham messages held a token.
type Count struct {
	Spam, Ham int64
}

// Record is what the store remembers of one learned message, so that
// learning it again changes nothing and learning it the other way (or
// forgetting it) takes back exactly what was added.
type Record struct {
	ID     string // MessageKey: Message-ID and body digest
	Spam   bool
	Tokens []Token
	At     time.Time
}

// Stats are a store's totals.
type Stats struct {
	Spam, Ham    int64     // messages learned
	Tokens       int64     // distinct tokens
	Records      int64     // learned-message records
	OldestAtime  time.Time // tokens' access times (the last learning that held them)
	NewestAtime  time.Time
	LastExpire   time.Time // the cutoff of the last expiry: older tokens were removed
	ExpiredTotal int64     // tokens removed by expiry, in all
}

// Store keeps token counts and learned-message records. Implementations are
// safe for concurrent use. A store shared by several hosts implements the
// same interface.
type Store interface {
	// Totals returns the numbers of spam and ham messages learned.
	Totals(ctx context.Context) (spam, ham int64, err error)
	// Counts returns the counts of those of toks the store knows.
	Counts(ctx context.Context, toks []Token) (map[Token]Count, error)
	// Record returns the record of the learned message id.
	Record(ctx context.Context, id string) (Record, bool, error)
	// Learn adds r's tokens to the counts of its class and records it, in
	// one transaction: nothing changes when r.ID is already learned the same
	// way, and a message learned the other way is taken back first (by the
	// tokens its record holds), so that concurrent learners never count a
	// message twice. Tokens touched get now as their access time.
	Learn(ctx context.Context, r Record, now time.Time) (changed bool, err error)
	// Forget takes back the learning of message id and deletes its record,
	// in one transaction; changed is false when it was not learned.
	Forget(ctx context.Context, id string) (changed bool, err error)
	// Expire removes the tokens whose access time is before t and returns
	// how many it removed.
	Expire(ctx context.Context, t time.Time) (int64, error)
	Stats(ctx context.Context) (Stats, error)
	Close() error
}

// Parameters of the classifier. Zero fields take the defaults.
type Params struct {
	// Strength (s) and Prior (x) of Robinson's f(w) = (s·x + n·p(w)) /
	// (s + n): a token seen n times moves away from x as n grows.
	// Defaults 0.2 and 0.5 (SpamBayes uses 0.45 and 0.5; 0.2 was chosen
	// by 5-fold cross-validation on the train part of the SpamAssassin
	// corpus, see BENCHMARKS.md).
	Strength, Prior float64
	// MinStrength: tokens whose f(w) is within MinStrength of 0.5 are not
	// clues. Default 0.05 (chosen the same way; SpamBayes uses 0.1).
	MinStrength float64
	// MaxClues bounds the clues combined, strongest first. Default 150.
	MaxClues int
}

func (p Params) withDefaults() Params {
	if p.Strength <= 0 {
		p.Strength = 0.2
	}
	if p.Prior <= 0 {
		p.Prior = 0.5
	}
	if p.MinStrength <= 0 {
		p.MinStrength = 0.05
	}
	if p.MaxClues <= 0 {
		p.MaxClues = 150
	}
	return p
}

// TokenProb is Robinson's f(w) for a token held by c.Spam of nspam learned
// spam and c.Ham of nham learned ham.
func (p Params) TokenProb(c Count, nspam, nham int64) float64 {
	p = p.withDefaults()
	if nspam <= 0 || nham <= 0 {
		return p.Prior
	}
	sr := float64(c.Spam) / float64(nspam)
	hr := float64(c.Ham) / float64(nham)
	if sr > 1 {
		sr = 1
	}
	if hr > 1 {
		hr = 1
	}
	n := float64(c.Spam + c.Ham)
	if sr+hr == 0 {
		return p.Prior
	}
	pw := sr / (sr + hr)
	return (p.Strength*p.Prior + n*pw) / (p.Strength + n)
}

// Chi2Q is the probability that a chi-square variable with v degrees of
// freedom (v even) exceeds x2: the survival function, summed as the Poisson
// series e^(-m) Σ m^i/i! for i < v/2, m = x2/2.
func Chi2Q(x2 float64, v int) float64 {
	if v <= 0 || v%2 != 0 {
		return math.NaN()
	}
	m := x2 / 2
	term := math.Exp(-m)
	sum := term
	for i := 1; i < v/2; i++ {
		term *= m / float64(i)
		sum += term
	}
	return math.Min(sum, 1)
}

// Combine combines the token probabilities with Fisher's method. If the
// clues were independent and uniformly random, −2·Σ ln p and −2·Σ ln(1−p)
// would each follow a chi-square distribution with 2n degrees of freedom;
// Ham = 1 − Q(−2·Σ ln p) is high when the probabilities are low (ham
// evidence), Spam = 1 − Q(−2·Σ ln(1−p)) when they are high, and the result
// (1 + Spam − Ham) / 2 is near 1 for spam, near 0 for ham, and near 0.5 when
// the evidence is weak or points both ways. With no clues it is 0.5.
func Combine(probs []float64) float64 {
	n := len(probs)
	if n == 0 {
		return 0.5
	}
	// Sum logs instead of multiplying: no underflow with 150 clues.
	var lnP, lnQ float64
	for _, p := range probs {
		p = math.Min(math.Max(p, 1e-12), 1-1e-12)
		lnP += math.Log(p)
		lnQ += math.Log(1 - p)
	}
	ham := 1 - Chi2Q(-2*lnP, 2*n)
	spam := 1 - Chi2Q(-2*lnQ, 2*n)
	return (1 + spam - ham) / 2
}

// Clue is one token's contribution to a verdict.
type Clue struct {
	Token Token
	Prob  float64
	Count Count
}

// Verdict is what Classify found.
type Verdict struct {
	// Prob is the spam probability, or -1 when the classifier did not vote.
	Prob float64
	// Note says why it did not vote.
	Note  string
	Clues []Clue
	Spam  int64 // messages learned when classifying
	Ham   int64
}

// Classifier classifies token sets against a Store and learns them.
type Classifier struct {
	Store  Store
	Params Params
	// MinSpam and MinHam are the learned messages needed before the
	// classifier votes. Default 200 each.
	MinSpam, MinHam int64
	Now             func() time.Time
}

func (c *Classifier) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// Classify returns the spam probability of a message with the tokens toks.
func (c *Classifier) Classify(ctx context.Context, toks []Token) (Verdict, error) {
	nspam, nham, err := c.Store.Totals(ctx)
	if err != nil {
		return Verdict{Prob: -1, Note: "store error"}, err
	}
	minS, minH := c.MinSpam, c.MinHam
	if minS <= 0 {
		minS = 200
	}
	if minH <= 0 {
		minH = 200
	}
	v := Verdict{Prob: -1, Spam: nspam, Ham: nham}
	if nspam < minS || nham < minH {
		v.Note = fmt.Sprintf("not enough training: %d spam and %d ham learned, %d and %d needed", nspam, nham, minS, minH)
		return v, nil
	}
	counts, err := c.Store.Counts(ctx, toks)
	if err != nil {
		v.Note = "store error"
		return v, err
	}
	p := c.Params.withDefaults()
	clues := make([]Clue, 0, len(counts))
	for t, cnt := range counts {
		pr := p.TokenProb(cnt, nspam, nham)
		if math.Abs(pr-0.5) >= p.MinStrength {
			clues = append(clues, Clue{Token: t, Prob: pr, Count: cnt})
		}
	}
	sort.Slice(clues, func(i, j int) bool {
		di, dj := math.Abs(clues[i].Prob-0.5), math.Abs(clues[j].Prob-0.5)
		if di != dj {
			return di > dj
		}
		return clues[i].Token < clues[j].Token
	})
	if len(clues) > p.MaxClues {
		clues = clues[:p.MaxClues]
	}
	probs := make([]float64, len(clues))
	for i, cl := range clues {
		probs[i] = cl.Prob
	}
	v.Prob = Combine(probs)
	v.Clues = clues
	return v, nil
}

// ErrNoID is returned for a message without an identity to record.
var ErrNoID = errors.New("bayes: message has no identity")

// Learn learns the message id with tokens toks as spam or ham. It changes
// nothing when the message was learned the same way already; learned the
// other way, it is moved.
func (c *Classifier) Learn(ctx context.Context, id string, toks []Token, spam bool) (bool, error) {
	if id == "" {
		return false, ErrNoID
	}
	now := c.now()
	return c.Store.Learn(ctx, Record{ID: id, Spam: spam, Tokens: toks, At: now}, now)
}

// Forget takes back the learning of message id, if any.
func (c *Classifier) Forget(ctx context.Context, id string) (bool, error) {
	return c.Store.Forget(ctx, id)
}
