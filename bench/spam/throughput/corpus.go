//go:build bench

package throughput

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// The benchmark's messages: generated, deterministic (seeded), each
// different from the others (cold: nothing a scanner caches helps), about
// size bytes. Ham reads like mail between colleagues, spam like offers with
// HTML and links; both draw from one vocabulary of made-up words, with
// words of their own, so that a Bayes store trained on one set has
// something to say about another.

// vocabulary returns n made-up words of two to four syllables.
func vocabulary(r *rand.Rand, n int) []string {
	syl := []string{"ba", "ko", "ri", "tel", "man", "sto", "vu", "nek", "por", "li", "da", "gre", "fin", "ol", "ur", "sem", "tra", "pi", "zo", "qua", "mer", "lo", "den", "cas"}
	seen := map[string]bool{}
	var out []string
	for len(out) < n {
		var b strings.Builder
		for i := 0; i < 2+r.IntN(3); i++ {
			b.WriteString(syl[r.IntN(len(syl))])
		}
		if w := b.String(); !seen[w] {
			seen[w] = true
			out = append(out, w)
		}
	}
	return out
}

type corpus struct {
	r                 *rand.Rand
	common, ham, spam []string
	n                 int
}

func newCorpus(seed uint64) *corpus {
	r := rand.New(rand.NewPCG(seed, 4711))
	v := vocabulary(r, 12000)
	return &corpus{r: r, common: v[:8000], ham: v[8000:10000], spam: v[10000:]}
}

func (c *corpus) words(n int, own []string, ownShare float64) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		if i > 0 {
			if i%13 == 0 {
				b.WriteString(".\r\n")
			} else {
				b.WriteByte(' ')
			}
		}
		if c.r.Float64() < ownShare {
			b.WriteString(own[c.r.IntN(len(own))])
		} else {
			b.WriteString(c.common[c.r.IntN(len(c.common))])
		}
	}
	return b.String()
}

// message returns one message of about size bytes.
func (c *corpus) message(spam bool, size int) []byte {
	c.n++
	var b bytes.Buffer
	date := time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC).Add(time.Duration(c.n) * time.Minute).Format(time.RFC1123Z)
	if !spam {
		from := c.ham[c.r.IntN(len(c.ham))]
		fmt.Fprintf(&b, "From: %s Durand <%s@partner.test>\r\nTo: Bob <bob@bench.test>\r\nSubject: Re: %s\r\n", strings.Title(from), from, c.words(4, c.ham, 0.3))
		fmt.Fprintf(&b, "Date: %s\r\nMessage-ID: <%d.%d@mail.partner.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n", date, c.n, c.r.Uint32())
		b.WriteString("Hi Bob,\r\n\r\n")
		for b.Len() < size-200 {
			b.WriteString(c.words(40, c.ham, 0.15))
			b.WriteString(".\r\n\r\n")
		}
		b.WriteString("> " + c.words(12, c.ham, 0.2) + "\r\n\r\nRegards,\r\n" + strings.Title(from) + "\r\n")
		return b.Bytes()
	}
	dom := c.spam[c.r.IntN(len(c.spam))] + ".example"
	fmt.Fprintf(&b, "From: \"%s\" <offers@%s>\r\nTo: bob@bench.test\r\nSubject: %s FREE %s\r\n", strings.ToUpper(c.spam[c.r.IntN(len(c.spam))]), dom, c.words(3, c.spam, 0.6), c.words(2, c.spam, 0.6))
	fmt.Fprintf(&b, "Date: %s\r\nMessage-ID: <%d%d@%s>\r\nMIME-Version: 1.0\r\n", date, c.n, c.r.Uint32(), dom)
	fmt.Fprintf(&b, "Content-Type: multipart/alternative; boundary=\"=b%d\"\r\n\r\n--=b%d\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n", c.n, c.n)
	half := size / 2
	for b.Len() < half {
		b.WriteString(c.words(30, c.spam, 0.35))
		fmt.Fprintf(&b, " http://%s/%s\r\n\r\n", dom, c.spam[c.r.IntN(len(c.spam))])
	}
	fmt.Fprintf(&b, "--=b%d\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body>\r\n", c.n)
	for b.Len() < size-100 {
		fmt.Fprintf(&b, "<p><b>%s</b> <a href=\"http://%s/%s\">%s</a></p>\r\n", c.words(12, c.spam, 0.35), dom, c.spam[c.r.IntN(len(c.spam))], c.words(3, c.spam, 0.5))
	}
	fmt.Fprintf(&b, "</body></html>\r\n--=b%d--\r\n", c.n)
	return b.Bytes()
}

// messages returns n messages, every fifth spam.
func (c *corpus) messages(n, size int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = c.message(i%5 == 4, size)
	}
	return out
}
