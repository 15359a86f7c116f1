package spam

import (
	"strings"
	"testing"
)

func TestStatus(t *testing.T) {
	for _, tt := range []struct {
		r    Result
		want string
	}{
		{Result{Score: 5.3, Required: 5, Hits: []Hit{{Name: "RULE_A", Score: 3}, {Name: "RULE_B", Score: 2.3}}, Autolearn: "no"},
			"Yes, score=5.3 required=5.0 tests=RULE_A,RULE_B autolearn=no version=postkit-spam-1.0"},
		{Result{Score: -0.04, Required: 5},
			"No, score=0.0 required=5.0 tests=none autolearn=no version=postkit-spam-1.0"},
		{Result{Score: -1.5, Required: 6.5, Hits: []Hit{{Name: "BAYES_00", Score: -1.5}}, Autolearn: "ham"},
			"No, score=-1.5 required=6.5 tests=BAYES_00 autolearn=ham version=postkit-spam-1.0"},
	} {
		// Folded at 78 columns (with the field name); compare unfolded.
		if got := strings.ReplaceAll(Status(tt.r), "\n\t", " "); got != tt.want {
			t.Errorf("Status = %q\n want %q", got, tt.want)
		}
	}
	// Long test lists are folded, never wider than 78 columns.
	var hits []Hit
	for i := 0; i < 30; i++ {
		hits = append(hits, Hit{Name: "SOME_LONG_RULE_NAME_" + string(rune('A'+i%26))})
	}
	s := FieldStatus + ": " + Status(Result{Score: 9, Required: 5, Hits: hits})
	lines := strings.Split(s, "\n")
	if len(lines) < 5 {
		t.Errorf("not folded: %q", s)
	}
	for i, l := range lines {
		if len(strings.ReplaceAll(l, "\t", "        ")) > 78 {
			t.Errorf("line %d is %d columns: %q", i, len(l), l)
		}
		if i > 0 && !strings.HasPrefix(l, "\t") {
			t.Errorf("continuation line %q does not start with a tab", l)
		}
	}
	if strings.ReplaceAll(strings.ReplaceAll(s, "\n\t", ""), " ", "") != strings.ReplaceAll(FieldStatus+": "+"Yes, score=9.0 required=5.0 tests="+joinNames(hits)+" autolearn=no version=postkit-spam-1.0", " ", "") {
		t.Errorf("folding changed the content: %q", s)
	}
}

func joinNames(h []Hit) string {
	var n []string
	for _, x := range h {
		n = append(n, x.Name)
	}
	return strings.Join(n, ",")
}

func TestLevelAndFields(t *testing.T) {
	for score, want := range map[float64]string{-3: "", 0.9: "", 1: "*", 5.3: "*****", 1002: strings.Repeat("*", 50)} {
		if got := Level(Result{Score: score}); got != want {
			t.Errorf("Level(%v) = %q; want %q", score, got, want)
		}
	}
	names := func(fs []Field) string {
		var n []string
		for _, f := range fs {
			n = append(n, f.Name)
		}
		return strings.Join(n, " ")
	}
	spamR := Result{Score: 7, Required: 5, Hits: []Hit{{Name: "X", Score: 7, Description: "an x"}}}
	if got := names(Fields(spamR, HeaderOptions{Report: true, Host: "mx"})); got != "X-Spam-Checker-Version X-Spam-Flag X-Spam-Level X-Spam-Status X-Spam-Report" {
		t.Errorf("spam fields: %s", got)
	}
	if got := names(Fields(Result{Score: 1, Required: 5}, HeaderOptions{})); got != "X-Spam-Checker-Version X-Spam-Level X-Spam-Status" {
		t.Errorf("ham fields: %s (X-Spam-Flag only on spam)", got)
	}
	if r := Report(spamR); !strings.Contains(r, "\n\t*   7.0 X an x") {
		t.Errorf("Report = %q", r)
	}
	if v := CheckerVersion("mx.exemple.fr"); v != Version+" on mx.exemple.fr" {
		t.Errorf("CheckerVersion = %q", v)
	}
}

func TestRewriteSubject(t *testing.T) {
	for in, want := range map[string]string{
		"Hello":                  "*****SPAM***** Hello",
		"":                       "*****SPAM*****",
		"*****SPAM***** already": "*****SPAM***** already",
	} {
		if got := RewriteSubject(in, ""); got != want {
			t.Errorf("RewriteSubject(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestAnnotate(t *testing.T) {
	raw := "From: a@b.example\r\nX-Spam-Flag: YES\r\nSubject: hello\r\n  world\r\nX-Spam-Status: Yes,\r\n\tscore=99\r\n\r\nbody\r\nX-Spam-Flag: in the body stays\r\n"
	fields := []Field{{FieldStatus, "No, score=1.0\n\ttests=A"}}
	got := string(Annotate([]byte(raw), fields, ""))
	want := "From: a@b.example\r\nSubject: hello\r\n  world\r\nX-Spam-Status: No, score=1.0\r\n\ttests=A\r\n\r\nbody\r\nX-Spam-Flag: in the body stays\r\n"
	if got != want {
		t.Errorf("Annotate =\n%q\nwant\n%q", got, want)
	}
	got = string(Annotate([]byte("Subject: hello\n  world\n\nbody\n"), nil, DefaultSubjectTag))
	if got != "Subject: *****SPAM***** hello world\n\nbody\n" {
		t.Errorf("Annotate with tag = %q", got)
	}
	got = string(Annotate([]byte("From: a@b\n\nbody\n"), nil, "[SPAM]"))
	if got != "From: a@b\nSubject: [SPAM]\n\nbody\n" {
		t.Errorf("Annotate adding Subject = %q", got)
	}
	if got := string(Annotate([]byte("From: a@b"), []Field{{"X-Spam-Level", ""}}, "")); got != "From: a@b\nX-Spam-Level: \n\n" {
		t.Errorf("Annotate of a bodiless message = %q", got)
	}
}
