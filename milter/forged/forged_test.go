package forged_test

import (
	"bytes"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postkit/postkit/internal/seal"
	"github.com/postkit/postkit/milter/filter"
	"github.com/postkit/postkit/milter/forged"
	"github.com/postkit/postkit/milter/milterd"
	"github.com/postkit/postkit/milter/miltertest"
)

const authservID = "mx.postkit.test"

func newKey(t *testing.T) seal.Key {
	t.Helper()
	k, err := seal.LoadOrCreate(filepath.Join(t.TempDir(), "seal.key"))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// sealedBy is the Config.Sealed that `postkit milter` wires: the
// transaction as the milter saw it.
func sealedBy(k seal.Key) func(m *filter.Message, name, value string) bool {
	return func(m *filter.Message, name, value string) bool {
		return k.Verify(seal.Tx{Addr: m.Conn.Addr, Port: m.Conn.Port, Helo: m.Conn.Helo, Sender: m.MailFrom}, name, value)
	}
}

const ourSPF = "Received-SPF: pass (mx.postkit.test: domain of a@outside.test designates 192.0.2.7 as permitted sender) client-ip=192.0.2.7; envelope-from=a@outside.test; helo=client.outside.test; receiver=mx.postkit.test; identity=mailfrom;"

func TestNew(t *testing.T) {
	if _, err := forged.New(forged.Config{}); err == nil || !strings.Contains(err.Error(), "authserv_id") {
		t.Errorf("no authserv-id: %v, want an error naming milter.dkim.authserv_id", err)
	}
}

// The filter removes what only this server may write, keeps everything
// else in place, and keeps our policy daemon's sealed Received-SPF, on
// inbound and outbound mail alike.
func TestRemoval(t *testing.T) {
	k := newKey(t)
	f, err := forged.New(forged.Config{AuthservID: authservID, Sealed: sealedBy(k)})
	if err != nil {
		t.Fatal(err)
	}
	inbound := miltertest.ConnInfo{Hostname: "client.outside.test", Addr: "192.0.2.7", Port: 40001, Helo: "client.outside.test"}
	tx := seal.Tx{Addr: netip.MustParseAddr("192.0.2.7"), Port: 40001, Helo: "client.outside.test", Sender: "a@outside.test"}
	sealed := k.Seal(tx, ourSPF)
	otherPort := tx
	otherPort.Port = 40002
	replayed := k.Seal(otherPort, ourSPF) // sealed for another connection
	raw := sealed + "\r\n" +
		"X-Spam-Flag: YES\r\n" +
		"Received-SPF: pass (mx.postkit.test: forged at the top of the client's header)\r\n" +
		"Authentication-Results: MX.postkit.test; dkim=pass header.d=example.test\r\n" +
		"Authentication-Results: other.example; spf=pass\r\n" +
		"Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n" +
		replayed + "\r\n" +
		"x-spam-status: Yes, score=99\r\n" +
		"Authentication-Results: (comment) mx.postkit.test (v=1); dkim=pass\r\n" +
		"X-Spammy: not a verdict header, kept\r\n" +
		"From: <a@outside.test>\r\nTo: <u@example.test>\r\nSubject: hi\r\n\r\nbody\r\n"
	want := sealed + "\r\n" +
		"Authentication-Results: other.example; spf=pass\r\n" +
		"Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n" +
		"X-Spammy: not a verdict header, kept\r\n" +
		"From: <a@outside.test>\r\nTo: <u@example.test>\r\nSubject: hi\r\n\r\nbody\r\n"

	for _, tc := range []struct {
		name string
		conn miltertest.ConnInfo
		cfg  milterd.Config
		want string
	}{
		{"inbound", inbound, milterd.Config{Trusted: []netip.Prefix{}}, want},
		// Outbound mail never carries a seal for its transaction (the
		// policy daemon is not asked about it): every Received-SPF goes.
		{"outbound", miltertest.ConnInfo{Hostname: "localhost", Addr: "127.0.0.1", Port: 40001, Helo: "client.outside.test"}, milterd.Config{},
			strings.Replace(want, sealed+"\r\n", "", 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := miltertest.Start(t, "unix", tc.cfg, f)
			c, err := srv.Dial(tc.conn)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			res, err := c.Send(&miltertest.Message{From: "a@outside.test", Rcpts: []string{"u@example.test"}, Raw: []byte(raw)})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(res.Final, []byte(tc.want)) {
				t.Errorf("delivered\n%s\nwant\n%s", res.Final, tc.want)
			}
		})
	}
}

// Without a seal check (no key), no Received-SPF is ours.
func TestNoSealKeepsNoReceivedSPF(t *testing.T) {
	f, err := forged.New(forged.Config{AuthservID: authservID})
	if err != nil {
		t.Fatal(err)
	}
	if f.Needs().Helo {
		t.Error("without seals the filter asks for HELO")
	}
	m := &filter.Message{Conn: &filter.Conn{}, Headers: []filter.Header{{Name: "Received-SPF", Value: "pass"}, {Name: "Subject", Value: "x"}}}
	miltertest.Run(t, m, "", 0, f)
	if len(m.Headers) != 1 || m.Headers[0].Name != "Subject" {
		t.Errorf("headers left %v, want Subject only", m.Headers)
	}
}

func TestJudge(t *testing.T) {
	f, err := forged.New(forged.Config{AuthservID: authservID, Sealed: func(_ *filter.Message, _, v string) bool { return v == "ours" }})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, value string
		remove      bool
	}{
		{"X-Spam-Flag", "NO", true},
		{"X-SPAM-Level", "***", true},
		{"X-Spam", "yes", false}, // not the X-Spam-* family
		{"X-Postkit-DMARC", "quarantine; domain=example.com; policy=reject", true},
		{"X-Spamd-Result", "x", false},
		{"Received-SPF", "ours", false},
		{"received-spf", "pass", true},
		{"Authentication-Results", "mx.postkit.test; none", true},
		{"Authentication-Results", "mx.postkit.test", true},
		{"Authentication-Results", "mx.postkit.test.evil; none", false},
		{"Authentication-Results", "other; dkim=pass (mx.postkit.test)", false},
		{"ARC-Authentication-Results", "i=1; mx.postkit.test; dkim=pass", false},
		{"Subject", "X-Spam-Flag: YES", false},
	}
	for _, tt := range tests {
		got := f.Judge(&filter.Message{}, filter.Header{Name: tt.name, Value: tt.value}) != ""
		if got != tt.remove {
			t.Errorf("Judge(%s: %s) removes = %v, want %v", tt.name, tt.value, got, tt.remove)
		}
	}
}

