package rules

import (
	"regexp"
	"strings"
	"testing"
)

func TestRequiredLiterals(t *testing.T) {
	for re, want := range map[string]string{
		`(?i)\bclick\s+here`:                  "click",
		`(?i)\b(?:act\s+now|order\s+today)\b`: "act|order",
		`XJS\*C4JDBQADN1\.NSBN3`:              "xjs*c4jdbqadn1.nsbn3",
		`(?i)free\s+(?:gift|trial)`:           "free",
		`(?i)(?:gift|x)`:                      "",
		`\d+`:                                 "",
		`(?i)a+bcd*`:                          "",
		`(?i)(?:viagra){2,}`:                  "viagra",
	} {
		got := strings.Join(requiredLiterals(regexp.MustCompile(re)), "|")
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
	f.Fuzz(func(t *testing.T, text string) {
		folded := foldText(text)
		for _, r := range rs {
			if r.re.MatchString(text) && !mayMatch(r.lits, folded) {
				t.Fatalf("%s matches %q but its prefilter %q says no", r.Name, text, r.lits)
			}
		}
	})
}
