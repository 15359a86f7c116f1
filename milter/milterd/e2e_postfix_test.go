package milterd_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postkit/postkit/milter/filter"
	"github.com/postkit/postkit/milter/milterd"
	"github.com/postkit/postkit/milter/miltertest"
)

// modsFilter makes the modifications whose indexes are hard to get right,
// so the real Postfix's result can be compared with miltertest.Apply's.
var modsFilter = funcFilter{name: "mods", fn: func(m *filter.Message, c *filter.Changes) error {
	if strings.Contains(subject(m), "fault") {
		return errors.New("injected fault")
	}
	c.InsertHeader(0, "X-Top", "first")
	c.InsertHeader(2, "X-Second", "after the first client Received")
	c.DeleteHeader("X-Dup", 1)
	c.DeleteHeader("X-Dup", 1) // the view's first is now the original third
	c.InsertHeader(0, "X-Dup", "inserted on top")
	c.ChangeHeader("X-Dup", 2, "changed: originally the third")
	c.ChangeHeader("Received", 2, "from redacted by b2")
	c.AddHeader("X-Last", "appended")
	if strings.Contains(subject(m), "chgfrom") {
		c.ChangeFrom("bounces@postkit.test", "")
	}
	return nil
}}

func subject(m *filter.Message) string {
	for _, h := range m.Headers {
		if strings.EqualFold(h.Name, "Subject") {
			return h.Value
		}
	}
	return ""
}

func e2eMessage(subj string) string {
	return "Received: from a by b1; Mon, 1 Jan 2024 00:00:00 +0000\r\n" +
		"Received: from c\r\n\tby b2; Mon, 1 Jan 2024 00:00:00 +0000\r\n" +
		"X-Dup: 1\r\nX-Dup: 2\r\nX-Dup: 3\r\nX-Dup: 4\r\n" +
		"From: <alice@postkit.test>\r\nTo: <bob@example.org>\r\nSubject: " + subj + "\r\n" +
		"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <" + strings.ReplaceAll(subj, " ", ".") + "@postkit.test>\r\n" +
		"\r\nbody\r\n"
}

// withoutPostfixReceived removes the Received header Postfix added for this hop.
func withoutPostfixReceived(raw []byte) []byte {
	hs, body, _ := miltertest.SplitMessage(raw)
	var b bytes.Buffer
	for _, h := range hs {
		if h.Name == "Received" && strings.Contains(h.Value, "by mx.postkit.test (Postfix)") {
			continue
		}
		b.WriteString(h.Name + ": " + h.Value + "\r\n")
	}
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}

