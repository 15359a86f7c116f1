package rules

import (
	"regexp"
	"regexp/syntax"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Prefilter: most rules' regexps can only match text that contains one of
// a few literal strings ("click" for /\bclick\s+here/i). Checking for those
// in a lower-cased copy of the text with strings.Contains is far cheaper
// than running the regexp engine over every message for every rule, which
// dominated the CPU profile of scoring.

// requiredLiterals returns lower-case strings such that every match of re
// contains at least one of them (after foldText), or nil when there is no
// such set.
func requiredLiterals(re *regexp.Regexp) []string {
	parsed, err := syntax.Parse(re.String(), syntax.Perl)
	if err != nil {
		return nil
	}
	lits, ok := required(parsed.Simplify())
	if !ok {
		return nil
	}
	for _, l := range lits {
		if len(l) < 3 {
			return nil // too short to be worth a scan of its own
		}
	}
	return lits
}

// maxLiterals bounds the alternatives a prefilter tries.
const maxLiterals = 24

func required(re *syntax.Regexp) ([]string, bool) {
	switch re.Op {
	case syntax.OpLiteral:
		if len(re.Rune) == 0 {
			return nil, false
		}
		return []string{foldText(string(re.Rune))}, true
	case syntax.OpCapture:
		return required(re.Sub[0])
	case syntax.OpPlus:
		return required(re.Sub[0])
	case syntax.OpRepeat:
		if re.Min >= 1 {
			return required(re.Sub[0])
		}
		return nil, false
	case syntax.OpConcat:
		// Adjacent literals form one longer string; otherwise take the
		// child whose shortest literal is longest.
		var best []string
		bestLen := 0
		var run strings.Builder
		flush := func() {
			if run.Len() > bestLen {
				best, bestLen = []string{run.String()}, run.Len()
			}
			run.Reset()
		}
		for _, sub := range re.Sub {
			if sub.Op == syntax.OpLiteral && len(sub.Rune) > 0 {
				run.WriteString(foldText(string(sub.Rune)))
				continue
			}
			flush()
			if lits, ok := required(sub); ok {
				if m := minLen(lits); m > bestLen {
					best, bestLen = lits, m
				}
			}
		}
		flush()
		return best, best != nil
	case syntax.OpAlternate:
		var out []string
		for _, sub := range re.Sub {
			lits, ok := required(sub)
			if !ok {
				return nil, false
			}
			out = append(out, lits...)
			if len(out) > maxLiterals {
				return nil, false
			}
		}
		return out, len(out) > 0
	}
	return nil, false
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

// mayMatch reports whether folded (foldText of the text) contains one of
// the literals; true when the rule has none.
func mayMatch(lits []string, folded string) bool {
	if lits == nil {
		return true
	}
	for _, l := range lits {
		if strings.Contains(folded, l) {
			return true
		}
	}
	return false
}
