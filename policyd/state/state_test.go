package state

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func openTemp(t *testing.T) (*DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.sqlite")
	db, err := Open(path)
	if err != nil {
		t.Fatalf("Open(%s) = %v", path, err)
	}
	t.Cleanup(func() { db.Close() })
	return db, path
}

var t0 = time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)

func TestOpenErrors(t *testing.T) {
	for _, path := range []string{"", "/x?mode=ro", filepath.Join(t.TempDir(), "missing", "dir", "db")} {
		if db, err := Open(path); err == nil {
			db.Close()
			t.Errorf("Open(%q) = nil error; want an error", path)
		}
	}
}

func TestOpenModeAndWAL(t *testing.T) {
	db, path := openTemp(t)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("mode of new database = %v; want 0600", got)
	}
	var mode string
	if err := db.db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" {
		t.Errorf("journal_mode = %q; want wal", mode)
	}
}

func TestTripletRoundTrip(t *testing.T) {
	ctx := context.Background()
	db, path := openTemp(t)
	tests := []struct {
		key string
		in  Triplet
	}{
		{"192.0.2/a@example.org/b@example.net", Triplet{First: t0, Last: t0, Attempts: 1}},
		{"2001:db8::/64/<>/c@example.net", Triplet{First: t0, Last: t0.Add(time.Hour), Passed: t0.Add(10 * time.Minute), Attempts: 3}},
	}
	for _, tt := range tests {
		if _, found, err := db.Triplet(ctx, tt.key); err != nil || found {
			t.Fatalf("Triplet(%q) before Put: found=%v err=%v; want not found", tt.key, found, err)
		}
		if err := db.PutTriplet(ctx, tt.key, tt.in); err != nil {
			t.Fatal(err)
		}
	}
	// Reopen: the state must survive.
	db.Close()
	db2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	for _, tt := range tests {
		got, found, err := db2.Triplet(ctx, tt.key)
		if err != nil || !found {
			t.Fatalf("Triplet(%q) after reopen: found=%v err=%v", tt.key, found, err)
		}
		if !got.First.Equal(tt.in.First) || !got.Last.Equal(tt.in.Last) || !got.Passed.Equal(tt.in.Passed) || got.Attempts != tt.in.Attempts {
			t.Errorf("Triplet(%q) = %+v; want %+v", tt.key, got, tt.in)
		}
	}
}

func TestExpireGreylist(t *testing.T) {
	ctx := context.Background()
	db, _ := openTemp(t)
	day := 24 * time.Hour
	rows := map[string]Triplet{
		"old-unpassed":   {First: t0.Add(-3 * day), Last: t0.Add(-3 * day)},
		"young-unpassed": {First: t0.Add(-time.Hour), Last: t0.Add(-time.Hour)},
		"old-passed":     {First: t0.Add(-40 * day), Last: t0.Add(-36 * day), Passed: t0.Add(-40 * day)},
		"live-passed":    {First: t0.Add(-40 * day), Last: t0.Add(-day), Passed: t0.Add(-40 * day)},
	}
	for k, v := range rows {
		if err := db.PutTriplet(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.PutClient(ctx, "old-client", Client{Count: 9, Last: t0.Add(-36 * day)}); err != nil {
		t.Fatal(err)
	}
	if err := db.PutClient(ctx, "live-client", Client{Count: 2, Last: t0.Add(-day)}); err != nil {
		t.Fatal(err)
	}
	n, err := db.ExpireGreylist(ctx, t0.Add(-2*day), t0.Add(-35*day))
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Errorf("ExpireGreylist deleted %d rows; want 3", n)
	}
	for k, want := range map[string]bool{"old-unpassed": false, "young-unpassed": true, "old-passed": false, "live-passed": true} {
		if _, found, _ := db.Triplet(ctx, k); found != want {
			t.Errorf("after expiry, triplet %q found = %v; want %v", k, found, want)
		}
	}
	for k, want := range map[string]bool{"old-client": false, "live-client": true} {
		if c, found, _ := db.Client(ctx, k); found != want {
			t.Errorf("after expiry, client %q found = %v (%+v); want %v", k, found, c, want)
		}
	}
}

func TestRateBuckets(t *testing.T) {
	ctx := context.Background()
	db, path := openTemp(t)
	adds := []struct {
		key   string
		start time.Time
		n     int64
	}{
		{"k", t0, 1},
		{"k", t0, 2},
		{"k", t0.Add(5 * time.Second), 4},
		{"other", t0, 100},
		{"k", t0.Add(-time.Hour), 50},
	}
	for _, a := range adds {
		if err := db.RateAdd(ctx, a.key, a.start, a.n, a.start.Add(2*time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	db.Close()
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	got, err := db.RateBuckets(ctx, "k", t0.Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	want := []Bucket{{t0, 3}, {t0.Add(5 * time.Second), 4}}
	if len(got) != len(want) {
		t.Fatalf("RateBuckets = %+v; want %+v", got, want)
	}
	for i := range want {
		if !got[i].Start.Equal(want[i].Start) || got[i].Count != want[i].Count {
			t.Errorf("RateBuckets[%d] = %+v; want %+v", i, got[i], want[i])
		}
	}
	n, err := db.ExpireRates(ctx, t0)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("ExpireRates deleted %d; want 1 (the bucket an hour old)", n)
	}
	if b, _ := db.RateBuckets(ctx, "k", time.Time{}); len(b) != 2 {
		t.Errorf("after expiry RateBuckets = %+v; want 2 buckets", b)
	}
}

// TestConcurrentWriters checks that two handles on one file (two daemons, or
// a daemon and an admin command) both write without "database is locked".
func TestConcurrentWriters(t *testing.T) {
	ctx := context.Background()
	a, path := openTemp(t)
	b, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const n = 200
	errc := make(chan error, 2)
	for _, db := range []*DB{a, b} {
		go func(db *DB) {
			for i := 0; i < n; i++ {
				if err := db.RateAdd(ctx, "shared", t0, 1, t0.Add(time.Hour)); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}(db)
	}
	for i := 0; i < 2; i++ {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	got, err := a.RateBuckets(ctx, "shared", t0)
	if err != nil || len(got) != 1 || got[0].Count != 2*n {
		t.Fatalf("RateBuckets = %+v, %v; want one bucket of %d", got, err, 2*n)
	}
}

func TestOpenMemory(t *testing.T) {
	db, err := Open(":memory:")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	if err := db.PutClient(ctx, "k", Client{Count: 2, Last: t0}); err != nil {
		t.Fatal(err)
	}
	if c, found, err := db.Client(ctx, "k"); err != nil || !found || c.Count != 2 || !c.Last.Equal(t0) {
		t.Errorf("Client = %+v, %v, %v; want count 2 at %v", c, found, err, t0)
	}
}
