package preflight

import (
	"errors"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/internal/testlib"
	"github.com/postkit/postkit/templates"
)

// stage renders examples/postkit.yaml into a stage and returns the Set.
func stage(t *testing.T) Set {
	t.Helper()
	cfg, _, err := config.Load("../../examples/postkit.yaml")
	if err != nil {
		t.Fatal(err)
	}
	files, err := templates.Render(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := Set{Stage: t.TempDir(), Root: "/", PostfixConfig: cfg.Paths.PostfixConfig,
		DovecotConfig: path.Join(cfg.Paths.DovecotConfig, "dovecot.conf")}
	for _, f := range files {
		p := filepath.Join(s.Stage, f.Path)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, f.Data, 0o644); err != nil {
			t.Fatal(err)
		}
		backdate(p)
		s.Files = append(s.Files, f.Path)
		if strings.HasSuffix(f.Path, ".sieve") {
			s.Sieve = append(s.Sieve, f.Path)
		}
	}
	return s
}

func appendTo(t *testing.T, p, text string) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(text)
	f.Close()
	backdate(p)
}

// backdate spares the test Postfix's wait for files modified this second.
func backdate(p string) {
	past := time.Now().Add(-5 * time.Second)
	os.Chtimes(p, past, past)
}

// The generated set passes; the staged maps, which sit at live paths that
// do not exist here, are the expected warning. Anything else Postfix,
// Dovecot or sievec says about the staged files refuses them, with the
// staged path written <staged>.
func TestCheck(t *testing.T) {
	testlib.NeedBinary(t, "postconf", "doveconf", "sievec")
	if err := Check(stage(t), nil); err != nil {
		t.Fatalf("Check(examples/postkit.yaml) = %v", err)
	}
	tests := []struct {
		name, file, text string
		want             []string
	}{
		{"unused parameter", "/etc/postfix/main.cf", "mynetworkz = 0.0.0.0/0\n",
			[]string{"postconf refused", "<staged>/etc/postfix/main.cf: unused parameter: mynetworkz=0.0.0.0/0"}},
		{"map not installed", "/etc/postfix/main.cf", "transport_maps = hash:/etc/postfix/x, mysql:/etc/postfix/no-such-postkit.cf\n",
			[]string{`open "mysql" configuration "/etc/postfix/no-such-postkit.cf"`}},
		{"bad master.cf", "/etc/postfix/master.cf", "smtp inet n\n",
			[]string{"postconf refused", "(postconf -c <staged>/etc/postfix -n: exit status 1)", "bad field count"}},
		{"unknown Dovecot setting", "/etc/dovecot/conf.d/20-lmtp.conf", "foo = bar\n",
			[]string{"doveconf refused", "<staged>/etc/dovecot/conf.d/20-lmtp.conf line 6: Unknown setting: foo"}},
		{"Dovecot warning", "/etc/dovecot/conf.d/20-lmtp.conf", "mail_plugins = $mail_plugins\n",
			[]string{"doveconf refused", "Warning: <staged>/etc/dovecot/conf.d/20-lmtp.conf line 6: Global setting mail_plugins"}},
		{"bad Sieve", "/var/mail/sieve/before/spam.sieve", "fileinto \"x\"\n",
			[]string{"sievec refused", "<staged>/var/mail/sieve/before/spam.sieve"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := stage(t)
			appendTo(t, filepath.Join(s.Stage, tt.file), tt.text)
			err := Check(s, nil)
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("Check = %v; want an *Error", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Check error:\n%v\nwant it to contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), s.Stage) {
				t.Errorf("the message names the stage, gone by then: %v", err)
			}
		})
	}
}

// maillog_file without a postlog service is refused, as postfix check does.
func TestCheckPostlog(t *testing.T) {
	testlib.NeedBinary(t, "postconf")
	s := stage(t)
	s.MaillogFile = true
	master := filepath.Join(s.Stage, "etc/postfix/master.cf")
	b, _ := os.ReadFile(master)
	os.WriteFile(master, []byte(strings.Replace(string(b), "postlog ", "#postlog ", 1)), 0o644)
	backdate(master)
	if err := postconf(s, nil); err == nil || !strings.Contains(err.Error(), "no postlog service") {
		t.Fatalf("postconf = %v; want the postlog refusal", err)
	}
}

// A missing program is a note and no refusal.
func TestCheckMissingPrograms(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	var notes []string
	err := Check(Set{Stage: t.TempDir(), PostfixConfig: "/etc/postfix", DovecotConfig: "/etc/dovecot/dovecot.conf", Sieve: []string{"/s.sieve"}},
		func(f string, a ...any) { notes = append(notes, f) })
	if err != nil || len(notes) != 3 {
		t.Fatalf("Check = %v, notes %q; want 3 notes and no error", err, notes)
	}
}
