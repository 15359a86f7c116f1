package spfcheck

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/postkit/postkit/internal/dnsclient"
	"github.com/postkit/postkit/internal/dnstest"
	"github.com/postkit/postkit/policyd"
)

// suitePath is the RFC 7208 test suite (openspf.org, release 2014.04 with
// the 2019.08 additions), copied verbatim from its release.
const suitePath = "testdata/rfc7208-tests.yml"

var receivedSPF = regexp.MustCompile(`^PREPEND Received-SPF: ([a-z]+) \((.*?)\) client-ip=`)

// TestRFC7208Suite runs every test of the suite through the policy server
// over a unix socket, with dnstest serving the scenario's zone data, in
// header mode, and reads the result back from the Received-SPF header.
func TestRFC7208Suite(t *testing.T) {
	scenarios, err := dnstest.LoadSPFSuite(suitePath)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	total := 0
	for _, sc := range scenarios {
		t.Run(strings.ReplaceAll(sc.Description, " ", "_"), func(t *testing.T) {
			srv.Set(sc.Zone)
			res, err := dnsclient.New(dnsclient.Config{Servers: []string{srv.Addr()}, Timeout: 150 * time.Millisecond, Attempts: 1})
			if err != nil {
				t.Fatal(err)
			}
			chk, err := New(Config{Mode: Header, Hostname: "receiver.test", Trusted: []netip.Prefix{},
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, res)
			if err != nil {
				t.Fatal(err)
			}
			ask := startServer(t, chk)
			for _, tt := range sc.Tests {
				total++
				t.Run(tt.Name, func(t *testing.T) {
					action := ask(map[string]string{
						"client_address": tt.Host,
						"helo_name":      tt.Helo,
						"sender":         tt.MailFrom,
						"instance":       "suite." + tt.Name,
					})
					m := receivedSPF.FindStringSubmatch(action)
					if m == nil {
						t.Fatalf("answer %q has no Received-SPF header", action)
					}
					if !slices.Contains(tt.Results, m[1]) {
						t.Errorf("result %s, want %s (spec %s)\n%s\n%s", m[1], strings.Join(tt.Results, " or "),
							strings.Join(tt.Spec, ","), action, tt.Description)
					}
					if m[1] == "fail" && tt.Explanation != "" && tt.Explanation != "DEFAULT" {
						// Case-insensitive: the suite writes %{ir} of an IPv6
						// address in upper case, RFC 7208 §7.4's example
						// in lower case (what we produce).
						if want := "receiver.test: " + tt.Explanation; !strings.EqualFold(m[2], want) {
							t.Errorf("explanation %q, want %q", m[2], want)
						}
					}
				})
			}
		})
	}
	if total < 150 {
		t.Errorf("ran %d tests; the suite has more, the loader lost some", total)
	}
}

// startServer runs a policy server with chk on a unix socket and returns a
// function asking one RCPT request over one connection.
func startServer(t *testing.T, chk policyd.Check) func(map[string]string) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "policy.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := &policyd.Server{Checks: []policyd.Check{chk}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	go s.Serve(ln)
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s.Shutdown(ctx)
		os.Remove(sock)
	})
	br := bufio.NewReader(c)
	return func(attrs map[string]string) string {
		var b strings.Builder
		b.WriteString("request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nrecipient=rcpt@receiver.test\n")
		for k, v := range attrs {
			fmt.Fprintf(&b, "%s=%s\n", k, v)
		}
		b.WriteString("\n")
		c.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.WriteString(c, b.String()); err != nil {
			t.Fatal(err)
		}
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if blank, err := br.ReadString('\n'); err != nil || blank != "\n" {
			t.Fatalf("reply not ended by an empty line: %q %v", blank, err)
		}
		return strings.TrimPrefix(strings.TrimSuffix(line, "\n"), "action=")
	}
}
