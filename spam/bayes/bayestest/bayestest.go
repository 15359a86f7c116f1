// Package bayestest checks implementations of bayes.Store.
package bayestest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/postkit/postkit/spam/bayes"
	"github.com/postkit/postkit/spam/content"
)

func classifier(st bayes.Store, now *time.Time) *bayes.Classifier {
	return &bayes.Classifier{Store: st, MinSpam: 2, MinHam: 2, Now: func() time.Time { return *now }}
}

func msgTokens(s string) []bayes.Token {
	return bayes.Tokenize(content.Parse(context.Background(), []byte(s), content.Limits{}))
}

// StoreSuite checks a bayes.Store against the contract the classifier
// relies on: idempotent learning, moving, forgetting, voting thresholds and
// expiry by access time (with a fake clock). st must be empty.
func StoreSuite(t *testing.T, st bayes.Store) {
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := classifier(st, &now)
	spamToks := msgTokens("Subject: cheap pills\n\nbuy cheap pills online now viagra")
	hamToks := msgTokens("Subject: meeting\n\nthe meeting notes for thursday are attached")

	ch, err := c.Learn(ctx, "s1", spamToks, true)
	if err != nil || !ch {
		t.Fatalf("first Learn = %v, %v; want changed", ch, err)
	}
	ch, err = c.Learn(ctx, "s1", spamToks, true)
	if err != nil || ch {
		t.Fatalf("second Learn = %v, %v; want unchanged (idempotent)", ch, err)
	}
	if s, h, _ := st.Totals(ctx); s != 1 || h != 0 {
		t.Fatalf("totals %d spam %d ham; want 1, 0", s, h)
	}
	counts, _ := st.Counts(ctx, spamToks[:1])
	if counts[spamToks[0]] != (bayes.Count{Spam: 1}) {
		t.Errorf("count %v; want one spam", counts[spamToks[0]])
	}
	// Moved to ham: the spam counts are taken back.
	if ch, err := c.Learn(ctx, "s1", spamToks, false); err != nil || !ch {
		t.Fatalf("Learn as ham = %v, %v; want changed", ch, err)
	}
	if s, h, _ := st.Totals(ctx); s != 0 || h != 1 {
		t.Fatalf("after move: %d spam %d ham; want 0, 1", s, h)
	}
	counts, _ = st.Counts(ctx, spamToks[:1])
	if counts[spamToks[0]] != (bayes.Count{Ham: 1}) {
		t.Errorf("after move count %v; want one ham", counts[spamToks[0]])
	}
	if ch, err := c.Forget(ctx, "s1"); err != nil || !ch {
		t.Fatalf("Forget = %v, %v", ch, err)
	}
	if ch, _ := c.Forget(ctx, "s1"); ch {
		t.Error("second Forget changed something")
	}
	if s, h, _ := st.Totals(ctx); s != 0 || h != 0 {
		t.Fatalf("after forget: %d spam %d ham; want 0, 0", s, h)
	}
	if counts, _ := st.Counts(ctx, spamToks); len(counts) != 0 {
		t.Errorf("after forget %d tokens remain; want none", len(counts))
	}

	// Too little training: no vote.
	v, err := c.Classify(ctx, spamToks)
	if err != nil || v.Prob != -1 || v.Note == "" {
		t.Fatalf("untrained Classify = %+v, %v; want no vote with a note", v, err)
	}
	for i := 0; i < 3; i++ {
		c.Learn(ctx, fmt.Sprintf("s%d", i), append(spamToks, bayes.Hash(fmt.Sprint("s", i))), true)
		c.Learn(ctx, fmt.Sprintf("h%d", i), append(hamToks, bayes.Hash(fmt.Sprint("h", i))), false)
	}
	if v, _ := c.Classify(ctx, spamToks); v.Prob < 0.9 {
		t.Errorf("spam classified %v; want > 0.9", v.Prob)
	}
	if v, _ := c.Classify(ctx, hamToks); v.Prob < 0 || v.Prob > 0.1 {
		t.Errorf("ham classified %v; want < 0.1", v.Prob)
	}

	// Expiry with the clock: tokens learned a year ago go, fresh ones stay.
	now = now.Add(365 * 24 * time.Hour)
	fresh := []bayes.Token{bayes.Hash("fresh-token")}
	c.Learn(ctx, "fresh", fresh, false)
	n, err := st.Expire(ctx, now.Add(-30*24*time.Hour))
	if err != nil || n == 0 {
		t.Fatalf("Expire = %d, %v; want the old tokens removed", n, err)
	}
	if counts, _ := st.Counts(ctx, spamToks); len(counts) != 0 {
		t.Errorf("%d old tokens survived expiry", len(counts))
	}
	if counts, _ := st.Counts(ctx, fresh); len(counts) != 1 {
		t.Error("a fresh token was expired")
	}
	stats, err := st.Stats(ctx)
	if err != nil || stats.Spam != 3 || stats.Ham != 4 || stats.Tokens != 1 || stats.Records != 7 || stats.ExpiredTotal != n {
		t.Errorf("Stats = %+v, %v", stats, err)
	}
}
