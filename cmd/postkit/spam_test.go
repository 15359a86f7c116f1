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
	"time"

	"github.com/postkit/postkit/internal/pgtest"
	"github.com/spf13/pflag"
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
		{"", []string{"learn", "--spam", md}, "", "--bayes PATH, --bayes-dsn URL or -c postkit.yaml is required"},
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

// With -c, the commands read milter.spam as the milter does: the Bayes
// store, rules_dir, required_score, whitelist_from, report and
// rewrite_subject; flags override.
func TestSpamConfigFile(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "state", "bayes.sqlite")
	rulesDir := filepath.Join(dir, "rules")
	if err := os.MkdirAll(rulesDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rulesDir, "local.rules"), []byte("body LOCAL_LUNCH /\\blunch\\b/i\nscore LOCAL_LUNCH 3.5\ndescribe LOCAL_LUNCH Talks about lunch\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "postkit.yaml")
	y := milterYAMLBase + fmt.Sprintf(`milter:
  enabled: true
  spam:
    enabled: true
    required_score: 3
    rules_dir: %s
    whitelist_from: ["*@friends.example"]
    report: all
    rewrite_subject: "[SPAM]"
    bayes: {enabled: true, path: %s, min_trained: 1, expiry: 0s}
`, rulesDir, db)
	if err := os.WriteFile(cfg, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	lunch := "From: a@b.example\nSubject: lunch\n\nlunch at noon\n"

	out, _, err := runSpam(t, lunch, "check", "-c", cfg)
	for _, want := range []string{"X-Spam-Flag: YES", "required=3.0", "LOCAL_LUNCH", "X-Spam-Report: ", "Subject: [SPAM] lunch"} {
		if err != nil || !strings.Contains(out, want) {
			t.Errorf("check -c: %v; output lacks %q:\n%s", err, want, out)
		}
	}
	// Flags override the file.
	out, _, err = runSpam(t, lunch, "check", "-c", cfg, "--required", "5", "--rules-dir", t.TempDir())
	if err != nil || !strings.Contains(out, "X-Spam-Status: No, ") || strings.Contains(out, "LOCAL_LUNCH") {
		t.Errorf("check -c --required 5 --rules-dir EMPTY: %v\n%s", err, out)
	}
	out, _, err = runSpam(t, strings.Replace(lunch, "a@b.example", "pal@friends.example", 1), "check", "-c", cfg)
	if err != nil || !strings.Contains(out, "ALLOWLIST_FROM") || strings.Contains(out, "X-Spam-Flag") {
		t.Errorf("check -c, whitelisted sender: %v\n%s", err, out)
	}

	// learn and stats find the store through the file.
	out, _, err = runSpam(t, "Message-ID: <s1@x>\nSubject: pills\n\ncheap pills\n", "learn", "-c", cfg, "--spam")
	if err != nil || !strings.Contains(out, "1 learned as spam") {
		t.Fatalf("learn -c: %v\n%s", err, out)
	}
	if _, err := os.Stat(db); err != nil {
		t.Fatalf("learn -c did not write milter.spam.bayes.path: %v", err)
	}
	out, _, err = runSpam(t, "", "stats", "-c", cfg)
	if err != nil || !strings.Contains(out, "spam learned:    1\n") || !strings.Contains(out, "needs 1 spam and 1 ham") {
		t.Errorf("stats -c: %v\n%s", err, out)
	}
	// --bayes overrides milter.spam.bayes.path.
	other := filepath.Join(dir, "other.sqlite")
	if out, _, err = runSpam(t, "Message-ID: <h1@x>\nSubject: notes\n\nthe notes\n", "learn", "-c", cfg, "--bayes", other, "--ham"); err != nil {
		t.Fatalf("learn -c --bayes: %v\n%s", err, out)
	}
	out, _, err = runSpam(t, "", "stats", "-c", cfg, "--bayes", other)
	if err != nil || !strings.Contains(out, "spam learned:    0\nham learned:     1\n") {
		t.Errorf("stats -c --bayes: %v\n%s", err, out)
	}

	// A file without a Bayes store says so; a broken file names its line.
	noBayes := filepath.Join(dir, "nobayes.yaml")
	os.WriteFile(noBayes, []byte(milterYAMLBase+"milter: {enabled: true, spam: {enabled: true, bayes: {enabled: false}}}\n"), 0o644)
	if _, _, err := runSpam(t, "", "stats", "-c", noBayes); err == nil || !strings.Contains(err.Error(), "milter.spam.bayes.enabled is false") {
		t.Errorf("stats -c without Bayes: %v", err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte(milterYAMLBase+"milter: {spam: {required_score: lots}}\n"), 0o644)
	if _, _, err := runSpam(t, lunch, "check", "-c", bad); err == nil || !strings.Contains(err.Error(), "bad.yaml:") {
		t.Errorf("check -c with a bad value: %v", err)
	}
}

// --expiry (what Dovecot's learn service is generated with) and
// milter.spam.bayes.expiry reach the engine; 0 keeps tokens forever.
func TestSpamExpiryOption(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "postkit.yaml")
	os.WriteFile(cfg, []byte(milterYAMLBase+fmt.Sprintf("milter: {enabled: true, spam: {enabled: true, bayes: {enabled: true, path: %s, expiry: 720h}}}\n", filepath.Join(dir, "b.sqlite"))), 0o644)
	for _, tc := range []struct {
		args []string
		want time.Duration
	}{
		{nil, 180 * 24 * time.Hour},
		{[]string{"--expiry", "0s"}, -1},
		{[]string{"--expiry", "48h0m0s"}, 48 * time.Hour},
		{[]string{"-c", cfg}, 720 * time.Hour},
		{[]string{"-c", cfg, "--expiry", "0s"}, -1},
	} {
		var o spamOptions
		fs := pflag.NewFlagSet("learn", pflag.ContinueOnError)
		o.register(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		sc, cl, err := o.engineConfig()
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if cl != nil {
			cl.Close()
		}
		if sc.TokenTTL != tc.want {
			t.Errorf("%v: TokenTTL %v, want %v", tc.args, sc.TokenTTL, tc.want)
		}
	}
}

// The shared store: learn and stats through --bayes-dsn on a real PostgreSQL.
func TestSpamLearnAndStatsPostgreSQL(t *testing.T) {
	pg := pgtest.Start(t)
	dsn := pg.CreateDatabase("bayes")
	msg := "Message-ID: <pg1@x>\nSubject: cheap pills\n\nbuy now\n"
	if out, _, err := runSpam(t, msg, "learn", "--bayes-dsn", dsn, "--spam"); err != nil || !strings.Contains(out, "1 learned as spam") {
		t.Fatalf("learn --bayes-dsn: %v\n%s", err, out)
	}
	out, _, err := runSpam(t, "", "stats", "--bayes-dsn", dsn)
	if err != nil || !strings.Contains(out, "spam learned:    1\n") {
		t.Fatalf("stats --bayes-dsn: %v\n%s", err, out)
	}
}
