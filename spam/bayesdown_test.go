package spam

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/postkit/postkit/spam/bayes"
)

// downStore is a Bayes store whose server cannot be reached.
type downStore struct{ bayes.Store }

var errDown = errors.New("bayesdb: postgresql unreachable")

func (downStore) Totals(context.Context) (int64, int64, error) { return 0, 0, errDown }
func (downStore) Counts(context.Context, []bayes.Token) (map[bayes.Token]bayes.Count, error) {
	return nil, errDown
}
func (downStore) Learn(context.Context, bayes.Record, time.Time) (bool, error) { return false, errDown }
func (downStore) Close() error                                                 { return nil }

// A message is scored without Bayes when the store is down, and
// X-Spam-Status says so; the rules still decide (GTUBE is still spam).
func TestScoreWithBayesDown(t *testing.T) {
	e := newTestEngine(t, Config{Store: downStore{}})
	r, err := e.Score(context.Background(), Input{Raw: readTestdata(t, "plain.eml")})
	if err != nil {
		t.Fatalf("Score with the Bayes store down = %v; want a result", err)
	}
	if r.Bayes >= 0 || r.BayesNote != "store error" || !hasHit(r, HitBayesDown) {
		t.Errorf("Bayes %v note %q hits %s; want no Bayes, note store error, %s", r.Bayes, r.BayesNote, hitNames(r), HitBayesDown)
	}
	if st := Status(r); !strings.Contains(st, HitBayesDown) {
		t.Errorf("X-Spam-Status %q does not say Bayes was down", st)
	}
	g, err := e.Score(context.Background(), Input{Raw: readTestdata(t, "gtube.eml")})
	if err != nil || !g.Spam() {
		t.Errorf("GTUBE with Bayes down: spam %v, %v; want spam", g.Spam(), err)
	}
}
