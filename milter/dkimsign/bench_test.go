package dkimsign

import (
	"crypto"
	"strings"
	"testing"

	"github.com/postkit/postkit/milter/filter"
)

// benchMessage is a typical 5 KB message: the headers of a mail client and a
// body sent in one chunk, as Postfix does for small messages.
func benchMessage() ([]filter.Header, []byte) {
	hs := []filter.Header{
		{Name: "From", Value: "Ann Example <ann@example.org>"},
		{Name: "To", Value: "Bob <bob@example.net>"},
		{Name: "Subject", Value: "Quarterly figures"},
		{Name: "Date", Value: "Tue, 1 Apr 2025 10:00:00 +0200"},
		{Name: "Message-ID", Value: "<bench-1@example.org>"},
		{Name: "MIME-Version", Value: "1.0"},
		{Name: "Content-Type", Value: "text/plain; charset=utf-8"},
		{Name: "Content-Transfer-Encoding", Value: "8bit"},
		{Name: "User-Agent", Value: "Bench/1.0"},
	}
	line := "The quick brown fox jumps over the lazy dog, again and again.  \r\n"
	body := strings.Repeat(line, 5000/len(line)+1)
	return hs, []byte(body)
}

func benchSign(b *testing.B, keys []Key) {
	s, err := New(Config{Keys: keys, Logger: quiet()})
	if err != nil {
		b.Fatal(err)
	}
	hs, body := benchMessage()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		m := &filter.Message{QueueID: "Q", Outbound: true, Headers: append(make([]filter.Header, 0, len(hs)+2), hs...)}
		c := filter.NewChanges(m)
		bd, err := s.Headers(m, c)
		if err != nil || bd == nil {
			b.Fatal("not signed", err)
		}
		bd.Write(body)
		if err := bd.End(m, c); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSign5KB is the per-message cost of the signing filter.
func BenchmarkSign5KB(b *testing.B) {
	rk, ek := testRSAKey(b), rfcEd25519Key(b)
	for _, c := range []struct {
		name string
		keys []crypto.Signer
	}{{"rsa2048", []crypto.Signer{rk}}, {"ed25519", []crypto.Signer{ek}}, {"rsa2048+ed25519", []crypto.Signer{rk, ek}}} {
		b.Run(c.name, func(b *testing.B) {
			var keys []Key
			for i, k := range c.keys {
				keys = append(keys, Key{Domain: "example.org", Selector: "s" + string(rune('a'+i)), Signer: k})
			}
			benchSign(b, keys)
		})
	}
}
