package milterd_test

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-milter"
	"github.com/postkit/postkit/milter/filter"
	"github.com/postkit/postkit/milter/milterd"
	"github.com/postkit/postkit/milter/miltertest"
)

// funcFilter runs fn at end of headers; with end set it also wants the body
// and runs end at end of message.
type funcFilter struct {
	name string
	fn   func(m *filter.Message, c *filter.Changes) error
	end  func(m *filter.Message, c *filter.Changes, body []byte) error
	// write, if set, replaces body accumulation (to test streaming).
	write func(chunk []byte) error
}

func (f funcFilter) Name() string { return f.name }

func (f funcFilter) Headers(m *filter.Message, c *filter.Changes) (filter.Body, error) {
	if f.fn != nil {
		if err := f.fn(m, c); err != nil {
			return nil, err
		}
	}
	if f.end == nil {
		return nil, nil
	}
	return &funcBody{f: f}, nil
}

type funcBody struct {
	f   funcFilter
	buf []byte
}

func (b *funcBody) Write(p []byte) error {
	if b.f.write != nil {
		return b.f.write(p)
	}
	b.buf = append(b.buf, p...)
	return nil
}

func (b *funcBody) End(m *filter.Message, c *filter.Changes) error { return b.f.end(m, c, b.buf) }

const sample = "Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n" +
	"X-Dup: 1\r\nX-Dup: 2\r\nX-Dup: 3\r\nSubject: hi\r\nFrom: <a@postkit.test>\r\n\r\nbody line\r\n"

func msg(raw string) *miltertest.Message {
	return &miltertest.Message{From: "a@postkit.test", Rcpts: []string{"b@example.org"}, Raw: []byte(raw)}
}

func headerNames(raw []byte) string {
	var out []string
	for _, h := range miltertest.Headers(raw) {
		out = append(out, h.Name+"="+h.Value)
	}
	return strings.Join(out, "|")
}

func TestChainModifications(t *testing.T) {
	tests := []struct {
		name      string
		filters   []filter.Filter
		want      string // headers of the final message
		wantFrom  string
		wantRcpts string
	}{
		{
			name: "insert at top and append",
			filters: []filter.Filter{funcFilter{name: "a", fn: func(m *filter.Message, c *filter.Changes) error {
				c.InsertHeader(0, "X-Top", "t")
				c.AddHeader("X-End", "e")
				return nil
			}}},
			want: "X-Top=t|Received=from a by b; Mon, 1 Jan 2024 00:00:00 +0000|X-Dup=1|X-Dup=2|X-Dup=3|Subject=hi|From=<a@postkit.test>|X-End=e",
		},
		{
			name: "delete occurrence 1 twice removes the first two",
			filters: []filter.Filter{funcFilter{name: "a", fn: func(m *filter.Message, c *filter.Changes) error {
				c.DeleteHeader("x-dup", 1)
				c.DeleteHeader("X-Dup", 1)
				return nil
			}}},
			want: "Received=from a by b; Mon, 1 Jan 2024 00:00:00 +0000|X-Dup=3|Subject=hi|From=<a@postkit.test>",
		},
		{
			name: "later filter sees earlier changes and indexes follow",
			filters: []filter.Filter{
				funcFilter{name: "a", fn: func(m *filter.Message, c *filter.Changes) error {
					c.InsertHeader(0, "X-Dup", "top")
					c.InsertHeader(2, "X-Mid", "m")
					return nil
				}},
				funcFilter{name: "b", fn: func(m *filter.Message, c *filter.Changes) error {
					if m.Headers[0].Value != "top" {
						return errors.New("view not updated")
					}
					c.ChangeHeader("X-Dup", 3, "changed")
					c.DeleteHeader("X-Dup", 1)
					return nil
				}},
			},
			want: "Received=from a by b; Mon, 1 Jan 2024 00:00:00 +0000|X-Mid=m|X-Dup=1|X-Dup=changed|X-Dup=3|Subject=hi|From=<a@postkit.test>",
		},
		{
			name: "envelope changes at end of message",
			filters: []filter.Filter{funcFilter{name: "a", end: func(m *filter.Message, c *filter.Changes, body []byte) error {
				if string(body) != "body line\r\n" {
					return errors.New("body " + string(body))
				}
				c.ChangeFrom("bounce@postkit.test", "")
				c.Ops = append(c.Ops, filter.Op{Kind: filter.OpAddRcpt, Value: "c@example.org"}, filter.Op{Kind: filter.OpDelRcpt, Value: "b@example.org"})
				return nil
			}}},
			want:      "Received=from a by b; Mon, 1 Jan 2024 00:00:00 +0000|X-Dup=1|X-Dup=2|X-Dup=3|Subject=hi|From=<a@postkit.test>",
			wantFrom:  "bounce@postkit.test",
			wantRcpts: "c@example.org",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := miltertest.Start(t, "unix", milterd.Config{}, tc.filters...)
			res, err := srv.Send(msg(sample))
			if err != nil {
				t.Fatal(err)
			}
			if res.Action.Code != milter.ActAccept {
				t.Fatalf("action = %c at %s, want accept", res.Action.Code, res.Stage)
			}
			if got := headerNames(res.Final); got != tc.want {
				t.Errorf("headers\n got %s\nwant %s", got, tc.want)
			}
			if tc.wantFrom != "" && res.From != tc.wantFrom {
				t.Errorf("from = %q, want %q", res.From, tc.wantFrom)
			}
			if tc.wantRcpts != "" && strings.Join(res.Rcpts, ",") != tc.wantRcpts {
				t.Errorf("rcpts = %q, want %q", res.Rcpts, tc.wantRcpts)
			}
		})
	}
}

