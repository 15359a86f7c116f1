//go:build bench

package milterbench

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-milter"
	"github.com/emersion/go-msgauth/dkim"

	"github.com/postkit/postkit/internal/dkimkey"
	"github.com/postkit/postkit/internal/dnstest"
	"github.com/postkit/postkit/milter/miltertest"
)

// The DMARC cost: inbound mail through `postkit milter --verify` (DKIM
// verification and the rest of the inbound chain) with and without
// --dmarc, the same signed messages, DNS answered by a loopback server
// with hour-long TTLs so that after the warm-up every answer comes from
// the resolver's cache. The difference of CPU per message of the milter
// process is DMARC's: policy discovery from the cache, SPF of the
// envelope sender (policyd/spfcheck, cached per identity), alignment,
// the Authentication-Results rewrite, and, in the third target, the row
// recorded for the aggregate reports in the WAL SQLite store.
const (
	dmarcDomain = "sender.bench.test"
	dmarcClient = "192.0.2.10"
)

// dmarcZone serves the sender's SPF, DMARC and DKIM records.
func dmarcZone(t testing.TB, pub ed25519.PublicKey) *dnstest.Server {
	txt, err := dkimkey.Record(pub)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	if err := srv.SetZone(
		dmarcDomain+`. 3600 IN TXT "v=spf1 ip4:`+dmarcClient+` -all"`,
		`_dmarc.`+dmarcDomain+`. 3600 IN TXT "v=DMARC1; p=reject; rua=mailto:dmarc@`+dmarcDomain+`"`,
		`s1._domainkey.`+dmarcDomain+`. 3600 IN TXT "`+txt+`"`,
	); err != nil {
		t.Fatal(err)
	}
	return srv
}

// startInbound runs `postkit milter` from its built-in document for
// inbound mail: --verify, and args.
func startInbound(t testing.TB, dir, name, bin, dns string, args ...string) *proc {
	t.Helper()
	sock := filepath.Join(dir, name+".sock")
	p := &proc{addr: map[string]string{"unix": "unix:" + sock}}
	a := append([]string{"milter", "--listen", p.addr["unix"], "--verify", "--dns-server", dns, "--authserv-id", "mx.bench.test",
		"--socket-mode", "0666", "--log-level", logLevel, "--drain", "5s", "--set", "paths.postkit_run=" + dir}, args...)
	p.cmd = exec.Command(bin, a...)
	p.cmd.Stderr = os.Stderr
	p.start(t, sock, name)
	return p
}

// signedInbound is a message of the sender domain, DKIM-signed by it.
func signedInbound(t testing.TB, key ed25519.PrivateKey, size int) []byte {
	var b strings.Builder
	b.WriteString("From: News <news@" + dmarcDomain + ">\r\nTo: <bob@example.org>\r\nSubject: benchmark\r\n")
	b.WriteString("Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <bench@" + dmarcDomain + ">\r\n\r\n")
	line := strings.Repeat("0123456789", 7) + "abcdefgh\r\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	var out strings.Builder
	if err := dkim.Sign(&out, strings.NewReader(b.String()), &dkim.SignOptions{Domain: dmarcDomain, Selector: "s1", Signer: key}); err != nil {
		t.Fatal(err)
	}
	return []byte(out.String())
}

