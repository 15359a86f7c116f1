package dnsbl

import (
	"context"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/postkit/postkit/internal/dnsclient"
	"github.com/postkit/postkit/internal/dnstest"
)

// TestOverDNS runs the check through postkit's resolver against the
// loopback DNS server: the resolver's error values must read as "not listed"
// for NXDOMAIN and no-data answers, and as faults for SERVFAIL and timeouts.
func TestOverDNS(t *testing.T) {
	srv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	z, err := dnstest.ParseZone(
		"2.0.0.127.zen.example. 60 IN A 127.0.0.2",
		"2.0.0.127.zen.example. 60 IN A 127.0.0.4",
		"10.2.0.192.zen.example. 60 IN A 127.0.0.3",
		"10.2.0.192.wl.example. 60 IN A 127.0.10.2",
		"11.2.0.192.wl.example. 60 IN A 127.0.10.1",
		`12.2.0.192.zen.example. 60 IN TXT "listed, but no A record"`,
		"13.2.0.192.zen.example. 60 IN A 127.255.255.254",
		"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.zen.example. 60 IN A 127.0.0.2",
	)
	if err != nil {
		t.Fatal(err)
	}
	z.ServFail("14.2.0.192.zen.example")
	z.Timeout("15.2.0.192.zen.example")
	srv.Set(z)

	res, err := dnsclient.New(dnsclient.Config{Servers: []string{srv.Addr()}, Timeout: 200 * time.Millisecond, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(Config{
		Sites:        mustSites(t, "zen.example=127.0.0.[2..11]*2 wl.example=127.0.[0..255].[2..3]*-3"),
		Threshold:    1,
		CheckPrivate: true,
		Timeout:      2 * time.Second,
		Logger:       quietLogger(),
	}, res)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		client string
		want   Result
	}{
		{"127.0.0.2", Result{Score: 2, Listed: []string{"zen.example"}}},
		{"192.0.2.10", Result{Score: -1, Listed: []string{"zen.example"}, Allowed: []string{"wl.example"}}},
		{"192.0.2.11", Result{}}, // 127.0.10.1 is outside wl.example's filter
		{"192.0.2.12", Result{}}, // no A record: not listed
		{"192.0.2.13", Result{Errors: 1}},
		{"192.0.2.14", Result{Errors: 1}},
		{"192.0.2.15", Result{Errors: 1}},
		{"192.0.2.99", Result{}},
		{"2001:db8::1", Result{Score: 2, Listed: []string{"zen.example"}}},
	}
	for _, tt := range tests {
		got := d.Lookup(context.Background(), netip.MustParseAddr(tt.client))
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Lookup(%s) = %+v; want %+v", tt.client, got, tt.want)
		}
	}
}
