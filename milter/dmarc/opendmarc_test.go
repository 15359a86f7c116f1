package dmarc_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-milter"
	"github.com/emersion/go-msgauth/dkim"

	"github.com/postkit/postkit/internal/dkimkey"
	"github.com/postkit/postkit/internal/dnsclient"
	"github.com/postkit/postkit/internal/dnstest"
	"github.com/postkit/postkit/internal/testlib"
	"github.com/postkit/postkit/milter/dkimverify"
	"github.com/postkit/postkit/milter/dmarc"
	"github.com/postkit/postkit/milter/filter"
	"github.com/postkit/postkit/milter/miltertest"
	"github.com/postkit/postkit/policyd/spfcheck"
)

// The interop zones. Every domain's SPF record lists goodIP only; keys of
// selector "s" sign for the domains the cases name.
const (
	goodIP   = "192.0.2.10"
	badIP    = "198.51.100.20"
	ourID    = "mx.postkit.test"
	peerID   = "opendmarc.test"
	selector = "s"
)

var interopZone = []string{
	`_dmarc.rej.test. 60 IN TXT "v=DMARC1; p=reject"`,
	`_dmarc.quar.test. 60 IN TXT "v=DMARC1; p=quarantine"`,
	`_dmarc.mon.test. 60 IN TXT "v=DMARC1; p=none"`,
	`_dmarc.strict.test. 60 IN TXT "v=DMARC1; p=reject; adkim=s; aspf=s"`,
	`_dmarc.sp.test. 60 IN TXT "v=DMARC1; p=none; sp=reject"`,
	`_dmarc.np.test. 60 IN TXT "v=DMARC1; p=none; np=reject"`,
	`_dmarc.pct0.test. 60 IN TXT "v=DMARC1; p=reject; pct=0"`,
	`_dmarc.broken.test. 60 IN TXT "v=DMARC1; p=sometimes"`,
	`_dmarc.two.test. 60 IN TXT "v=DMARC1; p=reject"`,
	`_dmarc.two.test. 60 IN TXT "v=DMARC1; p=none"`,
	`_dmarc.mixed.test. 60 IN TXT "v=spf1 -all"`,
	`_dmarc.mixed.test. 60 IN TXT "v=DMARC1; p=reject"`,
	`_dmarc.example.co.uk. 60 IN TXT "v=DMARC1; p=reject"`,
	`exists.np.test. 60 IN A 192.0.2.1`,
}

// spfDomains publish "v=spf1 ip4:goodIP -all".
var spfDomains = []string{"rej.test", "bounce.rej.test", "quar.test", "mon.test", "strict.test", "bounce.strict.test", "x.sp.test",
	"sp.test", "gone.np.test", "exists.np.test", "pct0.test", "none.test", "broken.test", "two.test", "mixed.test",
	"www.example.co.uk", "mx.rej.test", "other.test"}

type interopCase struct {
	name     string
	ip       string
	helo     string
	mailFrom string
	from     string // From field value
	signer   string // d= of a DKIM signature, "" for none
	tamper   bool   // break the signature
	// want is postkit's "result dis" (dis only with a policy record).
	want string
	// peer is OpenDMARC's when it differs from want, with why: the RFC text
	// that makes ours right.
	peer, why string
}

