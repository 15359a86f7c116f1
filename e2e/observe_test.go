package e2e

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/postkit/postkit/e2e/harness"
	"github.com/postkit/postkit/internal/dkimkey"
	"github.com/postkit/postkit/internal/metrics/metricstest"
	"github.com/postkit/postkit/internal/testlib"
	"github.com/postkit/postkit/milter/dkimsign"
)

// TestMilterObservability sends mail through the real Postfix with the
// milter logging to a syslog socket and serving metrics: its lines carry
// Postfix's queue ids (the ids Postfix's own log shows) under facility
// mail, and /metrics, lint-clean, counts exactly the messages, signatures
// and verifications the traffic made.
func TestMilterObservability(t *testing.T) {
	outKey, err := dkimkey.Generate(dkimkey.Ed25519, 0, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	logSock := filepath.Join(testlib.PublicTempDir(t), "log")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: logSock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	logs := &testlib.Buffer{}
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := ln.Read(buf)
			if err != nil {
				return
			}
			logs.Write(append(append([]byte(nil), buf[:n]...), '\n'))
		}
	}()
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", testlib.FreePort(t))
	s, _ := milterStack(t, outKey, map[string]any{
		"milter.metrics":    metricsAddr,
		"log.target":        "syslog",
		"log.syslog_socket": logSock,
	})
	url := "http://" + metricsAddr + "/metrics"
	before := metricstest.Get(t, url)

	// Outbound: alice submits, the milter signs with both keys.
	tok := harness.Token()
	c, err := s.Submission(harness.OutsideIP, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(harness.Plain(alice, passwords[alice])); err != nil {
		t.Fatalf("AUTH PLAIN %s: %v", alice, err)
	}
	if err := harness.Send(c, alice, []string{"friend@" + harness.OutsideDomain}, harness.Message(alice, "friend@"+harness.OutsideDomain, tok)); err != nil {
		t.Fatalf("submission: %v", err)
	}
	c.Close()
	if _, err := s.Sink.Wait(ctx(t), func(m harness.SinkMessage) bool { return bytes.Contains(m.Data, []byte(tok)) }); err != nil {
		t.Fatal(err)
	}

	// Inbound: a message signed by the outside domain.
	sender := "carol@" + harness.OutsideDomain
	signer, err := dkimsign.New(dkimsign.Config{Keys: []dkimsign.Key{{Domain: harness.OutsideDomain, Selector: outSelector, Signer: outKey}}})
	if err != nil {
		t.Fatal(err)
	}
	msg := harness.Message(sender, alice, harness.Token())
	vals, err := signer.Sign(bytes.NewReader(msg))
	if err != nil || len(vals) != 1 {
		t.Fatalf("signing: %v %v", vals, err)
	}
	c, err = s.SMTP(harness.OutsideIP)
	if err != nil {
		t.Fatal(err)
	}
	if err := harness.Send(c, sender, []string{alice}, append([]byte("DKIM-Signature: "+vals[0]+"\r\n"), msg...)); err != nil {
		t.Fatalf("inbound: %v", err)
	}
	c.Close()

	// Postfix answered DATA after the milter's end of message: both are
	// counted by now.
	after := metricstest.Get(t, url)
	for _, w := range []struct {
		name   string
		labels []string
		delta  float64
	}{
		{"postkit_milter_messages_total", []string{"verdict", "accept", "direction", "outbound"}, 1},
		{"postkit_milter_messages_total", []string{"verdict", "accept", "direction", "inbound"}, 1},
		{"postkit_milter_dkim_signatures_total", []string{"domain", harness.Domain}, float64(len(ourKeys))},
		{"postkit_milter_dkim_verifications_total", []string{"result", "pass"}, 1},
		{"postkit_milter_filter_outcomes_total", []string{"filter", "dkimsign", "outcome", "modified"}, 1},
		{"postkit_milter_filter_outcomes_total", []string{"filter", "dkimverify", "outcome", "modified"}, 1},
		{"postkit_milter_errors_total", nil, 0},
	} {
		if got := metricstest.Delta(before, after, w.name, w.labels...); got != w.delta {
			t.Errorf("%s moved by %v; want %v", metricstest.String(w.name, w.labels...), got, w.delta)
		}
	}

	// Each message line names the queue id Postfix logged for it.
	line := regexp.MustCompile(`(?m)^<22>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d postkit/milter\[\d+\]: level=INFO msg="milter message" queue_id=([0-9A-Za-z]+) .*sender=` + regexp.QuoteMeta(sender))
	var qid string
	testlib.Eventually(t, 5*time.Second, "the inbound message's line on the syslog socket", func() bool {
		m := line.FindStringSubmatch(logs.String())
		if m != nil {
			qid = m[1]
		}
		return m != nil
	})
	postfixLog, err := os.ReadFile(s.Paths.PostfixLog)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(postfixLog), " "+qid+": ") {
		t.Errorf("queue_id=%s of the milter's line is not in Postfix's log %s", qid, s.Paths.PostfixLog)
	}
}
