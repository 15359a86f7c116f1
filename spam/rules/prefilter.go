package rules

import (
	"regexp"
	"regexp/syntax"
	"slices"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Prefilter: most rules' regexps can only match text that contains one of
// a few literal strings ("click" for /\bclick\s+here/i). Checking for those
// in a lower-cased copy of the text with strings.Contains is far cheaper
// than running the regexp engine over every message for every rule, which
// dominated the CPU profile of scoring.

// requiredLiterals returns the prefilter of re: clauses of lower-case
// strings such that every match of re contains, for each clause, one of its
// strings (after foldText); nil when there is no such clause.
// `\bmake\s+(?:money|cash)` gives [[make] [money cash]]: both are looked
// for, which rules out far more text than either alone.
//
// For body rules (spaced true) the text is the body text, whose every run of
// white space is one space or one newline: a literal followed by \s+ in
// the regexp is then looked for with that space or newline after it
// ("lose " for /lose\s+weight/, which "losemer" does not satisfy).
func requiredLiterals(re *regexp.Regexp, spaced bool) [][]string {
	parsed, err := syntax.Parse(re.String(), syntax.Perl)
	if err != nil {
		return nil
	}
	var out [][]string
	seen := map[string]bool{}
	for _, cl := range clauses(parsed.Simplify(), spaced) {
		key := strings.Join(cl, "\x00")
		if !weakClause(cl) && !seen[key] {
			seen[key] = true
			out = append(out, cl)
		}
	}
	// The longest strings first: the rarest, most often the clause
	// that rules a text out.
	sort.SliceStable(out, func(i, j int) bool { return minLen(out[i]) > minLen(out[j]) })
	if len(out) > maxClauses {
		out = out[:maxClauses]
	}
	return out
}

// maxLiterals bounds the alternatives of a clause; maxClauses the clauses
// of a prefilter.
const (
	maxLiterals = 24
	maxClauses  = 4
)

// weakClause: a clause with a string of fewer than three characters that
// holds a letter or a space is found in almost any text (a lone "%", "$" or
// "00" much less often).
func weakClause(cl []string) bool {
	for _, l := range cl {
		if len(l) >= 3 {
			continue
		}
		for i := 0; i < len(l); i++ {
			if c := l[i]; c >= 'a' && c <= 'z' || c == ' ' || c >= utf8.RuneSelf {
				return true
			}
		}
	}
	return false
}

// clauses returns clauses that every match of re satisfies (nil: none).
func clauses(re *syntax.Regexp, spaced bool) [][]string {
	switch re.Op {
	case syntax.OpLiteral:
		if len(re.Rune) == 0 {
			return nil
		}
		return [][]string{{foldText(string(re.Rune))}}
	case syntax.OpCapture, syntax.OpPlus:
		return clauses(re.Sub[0], spaced)
	case syntax.OpRepeat:
		if re.Min >= 1 {
			return clauses(re.Sub[0], spaced)
		}
		return nil
	case syntax.OpConcat:
		// Adjacent literals form one longer string; every child's
		// clauses hold for the whole.
		var out [][]string
		var run strings.Builder
		flush := func(next *syntax.Regexp) {
			if run.Len() > 0 {
				if spaced && next != nil && spaceRun(next) {
					out = append(out, []string{run.String() + " ", run.String() + "\n"})
				} else {
					out = append(out, []string{run.String()})
				}
			}
			run.Reset()
		}
		for _, sub := range re.Sub {
			if sub.Op == syntax.OpLiteral && len(sub.Rune) > 0 {
				run.WriteString(foldText(string(sub.Rune)))
				continue
			}
			flush(sub)
			out = append(out, clauses(sub, spaced)...)
		}
		flush(nil)
		return out
	case syntax.OpAlternate:
		// A match matches one alternative, so it satisfies one clause of
		// each: for every choice of a clause per alternative, the union
		// of the choices is a clause of the whole. The two best clauses of
		// each alternative, as long as the choices stay few; else each
		// alternative's best alone.
		var alts [][][]string
		choices := 1
		for _, sub := range re.Sub {
			best := bestClauses(clauses(sub, spaced), 2)
			if len(best) == 0 {
				return nil
			}
			alts = append(alts, best)
			choices *= len(best)
		}
		if choices > maxChoices {
			for i := range alts {
				alts[i] = alts[i][:1]
			}
		}
		out := [][]string{nil}
		for _, a := range alts {
			var next [][]string
			for _, prefix := range out {
				for _, cl := range a {
					next = append(next, union(prefix, cl))
				}
			}
			out = next
		}
		var kept [][]string
		for _, cl := range out {
			if len(cl) <= maxLiterals {
				kept = append(kept, cl)
			}
		}
		return kept
	}
	return nil
}

// spaceRun reports whether re matches one or more white space characters
// and nothing else (\s+, \s{1,3}, [ \t]+).
func spaceRun(re *syntax.Regexp) bool {
	switch re.Op {
	case syntax.OpPlus:
	case syntax.OpRepeat:
		if re.Min < 1 {
			return false
		}
	default:
		return false
	}
	cc := re.Sub[0]
	if cc.Op != syntax.OpCharClass || len(cc.Rune) == 0 {
		return false
	}
	for i := 0; i+1 < len(cc.Rune); i += 2 {
		for r := cc.Rune[i]; r <= cc.Rune[i+1]; r++ {
			if !unicode.IsSpace(r) {
				return false
			}
		}
	}
	return true
}

// union returns the strings of a and b, each once.
func union(a, b []string) []string {
	out := append([]string(nil), a...)
	for _, s := range b {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// maxChoices bounds the clauses an alternation yields.
const maxChoices = 8

// bestClauses returns up to n clauses of cls most likely to rule a text
// out: not weak, the longest shortest string first.
func bestClauses(cls [][]string, n int) [][]string {
	var out [][]string
	for _, cl := range cls {
		if !weakClause(cl) {
			out = append(out, cl)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return minLen(out[i]) > minLen(out[j]) })
	if len(out) > n {
		out = out[:n]
	}
	return out
}

func minLen(ls []string) int {
	m := -1
	for _, l := range ls {
		if m < 0 || len(l) < m {
			m = len(l)
		}
	}
	return m
}

// foldText lower-cases s, mapping the two runes that case-fold to ASCII
// letters without being their lower case (U+212A KELVIN SIGN, U+017F LONG
// S) as (?i) matching does, so that a literal found by (?i) in the text is
// always found by strings.Contains in foldText(text).
func foldText(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		return strings.ToLower(s)
	}
	return strings.Map(func(r rune) rune {
		switch r {
		case '\u212a':
			return 'k'
		case '\u017f':
			return 's'
		}
		return unicode.ToLower(r)
	}, s)
}

// mayMatch reports whether folded (foldText of the text) satisfies every
// clause of the prefilter pf (true when it has none).
func mayMatch(pf [][]string, folded string) bool {
	for _, cl := range pf {
		found := false
		for _, l := range cl {
			if strings.Contains(folded, l) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
