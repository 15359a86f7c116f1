// Package spam scores a message for spam the way SpamAssassin reports it
// (a score against a required score, and the named tests that made it): the
// rules of a readable rules file, and a Bayes classifier that learns from
// what users file as spam and as ham. It is a library: the milter's spam
// filter and `postkit spam check|learn|stats` only call it.
//
// This file is the contract between the engine and its callers.
package spam

import (
	"context"
	"net/netip"
	"time"
)

// Input is one message to score, with the facts of its SMTP transaction.
type Input struct {
	// Raw is the message as received, header and body, CRLF line endings.
	// The caller bounds it: at most the configured scan size of body.
	Raw []byte
	// Truncated reports that Raw holds only the first part of the body.
	Truncated bool
	// Client is the SMTP client's address; invalid for local submissions.
	Client netip.Addr
	// Helo and MailFrom are the HELO name and the envelope sender (without
	// angle brackets; "" for the null sender).
	Helo, MailFrom string
	// Rcpts are the envelope recipients.
	Rcpts []string
	// Authenticated reports a SASL-authenticated client.
	Authenticated bool
	// Received is when the message arrived; zero for a stored message,
	// whose newest Received field's date stands for it.
	Received time.Time
}

// Hit is one test that matched, with the score it added.
type Hit struct {
	Name        string // e.g. GTUBE, BAYES_99, URIBL_BLACK
	Score       float64
	Description string
}

// Result is the verdict on one message.
type Result struct {
	// Score is the sum of the hits' scores.
	Score float64
	// Required is the score from which the message is spam.
	Required float64
	// Hits are the tests that matched, sorted by name.
	Hits []Hit
	// Bayes is the classifier's spam probability, or -1 when it did not
	// vote (not enough training, no store); BayesNote says why not.
	Bayes     float64
	BayesNote string
	// Autolearn says what autolearn did: "spam", "ham", "no" or
	// "unavailable", as X-Spam-Status writes it.
	Autolearn string
}

// Spam reports whether the result reaches the required score.
func (r Result) Spam() bool { return r.Score >= r.Required }

// Scorer scores messages; implementations are safe for concurrent use.
type Scorer interface {
	Score(ctx context.Context, in Input) (Result, error)
}

// Learner learns a message as spam or ham, idempotently: a message already
// learned the same way is not counted twice (by Message-ID and digest), and
// one learned the other way is moved. It reports whether anything changed.
type Learner interface {
	Learn(ctx context.Context, raw []byte, isSpam bool) (changed bool, err error)
	Forget(ctx context.Context, raw []byte) (changed bool, err error)
}
