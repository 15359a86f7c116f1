package harness

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/miekg/dns"
	"github.com/postkit/postkit/internal/dnstest"
)

func TestSetKey(t *testing.T) {
	tests := []struct {
		name    string
		key     string
		val     any
		want    map[string]any
		wantErr bool
	}{
		{"new section", "milter.enabled", true,
			map[string]any{"hostname": "h", "policy": map[string]any{"enabled": false}, "milter": map[string]any{"enabled": true}}, false},
		{"override", "policy.enabled", true,
			map[string]any{"hostname": "h", "policy": map[string]any{"enabled": true}}, false},
		{"delete", "policy.enabled", nil,
			map[string]any{"hostname": "h", "policy": map[string]any{}}, false},
		{"top level", "hostname", "x",
			map[string]any{"hostname": "x", "policy": map[string]any{"enabled": false}}, false},
		{"value is not a section", "hostname.sub", 1, nil, true},
		{"empty part", "policy..enabled", 1, nil, true},
		{"trailing dot", "policy.", 1, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := map[string]any{"hostname": "h", "policy": map[string]any{"enabled": false}}
			err := SetKey(doc, tt.key, tt.val)
			if (err != nil) != tt.wantErr {
				t.Fatalf("SetKey(%q) error = %v, want error %v", tt.key, err, tt.wantErr)
			}
			if !tt.wantErr && !reflect.DeepEqual(doc, tt.want) {
				t.Errorf("SetKey(%q) = %v, want %v", tt.key, doc, tt.want)
			}
		})
	}
}

func TestHeaderValue(t *testing.T) {
	msg := "Received: from a\r\n\tby b\r\nSubject:  hello world \r\nX-Spam-Flag: YES\r\n" +
		"X-Empty:\r\n\r\nSubject: in the body\r\nTo: body@example.org\r\n"
	tests := []struct {
		name, want string
	}{
		{"Received", "from a by b"},
		{"subject", "hello world"},
		{"X-SPAM-FLAG", "YES"},
		{"X-Empty", ""},
		{"To", ""}, // only in the body
		{"From", ""},
	}
	for _, tt := range tests {
		if got := headerValue([]byte(msg), tt.name); got != tt.want {
			t.Errorf("headerValue(%q) = %q, want %q", tt.name, got, tt.want)
		}
	}
	if got := headerValue([]byte("A: 1\nB: 2\n\nA: 3\n"), "A"); got != "1" {
		t.Errorf("headerValue with LF line ends = %q, want 1", got)
	}
}

func FuzzHeaderValue(f *testing.F) {
	f.Add([]byte("Subject: a\r\n b\r\n\r\nbody"), "Subject")
	f.Add([]byte(":\n \n\t"), "")
	f.Add([]byte("X: y"), "x")
	f.Add([]byte("!:0\r0"), "!") // a bare CR ended up in the value
	f.Fuzz(func(t *testing.T, msg []byte, name string) {
		v := headerValue(msg, name)
		if strings.ContainsAny(v, "\r\n") {
			t.Errorf("headerValue(%q, %q) = %q holds a line break", msg, name, v)
		}
	})
}

