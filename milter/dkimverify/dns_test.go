package dkimverify

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/authres"
	"github.com/postkit/postkit/internal/dkimkey"
	"github.com/postkit/postkit/internal/dnsclient"
	"github.com/postkit/postkit/internal/dnstest"
)

// TestThroughResolver verifies through postkit's resolver and a loopback DNS
// server: a 2048-bit key record split in several strings passes, SERVFAIL is
// temperror, a missing record permerror.
func TestThroughResolver(t *testing.T) {
	msg, _ := signed(t, plain)
	srv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	rk, ek := testRSAKey(t), edKey()
	rrec, _ := dkimkey.Record(rk.Public())
	erec, _ := dkimkey.Record(ek.Public())
	res, err := dnsclient.New(dnsclient.Config{Servers: []string{srv.Addr()}, Timeout: time.Second, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	v, err := New(Config{Resolver: res, AuthservID: "mx", Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		servfail bool
		noEd     bool
		want     []authres.ResultValue
	}{
		{"published", false, false, []authres.ResultValue{authres.ResultPass, authres.ResultPass}},
		{"servfail", true, false, []authres.ResultValue{authres.ResultTempError, authres.ResultPass}},
		{"missing", false, true, []authres.ResultValue{authres.ResultPass, authres.ResultPermError}},
	}
	for _, tc := range tests {
		z := dnstest.NewZone()
		z.AddTXT("r._domainkey.example.org.", 300, dkimkey.SplitTXT(rrec, 250)...)
		if !tc.noEd {
			z.AddTXT("e._domainkey.example.org.", 300, erec)
		}
		if tc.servfail {
			z.ServFail("r._domainkey.example.org.")
		}
		srv.Set(z)
		// A fresh resolver per case: the cache would keep the last answer.
		res, _ = dnsclient.New(dnsclient.Config{Servers: []string{srv.Addr()}, Timeout: time.Second, Attempts: 1})
		v.res = res
		got, err := v.VerifyMessage(context.Background(), strings.NewReader(msg))
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(tc.want) {
			t.Fatalf("%s: %+v", tc.name, got)
		}
		for i, w := range tc.want {
			if got[i].Value != w {
				t.Errorf("%s: signature %d (s=%s) = %s (%s); want %s", tc.name, i, got[i].Selector, got[i].Value, got[i].Reason, w)
			}
		}
	}
}
