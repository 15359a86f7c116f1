package dnsclient

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/postkit/postkit/internal/dnstest"
)

func TestIsLoopback(t *testing.T) {
	tests := []struct {
		srv  string
		want bool
	}{
		{"127.0.0.1:53", true},
		{"127.53.0.9:5353", true},
		{"[::1]:53", true},
		{"[::ffff:127.0.0.1]:53", true},
		{"192.0.2.53:53", false},
		{"[2001:db8::53]:53", false},
		{"nonsense", false},
	}
	for _, tt := range tests {
		if got := isLoopback(tt.srv); got != tt.want {
			t.Errorf("isLoopback(%q) = %v, want %v", tt.srv, got, tt.want)
		}
	}
}

func (p *udpPool) dialedCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dialed
}

// Queries to a loopback server share a few sockets; a socket that timed out
// is not reused.
func TestUDPSocketReuse(t *testing.T) {
	srv := startServer(t, zone...)
	z, err := dnstest.ParseZone(zone...)
	if err != nil {
		t.Fatal(err)
	}
	z.Timeout("slow.example.com")
	srv.Set(z)
	r := newResolver(t, Config{Servers: []string{srv.Addr()}, CacheSize: -1, Timeout: 200 * time.Millisecond})
	ctx := context.Background()
	for i := range 50 {
		if _, err := r.LookupTXT(ctx, "example.com"); err != nil {
			t.Fatalf("query %d: %v", i, err)
		}
	}
	if n := r.pool.dialedCount(); n != 1 {
		t.Errorf("50 sequential queries opened %d sockets, want 1", n)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				r.LookupMX(ctx, "example.com")
			}
		}()
	}
	wg.Wait()
	if n := r.pool.dialedCount(); n > 9 {
		t.Errorf("8 concurrent clients opened %d sockets in all, want at most 9", n)
	}
	idle := func() int {
		r.pool.mu.Lock()
		defer r.pool.mu.Unlock()
		return len(r.pool.idle[srv.Addr()])
	}
	before, dialed := idle(), r.pool.dialedCount()
	if before == 0 {
		t.Fatal("no idle socket after the concurrent queries")
	}
	if _, err := r.LookupTXT(ctx, "slow.example.com"); !IsTemporary(err) {
		t.Fatalf("slow name: err = %v, want a timeout", err)
	}
	if got := idle(); got != before-1 || r.pool.dialedCount() != dialed {
		t.Errorf("after a timeout: %d idle sockets (was %d), %d opened; want the timed-out socket dropped", got, before, r.pool.dialedCount()-dialed)
	}
}

// Only the answer to our query is taken: a datagram with another ID or
// another question, or one that does not parse, is skipped (RFC 5452 §4.3,
// §9.1).
func TestUDPIgnoresForeignAnswers(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := new(dns.Msg)
			if q.Unpack(buf[:n]) != nil {
				continue
			}
			send := func(m *dns.Msg) {
				b, _ := m.Pack()
				pc.WriteTo(b, from)
			}
			wrongID := new(dns.Msg)
			wrongID.SetReply(q)
			wrongID.Id = q.Id + 1
			wrongID.Answer = []dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: []string{"forged-id"}}}
			send(wrongID)
			wrongQ := new(dns.Msg)
			wrongQ.SetQuestion("other.example.", dns.TypeTXT)
			wrongQ.Id = q.Id
			wrongQ.Response = true
			wrongQ.Answer = []dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: "other.example.", Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: []string{"forged-question"}}}
			send(wrongQ)
			pc.WriteTo([]byte{0x12, 0x34, 0x81}, from) // truncated garbage
			good := new(dns.Msg)
			good.SetReply(q)
			good.Answer = []dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: []string{"genuine"}}}
			send(good)
		}
	}()
	r := newResolver(t, Config{Servers: []string{pc.LocalAddr().String()}, CacheSize: -1, Timeout: time.Second})
	for i := range 3 {
		got, err := r.LookupTXT(context.Background(), "q.example")
		if err != nil || len(got) != 1 || got[0] != "genuine" {
			t.Fatalf("query %d: %q, %v; want [genuine]", i, got, err)
		}
	}
}

// Close closes the kept sockets; the resolver goes on answering without
// keeping any.
func TestCloseReleasesSockets(t *testing.T) {
	srv := startServer(t, zone...)
	r := newResolver(t, Config{Servers: []string{srv.Addr()}, CacheSize: -1})
	ctx := context.Background()
	if _, err := r.LookupTXT(ctx, "example.com"); err != nil {
		t.Fatal(err)
	}
	r.pool.mu.Lock()
	kept := append([]*pooledConn(nil), r.pool.idle[srv.Addr()]...)
	r.pool.mu.Unlock()
	if len(kept) != 1 {
		t.Fatalf("%d sockets kept after a query; want 1", len(kept))
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := kept[0].Write([]byte{0}); err == nil {
		t.Error("the kept socket is still open after Close")
	}
	if _, err := r.LookupTXT(ctx, "example.com"); err != nil {
		t.Fatalf("a query after Close: %v", err)
	}
	r.pool.mu.Lock()
	n := len(r.pool.idle[srv.Addr()])
	r.pool.mu.Unlock()
	if n != 0 {
		t.Errorf("%d sockets kept after Close; want none", n)
	}
}
