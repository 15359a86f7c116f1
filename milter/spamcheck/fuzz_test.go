package spamcheck_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/postkit/postkit/internal/testlib"
	"github.com/postkit/postkit/milter/filter"
	"github.com/postkit/postkit/milter/miltertest"
	"github.com/postkit/postkit/milter/spamcheck"
	"github.com/postkit/postkit/spam"
)

// Whatever a client sends, the filter with the real engine (shipped
// rules, no store) answers in its budget and marks the message: no panic,
// no lost message, one X-Spam-Status.
func FuzzFilter(f *testing.F) {
	f.Add("Subject: hi\r\nFrom: <a@b.test>\r\n", "hello\r\n")
	f.Add("Content-Type: multipart/mixed; boundary=x\r\n", "--x\r\nContent-Type: text/html\r\n\r\n<a href=http://x.test/>x</a>\r\n--x")
	f.Add("Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n", "!!!!====\r\n")
	f.Add("X-Spam-Flag: YES\r\nSubject: =?utf-8?B?w6k=?=\r\n", "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X")
	e, err := spam.New(spam.Config{Logger: testlib.Discard()})
	if err != nil {
		f.Fatal(err)
	}
	defer e.Close()
	flt, err := spamcheck.New(spamcheck.Config{Scorer: e, Required: e.Required(), TimeBudget: 5 * time.Second,
		MaxScanBytes: 64 << 10, RejectScore: 0, RewriteSubject: "[SPAM]", Report: spamcheck.ReportAll, Logger: testlib.Discard()})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, header, body string) {
		hs, _, err := miltertest.SplitMessage([]byte(header + "\r\n"))
		if err != nil || strings.ContainsAny(header, "\x00") {
			t.Skip()
		}
		m := &filter.Message{Conn: &filter.Conn{Addr: netip.MustParseAddr("192.0.2.7"), Helo: "x"}, MailFrom: "a@b.test",
			Rcpts: []string{"u@example.test"}, Macros: map[string]string{}, Headers: hs}
		t0 := time.Now()
		c := miltertest.Run(t, m, body, 0, flt)
		if d := time.Since(t0); d > 6*time.Second {
			t.Errorf("held %v", d)
		}
		if c.Verdict != filter.Accept {
			t.Fatalf("verdict %v", c.Verdict)
		}
		n := 0
		for _, h := range m.Headers {
			if strings.EqualFold(h.Name, "X-Spam-Status") {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d X-Spam-Status fields, want 1", n)
		}
	})
}