// recorder keeps what the chain saw at end of message.
type recorder struct {
	mu   sync.Mutex
	seen []filter.Message
	conn []filter.Conn
}

func (r *recorder) filter() funcFilter {
	return funcFilter{name: "rec", end: func(m *filter.Message, c *filter.Changes, _ []byte) error {
		r.mu.Lock()
		defer r.mu.Unlock()
		cp := *m
		cp.Macros = map[string]string{}
		for k, v := range m.Macros {
			cp.Macros[k] = v
		}
		r.seen = append(r.seen, cp)
		r.conn = append(r.conn, *m.Conn)
		return nil
	}}
}

func TestMacrosAndConnectionFacts(t *testing.T) {
	rec := &recorder{}
	srv := miltertest.Start(t, "tcp", milterd.Config{Trusted: []netip.Prefix{}}, rec.filter())
	c, err := srv.Dial(miltertest.ConnInfo{Hostname: "client.example", Addr: "192.0.2.7", Port: 4242, Helo: "helo.example",
		Macros: []string{"j", "mx.postkit.test", "{daemon_name}", "smtpd"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m1 := msg(sample)
	m1.Macros = map[byte][]string{
		'M': {"i", "ABC123", "{auth_authen}", "alice", "{auth_type}", "PLAIN"},
		'R': {"{rcpt_addr}", "b@example.org"},
		'E': {"{msg_id}", "<x@y>"},
	}
	if res, err := c.Send(m1); err != nil || res.Action.Code != milter.ActAccept {
		t.Fatalf("message 1: %+v %v", res, err)
	}
	// An aborted message in between must not lose the connection facts
	// nor leak its macros.
	if err := c.Abort(); err != nil {
		t.Fatal(err)
	}
	m2 := msg(sample)
	m2.Macros = map[byte][]string{'M': {"i", "DEF456"}}
	if res, err := c.Send(m2); err != nil || res.Action.Code != milter.ActAccept {
		t.Fatalf("message 2: %+v %v", res, err)
	}
	if len(rec.seen) != 2 {
		t.Fatalf("recorded %d messages, want 2", len(rec.seen))
	}
	tests := []struct {
		name      string
		got, want string
	}{
		{"qid 1", rec.seen[0].QueueID, "ABC123"},
		{"auth macro merged from MAIL", rec.seen[0].Macro("auth_authen"), "alice"},
		{"rcpt macro merged", rec.seen[0].Macro("{rcpt_addr}"), "b@example.org"},
		{"eom macro merged", rec.seen[0].Macro("msg_id"), "<x@y>"},
		{"connection macro", rec.seen[0].Macro("j"), "mx.postkit.test"},
		{"outbound by SASL", boolStr(rec.seen[0].Outbound), "true"},
		{"qid 2", rec.seen[1].QueueID, "DEF456"},
		{"no auth leak into message 2", rec.seen[1].Macro("auth_authen"), ""},
		{"inbound without auth from untrusted address", boolStr(rec.seen[1].Outbound), "false"},
		{"helo kept", rec.conn[1].Helo, "helo.example"},
		{"address kept", rec.conn[1].Addr.String(), "192.0.2.7"},
		{"hostname kept", rec.conn[1].Hostname, "client.example"},
		{"connection macro kept", rec.seen[1].Macro("{daemon_name}"), "smtpd"},
		{"sender", rec.seen[1].MailFrom, "a@postkit.test"},
		{"recipients", strings.Join(rec.seen[1].Rcpts, ","), "b@example.org"},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, tc.got, tc.want)
		}
	}
}

// A chain whose filters declare what they read (filter.Needs) has the MTA
// skip the HELO and RCPT events nobody reads; the daemon's own facts (queue
// id, outbound) still arrive.
func TestDeclaredNeedsSkipEvents(t *testing.T) {
	tests := []struct {
		name      string
		needs     filter.Needs
		wantHelo  string
		wantRcpts string
	}{
		{"reads neither", filter.Needs{}, "", ""},
		{"reads HELO and recipients", filter.Needs{Helo: true, Rcpts: true}, "helo.example", "b@example.org"},
		{"reads a RCPT macro", filter.Needs{Macros: []string{"rcpt_addr"}}, "", "b@example.org"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{}
			srv := miltertest.Start(t, "unix", milterd.Config{Trusted: []netip.Prefix{}}, filter.Declare(rec.filter(), tc.needs))
			c, err := srv.Dial(miltertest.ConnInfo{Hostname: "client.example", Addr: "192.0.2.7", Port: 4242, Helo: "helo.example"})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			m := msg(sample)
			m.Macros = map[byte][]string{'M': {"i", "ABC123", "{auth_authen}", "alice"}}
			if res, err := c.Send(m); err != nil || res.Action.Code != milter.ActAccept {
				t.Fatalf("send: %+v %v", res, err)
			}
			if len(rec.seen) != 1 {
				t.Fatalf("recorded %d messages, want 1", len(rec.seen))
			}
			got := rec.seen[0]
			for _, c := range []struct{ what, got, want string }{
				{"helo", rec.conn[0].Helo, tc.wantHelo},
				{"recipients", strings.Join(got.Rcpts, ","), tc.wantRcpts},
				{"qid", got.QueueID, "ABC123"},
				{"outbound by SASL", boolStr(got.Outbound), "true"},
				{"sender", got.MailFrom, "a@postkit.test"},
				{"client address", rec.conn[0].Addr.String(), "192.0.2.7"},
			} {
				if c.got != c.want {
					t.Errorf("%s = %q, want %q", c.what, c.got, c.want)
				}
			}
		})
	}
}

