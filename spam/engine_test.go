package spam

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/postkit/postkit/spam/bayes"
)

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newTestEngine(t *testing.T, cfg Config) *Engine {
	t.Helper()
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func hitNames(r Result) string {
	var n []string
	for _, h := range r.Hits {
		n = append(n, h.Name)
	}
	return strings.Join(n, ",")
}

// GTUBE scores at least 1000 with the shipped rules and an untrained Bayes
// store; a plain message stays far below the required score.
func TestGTUBEAndPlain(t *testing.T) {
	e := newTestEngine(t, Config{Store: bayes.NewMemStore()})
	ctx := context.Background()
	r, err := e.Score(ctx, Input{Raw: readTestdata(t, "gtube.eml")})
	if err != nil {
		t.Fatal(err)
	}
	if r.Score < 1000 || !r.Spam() || !strings.Contains(hitNames(r), "GTUBE") {
		t.Errorf("GTUBE: score %.1f, hits %s; want >= 1000 with GTUBE", r.Score, hitNames(r))
	}
	r, err = e.Score(ctx, Input{Raw: readTestdata(t, "plain.eml")})
	if err != nil {
		t.Fatal(err)
	}
	if r.Score >= 1 || r.Spam() {
		t.Errorf("plain: score %.1f, hits %s; want < 1", r.Score, hitNames(r))
	}
	if r.Bayes != -1 || !strings.Contains(r.BayesNote, "not enough training") {
		t.Errorf("untrained Bayes voted: %v %q", r.Bayes, r.BayesNote)
	}
}