func TestLastLines(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"a\nb\nc\n", 2, "b\nc"},
		{"a\nb\nc", 5, "a\nb\nc"},
		{"", 3, "(empty)"},
		{"\n\n", 3, "(empty)"},
	}
	for _, tt := range tests {
		if got := lastLines(tt.in, tt.n); got != tt.want {
			t.Errorf("lastLines(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}

func TestSink(t *testing.T) {
	dir := t.TempDir()
	k, err := StartSink("127.0.0.1:0", dir)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	msg := Message("a@example.org", "b@outside.test", "tok123")
	c, err := smtp.Dial(k.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := Send(c, "a@example.org", []string{"b@outside.test", "c@outside.test"}, msg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := k.Wait(ctx, func(m SinkMessage) bool { return bytes.Contains(m.Data, []byte("tok123")) })
	if err != nil {
		t.Fatal(err)
	}
	if m.From != "a@example.org" || !reflect.DeepEqual(m.To, []string{"b@outside.test", "c@outside.test"}) {
		t.Errorf("envelope = %s %v", m.From, m.To)
	}
	if got := m.Header("Subject"); got != "postkit e2e tok123" {
		t.Errorf("Subject = %q", got)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.eml"))
	if len(files) != 1 {
		t.Errorf("sink wrote %v, want one file", files)
	}
	// A message that never comes: Wait gives up with the context.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	if _, err := k.Wait(ctx2, func(m SinkMessage) bool { return false }); err == nil {
		t.Error("Wait for a message never sent returned no error")
	}
}

func TestSelfSigned(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	pemBytes, err := writeSelfSigned(certFile, keyFile, "mail.example.test", now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
		t.Fatalf("key pair does not load: %v", err)
	}
	blk, _ := pem.Decode(pemBytes)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	for _, name := range []string{"mail.example.test", "localhost", "127.0.0.1"} {
		if _, err := cert.Verify(x509.VerifyOptions{DNSName: name, Roots: pool, CurrentTime: now}); err != nil {
			t.Errorf("verify for %s: %v", name, err)
		}
	}
	if _, err := cert.Verify(x509.VerifyOptions{DNSName: "other.example", Roots: pool, CurrentTime: now}); err == nil {
		t.Error("certificate verifies for a name it does not carry")
	}
	if _, err := cert.Verify(x509.VerifyOptions{DNSName: "localhost", Roots: pool, CurrentTime: now.Add(31 * 24 * time.Hour)}); err == nil {
		t.Error("certificate still valid after 31 days")
	}
}

func TestDNSRelay(t *testing.T) {
	srv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if err := srv.SetZone(DefaultZone("mail.example.test", []string{"example.test"})...); err != nil {
		t.Fatal(err)
	}
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	r, err := startRelay(Addr(port), srv.Addr())
	if err != nil {
		t.Skipf("cannot listen on UDP and TCP %s: %v", Addr(port), err)
	}
	defer r.Close()
	tests := []struct {
		net, name string
		qtype     uint16
		want      string
		rcode     int
	}{
		{"udp", "example.test.", dns.TypeMX, "mail.example.test.", dns.RcodeSuccess},
		{"tcp", "mx.outside.test.", dns.TypeA, "127.0.0.1", dns.RcodeSuccess},
		{"udp", "nothing.example.test.", dns.TypeA, "", dns.RcodeNameError},
	}
	for _, tt := range tests {
		c := &dns.Client{Net: tt.net, Timeout: 2 * time.Second}
		q := new(dns.Msg)
		q.SetQuestion(tt.name, tt.qtype)
		resp, _, err := c.Exchange(q, Addr(port))
		if err != nil {
			t.Errorf("%s %s: %v", tt.net, tt.name, err)
			continue
		}
		if resp.Rcode != tt.rcode {
			t.Errorf("%s %s: rcode %d, want %d", tt.net, tt.name, resp.Rcode, tt.rcode)
		}
		if tt.want != "" && (len(resp.Answer) == 0 || !strings.Contains(resp.Answer[0].String(), tt.want)) {
			t.Errorf("%s %s: answer %v, want %s", tt.net, tt.name, resp.Answer, tt.want)
		}
	}
}

func TestCheckNamesWhatIsMissing(t *testing.T) {
	err := Check()
	if err == nil {
		return // root with everything installed: nothing to name
	}
	if !strings.Contains(err.Error(), "root") && !strings.Contains(err.Error(), "missing") {
		t.Errorf("Check() = %v, want it to say what is missing", err)
	}
}

// recorder is a testing.TB that records Skip and Fatal and stops the
// calling goroutine as they do.
type recorder struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (r *recorder) Helper()       {}
func (r *recorder) Skip(a ...any) { r.skipped, r.msg = true, fmt.Sprint(a...); runtime.Goexit() }
func (r *recorder) Skipf(f string, a ...any) {
	r.skipped, r.msg = true, fmt.Sprintf(f, a...)
	runtime.Goexit()
}
func (r *recorder) Fatal(a ...any) { r.failed, r.msg = true, fmt.Sprint(a...); runtime.Goexit() }
func (r *recorder) Fatalf(f string, a ...any) {
	r.failed, r.msg = true, fmt.Sprintf(f, a...)
	runtime.Goexit()
}

// StartT skips (fails under POSTKIT_E2E=1) when there can be no stack, and
// fails the test when the stack does not start.
func TestStartTSkipsOrFails(t *testing.T) {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		StartT(r, Options{Root: "relative/root"})
	}()
	<-done
	switch {
	case Check() != nil && !RequiredByEnv(), testing.Short() && !RequiredByEnv():
		if !r.skipped {
			t.Errorf("StartT without the means to run a stack: skipped=%v failed=%v (%s); want a skip", r.skipped, r.failed, r.msg)
		}
	case Check() != nil:
		if !r.failed || !strings.Contains(r.msg, "POSTKIT_E2E=1") {
			t.Errorf("StartT under POSTKIT_E2E=1 without the means to run a stack: failed=%v (%s); want a failure", r.failed, r.msg)
		}
	default:
		if !r.failed || !strings.Contains(r.msg, `harness: root "relative/root" must be an absolute path`) {
			t.Errorf("StartT with a relative root: failed=%v (%s); want Start's error", r.failed, r.msg)
		}
	}
}
