package templates

import (
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/internal/preflight"
)

// stage writes files under a fresh directory at their live paths and has
// preflight (what generate runs) read them.
func stage(t *testing.T, cfg *config.Config) error {
	t.Helper()
	files, err := Render(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	set := preflight.Set{Stage: dir, Root: "/", PostfixConfig: cfg.Paths.PostfixConfig,
		MaillogFile: cfg.Paths.PostfixLog != "", DovecotConfig: path.Join(cfg.Paths.DovecotConfig, "dovecot.conf")}
	for i := range files {
		set.Files = append(set.Files, files[i].Path)
		files[i].Path = filepath.Join(dir, files[i].Path)
	}
	write(t, files)
	return preflight.Check(set, func(format string, args ...any) { t.Fatalf("preflight: "+format, args...) })
}

// The extra parameters reach Postfix and Dovecot as written: postconf and
// doveconf read them (through preflight, as generate does), main.cf holds
// one setting of each parameter, the milters sit around postkit's, the
// options join their service; and a name neither knows is refused there.
func TestExtraAsPostfixAndDovecotReadThem(t *testing.T) {
	postconf := need(t, "postconf")
	doveconf := need(t, "doveconf")
	need(t, "sievec")
	dir := t.TempDir()
	cfg := sandbox(t, dir)
	extra := load(t, "testdata/extra.yaml")
	cfg.Postfix.MainCF = extra.Postfix.MainCF
	cfg.Postfix.MasterCF = extra.Postfix.MasterCF
	cfg.Postfix.MasterCFOptions = []config.MasterOverride{
		{Service: "127.0.0.1:30587", Type: "inet", Options: []string{"smtpd_client_connection_rate_limit=10"}},
		{Service: "cleanup", Type: "unix", Options: []string{"header_size_limit=409600"}},
	}
	cfg.Postfix.MiltersBefore = []string{"inet:127.0.0.1:30101"}
	cfg.Postfix.MiltersAfter = []string{"unix:" + dir + "/spool/rspamd.sock"}
	cfg.Dovecot = extra.Dovecot
	if err := cfg.Validate(&config.File{Name: "extra"}); err != nil {
		t.Fatal(err)
	}
	if err := stage(t, cfg); err != nil {
		t.Fatalf("preflight refused the extras: %v", err)
	}
	files, err := Render(cfg)
	if err != nil {
		t.Fatal(err)
	}
	write(t, files)
	pc := filepath.Join(dir, "etc/postfix")
	out, err := exec.Command(postconf, "-c", pc, "-n").CombinedOutput()
	if err != nil {
		t.Fatalf("postconf -n: %v\n%s", err, out)
	}
	for _, want := range []string{
		"\nsmtpd_tls_loglevel = 2\n", "\nheader_size_limit = 204800\n", "\nsmtpd_banner = $myhostname ESMTP ready\n",
		"\nsmtpd_milters = inet:127.0.0.1:30101, inet:127.0.0.1:30100, unix:rspamd.sock\n",
		"\nnon_smtpd_milters = inet:127.0.0.1:30101, inet:127.0.0.1:30100, unix:rspamd.sock\n",
	} {
		if !strings.Contains("\n"+string(out), want) {
			t.Errorf("postconf -n lacks %q:\n%s", want, out)
		}
	}
	main := string(files[indexOf(t, files, "/etc/postfix/main.cf")].Data)
	if n := strings.Count(main, "\nsmtpd_tls_loglevel ="); n != 1 {
		t.Errorf("main.cf sets smtpd_tls_loglevel %d times; want once, postkit's own left out", n)
	}
	out, err = exec.Command(postconf, "-c", pc, "-P").CombinedOutput()
	if err != nil {
		t.Fatalf("postconf -P: %v\n%s", err, out)
	}
	for _, want := range []string{
		"127.0.0.1:30587/inet/smtpd_client_connection_rate_limit = 10",
		"127.0.0.1:30587/inet/smtpd_relay_restrictions = permit_sasl_authenticated,reject", // postkit's stay
		"cleanup/unix/header_size_limit = 409600",
		"127.0.0.1:10026/inet/smtpd_client_restrictions = permit_mynetworks,reject",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("postconf -P lacks %q:\n%s", want, out)
		}
	}
	out, err = exec.Command(postconf, "-c", pc, "-M", "dovecot/unix").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "pipe flags=DRhu user=vmail argv=/usr/lib/dovecot/deliver") {
		t.Errorf("postconf -M dovecot/unix: %v\n%s", err, out)
	}
	out, err = exec.Command(doveconf, "-c", filepath.Join(dir, "etc/dovecot/dovecot.conf"), "-n").CombinedOutput()
	if err != nil {
		t.Fatalf("doveconf -n: %v\n%s", err, out)
	}
	for _, want := range []string{"mail_max_userip_connections = 20", "login_greeting = Exemple IMAP ready", "postkit_note = storage=95% quota-warning 95 %u"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("doveconf -n lacks %q:\n%s", want, out)
		}
	}

	// Names Postfix or Dovecot do not know pass the syntax check but not
	// preflight: generate writes nothing.
	bad := *cfg
	bad.Postfix.MainCF = []config.PostfixParam{{Name: "smtpd_tls_lovelevel", Value: "1"}}
	if err := stage(t, &bad); err == nil || !strings.Contains(err.Error(), "smtpd_tls_lovelevel") {
		t.Errorf("preflight with an unknown main.cf parameter: %v", err)
	}
	bad = *cfg
	bad.Dovecot.Settings = []config.DovecotSetting{{Name: "mail_max_userip_conections", Value: "1"}}
	if err := stage(t, &bad); err == nil || !strings.Contains(err.Error(), "mail_max_userip_conections") {
		t.Errorf("preflight with an unknown Dovecot setting: %v", err)
	}
}

