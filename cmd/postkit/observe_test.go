package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/postkit/postkit/internal/dkimkey"
	"github.com/postkit/postkit/internal/dnstest"
	"github.com/postkit/postkit/internal/metrics/metricstest"
	"github.com/postkit/postkit/internal/testlib"
	"github.com/postkit/postkit/milter/dkimsign"
	"github.com/postkit/postkit/milter/miltertest"
	"github.com/postkit/postkit/sqlmaps"
)

// syslogSocket is a local syslog socket (as rsyslog's /dev/log) that keeps
// every datagram it receives, one per line.
func syslogSocket(t *testing.T, path string) *testlib.Buffer {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	got := &testlib.Buffer{}
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			got.Write(append(append([]byte(nil), buf[:n]...), '\n'))
		}
	}()
	return got
}

// wantSyslog fails unless a datagram matches re within a few seconds.
func wantSyslog(t *testing.T, got *testlib.Buffer, re string) {
	t.Helper()
	r := regexp.MustCompile("(?m)" + re)
	testlib.Eventually(t, 5e9, "a syslog datagram matching "+re+" in\n"+got.String(), func() bool { return r.MatchString(got.String()) })
}

// The milter logs to a syslog socket under facility mail, tagged
// postkit/milter, with the queue id as queue_id; its /metrics passes
// promtool's lint rules and Prometheus's parser, and counts the traffic
// exactly.
func TestMilterSyslogAndMetrics(t *testing.T) {
	dir := miltertest.PublicTempDir(t)
	keyDir := filepath.Join(dir, "keys")
	writeKey(t, keyDir, "example.test", "ed1")
	outKey, err := dkimkey.Generate(dkimkey.Ed25519, 0, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	outTXT, _ := dkimkey.Record(outKey.Public())
	dnsSrv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer dnsSrv.Close()
	if err := dnsSrv.SetZone(fmt.Sprintf("out._domainkey.outside.test. 300 IN TXT %q", outTXT)); err != nil {
		t.Fatal(err)
	}
	dbPath := filepath.Join(dir, "postfix.sqlite")
	st, err := sqlmaps.Open(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	st.Close()
	sock := filepath.Join(dir, "milter.sock")
	logSock := filepath.Join(dir, "log")
	logs := syslogSocket(t, logSock)
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", testlib.FreePort(t))
	cfg := filepath.Join(dir, "postkit.yaml")
	y := milterYAMLBase + fmt.Sprintf(`dns: {servers: [%q], timeout: 2s}
database: {path: %s}
paths: {postkit_run: %s}
log: {target: syslog, syslog_socket: %s}
milter:
  enabled: true
  listen: unix:%s
  socket_mode: "0666"
  metrics: %q
  dkim:
    authserv_id: mx.example.test
    key_dir: %s
    keys: [{domain: example.test, selector: ed1}]
`, dnsSrv.Addr(), dbPath, filepath.Join(dir, "run"), logSock, sock, metricsAddr, keyDir)
	if err := os.WriteFile(cfg, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDaemonLogs(t, "milter", logs.String, "-c", cfg)
	url := "http://" + metricsAddr + "/metrics"
	before := metricstest.Get(t, url)
	srv := &miltertest.Server{Network: "unix", Address: sock}

	qid := func(id string) map[byte][]string { return map[byte][]string{'M': {"i", id}} }
	// Outbound: signed.
	out := "From: <alice@example.test>\r\nTo: <bob@outside.test>\r\nSubject: hi\r\n\r\nbody\r\n"
	if _, err := srv.Send(&miltertest.Message{From: "alice@example.test", Rcpts: []string{"bob@outside.test"}, Raw: []byte(out), Macros: qid("4OUT1")}); err != nil {
		t.Fatal(err)
	}
	// Inbound: a valid signature, a broken one, none, and our domain
	// forged in From (refused by ownfrom, before spam scoring).
	signer, err := dkimsign.New(dkimsign.Config{Keys: []dkimsign.Key{{Domain: "outside.test", Selector: "out", Signer: outKey}}})
	if err != nil {
		t.Fatal(err)
	}
	body := "From: <carol@outside.test>\r\nTo: <alice@example.test>\r\nSubject: in\r\n\r\nhello\r\n"
	sigs, err := signer.Sign(strings.NewReader(body))
	if err != nil || len(sigs) != 1 {
		t.Fatalf("sign: %v %v", sigs, err)
	}
	inbound := []struct{ id, raw, verdict string }{
		{"4IN1", "DKIM-Signature: " + sigs[0] + "\r\n" + body, "accept"},
		{"4IN2", "DKIM-Signature: " + sigs[0] + "\r\n" + strings.Replace(body, "hello", "hellO", 1), "accept"},
		{"4IN3", body, "accept"},
		{"4IN4", strings.Replace(body, "carol@outside.test", "billing@example.test", 1), "reject"},
	}
	for _, m := range inbound {
		cl, err := srv.Dial(miltertest.ConnInfo{Hostname: "mx.outside.test", Addr: "192.0.2.1", Port: 25, Helo: "mx.outside.test"})
		if err != nil {
			t.Fatal(err)
		}
		res, err := cl.Send(&miltertest.Message{From: "carol@outside.test", Rcpts: []string{"alice@example.test"}, Raw: []byte(m.raw), Macros: qid(m.id)})
		cl.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got := res.Final != nil; got != (m.verdict == "accept") {
			t.Errorf("%s: accepted %v; want %s", m.id, got, m.verdict)
		}
	}

	// Logs: facility mail (2), info 6 and warning 4, the tag, the fields.
	head := `^<%d>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d postkit/milter\[\d+\]: `
	wantSyslog(t, logs, fmt.Sprintf(head, 22)+`level=INFO msg="milter message" queue_id=4OUT1 chain=\S+ verdict=accept client=\S* sender=alice@example.test outbound=true `)
	wantSyslog(t, logs, fmt.Sprintf(head, 22)+`level=INFO msg="dkimsign: signed" queue_id=4OUT1 d=example.test s=ed1$`)
	wantSyslog(t, logs, fmt.Sprintf(head, 22)+`level=INFO msg="dkimverify: verified" queue_id=4IN2 dkim="fail d=outside.test s=out"`)
	wantSyslog(t, logs, fmt.Sprintf(head, 22)+`level=INFO msg="milter message" queue_id=4IN3 chain=\S+ verdict=accept client=192.0.2.1 sender=carol@outside.test outbound=false `)
	wantSyslog(t, logs, fmt.Sprintf(head, 20)+`level=WARN msg="ownfrom: refused: our domain in From from a host it does not authorise" queue_id=4IN4 client=192.0.2.1 sender=carol@outside.test `)
	if s := d.log.String(); strings.Contains(s, "milter message") {
		t.Errorf("message lines on stderr with log.target syslog:\n%s", s)
	}

	after := metricstest.Get(t, url)
	for _, w := range []struct {
		name   string
		labels []string
		delta  float64
	}{
		{"postkit_milter_messages_total", []string{"verdict", "accept", "direction", "outbound"}, 1},
		{"postkit_milter_messages_total", []string{"verdict", "accept", "direction", "inbound"}, 3},
		{"postkit_milter_messages_total", []string{"verdict", "reject", "direction", "inbound"}, 1},
		{"postkit_milter_message_duration_seconds", []string{"direction", "inbound"}, 4},
		{"postkit_milter_dkim_signatures_total", []string{"domain", "example.test"}, 1},
		{"postkit_milter_dkim_verifications_total", []string{"result", "pass"}, 1},
		{"postkit_milter_dkim_verifications_total", []string{"result", "fail"}, 1},
		{"postkit_milter_dkim_verifications_total", []string{"result", "none"}, 2},
		{"postkit_milter_filter_outcomes_total", []string{"filter", "dkimsign", "outcome", "modified"}, 1},
		{"postkit_milter_filter_outcomes_total", []string{"filter", "dkimverify", "outcome", "modified"}, 4},
		{"postkit_milter_filter_outcomes_total", []string{"filter", "ownfrom", "outcome", "reject"}, 1},
		{"postkit_milter_filter_outcomes_total", []string{"filter", "spam", "outcome", "skipped"}, 1}, // refused by ownfrom first
		{"postkit_milter_filter_duration_seconds", []string{"filter", "dkimsign"}, 5},                 // it looks at every message
		{"postkit_milter_spam_verdicts_total", nil, 3},
		{"postkit_milter_errors_total", nil, 0},
	} {
		if got := metricstest.Delta(before, after, w.name, w.labels...); got != w.delta {
			t.Errorf("%s moved by %v; want %v", metricstest.String(w.name, w.labels...), got, w.delta)
		}
	}
	for _, name := range []string{"postkit_build_info", "process_resident_memory_bytes", "process_open_fds", "go_goroutines"} {
		if v, ok := after.Value(name); !ok || v <= 0 {
			t.Errorf("%s = %v, %v; want it served", name, v, ok)
		}
	}
}

// The policy daemon logs JSON lines to a syslog socket tagged
// postkit/policyd, with queue_id as the milter writes it; its /metrics
// passes the same checks after real requests.
func TestPolicydSyslogAndMetrics(t *testing.T) {
	dns, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	if err := dns.SetZone(`spf-fail.test. 300 IN TXT "v=spf1 -all"`, `spf-pass.test. 300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"`); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	db := policyTestStore(t, dir)
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", testlib.FreePort(t))
	cfg := policyTestConfig(t, dir, db, dns.Addr(), metricsAddr)
	logSock := filepath.Join(dir, "log")
	logs := syslogSocket(t, logSock)
	f, err := os.OpenFile(cfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "log: {target: syslog, format: json, syslog_socket: %s}\n", logSock)
	f.Close()
	d := startDaemonLogs(t, "policyd", logs.String, "-c", cfg)
	url := "http://" + metricsAddr + "/metrics"
	before := metricstest.Get(t, url)

	sock := filepath.Join(dir, "policy.sock")
	rcpt := func(id, client, sender, rcpt string) []string {
		return []string{"protocol_state=RCPT", "queue_id=" + id, "client_address=" + client, "helo_name=client.outside.test",
			"sender=" + sender, "recipient=" + rcpt, "instance=" + id}
	}
	for _, s := range []struct {
		attrs []string
		want  string
	}{
		{rcpt("7A1", "192.0.2.5", "spammer@bad.test", "a@example.test"), "554 "},
		{rcpt("7A2", "192.0.2.5", "x@spf-fail.test", "a@example.test"), "550 "},
		{rcpt("7A3", "192.0.2.5", "x@spf-pass.test", "a@example.test"), "DEFER_IF_PERMIT "},
		{rcpt("7A4", "127.0.0.1", "x@spf-pass.test", "b@example.test"), "DUNNO"},
	} {
		if got := policyAsk(t, sock, s.attrs...); !strings.HasPrefix(got, s.want) {
			t.Errorf("%v: %q; want %q…", s.attrs, got, s.want)
		}
	}

	head := `^<%d>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d postkit/policyd\[\d+\]: `
	wantSyslog(t, logs, fmt.Sprintf(head, 22)+`\{"level":"INFO","msg":"policy","queue_id":"7A1","stage":"RCPT","client":"192.0.2.5","helo":"client.outside.test","sender":"spammer@bad.test","recipient":"a@example.test","action":"554 `)
	wantSyslog(t, logs, fmt.Sprintf(head, 22)+`\{"level":"INFO","msg":"greylisted","check":"greylist","queue_id":"7A3","client":"192.0.2.5","sender":"x@spf-pass.test","recipient":"a@example.test"`)
	if s := d.log.String(); strings.Contains(s, `"msg":"policy"`) {
		t.Errorf("request lines on stderr with log.target syslog:\n%s", s)
	}

	after := metricstest.Get(t, url)
	for _, w := range []struct {
		name   string
		labels []string
		delta  float64
	}{
		{"postkit_policy_requests_total", []string{"action", "reject"}, 2},
		{"postkit_policy_requests_total", []string{"action", "defer"}, 1},
		{"postkit_policy_requests_total", []string{"action", "dunno"}, 1},
		{"postkit_policy_request_duration_seconds", nil, 4},
		{"postkit_policy_decisions_total", []string{"check", "blacklist", "result", "reject"}, 1},
		{"postkit_policy_decisions_total", []string{"check", "spf", "result", "reject"}, 1},
		{"postkit_policy_decisions_total", []string{"check", "greylist", "result", "defer"}, 1},
	} {
		if got := metricstest.Delta(before, after, w.name, w.labels...); got != w.delta {
			t.Errorf("%s moved by %v; want %v", metricstest.String(w.name, w.labels...), got, w.delta)
		}
	}
	for _, name := range []string{"postkit_build_info", "process_resident_memory_bytes", "process_start_time_seconds", "go_goroutines"} {
		if v, ok := after.Value(name); !ok || v <= 0 {
			t.Errorf("%s = %v, %v; want it served", name, v, ok)
		}
	}
}

// A syslog socket that is not there neither stops nor holds up the
// daemon: its lines go to stderr, after one notice.
func TestDaemonSyslogMissing(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "policy.sock")
	d := startDaemon(t, "policyd", "--listen", "unix:"+sock, "--checks", "blacklist", "--db", policyTestStore(t, dir),
		"--log-target", "syslog", "--set", "log.syslog_socket="+filepath.Join(dir, "no-such-log"))
	if got := policyAsk(t, sock, "protocol_state=RCPT", "queue_id=9Q1", "client_address=192.0.2.5", "sender=spammer@bad.test", "recipient=a@example.test"); !strings.HasPrefix(got, "554 ") {
		t.Errorf("action %q; want the blacklist's 554", got)
	}
	testlib.Eventually(t, 5e9, "the request's line on stderr", func() bool {
		return strings.Contains(d.log.String(), `postkit/policyd[`) && strings.Contains(d.log.String(), `msg=policy queue_id=9Q1`)
	})
	if n := strings.Count(d.log.String(), "does not answer"); n != 1 {
		t.Errorf("the missing socket was reported %d times; want once:\n%s", n, d.log.String())
	}
}