func boolStr(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

func TestFaults(t *testing.T) {
	addA := funcFilter{name: "adda", fn: func(m *filter.Message, c *filter.Changes) error {
		c.AddHeader("X-A", "a")
		return nil
	}}
	tests := []struct {
		name     string
		onError  string
		bad      funcFilter
		wantCode milter.ActionCode
		wantSMTP int
		wantHdrs string
	}{
		{"error at headers tempfails", "tempfail", funcFilter{name: "bad", fn: func(*filter.Message, *filter.Changes) error { return errors.New("boom") }}, milter.ActReplyCode, 451, ""},
		{"panic in body tempfails", "", funcFilter{name: "bad", end: func(*filter.Message, *filter.Changes, []byte) error { return nil }, write: func([]byte) error { panic("kaboom") }}, milter.ActReplyCode, 451, ""},
		{"error at end rejects", "reject", funcFilter{name: "bad", end: func(*filter.Message, *filter.Changes, []byte) error { return errors.New("boom") }}, milter.ActReplyCode, 550, ""},
		{"accept keeps complete filters' changes only", "accept", funcFilter{name: "bad", end: func(m *filter.Message, c *filter.Changes, _ []byte) error {
			c.AddHeader("X-Bad", "half")
			return errors.New("boom")
		}}, milter.ActAccept, 0, "X-A"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := milterd.ParseFaultAction(tc.onError)
			if err != nil {
				t.Fatal(err)
			}
			srv := miltertest.Start(t, "unix", milterd.Config{OnError: v, OnErrorSet: true}, addA, tc.bad)
			res, err := srv.Send(msg(sample))
			if err != nil {
				t.Fatal(err)
			}
			if res.Action.Code != tc.wantCode || res.Action.SMTPCode != tc.wantSMTP {
				t.Fatalf("action %c %d %q, want %c %d", res.Action.Code, res.Action.SMTPCode, res.Action.SMTPText, tc.wantCode, tc.wantSMTP)
			}
			var added []string
			for _, md := range res.Mods {
				added = append(added, md.HeaderName)
			}
			if got := strings.Join(added, ","); got != tc.wantHdrs {
				t.Errorf("modifications %q, want %q", got, tc.wantHdrs)
			}
			// The daemon survives: a second message on a new connection works.
			if _, err := srv.Send(msg(sample)); err != nil {
				t.Fatalf("after fault: %v", err)
			}
		})
	}
}

