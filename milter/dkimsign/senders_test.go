package dkimsign

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postkit/postkit/milter/filter"
	"github.com/postkit/postkit/milter/miltertest"
)

// fakeSenders answers from a fixed table, or fails with err; it records
// every question.
type fakeSenders struct {
	owns map[string][]string // login → addresses
	err  error

	mu    sync.Mutex
	asked []string // "login addr"
}

func (f *fakeSenders) MayUse(ctx context.Context, login, addr string) (bool, error) {
	f.mu.Lock()
	f.asked = append(f.asked, login+" "+addr)
	f.mu.Unlock()
	if _, ok := ctx.Deadline(); !ok {
		return false, errors.New("fake: no deadline on the lookup")
	}
	if f.err != nil {
		return false, f.err
	}
	for _, a := range f.owns[strings.ToLower(login)] {
		if strings.EqualFold(a, addr) {
			return true, nil
		}
	}
	return false, nil
}

// The From header of authenticated mail must be an address the login may
// use: otherwise the message is refused or passed unsigned, as configured,
// and the log says why. Mail without a login is signed as before; a fault
// of the lookup defers the message.
func TestSignsOnlyOwnedFrom(t *testing.T) {
	rk, ek := testRSAKey(t), rfcEd25519Key(t)
	recs := records{}
	recs.add(t, "r1", "example.org", rk)
	recs.add(t, "e1", "example.org", ek)
	owners := &fakeSenders{owns: map[string][]string{
		"demo@example.org": {"demo@example.org", "contact@example.org"},
	}}
	broken := &fakeSenders{err: errors.New("sqlmaps: lookup in sqlite-sender-login.cf: database is locked")}
	body := "Hello.\r\n"
	from := func(v ...string) []filter.Header {
		var hs []filter.Header
		for _, f := range v {
			hs = append(hs, filter.Header{Name: "From", Value: f})
		}
		return append(hs, filter.Header{Name: "Subject", Value: "test"})
	}
	tests := []struct {
		name     string
		senders  *fakeSenders
		unowned  Unowned
		login    string // {auth_authen}; "" = no login (trusted network, sendmail)
		outbound bool
		headers  []filter.Header
		sigs     int
		verdict  filter.Verdict
		reply    string // Code Ext Text, for a refusal
		asked    string // the question asked, "" = none
		log      string // substring of the log
	}{
		{"own address", owners, UnownedReject, "demo@example.org", true, from("Demo <demo@example.org>"), 2, filter.Accept, "",
			"demo@example.org demo@example.org", "dkimsign: signed"},
		{"alias of the user", owners, UnownedReject, "demo@example.org", true, from("contact@Example.org"), 2, filter.Accept, "",
			"demo@example.org contact@Example.org", "dkimsign: signed"},
		{"another user: refused", owners, UnownedReject, "demo@example.org", true, from("Billing <billing@example.org>"), 0, filter.Reject,
			"550 5.7.1 <billing@example.org>: From address not owned by user demo@example.org",
			"demo@example.org billing@example.org", `msg="dkimsign: refused: From not owned by the login" queue_id=Q1 sasl_username=demo@example.org from=billing@example.org`},
		{"another user: unsigned", owners, UnownedUnsigned, "demo@example.org", true, from("billing@example.org"), 0, filter.Accept, "",
			"demo@example.org billing@example.org", `msg="dkimsign: not signed: From not owned by the login" queue_id=Q1 sasl_username=demo@example.org from=billing@example.org reason="From address billing@example.org is not one login demo@example.org may use"`},
		{"foreign From: refused", owners, UnownedReject, "demo@example.org", true, from("someone@outside.test"), 0, filter.Reject,
			"550 5.7.1 <someone@outside.test>: From address not owned by user demo@example.org", "demo@example.org someone@outside.test", "refused"},
		{"no From: refused", owners, UnownedReject, "demo@example.org", true, []filter.Header{{Name: "Subject", Value: "x"}}, 0, filter.Reject,
			"550 5.7.1 From header must hold one address user demo@example.org may send as", "", "reason=\"no From header\""},
		{"two From: refused", owners, UnownedReject, "demo@example.org", true, from("demo@example.org", "billing@example.org"), 0, filter.Reject,
			"550 5.7.1 From header must hold one address user demo@example.org may send as", "", "2 From headers"},
		{"two addresses: unsigned", owners, UnownedUnsigned, "demo@example.org", true, from("demo@example.org, billing@example.org"), 0, filter.Accept, "",
			"", "From has 2 addresses"},
		{"no login: signed as before", owners, UnownedReject, "", true, from("billing@example.org"), 2, filter.Accept, "", "", "dkimsign: signed"},
		{"inbound: untouched", owners, UnownedReject, "demo@example.org", false, from("billing@example.org"), 0, filter.Accept, "", "", ""},
		{"lookup fault: deferred", broken, UnownedUnsigned, "demo@example.org", true, from("demo@example.org"), 0, filter.Tempfail,
			"451 4.3.0 Cannot check the From address now, try again later", "demo@example.org demo@example.org",
			`level=ERROR msg="dkimsign: deferred: cannot check the From address against the login" queue_id=Q1 sasl_username=demo@example.org from=demo@example.org err="sqlmaps: lookup in sqlite-sender-login.cf: database is locked"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.senders.asked = nil
			var logs bytes.Buffer
			s, err := New(Config{
				Keys:    []Key{{Domain: "example.org", Selector: "r1", Signer: rk}, {Domain: "example.org", Selector: "e1", Signer: ek}},
				Senders: tc.senders, Unowned: tc.unowned,
				Logger: slog.New(slog.NewTextHandler(&logs, nil)),
			})
			if err != nil {
				t.Fatal(err)
			}
			m := &filter.Message{QueueID: "Q1", Outbound: tc.outbound, Headers: tc.headers, Macros: map[string]string{}}
			if tc.login != "" {
				m.Macros["{auth_authen}"] = tc.login
				m.Macros["{auth_type}"] = "PLAIN"
			}
			c := miltertest.Run(t, m, body, 64, s)
			if len(c.Ops) != tc.sigs {
				t.Errorf("%d changes %+v; want %d signatures", len(c.Ops), c.Ops, tc.sigs)
			}
			if tc.sigs > 0 {
				for i, err := range verify(t, rawMessage(m.Headers, body), recs) {
					if err != nil {
						t.Errorf("signature %d: %v", i, err)
					}
				}
			}
			if c.Verdict != tc.verdict {
				t.Errorf("verdict %v; want %v", c.Verdict, tc.verdict)
			}
			if reply := strings.TrimSpace(c.Code + " " + c.Ext + " " + c.Text); reply != tc.reply {
				t.Errorf("reply %q; want %q", reply, tc.reply)
			}
			if got := strings.Join(tc.senders.asked, "; "); got != tc.asked {
				t.Errorf("asked %q; want %q", got, tc.asked)
			}
			if !strings.Contains(logs.String(), tc.log) {
				t.Errorf("log lacks %q:\n%s", tc.log, logs.String())
			}
		})
	}
}

// Without a Senders (a daemon given no database) authenticated mail is
// signed as the From says; Reload can add the check and change its action.
func TestSendersReload(t *testing.T) {
	ek := rfcEd25519Key(t)
	keys := []Key{{Domain: "example.org", Selector: "e1", Signer: ek}}
	s, err := New(Config{Keys: keys, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	send := func() *filter.Changes {
		m := &filter.Message{QueueID: "Q", Outbound: true, Headers: []filter.Header{{Name: "From", Value: "billing@example.org"}},
			Macros: map[string]string{"{auth_authen}": "demo@example.org"}}
		return miltertest.Run(t, m, "x\r\n", 64, s)
	}
	if c := send(); len(c.Ops) != 1 {
		t.Fatalf("without Senders: %d ops; want a signature", len(c.Ops))
	}
	f := &fakeSenders{}
	if err := s.Reload(Config{Keys: keys, Senders: f, Unowned: UnownedUnsigned}); err != nil {
		t.Fatal(err)
	}
	if c := send(); len(c.Ops) != 0 || c.Verdict != filter.Accept {
		t.Fatalf("unsigned mode: %+v, verdict %v; want no signature, accepted", c.Ops, c.Verdict)
	}
	if err := s.Reload(Config{Keys: keys, Senders: f}); err != nil {
		t.Fatal(err)
	}
	if c := send(); c.Verdict != filter.Reject {
		t.Fatalf("default mode: verdict %v; want reject", c.Verdict)
	}
	if err := s.Reload(Config{Keys: keys, Senders: f, Unowned: Unowned(7)}); err == nil {
		t.Fatal("Reload accepted an unknown Unowned value")
	}
	if n, ok := filter.NeedsOf(s); !ok || len(n.Macros) != 1 || n.Macros[0] != "{auth_authen}" {
		t.Errorf("Needs = %+v; want the {auth_authen} macro", n)
	}
}

func TestParseUnowned(t *testing.T) {
	for in, want := range map[string]Unowned{"": UnownedReject, "reject": UnownedReject, "Unsigned": UnownedUnsigned} {
		if got, err := ParseUnowned(in); err != nil || got != want {
			t.Errorf("ParseUnowned(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseUnowned("sign"); err == nil {
		t.Error("ParseUnowned(sign) succeeded")
	}
}

// slowSenders answers only when its context ends.
type slowSenders struct{ waited chan time.Duration }

func (s slowSenders) MayUse(ctx context.Context, login, addr string) (bool, error) {
	t0 := time.Now()
	<-ctx.Done()
	s.waited <- time.Since(t0)
	return false, ctx.Err()
}

// SenderTimeout bounds the question: a database that does not answer in
// time defers the message instead of holding it.
func TestSenderTimeout(t *testing.T) {
	keys := []Key{{Domain: "example.org", Selector: "e1", Signer: rfcEd25519Key(t)}}
	slow := slowSenders{make(chan time.Duration, 1)}
	s, err := New(Config{Keys: keys, Senders: slow, SenderTimeout: 50 * time.Millisecond, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	m := &filter.Message{QueueID: "Q", Outbound: true, Headers: []filter.Header{{Name: "From", Value: "demo@example.org"}},
		Macros: map[string]string{"{auth_authen}": "demo@example.org"}}
	c := miltertest.Run(t, m, "x\r\n", 64, s)
	if c.Verdict != filter.Tempfail || c.Code != "451" {
		t.Errorf("verdict %v %s; want 451", c.Verdict, c.Code)
	}
	if w := <-slow.waited; w > 5*time.Second {
		t.Errorf("the question waited %v; want about 50ms", w)
	}
}
