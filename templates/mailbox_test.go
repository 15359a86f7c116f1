package templates

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postkit/postkit/internal/config"
)

// The mailbox settings other than the defaults, as Dovecot and Postfix read
// them: another separator and Sieve locations, quota-status on inet, the
// maildir backend, a default limit and grace; and with quotas and user
// scripts off, nothing of them is left.
func TestMailboxVariants(t *testing.T) {
	doveconf := need(t, "doveconf")
	postconf := need(t, "postconf")
	tests := []struct {
		name     string
		set      func(dir string, c *config.Config)
		want     []string // in doveconf -n
		wantNot  []string
		mainWant []string // in main.cf
		mainNot  []string
	}{
		{
			name: "changed",
			set: func(dir string, c *config.Config) {
				c.Mailbox.Separator = "/"
				c.Sieve.UserDir, c.Sieve.UserActive = "~/scripts", "~/.dovecot.sieve"
				c.Sieve.ManageSieve = "127.0.0.1:14190"
				c.Mailbox.Quota.Backend, c.Mailbox.Quota.Default, c.Mailbox.Quota.Grace = "maildir", "1.5G", "10M"
				c.Mailbox.Quota.Status = "inet:127.0.0.1:12340"
			},
			want: []string{"separator = /", "sieve = file:~/scripts;active=~/.dovecot.sieve", "quota = maildir:User quota",
				"quota_rule = *:storage=1536M", "quota_grace = 10M", "inet_listener {\n    address = 127.0.0.1\n    port = 12340",
				"inet_listener sieve {\n    address = 127.0.0.1\n    port = 14190", "protocols = imap lmtp sieve"},
			wantNot:  []string{"quota_vsizes"},
			mainWant: []string{"check_policy_service { inet:127.0.0.1:12340, default_action=DUNNO },"},
		},
		{
			name: "off",
			set: func(dir string, c *config.Config) {
				c.Mailbox.Quota.Enabled = false
				c.Sieve.UserDir, c.Sieve.UserActive, c.Sieve.ManageSieve = "", "", ""
			},
			want:    []string{"separator = .", "protocols = imap lmtp\n"},
			wantNot: []string{"quota", "sieve = file:", "managesieve-login"},
			mainNot: []string{"quota-status", "check_policy_service"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := sandbox(t, dir)
			cfg.Policy.Enabled = false
			tt.set(dir, cfg)
			files, err := Render(cfg)
			if err != nil {
				t.Fatal(err)
			}
			write(t, files)
			os.MkdirAll(filepath.Join(dir, "tls"), 0o755)
			os.WriteFile(filepath.Join(dir, "tls/cert.pem"), []byte("x"), 0o644)
			os.WriteFile(filepath.Join(dir, "tls/key.pem"), []byte("x"), 0o600)
			out, err := exec.Command(doveconf, "-c", filepath.Join(dir, "etc/dovecot/dovecot.conf"), "-n").CombinedOutput()
			if err != nil || bytes.Contains(out, []byte("Warning")) || bytes.Contains(out, []byte("Error")) {
				t.Fatalf("doveconf -n: %v\n%s", err, out)
			}
			for _, w := range tt.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("doveconf -n lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tt.wantNot {
				if strings.Contains(string(out), w) {
					t.Errorf("doveconf -n has %q:\n%s", w, out)
				}
			}
			main, err := exec.Command(postconf, "-c", filepath.Join(dir, "etc/postfix"), "-h", "smtpd_recipient_restrictions").CombinedOutput()
			if err != nil || bytes.Contains(main, []byte("warning")) {
				t.Fatalf("postconf: %v\n%s", err, main)
			}
			for _, w := range tt.mainWant {
				if !strings.Contains(string(main)+",", w) {
					t.Errorf("smtpd_recipient_restrictions lacks %q:\n%s", w, main)
				}
			}
			for _, w := range tt.mainNot {
				if strings.Contains(string(main), w) {
					t.Errorf("smtpd_recipient_restrictions has %q:\n%s", w, main)
				}
			}
		})
	}
}
