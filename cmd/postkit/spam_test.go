package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runSpam(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	root := newSpamCommand()
	var o, e bytes.Buffer
	root.SetArgs(args)
	root.SetIn(strings.NewReader(stdin))
	root.SetOut(&o)
	root.SetErr(&e)
	root.SilenceUsage, root.SilenceErrors = true, true
	err := root.ExecuteContext(context.Background())
	return o.String(), e.String(), err
}

const gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

func TestSpamCheck(t *testing.T) {
	msg := "From: a@b.example\nX-Spam-Flag: YES\nSubject: hi\n\n" + gtube + "\n"
	out, _, err := runSpam(t, msg, "check", "--report", "--rewrite-subject", "[SPAM]")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Subject: [SPAM] hi\n", "X-Spam-Flag: YES\n", "X-Spam-Status: Yes, score=1002.9 required=5.0 tests=GTUBE,",
		"X-Spam-Report: ", "X-Spam-Checker-Version: postkit-spam", "\n\n" + gtube + "\n",
		"(1002.9 points, 5.0 required: SPAM)", "1000.0 GTUBE ", "Bayes: not used",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Count(out, "X-Spam-Flag") != 1 {
		t.Errorf("the incoming X-Spam-Flag was kept:\n%s", out)
	}
	out, _, err = runSpam(t, "From: a@b.example\nSubject: lunch\n\nsee you at noon\n", "check", "--exit-code")
	if err != nil || !strings.Contains(out, "X-Spam-Status: No, ") || strings.Contains(out, "X-Spam-Flag") {
		t.Errorf("ham: %v\n%s", err, out)
	}
	_, _, err = runSpam(t, msg, "check", "--exit-code")
	var ec interface{ ExitCode() int }
	if !errors.As(err, &ec) || ec.ExitCode() != 1 {
		t.Errorf("--exit-code on spam = %v; want exit status 1", err)
	}
}

func TestSpamLearnAndStats(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "bayes.sqlite")
	md := filepath.Join(dir, "Maildir")
	for i := 0; i < 3; i++ {
		p := filepath.Join(md, ".Spam", "cur", fmt.Sprintf("%d.host:2,S", i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(fmt.Sprintf("Message-ID: <s%d@x>\nSubject: cheap pills %d\n\nbuy now\n", i, i)), 0o644)
	}
	mbox := filepath.Join(dir, "ham.mbox")
	os.WriteFile(mbox, []byte("From a Mon Jan 1 00:00:00 2026\nMessage-ID: <h1@x>\nSubject: notes\n\nthe notes\n\nFrom b Mon Jan 1 00:00:00 2026\nMessage-ID: <h2@x>\nSubject: lunch\n\nnoon\n"), 0o644)

	steps := []struct {
		stdin   string
		args    []string
		wantOut string
		wantErr string
	}{
		{"", []string{"learn", "--spam", md}, "", "--bayes PATH is required"},
		{"", []string{"learn", "--bayes", db, md}, "", "exactly one of"},
		{"", []string{"learn", "--bayes", db, "--spam", md}, "3 learned as spam, 0 already so, 0 unreadable", ""},
		{"", []string{"learn", "--bayes", db, "--spam", md}, "0 learned as spam, 3 already so", ""},
		{"", []string{"learn", "--bayes", db, "--ham", mbox}, "2 learned as ham", ""},
		{"Message-ID: <s0@x>\nSubject: cheap pills 0\n\nbuy now\n", []string{"learn", "--bayes", db, "--ham"}, "1 learned as ham", ""},
		{"", []string{"stats", "--bayes", db}, "spam learned:    2\nham learned:     3\n", ""},
		{"", []string{"learn", "--bayes", db, "--forget", mbox}, "2 forgotten, 0 not learned", ""},
		{"", []string{"stats", "--bayes", db}, "ham learned:     1\n", ""},
		{"", []string{"learn", "--bayes", db, "--spam", filepath.Join(dir, "missing")}, "", "no such file"},
		{"", []string{"stats", "--bayes", filepath.Join(dir, "none.sqlite")}, "", "learn something first"},
	}
	for _, s := range steps {
		out, _, err := runSpam(t, s.stdin, s.args...)
		if s.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), s.wantErr) {
				t.Errorf("%v: err %v; want %q", s.args, err, s.wantErr)
			}
			continue
		}
		if err != nil || !strings.Contains(out, s.wantOut) {
			t.Errorf("%v: %v\n%s\nwant %q", s.args, err, out, s.wantOut)
		}
	}
}
