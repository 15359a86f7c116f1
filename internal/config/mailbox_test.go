package config

import (
	"strings"
	"testing"
)

// The defaults keep the reference installation's mailbox: its separator,
// its users' Sieve locations, ManageSieve as Debian enables it; quotas are
// on without a default limit.
func TestMailboxDefaults(t *testing.T) {
	c, _, err := Parse("x.yaml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if c.Mailbox.Separator != "." || c.Sieve.UserDir != "~/sieve" || c.Sieve.UserActive != "~/sieve/.dovecot.sieve" || c.Sieve.ManageSieve != "4190" {
		t.Errorf("defaults: separator %q, user_dir %q, user_active %q, managesieve %q", c.Mailbox.Separator, c.Sieve.UserDir, c.Sieve.UserActive, c.Sieve.ManageSieve)
	}
	q := c.Mailbox.Quota
	if !q.Enabled || q.DefaultBytes() != 0 || !q.StatusCheck() || q.Backend != "count" {
		t.Errorf("quota defaults: %+v", q)
	}
}

func TestMailboxValidation(t *testing.T) {
	tests := []struct {
		yaml, wantErr string
	}{
		{"mailbox: {quota: {default: 1.5G, grace: 10M}}", ""},
		{"mailbox: {quota: {default: 0, grace: 0%}}", ""},
		{"mailbox: {quota: {default: lots}}", `mailbox.quota.default: "lots" is not a size`},
		{"mailbox: {quota: {grace: 150%}}", `"150%" is not a percentage`},
		{"mailbox: {quota: {backend: dict}}", `mailbox.quota.backend: "dict" is not allowed`},
		{"mailbox: {separator: ':'}", `mailbox.separator: ":" is not allowed`},
		{"mailbox: {quota: {status: 'unix:/run/quota-status'}}", "outside the Postfix chroot"},
		{"mailbox: {quota: {enabled: false, status: 'unix:/run/quota-status'}}", ""},
		{"mailbox: {quota: {status: 'inet:127.0.0.1:12340'}}", ""},
		{"mailbox: {quota: {status: ''}}", ""},
		{"sieve: {user_dir: '~/scripts', user_active: '~/.dovecot.sieve'}", ""},
		{"sieve: {user_dir: sieve}", "is neither under the user's home"},
		{"sieve: {user_active: '~/a b'}", "which Dovecot would read as syntax"},
		{"sieve: {user_active: '~/sieve/'}", "without a trailing /"},
		{"sieve: {user_active: '~/sieve'}", "is the script directory itself"},
		{"sieve: {user_dir: '', user_active: ''}", "ManageSieve needs a script directory"},
		{"sieve: {user_dir: '', user_active: '', managesieve: ''}", ""},
		{"sieve: {user_dir: '~/sieve', user_active: ''}", "user_dir and user_active go together"},
	}
	for _, tt := range tests {
		_, _, err := Parse("x.yaml", []byte(minimal+tt.yaml+"\n"))
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tt.yaml, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%s: %v; want %q", tt.yaml, err, tt.wantErr)
		}
	}
}