// With policy.spf.header_type ar the policy daemon writes its result as an
// Authentication-Results field with our authserv-id, sealed: that one is
// kept, an unsealed or replayed copy goes.
func TestSealedAuthenticationResults(t *testing.T) {
	k := newKey(t)
	f, err := forged.New(forged.Config{AuthservID: authservID, Sealed: sealedBy(k)})
	if err != nil {
		t.Fatal(err)
	}
	tx := seal.Tx{Addr: netip.MustParseAddr("192.0.2.7"), Port: 40001, Helo: "client.outside.test", Sender: "a@outside.test"}
	m := &filter.Message{Conn: &filter.Conn{Addr: tx.Addr, Port: tx.Port, Helo: tx.Helo}, MailFrom: tx.Sender}
	const ar = "Authentication-Results: mx.postkit.test; spf=pass (mx.postkit.test: ok) smtp.mailfrom=a@outside.test"
	other := tx
	other.Port++
	for _, c := range []struct {
		line string
		keep bool
	}{
		{k.Seal(tx, ar), true},
		{k.Seal(other, ar), false},
		{ar, false},
		{strings.Replace(k.Seal(tx, ar), "spf=pass", "spf=pass; dkim=pass header.d=outside.test", 1), false},
	} {
		name, value, _ := strings.Cut(c.line, ": ")
		if why := f.Judge(m, filter.Header{Name: name, Value: value}); (why == "") != c.keep {
			t.Errorf("%q: judged %q; keep %v", c.line, why, c.keep)
		}
	}
}
