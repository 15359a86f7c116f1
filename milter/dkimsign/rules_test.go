package dkimsign

import (
	"sort"
	"strings"
	"testing"
)

// TestSigningRules: which keys sign a From address, for the rules an
// OpenDKIM SigningTable expresses (per-user, wildcard, sub-domains, one key
// for several domains). Each signature must verify with its d= and s=.
func TestSigningRules(t *testing.T) {
	rk, ek := testRSAKey(t), rfcEd25519Key(t)
	recs := records{}
	keys := []Key{
		{Domain: "example.org", Selector: "rsa", Signer: rk},                                                      // default: *@example.org
		{Domain: "example.org", Selector: "ed", Signer: ek, From: []string{"*@example.org"}},                      // same rule, second key
		{Domain: "example.org", Selector: "ceo", Signer: rk, From: []string{"CEO@example.org"}},                   // one address only
		{Domain: "example.org", Selector: "shared", Signer: rk, From: []string{"example.net", "*@*.example.net"}}, // other domains, d=example.org
		{Domain: "example.com", Selector: "sub", Signer: ek, From: []string{"*@*.example.com"}},                   // only sub-domains
		{Domain: "example.com", Selector: "top", Signer: rk},
	}
	for _, k := range keys {
		recs.add(t, k.Selector, k.Domain, k.Signer)
	}
	s, err := New(Config{Keys: keys, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ from, want string }{
		{"ann@example.org", "example.org/ed example.org/rsa"},
		{"ceo@example.org", "example.org/ceo"},
		{"Ceo@Example.ORG", "example.org/ceo"},
		{"bob@example.net", "example.org/shared"},
		{"bob@lists.example.net", "example.org/shared"},
		{"bob@example.com", "example.com/top"},
		{"bob@a.b.example.com", "example.com/sub"},
		{"bob@sub.example.org", ""}, // no Subdomains
		{"bob@example.edu", ""},
	} {
		msg := "From: <" + c.from + ">\r\nSubject: rules\r\n\r\nbody\r\n"
		sigs, err := s.Sign(strings.NewReader(msg))
		if err != nil {
			t.Fatalf("%s: %v", c.from, err)
		}
		var got []string
		for _, sig := range sigs {
			tags := map[string]string{}
			for _, p := range strings.Split(sig, ";") {
				n, v, _ := strings.Cut(p, "=")
				tags[strings.TrimSpace(n)] = strings.TrimSpace(v)
			}
			got = append(got, tags["d"]+"/"+tags["s"])
		}
		sort.Strings(got)
		if strings.Join(got, " ") != c.want {
			t.Errorf("From %s signed by %q; want %q", c.from, got, c.want)
		}
		for i, err := range verify(t, prepend(sigs, msg), recs) {
			if err != nil {
				t.Errorf("From %s: signature %s does not verify: %v", c.from, got[i], err)
			}
		}
	}

	// With Subdomains, a sub-domain without a rule of its own takes the
	// parent's domain keys; an explicit sub-domain rule still wins.
	s, err = New(Config{Keys: keys, Subdomains: true, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	for from, want := range map[string]int{"bob@sub.example.org": 2, "bob@x.example.com": 1} {
		sigs, _ := s.Sign(strings.NewReader("From: " + from + "\r\n\r\nx\r\n"))
		if len(sigs) != want {
			t.Errorf("Subdomains: %s got %d signatures; want %d", from, len(sigs), want)
		}
	}
	if sigs, _ := s.Sign(strings.NewReader("From: bob@x.example.com\r\n\r\nx\r\n")); len(sigs) != 1 || !strings.Contains(sigs[0], "s=sub;") {
		t.Errorf("explicit *@*.example.com rule lost to Subdomains: %v", sigs)
	}

	for _, bad := range []string{"user@*.example.org", "*", "example", "@example.org"} {
		if _, err := New(Config{Keys: []Key{{Domain: "example.org", Selector: "x", Signer: rk, From: []string{bad}}}}); err == nil {
			t.Errorf("pattern %q accepted", bad)
		}
	}
}