var interopCases = []interopCase{
	{name: "aligned SPF", ip: goodIP, mailFrom: "a@rej.test", from: "<a@rej.test>", want: "pass none"},
	{name: "relaxed SPF, MAIL FROM subdomain", ip: goodIP, mailFrom: "a@bounce.rej.test", from: "<a@rej.test>", want: "pass none"},
	{name: "strict SPF, MAIL FROM subdomain", ip: goodIP, mailFrom: "a@bounce.strict.test", from: "<a@strict.test>", want: "fail reject",
		peer: "pass none", why: `RFC 7489 section 3.1.1 (and 3.1.2 for SPF): in strict mode only an exact match of the two domain names is aligned. OpenDMARC 1.4.2 reduces the From domain to its organizational domain before comparing when a Public Suffix List is configured, and so aligns them (trusteddomainproject/OpenDMARC pull requests 268 and 354).`},
	{name: "SPF pass, unaligned", ip: goodIP, mailFrom: "a@other.test", from: "<a@rej.test>", want: "fail reject"},
	{name: "SPF fail, unaligned", ip: badIP, mailFrom: "a@other.test", from: "<a@rej.test>", want: "fail reject"},
	{name: "SPF fail, aligned", ip: badIP, mailFrom: "a@rej.test", from: "<a@rej.test>", want: "fail reject"},
	{name: "aligned DKIM, SPF fail", ip: badIP, mailFrom: "a@other.test", from: "<a@rej.test>", signer: "rej.test", want: "pass none"},
	{name: "relaxed DKIM, parent signs", ip: badIP, mailFrom: "a@other.test", from: "<a@mail.rej.test>", signer: "rej.test", want: "pass none"},
	{name: "relaxed DKIM, subdomain signs", ip: badIP, mailFrom: "a@other.test", from: "<a@rej.test>", signer: "mx.rej.test", want: "pass none"},
	{name: "strict DKIM, subdomain signs", ip: badIP, mailFrom: "a@other.test", from: "<a@strict.test>", signer: "mail.strict.test", want: "fail reject",
		peer: "pass none", why: `RFC 7489 section 3.1.1: strict DKIM alignment is an exact match of d= and the From domain; the same OpenDMARC 1.4.2 flaw as for strict SPF above.`},
	{name: "strict DKIM, exact", ip: badIP, mailFrom: "a@other.test", from: "<a@strict.test>", signer: "strict.test", want: "pass none"},
	{name: "broken DKIM signature", ip: badIP, mailFrom: "a@other.test", from: "<a@rej.test>", signer: "rej.test", tamper: true, want: "fail reject"},
	{name: "unaligned DKIM", ip: badIP, mailFrom: "a@other.test", from: "<a@rej.test>", signer: "other.test", want: "fail reject"},
	{name: "p=quarantine", ip: badIP, mailFrom: "a@other.test", from: "<a@quar.test>", want: "fail quarantine"},
	{name: "p=none", ip: badIP, mailFrom: "a@other.test", from: "<a@mon.test>", want: "fail none"},
	{name: "subdomain policy sp=reject", ip: badIP, mailFrom: "a@other.test", from: "<a@x.sp.test>", want: "fail reject"},
	{name: "organizational domain p=none with sp=reject", ip: badIP, mailFrom: "a@other.test", from: "<a@sp.test>", want: "fail none"},
	{name: "pct=0", ip: badIP, mailFrom: "a@other.test", from: "<a@pct0.test>", want: "fail quarantine",
		peer: "fail none", why: `RFC 7489 section 6.6.4: the requested policy must not be enacted on more than pct percent of the failing messages, and section 6.3 (pct) has a message left out by the sampling get the next less strict policy (reject becomes quarantine, quarantine becomes none), as DMARCbis keeps for t=y. OpenDMARC 1.4.2 applies none to the messages it samples out.`},
	{name: "np=reject, non-existent subdomain", ip: badIP, mailFrom: "a@other.test", from: "<a@gone.np.test>", want: "fail reject",
		peer: "fail none", why: `DMARCbis (draft-ietf-dmarc-dmarcbis) adds np=, the policy for subdomains that do not exist (no A, AAAA or MX record); RFC 7489 has no np= and OpenDMARC 1.4.2, which implements RFC 7489, applies sp= or p= (none here).`},
	{name: "np=reject, existing subdomain", ip: badIP, mailFrom: "a@other.test", from: "<a@exists.np.test>", want: "fail none"},
	{name: "no record", ip: badIP, mailFrom: "a@other.test", from: "<a@none.test>", want: "none"},
	{name: "broken record", ip: badIP, mailFrom: "a@other.test", from: "<a@broken.test>", want: "permerror"},
	{name: "two records", ip: badIP, mailFrom: "a@other.test", from: "<a@two.test>", want: "none",
		peer: "fail reject", why: `RFC 7489 section 6.6.3 step 3: when the remaining set contains multiple records, policy discovery terminates and DMARC processing is not applied to the message. OpenDMARC 1.4.2 applies the first record.`},
	{name: "DMARC record beside another TXT", ip: badIP, mailFrom: "a@other.test", from: "<a@mixed.test>", want: "fail reject",
		peer: "none", why: `RFC 7489 section 6.6.3 step 3: records that do not start with a v= tag naming the current DMARC version are discarded, the rest evaluated. OpenDMARC 1.4.2 gives up when the first TXT record is not a DMARC record.`},
	{name: "public suffix list", ip: goodIP, mailFrom: "a@www.example.co.uk", from: "<b@mail.example.co.uk>", want: "pass none"},
	{name: "public suffix list, unaligned", ip: badIP, mailFrom: "a@other.test", from: "<b@www.example.co.uk>", want: "fail reject"},
	{name: "From in upper case with a display name", ip: goodIP, mailFrom: "a@rej.test", from: `"The Boss" <BOSS@REJ.TEST>`, want: "pass none"},
	{name: "several addresses, one domain", ip: badIP, mailFrom: "a@other.test", from: "<a@rej.test>, <b@rej.test>", want: "fail reject"},
	{name: "several From domains", ip: badIP, mailFrom: "a@other.test", from: "<b@mon.test>, <a@rej.test>", want: "fail reject",
		peer: "none", why: `RFC 7489 section 6.6.1: with several domains in RFC5322.From, each is checked as an Author Domain and the strictest policy among those that fail applies. OpenDMARC 1.4.2 evaluates none of them.`},
	{name: "null sender, HELO aligned", ip: goodIP, helo: "mx.rej.test", mailFrom: "", from: "<a@rej.test>", want: "pass none"},
	{name: "null sender, HELO unaligned", ip: goodIP, helo: "mx.other.test", mailFrom: "", from: "<a@rej.test>", want: "fail reject"},
	{name: "DNS timeout", ip: badIP, mailFrom: "a@other.test", from: "<a@slow.test>", want: "temperror",
		peer: "none", why: `RFC 7489 section 11.2 registers dmarc=temperror for a temporary error during evaluation, after which a later attempt may give a final result; OpenDMARC 1.4.2 reports dmarc=none when the policy query times out, as if no policy were published.`},
}