// driveInbound sends n messages from an outside client over conns
// connections and checks every answer carries our Authentication-Results
// with want in it.
func driveInbound(t testing.TB, address string, n, conns int, raw []byte, want string) {
	t.Helper()
	hdrs, body, err := miltertest.SplitMessage(raw)
	if err != nil {
		t.Fatal(err)
	}
	cl := milter.NewClientWithOptions("unix", address, milter.ClientOptions{
		ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second,
		ActionMask: miltertest.DefaultActions, ProtocolMask: miltertest.DefaultProtocol,
	})
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if firstErr == nil {
			firstErr = err
		}
	}
	per := (n + conns - 1) / conns
	for c := 0; c < conns; c++ {
		lo, hi := c*per, min((c+1)*per, n)
		if lo >= hi {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := cl.Session()
			if err != nil {
				fail(err)
				return
			}
			defer s.Close()
			s.Macros(milter.CodeConn, "j", "mx.bench.test")
			if _, err := s.Conn("mail.sender.bench.test", milter.FamilyInet, 40000, dmarcClient); err != nil {
				fail(err)
				return
			}
			if _, err := s.Helo("mail." + dmarcDomain); err != nil {
				fail(err)
				return
			}
			for i := lo; i < hi; i++ {
				s.Macros(milter.CodeMail, "i", fmt.Sprintf("Q%06d", i))
				if _, err := s.Mail("bounce@"+dmarcDomain, nil); err != nil {
					fail(err)
					return
				}
				if _, err := s.Rcpt("bob@example.org", nil); err != nil {
					fail(err)
					return
				}
				for _, h := range hdrs {
					if _, err := s.HeaderField(h.Name, h.Value); err != nil {
						fail(err)
						return
					}
				}
				if _, err := s.HeaderEnd(); err != nil {
					fail(err)
					return
				}
				for off := 0; off < len(body); off += milter.MaxBodyChunk {
					if _, err := s.BodyChunk(body[off:min(off+milter.MaxBodyChunk, len(body))]); err != nil {
						fail(err)
						return
					}
				}
				mods, act, err := s.End()
				if err != nil || (act.Code != milter.ActAccept && act.Code != milter.ActContinue) {
					fail(fmt.Errorf("eom: %v %v", act, err))
					return
				}
				ok := false
				for _, md := range mods {
					ok = ok || (strings.EqualFold(md.HeaderName, "Authentication-Results") && strings.Contains(md.HeaderValue, want))
				}
				if !ok {
					fail(fmt.Errorf("message %d: no Authentication-Results with %q (mods %+v)", i, want, mods))
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
}

// TestDMARCCost measures CPU per message of the inbound chain with and
// without DMARC, alternating the targets in rounds.
func TestDMARCCost(t *testing.T) {
	dir := miltertest.PublicTempDir(t)
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dns := dmarcZone(t, pub).Addr()
	bin := postkitBin(t, binOpenSSL != "")
	raw := signedInbound(t, key, msgBytes)
	type tgt struct {
		name, want string
		p          *proc
		cpu, took  time.Duration
		n          int
	}
	tgs := []*tgt{
		{name: "inbound, no DMARC", want: "dkim=pass", p: startInbound(t, dir, "nodmarc", bin, dns)},
		{name: "inbound, DMARC", want: "dmarc=pass", p: startInbound(t, dir, "dmarc", bin, dns, "--dmarc", "--set", "milter.dmarc.report.enabled=false")},
		{name: "inbound, DMARC + report rows", want: "dmarc=pass", p: startInbound(t, dir, "dmarcrep", bin, dns, "--dmarc")},
	}
	for _, g := range tgs {
		driveInbound(t, strings.TrimPrefix(g.p.addr["unix"], "unix:"), 100, 2, raw, g.want) // warm the caches
	}
	rounds := envInt("BENCH_ROUNDS", 2) * 2
	per := (nMsgs + rounds - 1) / rounds
	for r := 0; r < rounds; r++ {
		for i := range tgs {
			g := tgs[(i+r)%len(tgs)]
			c0, t0 := cpu(t, g.p.pid()), time.Now()
			driveInbound(t, strings.TrimPrefix(g.p.addr["unix"], "unix:"), per, nConns, raw, g.want)
			g.took += time.Since(t0)
			g.cpu += cpu(t, g.p.pid()) - c0
			g.n += per
		}
	}
	base := float64(tgs[0].cpu) / float64(tgs[0].n) / 1e6
	for _, g := range tgs {
		ms := float64(g.cpu) / float64(g.n) / 1e6
		record(row{section: "dmarc", name: g.name, rate: float64(g.n) / g.took.Seconds(), cpuMsg: g.cpu / time.Duration(g.n)})
		if g != tgs[0] {
			extra := ms - base
			verdict := "met"
			if extra > 0.1 {
				verdict = "MISSED"
				resultsMu.Lock()
				missedTargets++
				resultsMu.Unlock()
			}
			note(fmt.Sprintf("DMARC cost, %s: %+.3f ms CPU per message over the chain without it (want ≤ 0.100 ms, cached DNS) %s", g.name, extra, verdict))
		}
	}
}
