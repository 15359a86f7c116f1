package forged_test

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/postkit/postkit/internal/seal"
	"github.com/postkit/postkit/milter/forged"
	"github.com/postkit/postkit/milter/milterd"
	"github.com/postkit/postkit/milter/miltertest"
	"github.com/postkit/postkit/policyd"
)

// sealingCheck answers like the SPF check with sealing wired as `postkit
// policyd` wires it: a sealed Received-SPF for every sender except
// quiet@… (an allowed client or a skipped check: nothing prepended).
type sealingCheck struct{ key seal.Key }

func (sealingCheck) Name() string { return "spf" }

func (c sealingCheck) Check(_ context.Context, r *policyd.Request) (policyd.Decision, error) {
	if strings.HasPrefix(r.Sender(), "quiet@") {
		return policyd.Decision{}, nil
	}
	port, _ := strconv.Atoi(r.Get("client_port"))
	line := "Received-SPF: pass (mx.postkit.test: genuine) client-ip=" + r.Get("client_address") + "; envelope-from=" + r.Sender() + "; identity=mailfrom;"
	return policyd.Decision{Prepend: []string{c.key.Seal(seal.Tx{Addr: r.ClientAddr(), Port: port, Helo: r.Helo(), Sender: r.Sender()}, line)}}, nil
}

// TestPrependedHeaders runs the filter behind the real Postfix 3.7 with a
// policy service that PREPENDs a sealed Received-SPF, and checks what was
// measured there and what the design rests on: the prepended field reaches
// the milter as the first header field, above the client's header, and
// counts in the milter's header indexes (deleting the client's forged
// copies by index never hits it); a copy a client wrote at the very top of
// its header, where ours would be, goes when the policy service prepended
// nothing.
func TestPrependedHeaders(t *testing.T) {
	miltertest.NeedBinary(t, "postfix")
	k := newKey(t)
	f, err := forged.New(forged.Config{AuthservID: authservID, Sealed: sealedBy(k), Logger: slog.New(slog.NewTextHandler(testLog{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	srv := miltertest.Start(t, "unix", milterd.Config{}, f)

	pln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ps := &policyd.Server{Checks: []policyd.Check{sealingCheck{k}}, Logger: slog.New(slog.NewTextHandler(testLog{t}, nil))}
	go ps.Serve(pln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ps.Shutdown(ctx)
	})

	sink := miltertest.StartSink(t)
	pf := miltertest.StartPostfix(t, miltertest.PostfixOptions{
		Milters: srv.PostfixAddr(),
		Relay:   sink.Relay(),
		Main: map[string]string{
			"smtpd_relay_restrictions": "check_policy_service inet:" + pln.Addr().String() + ", permit_mynetworks, reject",
			"myhostname":               authservID,
		},
	})
	c, err := miltertest.DialSMTP(pf.Addr(), "client.postkit.test")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Expect(250, "EHLO client.postkit.test"); err != nil {
		t.Fatal(err)
	}
	clientHeader := func(subject string) string {
		return "Received-SPF: pass (mx.postkit.test: forged at the top) client-ip=127.0.0.1;\r\n" +
			"X-Spam-Flag: YES\r\n" +
			"Authentication-Results: mx.postkit.test; dkim=pass header.d=example.test\r\n" +
			"Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n" +
			"Received-SPF: pass (mx.postkit.test: forged in the middle)\r\n" +
			"X-Spam-Status: Yes, score=99\r\n" +
			"From: <a@postkit.test>\r\nSubject: " + subject + "\r\n\r\nbody\r\n"
	}
	for _, tc := range []struct {
		from    string
		subject string
		ours    bool
	}{
		{"a@postkit.test", "sealed", true},
		{"quiet@postkit.test", "nothing prepended", false},
	} {
		// Two recipients: Postfix asks the policy service twice.
		code, text, err := c.Send(tc.from, []string{"b@example.org", "c@example.org"}, []byte(clientHeader(tc.subject)))
		if err != nil || code != 250 {
			t.Fatalf("%s: %d %s %v", tc.subject, code, text, err)
		}
	}
	got, err := sink.Wait(2, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range got {
		data := string(d.Data)
		head := data[:strings.Index(data, "\r\n\r\n")+2]
		hs := miltertest.Headers([]byte(data))
		quiet := strings.Contains(head, "Subject: nothing prepended")
		var names []string
		for _, h := range hs {
			names = append(names, h.Name)
		}
		want := "Received-SPF,Received,Received,From,Subject,Message-Id,Date"
		if quiet {
			want = "Received,Received,From,Subject,Message-Id,Date"
		}
		if strings.Join(names, ",") != want {
			t.Errorf("%s: header fields %v, want %s:\n%s", d.From, names, want, head)
		}
		if quiet {
			continue
		}
		// Ours, above Postfix's own Received field, sealed, once.
		if !strings.HasPrefix(hs[0].Value, "pass (mx.postkit.test: genuine)") || !strings.Contains(hs[0].Value, seal.Param+"=") {
			t.Errorf("first field %s: %s, want the policy service's sealed Received-SPF", hs[0].Name, hs[0].Value)
		}
		if !strings.Contains(hs[1].Value, "by "+authservID+" (Postfix)") {
			t.Errorf("second field %s: %s, want Postfix's own Received", hs[1].Name, hs[1].Value)
		}
		if strings.Contains(head, "forged") || strings.Contains(head, "X-Spam") || strings.Contains(head, "Authentication-Results") {
			t.Errorf("a forged field survived:\n%s", head)
		}
	}
}

type testLog struct{ t testing.TB }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
