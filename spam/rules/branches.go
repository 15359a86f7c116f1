package rules

import (
	"regexp"
	"regexp/syntax"
)

// A phrase rule is often one alternation of many phrases
// (/\bmlm\b|\bbusiness\s+opportunit(?:y|ies)\b|\bextra\s+(?:money|income)\b/i).
// Its prefilter can only ask for one word of any phrase, and a common one
// ("business", "extra") lets the whole alternation run over most messages.
// Split into its alternatives, each with a prefilter of its own (both
// "business " and "opportunit"), a branch runs only when all of its words
// are there, and what runs is one phrase, not all of them.

// branch is one alternative of a body or raw body rule's regexp.
type branch struct {
	re     *regexp.Regexp
	lits   [][]string
	litIDs [][]int32
}

// maxBranches bounds the alternatives a rule is split into.
const maxBranches = 64

// splitBranches returns re's top-level alternatives as regexps of their
// own (an alternation between fixed parts, as in \b(?:a|b)\b, counts:
// each alternative keeps the parts around it), with their prefilters; nil
// when re is not such an alternation. re matches a text exactly when one
// of the branches does.
func splitBranches(re *regexp.Regexp, spaced bool) []branch {
	parsed, err := syntax.Parse(re.String(), syntax.Perl)
	if err != nil {
		return nil
	}
	for parsed.Op == syntax.OpCapture {
		parsed = parsed.Sub[0]
	}
	var alts []*syntax.Regexp
	switch parsed.Op {
	case syntax.OpAlternate:
		alts = parsed.Sub
	case syntax.OpConcat:
		at := -1
		for i, sub := range parsed.Sub {
			for sub.Op == syntax.OpCapture {
				sub = sub.Sub[0]
			}
			if sub.Op == syntax.OpAlternate {
				if at >= 0 {
					return nil // two alternations: the product could be large
				}
				at = i
			}
		}
		if at < 0 {
			return nil
		}
		alt := parsed.Sub[at]
		for alt.Op == syntax.OpCapture {
			alt = alt.Sub[0]
		}
		for _, a := range alt.Sub {
			subs := make([]*syntax.Regexp, 0, len(parsed.Sub))
			subs = append(subs, parsed.Sub[:at]...)
			subs = append(subs, a)
			subs = append(subs, parsed.Sub[at+1:]...)
			alts = append(alts, &syntax.Regexp{Op: syntax.OpConcat, Flags: parsed.Flags, Sub: subs})
		}
	default:
		return nil
	}
	if len(alts) < 2 || len(alts) > maxBranches {
		return nil
	}
	out := make([]branch, 0, len(alts))
	for _, a := range alts {
		bre, err := regexp.Compile(a.String())
		if err != nil {
			return nil
		}
		out = append(out, branch{re: bre, lits: requiredLiterals(bre, spaced)})
	}
	return out
}
