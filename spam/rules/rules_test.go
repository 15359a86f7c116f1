package rules

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postkit/postkit/spam/content"
)

func compile(t *testing.T, files ...string) *Set {
	t.Helper()
	s := NewSet()
	for i, f := range files {
		if err := s.Parse("f"+string(rune('0'+i))+".rules", []byte(f)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Compile(); err != nil {
		t.Fatal(err)
	}
	return s
}

func eval(t *testing.T, s *Set, raw string, bayes float64, facts map[string]bool) map[string]float64 {
	t.Helper()
	m := content.Parse(context.Background(), []byte(raw), content.Limits{})
	hits, err := s.Eval(context.Background(), &Context{Msg: m, Raw: []byte(raw), Bayes: bayes, Facts: facts})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, h := range hits {
		out[h.Name] = h.Score
	}
	return out
}

const sample = "From: \"Shop\" <deals12345@shop.example>\r\nTo: undisclosed-recipients:;\r\n" +
	"Subject: =?utf-8?q?Caf=C3=A9_FREE_offer!!?=\r\nX-Priority: 1\r\n" +
	"Content-Type: text/html; charset=utf-8\r\n\r\n" +
	"<html><body><p>Click here to <b>order now</b>: <a href=\"http://192.0.2.7/buy\">buy</a></p></body></html>\r\n"

func TestRuleKinds(t *testing.T) {
	s := compile(t, `
header   H_SUBJ      Subject =~ /café free/i
header   H_ADDR      From:addr =~ /^deals\d+@shop\.example$/
header   H_NAME      From:name =~ /^Shop$/
header   H_RAW       Subject:raw =~ /=\?utf-8\?q\?/
header   H_NEG       X-Mailer !~ /./
header   H_EXISTS    exists:X-Priority
header   H_MISSING   exists:X-Nothing
header   H_ALL       ALL =~ /^X-Priority: 1$/m
body     B_ORDER     /click here to order now/i
body     B_MARKUP    /<b>/
rawbody  R_MARKUP    /<b>order now<\/b>/
full     F_CTYPE     /charset=utf-8/
uri      U_IP        m{^http://192\.0\.2\.\d+/}
eval     E_HTML      html_only()
eval     E_BAYES     bayes(0.9, 1)
eval     E_FACT      fact(spf_fail)
eval     E_URIS      uri_count(1)
meta     M_BOTH      H_SUBJ && U_IP
meta     M_COUNT     (H_SUBJ + H_ADDR + H_MISSING) >= 2
meta     M_NOT       !H_MISSING && !(H_SUBJ || B_MARKUP)
`)
	got := eval(t, s, sample, 0.95, map[string]bool{"spf_fail": true})
	want := []string{"H_SUBJ", "H_ADDR", "H_NAME", "H_RAW", "H_NEG", "H_EXISTS", "H_ALL", "B_ORDER", "R_MARKUP", "F_CTYPE", "U_IP", "E_HTML", "E_BAYES", "E_FACT", "E_URIS", "M_BOTH", "M_COUNT"}
	for _, n := range want {
		if _, ok := got[n]; !ok {
			t.Errorf("%s did not hit; hits: %v", n, got)
		}
	}
	for _, n := range []string{"H_MISSING", "B_MARKUP", "M_NOT"} {
		if _, ok := got[n]; ok {
			t.Errorf("%s hit; want no hit", n)
		}
	}
	if len(got) != len(want) {
		t.Errorf("hits %v; want exactly %v", got, want)
	}
}

func TestScoresAndOverrides(t *testing.T) {
	s := compile(t,
		"body A /free/i\nscore A 1.5\ndescribe A first\nbody B /free/i\nbody __C /free/i\nbody D /free/i\nscore D 3\n",
		"score A 2.5\nbody B /offer/i\nscore D 0\nscore LATER 4\nbody LATER /free/i\n")
	got := eval(t, s, sample, -1, nil)
	if got["A"] != 2.5 {
		t.Errorf("A = %v; want the later score 2.5", got["A"])
	}
	if got["B"] != 1 {
		t.Errorf("B = %v; a rule without score scores 1, and its redefinition tests /offer/", got["B"])
	}
	if _, ok := got["__C"]; ok {
		t.Error("__C reported; sub-rules never are")
	}
	if _, ok := got["D"]; ok {
		t.Error("D reported; score 0 disables")
	}
	if got["LATER"] != 4 {
		t.Errorf("LATER = %v; a score before the definition counts", got["LATER"])
	}
	if r := s.Rule("A"); r.Description != "first" || r.ScorePos.File != "f1.rules" {
		t.Errorf("A: description %q from %v", r.Description, r.ScorePos)
	}
}

func TestParseErrors(t *testing.T) {
	for _, tt := range []struct {
		in, want string
	}{
		{"bogus NAME /x/", "f0.rules:1: unknown directive \"bogus\""},
		{"\n\nbody NAME /(?<=x)y/", "f0.rules:3: body NAME: regexp:"},
		{"body NAME /x/q", "regexp flag 'q'"},
		{"body NAME x", "must start with /"},
		{"body NAME /x", "no closing /"},
		{"body 9NAME /x/", "rule name \"9NAME\""},
		{"header NAME Subject ~= /x/", "want =~ or !~"},
		{"header NAME Subject:foo =~ /x/", "field modifier \"foo\""},
		{"meta NAME A && (B", "missing )"},
		{"meta NAME A &&", "ends too early"},
		{"meta NAME A $ B", "character '$'"},
		{"eval NAME nosuch()", "unknown function \"nosuch\""},
		{"eval NAME bayes(0.9)", "want two numbers"},
		{"score NAME lots", "is not a number"},
		{"score NAME", "want one number"},
		{"whitelist_from", "without an address pattern"},
		{"body NAME", "without a test"},
	} {
		err := NewSet().Parse("f0.rules", []byte(tt.in))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q) = %v; want an error containing %q", tt.in, err, tt.want)
			continue
		}
		var pe *Error
		if !errors.As(err, &pe) || pe.Hint == "" {
			t.Errorf("Parse(%q): %v is not a positioned *Error with a hint", tt.in, err)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	s := NewSet()
	if err := s.Parse("a.rules", []byte("meta M1 M2 && X\nmeta M2 M1\nbody X /x/\n")); err != nil {
		t.Fatal(err)
	}
	err := s.Compile()
	if err == nil || !strings.Contains(err.Error(), "loop") || !strings.Contains(err.Error(), "a.rules:") {
		t.Errorf("Compile = %v; want a positioned loop error", err)
	}
	s = NewSet()
	if err := s.Parse("a.rules", []byte("meta M1 NOPE\n")); err != nil {
		t.Fatal(err)
	}
	if err := s.Compile(); err == nil || !strings.Contains(err.Error(), "a.rules:1: meta M1 reads NOPE") {
		t.Errorf("Compile = %v; want the undefined rule named", err)
	}
	s = NewSet()
	if err := s.Parse("a.rules", []byte("score GHOST 2\nbody X /x/\nscore X 0\nmeta M X\n")); err != nil {
		t.Fatal(err)
	}
	if err := s.Compile(); err != nil {
		t.Fatal(err)
	}
	if w := strings.Join(s.Warnings, "\n"); !strings.Contains(w, "GHOST") || !strings.Contains(w, "disabled") {
		t.Errorf("warnings %q; want the unknown score and the disabled dependency", w)
	}
}

func TestAllowBlockLists(t *testing.T) {
	s := compile(t, "whitelist_from *@Exemple.fr  friend@example.org\nblacklist_from *@spam.example\nwelcomelist_from a@b.c\n")
	if strings.Join(s.Allow, " ") != "*@exemple.fr friend@example.org a@b.c" || strings.Join(s.Block, " ") != "*@spam.example" {
		t.Errorf("Allow %v Block %v", s.Allow, s.Block)
	}
}

// The shipped rules load, and every rule in them has a description.
func TestDefaultRules(t *testing.T) {
	s, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Warnings) > 0 {
		t.Errorf("warnings: %v", s.Warnings)
	}
	for _, r := range s.Rules() {
		if r.Enabled() && !strings.HasPrefix(r.Name, "__") && r.Description == "" {
			t.Errorf("%s (%s) has no description", r.Name, r.Pos)
		}
	}
	if r := s.Rule("GTUBE"); r == nil || r.Score() < 1000 {
		t.Fatalf("GTUBE missing or scored below 1000")
	}
}

func TestLoadDirs(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "10-local.rules"), []byte("score GTUBE 0\nbody LOCAL_X /xyzzy/\nscore LOCAL_X 2\ndescribe LOCAL_X local rule\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "20-more.rules"), []byte("score LOCAL_X 3\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "ignored.cf"), []byte("nonsense\n"), 0o644)
	s, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := eval(t, s, "Subject: x\n\nxyzzy XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\n", -1, nil)
	if _, ok := got["GTUBE"]; ok || got["LOCAL_X"] != 3 {
		t.Errorf("hits %v; want GTUBE disabled and LOCAL_X at 3", got)
	}
	if _, err := Load(filepath.Join(dir, "missing")); err == nil {
		t.Error("Load of a missing directory succeeded")
	}
	os.WriteFile(filepath.Join(dir, "30-bad.rules"), []byte("\nbody BAD /(/\n"), 0o644)
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "30-bad.rules:2:") {
		t.Errorf("Load = %v; want the file and line", err)
	}
}

