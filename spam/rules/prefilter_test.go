package rules

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/postkit/postkit/spam/content"
)

func TestRequiredLiteralsSpaced(t *testing.T) {
	got := requiredLiterals(regexp.MustCompile(`(?i)\blose\s+(?:weight|\d+\s*pounds)`), true)
	if len(got) != 2 || strings.Join(got[0], "|") != "weight|pounds" || strings.Join(got[1], "|") != "lose |lose\n" {
		t.Errorf("spaced prefilter = %q; want [[weight pounds] [\"lose \" \"lose\\n\"]]", got)
	}
}

func TestRequiredLiterals(t *testing.T) {
	for re, want := range map[string]string{
		`(?i)\bclick\s+here`:                              "click & here",
		`(?i)\b(?:act\s+now|order\s+today)\b`:             "act|order & act|today & now|order & now|today",
		`XJS\*C4JDBQADN1\.NSBN3`:                          "xjs*c4jdbqadn1.nsbn3",
		`(?i)free\s+(?:gift|trial)`:                       "free & gift|trial",
		`(?i)\bmake\s+(?:money|cash|up\s+to)`:             "make",
		`(?i)\bmake\s+(?:money|cash)`:                     "make & money|cash",
		`\$\s?\d{4,}|\d+\s+million`:                       "$|million",
		`\b(?:save|up\s+to)\s+\d\d\s?%`:                   "%",
		`(?i)\b(?:xxx|18\s+years)`:                        "xxx|years & xxx|18",
		`(?i)\bmailing\s+list\b|\blist-?(?:serv|admin)\b`: "mailing|list & mailing|serv|admin & list & list|serv|admin",
		`(?i)(?:gift|x)`:                                  "",
		`\d+`:                                             "",
		`(?i)a+bcd*`:                                      "",
		`(?i)(?:viagra){2,}`:                              "viagra",
	} {
		var cls []string
		for _, cl := range requiredLiterals(regexp.MustCompile(re), false) {
			cls = append(cls, strings.Join(cl, "|"))
		}
		got := strings.Join(cls, " & ")
		if got != want {
			t.Errorf("requiredLiterals(%s) = %q; want %q", re, got, want)
		}
	}
}

// FuzzPrefilter: the prefilter never hides a match of a shipped rule.
func FuzzPrefilter(f *testing.F) {
	s, err := Load()
	if err != nil {
		f.Fatal(err)
	}
	var rs []*Rule
	for _, r := range s.Rules() {
		if r.Kind == Body || r.Kind == RawBody {
			rs = append(rs, r)
		}
	}
	f.Add("CLICK HERE to ACT NOW, 100% FREE gift")
	f.Add("\u212ailo and \u017fale: CLIC\u212a HERE")
	f.Add("Dear Friend, transfer of the sum of US$10,000,000 to the next of kin")
	f.Add("MAKE MONEY fast, earn up to $5,000, save 50% off, toll-free 1-888-555-1234")
	f.Add("to be removed from this mailing list reply here; 18 years of age")
	f.Add("lose\t\t 10 pounds\r\nmailing\u00a0list  click\n\nhere")
	f.Fuzz(func(t *testing.T, text string) {
		// Body rules see the body text (white space normalized), raw
		// body rules the text as it is.
		c := &Context{Msg: &content.Message{Text: text}}
		body := c.bodyText()
		folded := foldText(text)
		for _, r := range rs {
			in, fold := text, folded
			if r.Kind == Body {
				in, fold = body, c.bodyFold
			}
			full := r.re.MatchString(in)
			if full && !mayMatch(r.lits, fold) {
				t.Fatalf("%s matches %q but its prefilter %q says no", r.Name, in, r.lits)
			}
			if r.branches == nil {
				continue
			}
			any := false
			for _, b := range r.branches {
				m := b.re.MatchString(in)
				if m && !mayMatch(b.lits, fold) {
					t.Fatalf("%s: branch %s matches %q but its prefilter %q says no", r.Name, b.re, in, b.lits)
				}
				any = any || m
			}
			if any != full {
				t.Fatalf("%s: the regexp says %v on %q, its branches %v", r.Name, full, in, any)
			}
		}
	})
}

func TestSplitBranches(t *testing.T) {
	for re, want := range map[string][]string{
		`(?i)\bmlm\b|\bbusiness\s+opportunit(?:y|ies)\b`: {"mlm", "opportunit & business |business\n"},
		`(?i)\b(?:act\s+now|order\s+today)\b`:            {"act |act\n & now", "order |order\n & today"},
		`(?i)\bfree\s+(?:gift|trial)`:                    {"free |free\n & gift", "free |free\n & trial"},
		`(?i)\bfree\s+gift`:                              nil, // no alternation
		`(?:a|b)(?:c|d)`:                                 nil, // two alternations
	} {
		bs := splitBranches(regexp.MustCompile(re), true)
		var got []string
		for _, b := range bs {
			var cls []string
			for _, cl := range b.lits {
				cls = append(cls, strings.Join(cl, "|"))
			}
			got = append(got, strings.Join(cls, " & "))
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("splitBranches(%s) prefilters = %q; want %q", re, got, want)
		}
	}
	// The shipped phrase rules with a common word in one phrase are split.
	s, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"OFFER_BIZ_OPP", "__EARN_MONEY", "__NOT_SPAM"} {
		if r := s.Rule(n); r == nil || len(r.branches) < 3 {
			t.Errorf("%s is not split into its phrases", n)
		}
	}
}