func indexOf(t *testing.T, files []File, suffix string) int {
	t.Helper()
	for i, f := range files {
		if strings.HasSuffix(f.Path, suffix) {
			return i
		}
	}
	t.Fatalf("no %s rendered", suffix)
	return -1
}

// Options go into the service they name, after postkit's own; a service
// postkit does not generate, or a new one under a generated name, is an
// error that says what to write.
func TestMasterCFOptions(t *testing.T) {
	cfg := load(t, "testdata/extra.yaml")
	files, err := Render(cfg)
	if err != nil {
		t.Fatal(err)
	}
	master := string(files[indexOf(t, files, "/etc/postfix/master.cf")].Data)
	if !strings.Contains(master, "\nsubmission inet  n       -       y       -       -       smtpd\n") ||
		!strings.Contains(master, "  -o cleanup_service_name=submission-cleanup\n  -o smtpd_client_connection_rate_limit=10\nsubmissions inet") {
		t.Errorf("master.cf:\n%s\nwant the extra option last in submission", master)
	}
	cleanup := master[strings.Index(master, "\ncleanup   unix"):]
	if !strings.HasPrefix(cleanup, "\ncleanup   unix  n       -       y       -       0       cleanup\n  -o header_size_limit=409600\nqmgr") {
		t.Errorf("cleanup service:\n%s", cleanup[:200])
	}
	for _, tt := range []struct {
		edit func(c *config.Config)
		want string
	}{
		{func(c *config.Config) {
			c.Postfix.MasterCFOptions = []config.MasterOverride{{Service: "submision", Type: "inet", Options: []string{"a=b"}}}
		}, "postfix.master_cf_options[0]: master.cf has no service submision/inet to add options to (postkit generates"},
		{func(c *config.Config) {
			c.Postfix.MasterCF = []config.MasterService{{Service: "smtp", Type: "inet", Command: "smtpd"}}
		}, "postfix.master_cf[0]: postkit already generates the service smtp/inet; add options to it with postfix.master_cf_options"},
	} {
		c := load(t, "testdata/extra.yaml")
		tt.edit(c)
		if _, err := Render(c); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Render = %v; want %q", err, tt.want)
		}
	}
}
