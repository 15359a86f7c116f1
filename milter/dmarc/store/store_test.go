package store_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/postkit/postkit/milter/dmarc"
	"github.com/postkit/postkit/milter/dmarc/store"
)

// Rows queued by Record are written by Close and read back; sent marks and
// purging work by day.
func TestRecordCloseReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "dmarc.sqlite")
	st, err := store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	day1 := time.Date(2026, 3, 1, 23, 59, 0, 0, time.UTC)
	day2 := day1.Add(2 * time.Minute)
	for i := 0; i < store.FlushRows+10; i++ {
		r := dmarc.Row{Time: day1, PolicyDomain: "example.org", SourceIP: "192.0.2.1", HeaderFrom: "example.org", P: "reject", Pct: 100,
			Disposition: "reject", DKIM: []dmarc.DKIMResult{{Domain: "example.org", Selector: "s", Result: "fail"}}}
		if i%2 == 1 {
			r.Time = day2
		}
		if err := st.Record(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st, err = store.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	days, err := st.Days(ctx)
	if err != nil || len(days) != 2 || days[0] != "2026-03-01" || days[1] != "2026-03-02" {
		t.Fatalf("days %v, %v; want the two UTC days", days, err)
	}
	rows, err := st.Rows(ctx, "2026-03-01")
	if err != nil || len(rows) != (store.FlushRows+10)/2 {
		t.Fatalf("%d rows, %v; want %d", len(rows), err, (store.FlushRows+10)/2)
	}
	if r := rows[0]; r.DKIM[0].Selector != "s" || r.Disposition != "reject" || !r.Time.Equal(day1) {
		t.Errorf("row %+v read back wrong", r)
	}
	if err := st.MarkSent(ctx, "example.org", "2026-03-01", day2); err != nil {
		t.Fatal(err)
	}
	if sent, _ := st.Sent(ctx, "example.org", "2026-03-01"); !sent {
		t.Error("day not marked sent")
	}
	if err := st.Purge(ctx, "2026-03-02"); err != nil {
		t.Fatal(err)
	}
	if days, _ := st.Days(ctx); len(days) != 1 || days[0] != "2026-03-02" {
		t.Errorf("after purge: %v; want only 2026-03-02", days)
	}
}
