package greylist_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/postkit/postkit/policyd"
	"github.com/postkit/postkit/policyd/dnsbl"
	"github.com/postkit/postkit/policyd/greylist"
	"github.com/postkit/postkit/policyd/state"
)

// listedResolver answers every DNSBL query with 127.0.10.2 (a DNSWL entry).
type listedResolver struct{}

func (listedResolver) LookupIP(context.Context, string, string) ([]net.IP, error) {
	return []net.IP{net.IPv4(127, 0, 10, 2)}, nil
}

// ExampleNew wires the checks the way the policy daemon does: one state
// database, a DNSBL whose allow-list score exempts clients from
// greylisting, and an injected clock.
func ExampleNew() {
	dir, _ := os.MkdirTemp("", "postkit-example")
	defer os.RemoveAll(dir)
	db, err := state.Open(filepath.Join(dir, "policyd.sqlite"))
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	sites, _ := dnsbl.ParseSites("list.dnswl.org=127.0.[0..255].[1..3]*-2")
	wl, _ := dnsbl.New(dnsbl.Config{Sites: sites, Threshold: 3, Logger: quiet}, listedResolver{})

	now := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	cfg := greylist.Config{Delay: 5 * time.Minute, RetryWindow: 48 * time.Hour, MaxAge: 35 * 24 * time.Hour, Logger: quiet, Now: clock}
	plain, _ := greylist.New(cfg, db)
	cfg.Allowlist = wl
	withWL, _ := greylist.New(cfg, db)

	r := &policyd.Request{Attrs: map[string]string{
		"protocol_state": "RCPT", "client_address": "192.0.2.1",
		"sender": "alice@example.org", "recipient": "bob@example.net",
	}}
	d, _ := plain.Check(context.Background(), r)
	fmt.Println(d.Action)
	now = now.Add(5 * time.Minute)
	d, _ = plain.Check(context.Background(), r)
	fmt.Printf("%q %s\n", d.Action, d.Reason)
	d, _ = withWL.Check(context.Background(), r)
	fmt.Printf("%q %s\n", d.Action, d.Reason)
	// Output:
	// DEFER_IF_PERMIT 4.7.1 Greylisted, please try again in 300 seconds
	// "" greylist=pass
	// "" greylist=allowlisted
}
