package bayesdb

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/postkit/postkit/internal/pgtest"
	"github.com/postkit/postkit/spam/bayes"
	"github.com/postkit/postkit/spam/bayes/bayestest"
)

func openPG(t *testing.T, dsn string) *PG {
	t.Helper()
	p, err := OpenPG(context.Background(), dsn, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// The PostgreSQL store keeps the contract the SQLite one keeps, and two
// hosts (two pools) share it: a message learned through one is counted by
// the other, and the same message learned through both at once counts once.
func TestPGStore(t *testing.T) {
	srv := pgtest.Start(t)
	t.Run("contract", func(t *testing.T) {
		bayestest.StoreSuite(t, openPG(t, srv.CreateDatabase("bayes_contract")))
	})
	t.Run("two hosts", func(t *testing.T) {
		dsn := srv.CreateDatabase("bayes_shared")
		h1, h2 := openPG(t, dsn), openPG(t, dsn)
		ctx := context.Background()
		now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		toks := []bayes.Token{3, 1, 2}
		var wg sync.WaitGroup
		changed := make([]bool, 8)
		for i := range changed {
			wg.Add(1)
			go func() {
				defer wg.Done()
				h := h1
				if i%2 == 1 {
					h = h2
				}
				c, err := h.Learn(ctx, bayes.Record{ID: "m1", Spam: true, Tokens: toks, At: now}, now)
				if err != nil {
					t.Error(err)
				}
				changed[i] = c
			}()
		}
		wg.Wait()
		n := 0
		for _, c := range changed {
			if c {
				n++
			}
		}
		if n != 1 {
			t.Errorf("one message learned by 8 learners on 2 hosts changed the store %d times; want 1", n)
		}
		counts, err := h2.Counts(ctx, toks)
		if err != nil || len(counts) != 3 || counts[1].Spam != 1 || counts[1].Ham != 0 {
			t.Errorf("counts seen by host 2 = %v, %v; want each token spam 1", counts, err)
		}
		if s, h, err := h1.Totals(ctx); err != nil || s != 1 || h != 0 {
			t.Errorf("totals = %d spam %d ham, %v; want 1, 0", s, h, err)
		}
		// Moved to ham through host 2: host 1 sees it moved.
		if c, err := h2.Learn(ctx, bayes.Record{ID: "m1", Spam: false, Tokens: toks, At: now}, now); err != nil || !c {
			t.Fatalf("relearn as ham = %v, %v", c, err)
		}
		if counts, _ := h1.Counts(ctx, toks); counts[2].Spam != 0 || counts[2].Ham != 1 {
			t.Errorf("after the move host 1 counts %v; want ham 1, spam 0", counts[2])
		}
	})
	t.Run("down and back", func(t *testing.T) {
		dsn := srv.CreateDatabase("bayes_fault")
		p := openPG(t, dsn)
		ctx := context.Background()
		if _, _, err := p.Totals(ctx); err != nil {
			t.Fatal(err)
		}
		srv.Stop()
		start := time.Now()
		if _, err := p.Counts(ctx, []bayes.Token{1}); err == nil {
			t.Error("Counts with the server stopped = nil error")
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("a call with the server down took %v; want it within the connect timeout", d)
		}
		srv.Restart()
		var err error
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if _, _, err = p.Totals(ctx); err == nil {
				break
			}
		}
		if err != nil {
			t.Errorf("10s after the restart: %v; want the pool back", err)
		}
	})
}