// FuzzShouting: shouting(n) finds what its regexp finds.
func FuzzShouting(f *testing.F) {
	res := map[int]*regexp.Regexp{}
	for n := 1; n <= 4; n++ {
		res[n] = regexp.MustCompile(`\b[A-Z]{4,}` + strings.Repeat(`\s+[A-Z]{4,}`, n-1) + `\b`)
	}
	f.Add("BUY NOW", 2)
	f.Add("ACT NOW WHILE STOCKS LAST", 4)
	f.Add("(FREE MONEY FOR EVERY BODY)", 4)
	f.Add("xFREE MONEY FOR EVERYbody AND MORE", 3)
	f.Add("FREE\tMONEY\n\nFOR EVERY_ ONE", 4)
	f.Add("FREEÉ MONEY FOR EVERY", 4)
	f.Fuzz(func(t *testing.T, text string, n int) {
		if n < 1 || n > 4 {
			return
		}
		if got, want := shouting(text, n), res[n].MatchString(text); got != want {
			t.Fatalf("shouting(%q, %d) = %v; the regexp says %v", text, n, got, want)
		}
	})
}

// FuzzLitMatcher: one pass of the matcher finds what strings.Contains finds.
func FuzzLitMatcher(f *testing.F) {
	f.Add("she sells sea shells", "he", "shell", "sea s")
	f.Add("aaaa", "aa", "aaa", "b")
	f.Add("lose weight\nlose\n", "lose ", "lose\n", "weight")
	f.Fuzz(func(t *testing.T, text, a, b, c string) {
		var lits []string
		for _, l := range []string{a, b, c, "click", "ick", "k"} {
			if l != "" {
				lits = append(lits, l)
			}
		}
		found := newLitMatcher(lits).scan(text)
		for i, l := range lits {
			if found[i] != strings.Contains(text, l) {
				t.Fatalf("scan(%q) says %v for %q", text, found[i], l)
			}
		}
	})
}

// A matcher whose table would be too large is not built.
func TestLitMatcherBound(t *testing.T) {
	var lits []string
	for i := 0; i < 40000; i++ {
		lits = append(lits, fmt.Sprintf("word%06dxyz", i))
	}
	if newLitMatcher(lits) != nil {
		t.Error("a matcher of 40000 strings was built")
	}
	if newLitMatcher(lits[:100]) == nil {
		t.Error("no matcher for 100 strings")
	}
}

// The shipped rules' prefilters give the same answer through the set's
// matcher as through strings.Contains.
func TestMatcherPrefilter(t *testing.T) {
	s, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, text := range []string{
		"Click here to be removed from our mailing list. Lose 20 pounds, 100% FREE!",
		"lunch at noon, see the notes\nregards",
		"transfer of the sum of US$10,000,000 to the next of kin; call 1-888-555-1234 toll free",
	} {
		folded := foldText(text)
		c := &Context{lit: s.lit}
		for _, r := range s.order {
			if len(r.lits) == 0 {
				continue
			}
			if got, want := c.mayMatch(r, folded, &c.bodyLits), mayMatch(r.lits, folded); got != want {
				t.Errorf("%s on %q: matcher %v, Contains %v", r.Name, text, got, want)
			}
			if got := (&Context{}).mayMatch(r, folded, new([]bool)); got != mayMatch(r.lits, folded) {
				t.Errorf("%s on %q without a matcher: %v", r.Name, text, got)
			}
		}
	}
}

// FuzzSplitBranches: for any regexp an admin may write, its branches
// together match exactly what it matches, and no branch's prefilter hides
// one of its matches.
func FuzzSplitBranches(f *testing.F) {
	f.Add(`(?i)\bmlm\b|\bbusiness\s+opportunit(?:y|ies)\b`, "a Business  Opportunity")
	f.Add(`^(?:free|cheap)\s+(\w+)$`, "FREE pills")
	f.Add(`(?m)^(?:a|b)$`, "x\nb\ny")
	f.Add(`(?s)x(?:a.b|c)y`, "xa\nby")
	f.Add(`(?:a|b)(?:c|d)|e`, "bd")
	f.Fuzz(func(t *testing.T, pattern, text string) {
		re, err := regexp.Compile(pattern)
		if err != nil {
			return
		}
		bs := splitBranches(re, false)
		if bs == nil {
			return
		}
		want := re.MatchString(text)
		got := false
		fold := foldText(text)
		for _, b := range bs {
			m := b.re.MatchString(text)
			if m && !mayMatch(b.lits, fold) {
				t.Fatalf("%s: branch %s matches %q but its prefilter %q says no", pattern, b.re, text, b.lits)
			}
			got = got || m
		}
		if got != want {
			t.Fatalf("%s on %q: the regexp says %v, its branches %v", pattern, text, want, got)
		}
	})
}
