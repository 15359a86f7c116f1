package bayes_test

import (
	"context"
	"hash/fnv"
	"math"
	"testing"
	"time"

	"github.com/postkit/postkit/spam/bayes"
	"github.com/postkit/postkit/spam/bayes/bayestest"
	"github.com/postkit/postkit/spam/content"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

// Worked values of the chi-square survival function: for v = 2k degrees
// of freedom it is e^(-m)·Σ_{i<k} m^i/i!, m = x2/2.
func TestChi2Q(t *testing.T) {
	for _, tt := range []struct {
		x2   float64
		v    int
		want float64
	}{
		{0, 2, 1},
		{2, 2, math.Exp(-1)},       // 0.367879
		{4, 4, 3 * math.Exp(-2)},   // e^-2·(1+2) = 0.406006
		{6, 6, 8.5 * math.Exp(-3)}, // e^-3·(1+3+4.5) = 0.423190
		{9.487729, 4, 0.05},        // the 5% critical value for 4 degrees of freedom
		{18.307038, 10, 0.05},      // and for 10
		{1000, 300, 1.2e-73},       // far tail: tiny, not NaN
	} {
		got := bayes.Chi2Q(tt.x2, tt.v)
		if tt.want < 1e-10 {
			if !(got > 0 && got < 1e-60) {
				t.Errorf("bayes.Chi2Q(%v, %d) = %g; want a tiny positive number", tt.x2, tt.v, got)
			}
			continue
		}
		if math.Abs(got-tt.want) > 1e-5 {
			t.Errorf("bayes.Chi2Q(%v, %d) = %.6f; want %.6f", tt.x2, tt.v, got, tt.want)
		}
	}
	if !math.IsNaN(bayes.Chi2Q(1, 3)) {
		t.Error("bayes.Chi2Q with odd degrees of freedom is not NaN")
	}
}

func TestCombine(t *testing.T) {
	rep := func(p float64, n int) []float64 {
		out := make([]float64, n)
		for i := range out {
			out[i] = p
		}
		return out
	}
	for _, tt := range []struct {
		name   string
		probs  []float64
		lo, hi float64
	}{
		{"no clues", nil, 0.5, 0.5},
		{"one clue is itself", []float64{0.9}, 0.9, 0.9}, // (1 + 0.9 − 0.1) / 2
		{"one ham clue", []float64{0.2}, 0.2, 0.2},
		{"balanced", []float64{0.99, 0.01}, 0.5, 0.5},
		{"strong spam", rep(0.99, 20), 0.9999, 1},
		{"strong ham", rep(0.01, 20), 0, 0.0001},
		{"conflicting evidence is unsure", append(rep(0.99, 20), rep(0.01, 20)...), 0.45, 0.55},
		{"150 extreme clues do not underflow", rep(1e-9, 150), 0, 1e-6},
	} {
		got := bayes.Combine(tt.probs)
		if got < tt.lo-1e-9 || got > tt.hi+1e-9 || math.IsNaN(got) {
			t.Errorf("%s: bayes.Combine = %v; want in [%v, %v]", tt.name, got, tt.lo, tt.hi)
		}
	}
}

func TestTokenProb(t *testing.T) {
	var p bayes.Params
	// 3 of 10 spam and 1 of 10 ham: p(w) = 0.3/(0.3+0.1) = 0.75, n = 4,
	// f = (0.2·0.5 + 4·0.75) / 4.2 (the default strength s = 0.2).
	if got, want := p.TokenProb(bayes.Count{Spam: 3, Ham: 1}, 10, 10), (0.1+3)/4.2; !near(got, want) {
		t.Errorf("TokenProb = %v; want %v", got, want)
	}
	// SpamBayes' strength, given.
	if got, want := (bayes.Params{Strength: 0.45}).TokenProb(bayes.Count{Spam: 3, Ham: 1}, 10, 10), (0.225+3)/4.45; !near(got, want) {
		t.Errorf("TokenProb(s=0.45) = %v; want %v", got, want)
	}
	// Class sizes are normalized: 10 of 100 spam vs 1 of 10 ham is even.
	if got := p.TokenProb(bayes.Count{Spam: 10, Ham: 1}, 100, 10); !near(got, 0.5) {
		t.Errorf("TokenProb = %v; want 0.5", got)
	}
	// Seen once in spam only: pulled towards the prior.
	if got := p.TokenProb(bayes.Count{Spam: 1}, 10, 10); !near(got, (0.1+1)/1.2) {
		t.Errorf("TokenProb = %v", got)
	}
}

func TestMemStore(t *testing.T) { bayestest.StoreSuite(t, bayes.NewMemStore()) }

func TestLearnNeedsID(t *testing.T) {
	now := time.Now()
	c := &bayes.Classifier{Store: bayes.NewMemStore(), Now: func() time.Time { return now }}
	if _, err := c.Learn(context.Background(), "", nil, true); err == nil {
		t.Error("Learn without an id succeeded")
	}
}

func TestWords(t *testing.T) {
	raw := "From: \"Jane Doe\" <jane@mail.example.co.uk>\r\n" +
		"To: a@b.example, c@d.example\r\n" +
		"Subject: =?iso-8859-1?q?R=E9union_demain?=\r\n" +
		"Received: from relay.example.net (relay.example.net [192.0.2.44]) by mx with ESMTP id 1; Tue, 1 Dec 2026 10:00:00 +0100\r\n" +
		"X-Spam-Status: Yes, score=9\r\n" +
		"List-Id: <list.example>\r\n" +
		"Message-ID: <abc123@mail.example.co.uk>\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: multipart/alternative; boundary=b\r\n\r\n" +
		"--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		"Q2Fmw6kgY3LDqG1lIGJyw7tsw6llIGF1am91cmQnaHVp\r\n" +
		"--b\r\nContent-Type: text/html\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" +
		"<p style=3D\"display:none\">hidden</p><a href=3D\"http://www.shop.example/buy/now\">x</a>\r\n" +
		"--b--\r\n"
	m := content.Parse(context.Background(), []byte(raw), content.Limits{})
	have := map[string]bool{}
	for _, w := range bayes.Words(m) {
		have[w] = true
	}
	for _, w := range []string{
		"from:addr:jane@mail.example.co.uk", "from:dom:example.co.uk", "from:name:jane",
		"to:n:2", "s:réunion", "s:demain", "rcvd:example.net", "rcvd:ip:192.0.2",
		"mid:dom:co.uk", "café", "crème", "brûlée", "url:shop.example", "url:p:buy",
		"proto:http", "html:style:hidden", "part:text/html", "part:cte:base64", "h:subject",
		"rcvd:with:esmtp", "rcvd:shape:a a.a.a (a.a.a [9.9.9.9]) a a a",
	} {
		if !have[w] {
			t.Errorf("token %q missing", w)
		}
	}
	for w := range have {
		if len(w) > 7 && (w[:7] == "h:x-spa" || w[:7] == "h:list-") {
			t.Errorf("token %q from a field Bayes must not read", w)
		}
	}
}

func TestMessageKey(t *testing.T) {
	a := content.Parse(context.Background(), []byte("Message-ID: <1@x>\r\nSubject: a\r\n\r\nbody\r\n"), content.Limits{})
	b := content.Parse(context.Background(), []byte("X-Spam-Status: No\nReceived: from y\nMessage-ID: <1@x>\nSubject: a\n\nbody\n\n"), content.Limits{})
	c := content.Parse(context.Background(), []byte("Message-ID: <1@x>\r\nSubject: a\r\n\r\nother body\r\n"), content.Limits{})
	if bayes.MessageKey(a) != bayes.MessageKey(b) {
		t.Error("delivery fields or line endings changed the key")
	}
	if bayes.MessageKey(a) == bayes.MessageKey(c) {
		t.Error("a different body has the same key")
	}
}

// FuzzTokenize: any input is parsed and tokenized without panicking,
// within bayes.MaxTokens, deterministically.
func FuzzTokenize(f *testing.F) {
	f.Add([]byte("Subject: hi\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!\r\n--x--\r\n"))
	f.Add([]byte("From x\nContent-Type: text/html; charset=iso-2022-jp\n\n<a href=http://1.2.3.4>"))
	f.Add([]byte("Content-Type: message/rfc822\n\nContent-Type: multipart/alternative; boundary=\"\"\n\n--\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		m := content.Parse(context.Background(), raw, content.Limits{})
		a := bayes.Tokenize(m)
		if len(a) > bayes.MaxTokens {
			t.Fatalf("%d tokens; want at most %d", len(a), bayes.MaxTokens)
		}
		b := bayes.Tokenize(content.Parse(context.Background(), raw, content.Limits{}))
		if len(a) != len(b) {
			t.Fatalf("tokenizing twice gave %d and %d tokens", len(a), len(b))
		}
		seen := map[bayes.Token]bool{}
		for _, tk := range a {
			if seen[tk] {
				t.Fatal("duplicate token")
			}
			seen[tk] = true
		}
	})
}

// Tokenize hashes exactly the strings Words returns, as Hash does, and Hash
// is FNV-1a (stores written before keep their meaning).
func TestTokenizeIsHashedWords(t *testing.T) {
	raw := "From: \"Jane Doe\" <jane@mail.example.co.uk>\r\nTo: a@b.example\r\nSubject: Cheap-pills FREE!!\r\n" +
		"Received: from relay.example.net (relay.example.net [192.0.2.44]) by mx with ESMTP; Tue, 1 Dec 2026 10:00:00 +0100\r\n" +
		"Content-Type: text/html; charset=utf-8\r\n\r\n<p>Grüße, CLICK here: http://shop.example/a/b?c=d jane@x.example</p>\r\n"
	m := content.Parse(context.Background(), []byte(raw), content.Limits{})
	var want []bayes.Token
	seen := map[bayes.Token]bool{}
	for _, w := range bayes.Words(m) {
		h := fnv.New64a()
		h.Write([]byte(w))
		tok := bayes.Token(h.Sum64())
		if bayes.Hash(w) != tok {
			t.Fatalf("Hash(%q) = %x; FNV-1a gives %x", w, bayes.Hash(w), tok)
		}
		if !seen[tok] {
			seen[tok] = true
			want = append(want, tok)
		}
	}
	got := bayes.Tokenize(m)
	if len(got) != len(want) || len(got) < 20 {
		t.Fatalf("Tokenize: %d tokens, Words: %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("token %d: %x, want %x", i, got[i], want[i])
		}
	}
}