func TestRefuseReplyCode(t *testing.T) {
	tests := []struct {
		v          filter.Verdict
		code, ext  string
		text       string
		wantAct    milter.ActionCode
		wantSMTP   int
		wantText   string
		wantAtStep string
		// withReplies answers end of headers (no SMFIP_NR_EOH).
		withReplies bool
	}{
		// By default the verdict reached on the headers comes at end of
		// message (SMFIP_NR_EOH); with replies, right at end of headers.
		{filter.Reject, "550", "5.7.1", "100% spam", milter.ActReplyCode, 550, "5.7.1 100%% spam", "eom", false},
		{filter.Tempfail, "", "", "", milter.ActTempFail, 0, "", "eom", false},
		{filter.Tempfail, "550", "", "wrong class", milter.ActReplyCode, 450, "wrong class", "eom", false},
		{filter.Discard, "", "", "", milter.ActDiscard, 0, "", "eom", false},
		{filter.Reject, "550", "5.7.1", "100% spam", milter.ActReplyCode, 550, "5.7.1 100%% spam", "eoh", true},
		{filter.Tempfail, "", "", "", milter.ActTempFail, 0, "", "eoh", true},
		{filter.Discard, "", "", "", milter.ActDiscard, 0, "", "eoh", true},
	}
	for _, tc := range tests {
		f := funcFilter{name: "refuse", fn: func(m *filter.Message, c *filter.Changes) error {
			c.Refuse(tc.v, tc.code, tc.ext, tc.text)
			return nil
		}}
		srv := miltertest.Start(t, "unix", milterd.Config{WithReplies: tc.withReplies}, f)
		res, err := srv.Send(msg(sample))
		if err != nil {
			t.Fatal(err)
		}
		if res.Action.Code != tc.wantAct || res.Action.SMTPCode != tc.wantSMTP || res.Action.SMTPText != tc.wantText || res.Stage != tc.wantAtStep {
			t.Errorf("%v %s: got %c %d %q at %s, want %c %d %q at %s", tc.v, tc.code, res.Action.Code, res.Action.SMTPCode, res.Action.SMTPText, res.Stage,
				tc.wantAct, tc.wantSMTP, tc.wantText, tc.wantAtStep)
		}
	}
}

func TestBodyStreamedInChunks(t *testing.T) {
	var chunks, total, biggest int
	f := funcFilter{name: "count",
		write: func(p []byte) error {
			chunks++
			total += len(p)
			biggest = max(biggest, len(p))
			return nil
		},
		end: func(*filter.Message, *filter.Changes, []byte) error { return nil }}
	srv := miltertest.Start(t, "unix", milterd.Config{}, f)
	body := strings.Repeat(strings.Repeat("x", 98)+"\r\n", 3000) // 300 kB
	if _, err := srv.Send(msg("Subject: big\r\n\r\n" + body)); err != nil {
		t.Fatal(err)
	}
	if total != len(body) || chunks < 5 || biggest > 65535 {
		t.Errorf("got %d bytes in %d chunks (largest %d), want %d bytes in ≥5 chunks ≤ 65535", total, chunks, biggest, len(body))
	}
}

func TestWithRepliesAndNoReplies(t *testing.T) {
	for _, replies := range []bool{false, true} {
		f := funcFilter{name: "a", fn: func(m *filter.Message, c *filter.Changes) error {
			c.InsertHeader(0, "X-Top", "t")
			return nil
		}}
		srv := miltertest.Start(t, "tcp", milterd.Config{WithReplies: replies}, f)
		c, err := srv.Dial(miltertest.ConnInfo{Addr: "127.0.0.1", Helo: "h"})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			res, err := c.Send(msg(sample))
			if err != nil {
				t.Fatalf("replies=%v message %d: %v", replies, i, err)
			}
			if !strings.HasPrefix(string(res.Final), "X-Top: t\r\n") {
				t.Errorf("replies=%v: final message starts %q", replies, string(res.Final)[:20])
			}
		}
		c.Close()
	}
}

