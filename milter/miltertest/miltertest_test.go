package miltertest

import (
	"strings"
	"testing"

	"github.com/emersion/go-milter"
)

func TestSplitMessage(t *testing.T) {
	tests := []struct {
		raw      string
		want     string // name=value|…
		wantBody string
		wantErr  bool
	}{
		{"A: 1\r\nB:  two\r\n\tfolded\r\n\r\nbody\r\n", "A=1|B=two\r\n\tfolded", "body\r\n", false},
		{"A: 1\nB: 2\n\nlf body\n", "A=1|B=2", "lf body\r\n", false},
		{"A: 1\r\n", "A=1", "", false},
		{"no colon\r\n\r\n", "", "", true},
	}
	for _, tc := range tests {
		hs, body, err := SplitMessage([]byte(tc.raw))
		if (err != nil) != tc.wantErr {
			t.Errorf("SplitMessage(%q) error %v", tc.raw, err)
			continue
		}
		var got []string
		for _, h := range hs {
			got = append(got, h.Name+"="+h.Value)
		}
		if strings.Join(got, "|") != tc.want || string(body) != tc.wantBody {
			t.Errorf("SplitMessage(%q) = %q, %q; want %q, %q", tc.raw, got, body, tc.want, tc.wantBody)
		}
	}
}

func TestApply(t *testing.T) {
	hs, body, _ := SplitMessage([]byte("A: 1\r\nX: a\r\nX: b\r\n\r\nbody\r\n"))
	tests := []struct {
		name string
		mods []milter.ModifyAction
		want string
	}{
		{"insert 0 is top", []milter.ModifyAction{{Code: milter.ActInsertHeader, HeaderIndex: 0, HeaderName: "T", HeaderValue: "t"}}, "T: t|A: 1|X: a|X: b"},
		{"insert 1 goes below Postfix's own Received", []milter.ModifyAction{{Code: milter.ActInsertHeader, HeaderIndex: 1, HeaderName: "T", HeaderValue: "t"}}, "T: t|A: 1|X: a|X: b"},
		{"insert 2 after the first seen header", []milter.ModifyAction{{Code: milter.ActInsertHeader, HeaderIndex: 2, HeaderName: "T", HeaderValue: "t"}}, "A: 1|T: t|X: a|X: b"},
		{"change per name, case-insensitive", []milter.ModifyAction{{Code: milter.ActChangeHeader, HeaderIndex: 2, HeaderName: "x", HeaderValue: "B"}}, "A: 1|X: a|X: B"},
		{"delete then index shifts", []milter.ModifyAction{{Code: milter.ActChangeHeader, HeaderIndex: 1, HeaderName: "X"}, {Code: milter.ActChangeHeader, HeaderIndex: 1, HeaderName: "X"}}, "A: 1"},
		{"change past the end appends", []milter.ModifyAction{{Code: milter.ActChangeHeader, HeaderIndex: 5, HeaderName: "X", HeaderValue: "z"}}, "A: 1|X: a|X: b|X: z"},
		{"add appends", []milter.ModifyAction{{Code: milter.ActAddHeader, HeaderName: "Z", HeaderValue: "z"}}, "A: 1|X: a|X: b|Z: z"},
	}
	for _, tc := range tests {
		out, err := Apply(hs, body, tc.mods)
		if err != nil {
			t.Fatal(err)
		}
		head, rest, _ := strings.Cut(string(out), "\r\n\r\n")
		if got := strings.ReplaceAll(head, "\r\n", "|"); got != tc.want || rest != "body\r\n" {
			t.Errorf("%s: got %q + %q, want %q", tc.name, got, rest, tc.want)
		}
	}
}
