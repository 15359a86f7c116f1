package greylist

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postkit/postkit/policyd"
)

// TestClientFile reads a list in postgrey's whitelist_clients format:
// names (and the names under them), /regexps/, addresses, partial
// addresses, networks.
func TestClientFile(t *testing.T) {
	var l ClientList
	if err := l.ReadClientFile("testdata/whitelist_clients"); err != nil {
		t.Fatal(err)
	}
	if l.Len() != 8 {
		t.Errorf("%d entries; want 8", l.Len())
	}
	for _, c := range []struct {
		name, ip string
		want     bool
	}{
		{"bulk.example", "198.51.100.1", true},
		{"mta7.bulk.example", "198.51.100.1", true},
		{"notbulk.example", "198.51.100.1", false},
		{"SMTP12.news.example", "198.51.100.1", true},
		{"smtp12.news.example.evil", "198.51.100.1", false},
		{"smtpx.news.example", "198.51.100.1", false},
		{"out-eu-3.relay.example", "198.51.100.1", true},
		{"lists.example.net", "198.51.100.1", true},
		{"unknown", "192.0.2.25", true},
		{"unknown", "192.0.2.26", false},
		{"", "198.18.7.9", true},
		{"", "198.180.0.1", false}, // "198.18" ends at an octet
		{"unknown", "203.0.113.15", true},
		{"unknown", "203.0.113.16", false},
		{"unknown", "2001:db8:25:7::1", true},
		{"unknown", "::ffff:192.0.2.25", true},
		{"unknown", "198.51.100.1", false},
		{"bulk.example.", "198.51.100.1", true},
	} {
		if got := l.Match(c.name, netip.MustParseAddr(c.ip)); got != c.want {
			t.Errorf("Match(%q, %s) = %v; want %v", c.name, c.ip, got, c.want)
		}
	}
	for _, bad := range []string{"/unterminated", "/(?=look)ahead/", "two words", "a@b.example"} {
		var l ClientList
		if err := l.Add(bad); err == nil {
			t.Errorf("Add(%q) accepted", bad)
		}
	}
	dir := t.TempDir()
	f := filepath.Join(dir, "clients")
	os.WriteFile(f, []byte("ok.example\n\n# c\n/[/\n"), 0o600)
	if err := new(ClientList).ReadClientFile(f); err == nil || !strings.Contains(err.Error(), f+":4:") {
		t.Errorf("bad line: err = %v; want %s:4", err, f)
	}
	if err := new(ClientList).ReadClientFile(filepath.Join(dir, "none")); err == nil {
		t.Error("missing file: no error")
	}
}

// TestRecipientFile reads a list in postgrey's whitelist_recipients format.
func TestRecipientFile(t *testing.T) {
	var l RecipientList
	if err := l.ReadRecipientFile("testdata/whitelist_recipients"); err != nil {
		t.Fatal(err)
	}
	for rcpt, want := range map[string]bool{
		"postmaster@example.com":     true,
		"Abuse@Example.NET":          true,
		"abuse+x@example.net":        true, // extension stripped
		"postmaster2@example.com":    false,
		"ceo@example.org":            true,
		"ceo@example.com":            false,
		"anyone@partners.example":    true,
		"anyone@eu.partners.example": true,
		"anyone@xpartners.example":   false,
		"noc@example.com":            true,
		"noc-2@example.com":          true,
		"nocturne@example.com":       false,
		"user@example.com":           false,
	} {
		if got := l.Match(rcpt, "+"); got != want {
			t.Errorf("Match(%q) = %v; want %v", rcpt, got, want)
		}
	}
	for _, bad := range []string{"@", "@example.org", "nodots", "a b@example.org"} {
		if err := new(RecipientList).Add(bad); err == nil {
			t.Errorf("Add(%q) accepted", bad)
		}
	}
}

// TestListsAndPrivacy: the lists exempt through Check; with Privacy the
// state file holds digests, not addresses, and greylisting works the same.
func TestListsAndPrivacy(t *testing.T) {
	var cl ClientList
	var rl RecipientList
	if err := cl.ReadClientFile("testdata/whitelist_clients"); err != nil {
		t.Fatal(err)
	}
	if err := rl.ReadRecipientFile("testdata/whitelist_recipients"); err != nil {
		t.Fatal(err)
	}
	db, path := openState(t)
	clk := newClock()
	g, err := New(yamlTimes(Config{Clients: &cl, Recipients: &rl, RecipientDelimiter: "+", Privacy: true,
		Action: "DEFER_IF_PERMIT 4.7.1 Greylisted for %s seconds, see https://help.example/%r.html (100%%)", Logger: quietLogger(), Now: clk.now}), db)
	if err != nil {
		t.Fatal(err)
	}
	named := rcptReq("198.51.100.7", "s@example.org", "u@example.net")
	named.Attrs["client_name"] = "mx1.bulk.example"
	for _, r := range []*policyd.Request{named, rcptReq("192.0.2.25", "s@example.org", "u@example.net"), rcptReq("198.51.100.7", "s@example.org", "postmaster+x@example.net")} {
		if d, _ := g.Check(context.Background(), r); d.Reason != "greylist=allowlisted" {
			t.Errorf("%v: %+v; want allowlisted", r.Attrs, d)
		}
	}
	r := rcptReq("198.51.100.7", "secret.sender@example.org", "hidden.rcpt@example.net")
	d, _ := g.Check(context.Background(), r)
	if d.Action != "DEFER_IF_PERMIT 4.7.1 Greylisted for 300 seconds, see https://help.example/example.net.html (100%)" {
		t.Errorf("first attempt: %q", d.Action)
	}
	clk.advance(301 * time.Second)
	if d, _ := g.Check(context.Background(), r); d.Reason != "greylist=pass" {
		t.Errorf("retry: %+v; want pass", d)
	}
	db.Close()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	wal, _ := os.ReadFile(path + "-wal")
	data = append(data, wal...)
	if !strings.Contains(string(data), "198.51.100.0/24 ") {
		t.Error("the state file has no triplet of the client network: nothing was stored")
	}
	for _, s := range []string{"secret.sender", "hidden.rcpt"} {
		if strings.Contains(string(data), s) {
			t.Errorf("the state file holds %q with Privacy", s)
		}
	}
}

func FuzzLists(f *testing.F) {
	for _, s := range []string{"bulk.example", "/^smtp[0-9]+\\.x$/", "192.0.2", "2001:db8::/32", "postmaster@", "u@x.example", "/(/"} {
		f.Add(s, "mx1.bulk.example", "192.0.2.9", "postmaster+x@y.example")
	}
	f.Fuzz(func(t *testing.T, entry, name, ip, rcpt string) {
		var cl ClientList
		var rl RecipientList
		if cl.Add(entry) == nil {
			if a, err := netip.ParseAddr(ip); err == nil {
				cl.Match(name, a)
			}
		}
		if rl.Add(entry) == nil {
			rl.Match(rcpt, "+")
		}
	})
}