// TestPostfixHeaderIndexes runs the daemon behind a real Postfix 3.7 on a
// unix and an inet listener with a chain each, and checks that Postfix
// applies the modifications exactly as miltertest.Apply models them, that
// macros and connection facts reach the chain, and that a filter fault gives
// a 451 without losing other mail.
func TestPostfixHeaderIndexes(t *testing.T) {
	miltertest.NeedBinary(t, "postfix")

	rec := &recorder{}
	// decl reads what postkit's own filters read (filter.Needs): Postfix
	// skips HELO and RCPT for it and sends only the daemon's own macros.
	decl := &recorder{}
	srv, err := milterd.New(milterd.Config{
		Chains: map[string][]filter.Filter{"mods": {modsFilter}, "rec": {rec.filter()},
			"decl": {filter.Declare(decl.filter(), filter.Needs{})}},
		Logger: slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(miltertest.PublicTempDir(t), "m.sock")
	uln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	chmod(t, sock)
	tln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dsock := filepath.Join(filepath.Dir(sock), "d.sock")
	dln, err := net.Listen("unix", dsock)
	if err != nil {
		t.Fatal(err)
	}
	chmod(t, dsock)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); srv.ServeChain(uln, "mods") }()
	go func() { defer wg.Done(); srv.ServeChain(tln, "rec") }()
	go func() { defer wg.Done(); srv.ServeChain(dln, "decl") }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		wg.Wait()
	})

	sink := miltertest.StartSink(t)
	pf := miltertest.StartPostfix(t, miltertest.PostfixOptions{
		Milters: "unix:" + sock + " inet:" + tln.Addr().String() + " unix:" + dsock,
		Relay:   sink.Relay(),
	})
	c, err := miltertest.DialSMTP(pf.Addr(), "client.postkit.test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// XCLIENT LOGIN makes Postfix treat the session as SASL-authenticated
	// ({auth_authen}, {auth_type} = XCLIENT) without a SASL server.
	if err := c.Expect(220, "XCLIENT LOGIN=alice"); err != nil {
		t.Fatal(err)
	}
	if err := c.Expect(250, "EHLO client.postkit.test"); err != nil {
		t.Fatal(err)
	}
	sends := []struct {
		subject  string
		wantCode int
	}{
		{"one chgfrom", 250},
		{"two fault", 451},
		{"three", 250},
	}
	for _, s := range sends {
		code, text, err := c.Send("alice@postkit.test", []string{"bob@example.org"}, []byte(e2eMessage(s.subject)))
		if err != nil {
			t.Fatalf("%s: %v", s.subject, err)
		}
		if code != s.wantCode {
			t.Fatalf("%s: Postfix answered %d %s, want %d", s.subject, code, text, s.wantCode)
		}
		if code == 451 && !strings.Contains(text, "4.3.0") {
			t.Errorf("%s: tempfail text %q lacks the daemon's 4.3.0 reply", s.subject, text)
		}
		if code != 250 {
			c.Expect(250, "RSET")
		}
	}
	got, err := sink.Wait(2, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if got, _ := sink.Wait(0, 0); len(got) != 2 {
		t.Fatalf("sink has %d messages, want 2 (the faulted one refused, none lost or duplicated)", len(got))
	}

	// The harness's model of Postfix must give the same bytes.
	model := miltertest.Start(t, "unix", milterd.Config{}, modsFilter)
	for i, subj := range []string{"one chgfrom", "three"} {
		res, err := model.Send(&miltertest.Message{From: "alice@postkit.test", Rcpts: []string{"bob@example.org"}, Raw: []byte(e2eMessage(subj))})
		if err != nil {
			t.Fatal(err)
		}
		var d *miltertest.Delivered
		for j := range got {
			if bytes.Contains(got[j].Data, []byte("Subject: "+subj+"\r\n")) {
				d = &got[j]
			}
		}
		if d == nil {
			t.Fatalf("message %q not delivered", subj)
		}
		if final := withoutPostfixReceived(d.Data); !bytes.Equal(final, res.Final) {
			t.Errorf("message %d: Postfix delivered\n%s\nthe model predicts\n%s", i, final, res.Final)
		}
		wantFrom := "alice@postkit.test"
		if strings.Contains(subj, "chgfrom") {
			wantFrom = "bounces@postkit.test"
		}
		if d.From != wantFrom || res.From != wantFrom {
			t.Errorf("message %q: envelope sender %q (model %q), want %q", subj, d.From, res.From, wantFrom)
		}
		if !strings.HasPrefix(string(d.Data), "X-Dup: inserted on top\r\nX-Top: first\r\nReceived: from client.postkit.test") {
			t.Errorf("message %q: top inserts not above Postfix's Received:\n%.200s", subj, d.Data)
		}
	}

	// The second milter saw all three messages at end of message (the fault
	// in the first milter stops Postfix before the second one's EOM).
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.seen) < 2 {
		t.Fatalf("recording milter saw %d messages at end of message, want ≥ 2", len(rec.seen))
	}
	last := len(rec.seen) - 1
	checks := []struct {
		name, got, want string
	}{
		{"auth_authen at EOM", rec.seen[0].Macro("auth_authen"), "alice"},
		{"auth_type at EOM", rec.seen[0].Macro("auth_type"), "XCLIENT"},
		{"queue id at EOM", boolStr(len(rec.seen[0].QueueID) >= 6), "true"},
		{"outbound", boolStr(rec.seen[0].Outbound), "true"},
		{"helo kept on a later message", rec.conn[last].Helo, "client.postkit.test"},
		{"client address kept", rec.conn[last].Addr.String(), "127.0.0.1"},
		{"daemon_name from the connect stage", rec.seen[last].Macro("daemon_name"), "mx.postkit.test"},
		{"auth kept for later messages", rec.seen[last].Macro("auth_authen"), "alice"},
		{"new queue id per message", boolStr(rec.seen[last].QueueID != rec.seen[0].QueueID), "true"},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s: got %q, want %q", ck.name, ck.got, ck.want)
		}
	}

	decl.mu.Lock()
	defer decl.mu.Unlock()
	if len(decl.seen) < 2 {
		t.Fatalf("declared milter saw %d messages at end of message, want ≥ 2", len(decl.seen))
	}
	last = len(decl.seen) - 1
	checks = []struct {
		name, got, want string
	}{
		{"declared: auth_authen", decl.seen[0].Macro("auth_authen"), "alice"},
		{"declared: queue id", boolStr(len(decl.seen[0].QueueID) >= 6), "true"},
		{"declared: new queue id per message", boolStr(decl.seen[last].QueueID != decl.seen[0].QueueID), "true"},
		{"declared: outbound", boolStr(decl.seen[last].Outbound), "true"},
		{"declared: daemon_name", decl.seen[last].Macro("daemon_name"), "mx.postkit.test"},
		{"declared: client address", decl.conn[last].Addr.String(), "127.0.0.1"},
		{"declared: sender", decl.seen[last].MailFrom, "alice@postkit.test"},
		{"declared: HELO skipped", decl.conn[last].Helo, ""},
		{"declared: RCPT skipped", strings.Join(decl.seen[last].Rcpts, ","), ""},
		{"declared: unrequested macro absent", decl.seen[last].Macro("{rcpt_addr}") + decl.seen[last].Macro("j"), ""},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s: got %q, want %q", ck.name, ck.got, ck.want)
		}
	}
}

type testLog struct{ t testing.TB }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func chmod(t testing.TB, path string) {
	t.Helper()
	if err := os.Chmod(path, 0o666); err != nil { // Postfix's smtpd runs as postfix
		t.Fatal(err)
	}
}
