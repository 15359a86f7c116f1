package assemble_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-milter"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/internal/daemon"
	"github.com/postkit/postkit/internal/dkimkey"
	"github.com/postkit/postkit/internal/dnstest"
	"github.com/postkit/postkit/milter/assemble"
	"github.com/postkit/postkit/milter/filter"
	"github.com/postkit/postkit/milter/milterd"
	"github.com/postkit/postkit/milter/miltertest"
	"github.com/postkit/postkit/sqlmaps"
)

const yamlBase = `hostname: mx.example.test
domains: [example.test]
trusted_networks: [127.0.0.1/32]
postfix: {chroot: false}
`

var quiet = slog.New(slog.DiscardHandler)

// writeKey writes an Ed25519 key as `postkit dkim keygen` lays it out
// (DIR/DOMAIN/SELECTOR.private).
func writeKey(t *testing.T, dir, domain, selector string) {
	t.Helper()
	k, err := dkimkey.Generate(dkimkey.Ed25519, 0, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := dkimkey.WriteKeyFiles(filepath.Join(dir, domain), selector, domain, k); err != nil {
		t.Fatal(err)
	}
}

// loadYAML loads y, with postkit's state (the spam filter's Bayes store)
// in a directory of the test's unless y says where.
func loadYAML(t *testing.T, y string) *config.Config {
	t.Helper()
	if !strings.Contains(y, "\npaths:") {
		y += "paths: {postkit_run: " + t.TempDir() + "}\n"
	}
	p := filepath.Join(t.TempDir(), "postkit.yaml")
	if err := os.WriteFile(p, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	c, _, err := config.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The YAML's milter section decides the chain and where keys are read.
func TestNew(t *testing.T) {
	keyDir := t.TempDir()
	writeKey(t, keyDir, "example.test", "ed1")
	tests := []struct {
		name      string
		milter    string // lines under milter:
		dkim      string // lines under milter.dkim:
		wantChain string
		wantErr   string
	}{
		{"defaults with a key", "", "    keys: [{domain: example.test, selector: ed1}]\n", "scrub,dkimsign,dkimverify,forged,dmarc,ownfrom,spam", ""},
		{"no key: not signed", "", "", "scrub,dkimverify,forged,dmarc,ownfrom,spam", ""},
		{"scrub off", "  scrub: {enabled: false}\n", "    keys: [{domain: example.test, selector: ed1}]\n", "dkimsign,dkimverify,forged,dmarc,ownfrom,spam", ""},
		{"sign off", "", "    sign: false\n    keys: [{domain: example.test, selector: ed1}]\n", "scrub,dkimverify,forged,dmarc,ownfrom,spam", ""},
		{"verify off", "", "    verify: false\n", "scrub,forged,dmarc,ownfrom,spam", ""},
		{"explicit key file", "", "    keys: [{domain: Example.Test, selector: ed1, key_file: KEYDIR/example.test/ed1.private}]\n", "scrub,dkimsign,dkimverify,forged,dmarc,ownfrom,spam", ""},
		{"missing key file under key_dir", "", "    keys: [{domain: example.test, selector: nope}]\n", "", "KEYDIR/example.test/nope.private"},
		{"custom scrub rules", "  scrub:\n    rules: [{header: X-Secret, action: replace, with: hidden}]\n", "    verify: false\n", "scrub,forged,dmarc,ownfrom,spam", ""},
		{"own_from off", "  own_from: off\n", "", "scrub,dkimverify,forged,dmarc,spam", ""},
		{"spam off", "  spam: {enabled: false}\n", "", "scrub,dkimverify,forged,dmarc,ownfrom", ""},
		{"dmarc off", "  dmarc: {enabled: false}\n", "", "scrub,dkimverify,forged,ownfrom,spam", ""},
		{"dmarc store not writable", "  dmarc: {trusted_forwarders: [192.0.2.0/24], report: {path: /dev/null/dmarc.sqlite}}\n", "", "", "milter.dmarc.report.path"},
		{"bad spam rules dir", "  spam: {rules_dir: /nonexistent/spam.d}\n", "", "", "/nonexistent/spam.d"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			y := yamlBase + "dns: {servers: [\"127.0.0.1:53\"]}\nmilter:\n" + tt.milter +
				"  dkim:\n    key_dir: " + keyDir + "\n" + strings.ReplaceAll(tt.dkim, "KEYDIR", keyDir)
			ch, err := assemble.New(loadYAML(t, y), assemble.Options{Logger: quiet})
			if tt.wantErr != "" {
				want := strings.ReplaceAll(tt.wantErr, "KEYDIR", keyDir)
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("New error %v, want one naming %q", err, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer ch.Close()
			if got := strings.Join(assemble.Names(ch), ","); got != tt.wantChain {
				t.Errorf("chain %q, want %q", got, tt.wantChain)
			}
		})
	}
}

func TestBuildErrors(t *testing.T) {
	c := loadYAML(t, yamlBase+"dns: {servers: [\"127.0.0.1:53\"]}\n")
	nop := func(*assemble.Builder) (filter.Filter, error) { return nothing{}, nil }
	for _, tt := range []struct {
		name  string
		table assemble.Table
		want  string
	}{
		{"twice", assemble.Table{{Name: "nothing", New: nop}, {Name: "nothing", New: nop}}, `"nothing" is in the table twice`},
		{"misnamed", assemble.Table{{Name: "other", New: nop}}, `entry "other" built a filter named "nothing"`},
		{"no constructor", assemble.Table{{Name: "nothing"}}, "without a constructor"},
	} {
		if _, err := tt.table.Build(c, assemble.Options{Logger: quiet}); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v; want %q", tt.name, err, tt.want)
		}
	}
	c.Milter.OnError = "shrug"
	if _, err := assemble.New(c, assemble.Options{Logger: quiet}); err == nil || !strings.Contains(err.Error(), "milter.on_error") {
		t.Errorf("bad on_error: %v", err)
	}
}

// nothing is a filter that does nothing but count the messages it sees.
type nothing struct{ seen *atomic.Int32 }

func (nothing) Name() string { return "nothing" }
func (f nothing) Headers(m *filter.Message, c *filter.Changes) (filter.Body, error) {
	if f.seen != nil {
		f.seen.Add(1)
	}
	return nil, nil
}

// A filter joins the chain through the table alone: one entry, and it runs
// in the daemon's chain, after the built-in filters, for a real milter
// conversation over a socket.
func TestTableAddsFilter(t *testing.T) {
	keyDir := t.TempDir()
	writeKey(t, keyDir, "example.test", "ed1")
	c := loadYAML(t, yamlBase+"dns: {servers: [\"127.0.0.1:53\"]}\nmilter:\n  dkim:\n    key_dir: "+keyDir+"\n    keys: [{domain: example.test, selector: ed1}]\n")
	var seen atomic.Int32
	table := append(assemble.Filters(), assemble.Entry{Name: "nothing", New: func(b *assemble.Builder) (filter.Filter, error) {
		return nothing{&seen}, nil
	}})
	ch, err := table.Build(c, assemble.Options{Logger: quiet, NoSeal: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(assemble.Names(ch), ","); got != "scrub,dkimsign,dkimverify,forged,dmarc,ownfrom,spam,nothing" {
		t.Errorf("chain %s; want the built-in filters, then nothing", got)
	}
	h := daemon.NewHolder(ch)
	srv := miltertest.Serve(t, "unix", milterd.NewServer(h))
	t.Cleanup(func() { <-h.Close() })
	// Outbound (trusted_networks): scrubbed and signed, and seen by the
	// added filter.
	res, err := srv.Send(&miltertest.Message{From: "alice@example.test", Rcpts: []string{"bob@outside.test"},
		Raw: []byte("From: <alice@example.test>\r\nTo: <bob@outside.test>\r\nSubject: hi\r\nX-Mailer: Mutt\r\n\r\nbody\r\n")})
	if err != nil {
		t.Fatal(err)
	}
	if res.Action.Code != milter.ActAccept || seen.Load() != 1 {
		t.Fatalf("answer %v, the added filter saw %d messages; want accepted, 1", res.Action, seen.Load())
	}
	if !strings.Contains(string(res.Final), "DKIM-Signature:") || strings.Contains(string(res.Final), "X-Mailer") {
		t.Errorf("the built-in filters did not run:\n%s", res.Final)
	}
}

// Mail from trusted_networks is outbound (signed); 127.0.0.2 is not in
// 127.0.0.1/32, whatever milterd's own default would say.
func TestTrustedNetworks(t *testing.T) {
	keyDir := t.TempDir()
	writeKey(t, keyDir, "example.test", "ed1")
	c := loadYAML(t, yamlBase+"dns: {servers: [\"127.0.0.1:53\"]}\nmilter:\n  own_from: off\n  dkim:\n    verify: false\n    key_dir: "+keyDir+"\n    keys: [{domain: example.test, selector: ed1}]\n")
	ch, err := assemble.New(c, assemble.Options{Logger: quiet, NoSeal: true})
	if err != nil {
		t.Fatal(err)
	}
	h := daemon.NewHolder(ch)
	srv := miltertest.Serve(t, "unix", milterd.NewServer(h))
	t.Cleanup(func() { <-h.Close() })
	for addr, signed := range map[string]bool{"127.0.0.1": true, "127.0.0.2": false} {
		cl, err := srv.Dial(miltertest.ConnInfo{Hostname: "h", Addr: addr, Port: 4000, Helo: "h"})
		if err != nil {
			t.Fatal(err)
		}
		res, err := cl.Send(&miltertest.Message{From: "alice@example.test", Rcpts: []string{"bob@outside.test"},
			Raw: []byte("From: <alice@example.test>\r\nTo: <bob@outside.test>\r\nSubject: hi\r\n\r\nbody\r\n")})
		cl.Close()
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(string(res.Final), "DKIM-Signature:"); got != signed {
			t.Errorf("from %s: signed %v; want %v", addr, got, signed)
		}
	}
}

// openFiles counts this process's descriptors open on path.
func openFiles(t *testing.T, path string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && l == path {
			n++
		}
	}
	return n
}

// A chain owns the database handles its filters open (the sender-login
// check, our domains): a reload that swaps in a new chain closes the old
// one's once its last message is done, and nothing is shared between them.
func TestReloadClosesDatabases(t *testing.T) {
	ctx := context.Background()
	dir := miltertest.PublicTempDir(t)
	keyDir := filepath.Join(dir, "keys")
	writeKey(t, keyDir, "example.test", "ed1")
	dbPath := filepath.Join(dir, "postfix.sqlite")
	st, err := sqlmaps.Open(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := st.AddDomain(ctx, "stored.test", true); err != nil {
		t.Fatal(err)
	}
	st.Close()
	dnsSrv, err := dnstest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer dnsSrv.Close()
	c := loadYAML(t, yamlBase+fmt.Sprintf("dns: {servers: [%q]}\ndatabase: {path: %s}\nmilter:\n  dkim:\n    verify: false\n    key_dir: %s\n    keys: [{domain: example.test, selector: ed1}]\n", dnsSrv.Addr(), dbPath, keyDir))
	build := func() *milterd.Chain {
		ch, err := assemble.New(c, assemble.Options{Logger: quiet, NoSeal: true})
		if err != nil {
			t.Fatal(err)
		}
		return ch
	}
	h := daemon.NewHolder(build())
	srv := miltertest.Serve(t, "unix", milterd.NewServer(h))
	// use has the chain open both handles: the sender-login check of an
	// authenticated message and our domains for an inbound one.
	use := func() {
		t.Helper()
		cl, err := srv.Dial(miltertest.ConnInfo{Hostname: "laptop", Addr: "192.0.2.7", Port: 4000, Helo: "laptop"})
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		res, err := cl.Send(&miltertest.Message{From: "alice@example.test", Rcpts: []string{"bob@outside.test"},
			Raw:    []byte("From: <alice@example.test>\r\nTo: <bob@outside.test>\r\nSubject: hi\r\n\r\nbody\r\n"),
			Macros: map[byte][]string{'M': {"{auth_type}", "PLAIN", "{auth_authen}", "alice@example.test"}}})
		if err != nil || res.Action.SMTPCode != 550 {
			t.Fatalf("authenticated message: %+v, %v; want 550 (alice@example.test is no user)", res.Action, err)
		}
		in, err := srv.Dial(miltertest.ConnInfo{Hostname: "mx.outside.test", Addr: "192.0.2.1", Port: 25, Helo: "mx.outside.test"})
		if err != nil {
			t.Fatal(err)
		}
		defer in.Close()
		res, err = in.Send(&miltertest.Message{From: "x@outside.test", Rcpts: []string{"alice@example.test"},
			Raw: []byte("From: <billing@stored.test>\r\nTo: <alice@example.test>\r\nSubject: hi\r\n\r\nbody\r\n")})
		if err != nil || res.Action.SMTPCode != 550 {
			t.Fatalf("inbound message from our stored domain: %+v, %v; want 550", res.Action, err)
		}
	}
	use()
	open := openFiles(t, dbPath)
	if open < 2 {
		t.Fatalf("%d handles open on the database after both checks; want one each", open)
	}
	for i := range 3 { // three reloads: the count stays, nothing piles up
		done := h.Swap(build())
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the old chain was not closed")
		}
		if n := openFiles(t, dbPath); n != 0 {
			t.Errorf("reload %d: %d handles open on the database once the old chain closed; want 0 until the new one asks", i, n)
		}
		use()
		if n := openFiles(t, dbPath); n != open {
			t.Errorf("reload %d: %d handles open after using the new chain; want %d", i, n, open)
		}
	}
	srv.Close()
	if err := <-h.Close(); err != nil {
		t.Fatal(err)
	}
	if n := openFiles(t, dbPath); n != 0 {
		t.Errorf("%d handles open on the database after the last chain closed; want 0", n)
	}
}