func TestEvalStopsAtDeadline(t *testing.T) {
	s := compile(t, "body A /a/\nbody B /b/\n")
	m := content.Parse(context.Background(), []byte("Subject: x\n\nab\n"), content.Limits{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Eval(ctx, &Context{Msg: m, Bayes: -1}); !errors.Is(err, context.Canceled) {
		t.Errorf("Eval after cancel = %v; want context.Canceled", err)
	}
}

// FuzzParse: any rules file either parses and compiles into a set that
// evaluates without panicking, or fails with positioned errors.
func FuzzParse(f *testing.F) {
	f.Add([]byte(DefaultSource()))
	f.Add([]byte("header A Subject =~ /x/i\nmeta B A && !A\nscore B 2\neval C bayes(0.1, 0.5)\n"))
	f.Add([]byte("meta M ((((A))))\nbody A m{x}s\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := NewSet()
		if err := s.Parse("fuzz.rules", data); err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "fuzz.rules:") {
					t.Fatalf("error line %q has no position", line)
				}
			}
			return
		}
		if err := s.Compile(); err != nil {
			return
		}
		m := content.Parse(context.Background(), []byte(sample), content.Limits{})
		if _, err := s.Eval(context.Background(), &Context{Msg: m, Raw: []byte(sample), Bayes: 0.5}); err != nil {
			t.Fatal(err)
		}
	})
}

func TestReplyToRecipient(t *testing.T) {
	s := compile(t, "eval LIST reply_to_recipient()\n")
	for raw, want := range map[string]bool{
		"From: a@x.example\nTo: list@lists.example\nReply-To: list@lists.example\n\n":                         true,
		"From: a@x.example\nTo: b@y.example\nCc: List <list@lists.example>\nReply-To: list@lists.example\n\n": true,
		"From: a@x.example\nTo: b@y.example\nReply-To: a@x.example\n\n":                                       false,
		"From: list@lists.example\nTo: list@lists.example\nReply-To: list@lists.example\n\n":                  false,
		"From: a@x.example\nTo: b@y.example\n\n":                                                              false,
	} {
		if _, got := eval(t, s, raw, -1, nil)["LIST"]; got != want {
			t.Errorf("%q: hit %v; want %v", raw, got, want)
		}
	}
}