// dkimKeys signs for a domain with selector s.
type dkimKeys struct {
	priv ed25519.PrivateKey
	txt  string
}

func newKeys(t *testing.T) dkimKeys {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	txt, err := dkimkey.Record(pub)
	if err != nil {
		t.Fatal(err)
	}
	return dkimKeys{priv, txt}
}

func (k dkimKeys) sign(t *testing.T, msg, domain string) string {
	var out strings.Builder
	if err := dkim.Sign(&out, strings.NewReader(msg), &dkim.SignOptions{Domain: domain, Selector: selector, Signer: k.priv,
		HeaderKeys: []string{"From", "Subject", "Date"}}); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// startResolverDNS starts the zone's server on port 53 of a random 127/8
// address and writes a resolv.conf naming it: libresolv, which OpenDMARC
// and its libspf2 use, cannot be given a port.
func startResolverDNS(t *testing.T) (*dnstest.Server, string) {
	for range 20 {
		n, _ := rand.Int(rand.Reader, big.NewInt(250*250))
		addr := fmt.Sprintf("127.%d.%d.%d", 60+n.Int64()%100, n.Int64()/250%250, 2+n.Int64()%250)
		srv, err := dnstest.StartAt(addr + ":53")
		if err != nil {
			continue
		}
		t.Cleanup(func() { srv.Close() })
		conf := filepath.Join(t.TempDir(), "resolv.conf")
		if err := os.WriteFile(conf, []byte("nameserver "+addr+"\noptions timeout:1 attempts:1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return srv, conf
	}
	t.Fatal("no free 127/8 address for a DNS server on port 53")
	return nil, ""
}

// startOpenDMARC runs OpenDMARC as a milter in a mount namespace where
// /etc/resolv.conf is resolv.
//
// Its Public Suffix List is Debian's with "test" added: the list has no
// rule for test, and the list's own algorithm then takes the default rule
// "*" (https://publicsuffix.org/list/, as golang.org/x/net/publicsuffix
// does, so that the organizational domain of a.b.test is b.test), while
// OpenDMARC 1.4.2 then takes the whole name. With the rule written out
// both compute the same organizational domains, and the table compares
// DMARC, not a corner of the list.
//
// HoldQuarantinedMessages makes OpenDMARC act on (and report dis=) a
// quarantine policy, as postkit does.
func startOpenDMARC(t *testing.T, bin, unshare, resolv string) string {
	dir := t.TempDir()
	sock := filepath.Join(dir, "od.sock")
	conf := filepath.Join(dir, "opendmarc.conf")
	psl, err := os.ReadFile("/usr/share/publicsuffix/public_suffix_list.dat")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "psl.dat"), append(psl, "\n// postkit interop test zones\ntest\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte(`AuthservID `+peerID+`
TrustedAuthservIDs `+ourID+`
Socket local:`+sock+`
Background false
Syslog false
PublicSuffixList `+dir+`/psl.dat
HoldQuarantinedMessages true
SPFSelfValidate true
SPFIgnoreResults false
RejectFailures true
RequiredHeaders false
DNSTimeout 3
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(unshare, "-m", "sh", "-c", `mount --bind "$1" /etc/resolv.conf && exec "$2" -c "$3" -f`, "sh", resolv, bin, conf)
	var stderr strings.Builder
	cmd.Stderr, cmd.Stdout = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	testlib.Eventually(t, 10*time.Second, "opendmarc listening", func() bool {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return sock
}

var disRE = regexp.MustCompile(`dmarc=(\w+)(?: \(p=\w+(?: sp=\w+)? dis=(\w+)\))?`)

// verdict reads "result dis" from an Authentication-Results value: the
// disposition only for pass and fail (OpenDMARC writes "(p=none dis=none)"
// after dmarc=none too).
func verdict(v string) (string, bool) {
	m := disRE.FindStringSubmatch(strings.Join(strings.Fields(v), " "))
	if m == nil {
		return "", false
	}
	if m[1] != "pass" && m[1] != "fail" {
		return m[1], true
	}
	return strings.TrimSpace(m[1] + " " + m[2]), true
}

// peerVerdict passes the message (with our DKIM verifier's
// Authentication-Results) through OpenDMARC; it returns "result dis".
func peerVerdict(t *testing.T, sock string, c interopCase, hs []filter.Header, body string) string {
	cl := milter.NewClientWithOptions("unix", sock, milter.ClientOptions{
		Dialer: &net.Dialer{Timeout: 5 * time.Second}, ReadTimeout: 20 * time.Second, WriteTimeout: 5 * time.Second,
		ActionMask: milter.OptAddHeader | milter.OptChangeHeader | milter.OptQuarantine,
	})
	defer cl.Close()
	s, err := cl.Session()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	check := func(act *milter.Action, err error) bool {
		t.Helper()
		if err != nil {
			t.Fatalf("opendmarc: %v", err)
		}
		return act == nil || act.Code == milter.ActContinue
	}
	helo := c.helo
	if helo == "" {
		helo = "client.other.test"
	}
	check(s.Conn(helo, milter.FamilyInet, 25000, c.ip))
	check(s.Helo(helo))
	check(s.Mail("<"+c.mailFrom+">", nil))
	check(s.Rcpt("<bob@example.test>", nil))
	for _, h := range hs {
		check(s.HeaderField(h.Name, h.Value))
	}
	check(s.HeaderEnd())
	check(s.BodyChunk([]byte(body)))
	acts, act, err := s.End()
	if err != nil {
		t.Fatalf("opendmarc end: %v", err)
	}
	rejected := act != nil && (act.Code == milter.ActReject || (act.Code == milter.ActReplyCode && act.SMTPCode/100 == 5))
	for _, a := range acts {
		if strings.EqualFold(a.HeaderName, "Authentication-Results") && strings.Contains(a.HeaderValue, peerID) && strings.Contains(a.HeaderValue, "dmarc=") {
			v, ok := verdict(a.HeaderValue)
			if !ok {
				t.Fatalf("opendmarc wrote %q", a.HeaderValue)
			}
			return v
		}
	}
	if rejected {
		return "fail reject"
	}
	return "none"
}

// TestInteropOpenDMARC evaluates the same messages with the same DNS zones
// through postkit's chain (dkimverify, dmarc) and through Debian's
// OpenDMARC run as a milter after our DKIM verifier (OpenDMARC does not
// verify DKIM: it reads the trusted Authentication-Results, as it does
// behind OpenDKIM), and compares dmarc= results and dispositions.
func TestInteropOpenDMARC(t *testing.T) {
	testlib.NeedRoot(t)
	bins := testlib.NeedBinary(t, "/usr/sbin/opendmarc", "unshare")
	if _, err := os.Stat("/usr/share/publicsuffix/public_suffix_list.dat"); err != nil {
		testlib.NeedBinary(t, "/usr/share/publicsuffix/public_suffix_list.dat")
	}
	keys := newKeys(t)
	srv, resolv := startResolverDNS(t)
	z := interopZone
	for _, d := range spfDomains {
		z = append(z, d+`. 60 IN TXT "v=spf1 ip4:`+goodIP+` -all"`)
	}
	for _, d := range []string{"rej.test", "mx.rej.test", "strict.test", "mail.strict.test", "other.test"} {
		z = append(z, selector+"._domainkey."+d+". 60 IN TXT \""+keys.txt+"\"")
	}
	zone, err := dnstest.ParseZone(z...)
	if err != nil {
		t.Fatal(err)
	}
	zone.Timeout("_dmarc.slow.test")
	zone.Timeout("slow.test")
	srv.Set(zone)
	sock := startOpenDMARC(t, bins[0], bins[1], resolv)

	res, err := dnsclient.New(dnsclient.Config{Servers: []string{srv.Addr()}, Timeout: 500 * time.Millisecond, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	ver, err := dkimverify.New(dkimverify.Config{Resolver: res, AuthservID: ourID, Logger: testlib.Discard()})
	if err != nil {
		t.Fatal(err)
	}
	spf, err := spfcheck.New(spfcheck.Config{Mode: spfcheck.Header, Hostname: ourID, Trusted: []netip.Prefix{}}, res)
	if err != nil {
		t.Fatal(err)
	}
	f, err := dmarc.New(dmarc.Config{Resolver: res, AuthservID: ourID, Logger: testlib.Discard(), Timeout: 5 * time.Second,
		SPF: func(ctx context.Context, ip netip.Addr, helo, sender string) (string, string) {
			var o spfcheck.Outcome
			if sender == "" {
				o = spf.Evaluate(ctx, ip, helo, "").MailFrom
			} else {
				o = spf.CheckHost(ctx, ip, helo, sender)
			}
			return string(o.Result), o.Domain
		}})
	if err != nil {
		t.Fatal(err)
	}
	if len(interopCases) < 25 {
		t.Fatalf("%d cases; the interop table needs at least 25", len(interopCases))
	}
	body := "Hello.\r\n"
	for i, c := range interopCases {
		t.Run(c.name, func(t *testing.T) {
			raw := fmt.Sprintf("From: %s\r\nTo: <bob@example.test>\r\nSubject: case %d\r\nDate: Mon, 2 Mar 2026 10:00:00 +0000\r\nMessage-ID: <%d@interop.test>\r\n\r\n%s", c.from, i, i, body)
			if c.signer != "" {
				raw = keys.sign(t, raw, c.signer)
				if c.tamper {
					raw = strings.Replace(raw, "Hello.", "Hello!", 1)
				}
			}
			hs, b, err := miltertest.SplitMessage([]byte(raw))
			if err != nil {
				t.Fatal(err)
			}
			helo := c.helo
			if helo == "" {
				helo = "client.other.test"
			}
			conn := &filter.Conn{Addr: netip.MustParseAddr(c.ip), Helo: helo, Port: 25000}
			// Our DKIM verifier alone: the header OpenDMARC is given.
			m1 := &filter.Message{Conn: conn, MailFrom: c.mailFrom, Rcpts: []string{"bob@example.test"}, Headers: append([]filter.Header(nil), hs...)}
			miltertest.Run(t, m1, string(b), 0, ver)
			// The chain: verifier then DMARC.
			m2 := &filter.Message{Conn: conn, MailFrom: c.mailFrom, Rcpts: []string{"bob@example.test"}, Headers: append([]filter.Header(nil), hs...)}
			ch := miltertest.Run(t, m2, string(b), 0, ver, f)
			ours := ""
			for _, h := range m2.Headers {
				if h.Name == "Authentication-Results" && strings.HasPrefix(h.Value, ourID) {
					ours, _ = verdict(h.Value)
				}
			}
			if (ch.Verdict == filter.Reject) != strings.HasSuffix(ours, " reject") {
				t.Errorf("verdict %v with %q: a reject disposition must refuse, and only it", ch.Verdict, ours)
			}
			peer := peerVerdict(t, sock, c, m1.Headers, string(b))
			wantPeer := c.want
			if c.peer != "" {
				wantPeer = c.peer
			}
			if ours != c.want || peer != wantPeer {
				t.Errorf("postkit %q (want %q), OpenDMARC %q (want %q)", ours, c.want, peer, wantPeer)
			}
			t.Logf("%-45s postkit %-16s OpenDMARC %s", c.name, ours, peer)
		})
	}
}