// rawPacket encodes one milter packet.
func rawPacket(cmd byte, data string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(data)+1))
	return append(append(b, cmd), data...)
}

func TestMalformedInputClosesOnlyThatConnection(t *testing.T) {
	tests := []struct {
		name  string
		input []byte
	}{
		{"oversized length", []byte{0x7f, 0xff, 0xff, 0xff, 'B'}},
		{"zero length", []byte{0, 0, 0, 0}},
		{"unknown command", rawPacket('Z', "x")},
		{"short optneg", rawPacket('O', "\x00\x00\x00\x06")},
		{"connect bad family", append(rawPacket('O', "\x00\x00\x00\x06\x00\x00\x01\xff\x00\x1f\xff\xff"), rawPacket('C', "host\x00X")...)},
	}
	srv := miltertest.Start(t, "unix", milterd.Config{}, funcFilter{name: "noop"})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("unix", srv.Address)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write(tc.input)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			// The daemon closes: reading ends with EOF (after an optional
			// negotiation reply), not with a timeout.
			_, err = io.Copy(io.Discard, c)
			if err != nil {
				t.Fatalf("connection not closed by the daemon: %v", err)
			}
			if _, err := srv.Send(msg(sample)); err != nil {
				t.Fatalf("daemon unusable after %s: %v", tc.name, err)
			}
		})
	}
}

func TestShutdownDrainsMessagesInFlight(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{})
	f := funcFilter{name: "slow", end: func(m *filter.Message, c *filter.Changes, _ []byte) error {
		close(entered)
		<-release
		c.AddHeader("X-Done", "yes")
		return nil
	}}
	srv := miltertest.Start(t, "unix", milterd.Config{}, f)
	idle, err := srv.Dial(miltertest.ConnInfo{Addr: "127.0.0.1", Helo: "idle"})
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	type result struct {
		res *miltertest.Result
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := srv.Send(msg(sample))
		done <- result{r, err}
	}()
	<-entered
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- srv.Shutdown(ctx)
	}()
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with a message in flight", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	r := <-done
	if r.err != nil || len(r.res.Mods) != 1 || r.res.Mods[0].HeaderName != "X-Done" {
		t.Fatalf("message in flight: %+v %v", r.res, r.err)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	// The idle connection was closed.
	if _, err := idle.Send(msg(sample)); err == nil {
		t.Error("idle connection still served after Shutdown")
	}
}

func TestReloadSwapsChain(t *testing.T) {
	tag := func(v string) filter.Filter {
		return funcFilter{name: "tag", fn: func(m *filter.Message, c *filter.Changes) error {
			c.AddHeader("X-Chain", v)
			return nil
		}}
	}
	srv := miltertest.Start(t, "unix", milterd.Config{}, tag("old"))
	c, err := srv.Dial(miltertest.ConnInfo{Addr: "127.0.0.1", Helo: "h"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	get := func() string {
		t.Helper()
		res, err := c.Send(msg(sample))
		if err != nil || len(res.Mods) != 1 {
			t.Fatalf("%+v %v", res, err)
		}
		return res.Mods[0].HeaderValue
	}
	steps := []struct {
		cfg     milterd.Config
		wantErr bool
		want    string
	}{
		{milterd.Config{Chains: map[string][]filter.Filter{"other": {tag("x")}}}, true, "old"},
		{milterd.Config{Chains: map[string][]filter.Filter{milterd.DefaultChain: {nil}}}, true, "old"},
		{milterd.Config{Chains: map[string][]filter.Filter{milterd.DefaultChain: {tag("new")}}}, false, "new"},
	}
	for i, st := range steps {
		err := srv.Reload(st.cfg)
		if (err != nil) != st.wantErr {
			t.Fatalf("step %d: Reload error %v, want error %v", i, err, st.wantErr)
		}
		// Same connection, next message: the current chain applies.
		if got := get(); got != st.want {
			t.Errorf("step %d: chain %q, want %q", i, got, st.want)
		}
	}
}
