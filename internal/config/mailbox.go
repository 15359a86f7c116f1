package config

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/postkit/postkit/internal/bytesize"
)

// Quota configures storage quotas (Dovecot's quota plugin and its
// quota-status policy service). Limits per user and per domain live in the
// database (postkit_quotas, 'postkit db quota'); Default applies to the rest.
type Quota struct {
	Enabled bool   `yaml:"enabled" doc:"Load Dovecot's quota plugin (LMTP refuses a message that does not fit, IMAP clients see their usage) with the limits of 'postkit db quota'. The database must be at schema version 3: 'postkit db init' upgrades it."`
	Backend string `yaml:"backend" doc:"How Dovecot counts usage: 'count' (from its indexes, Dovecot's recommended backend) or 'maildir' (a maildirsize file per mailbox, as Maildir++ tools expect)." enum:"count,maildir" kind:"enum"`
	Default string `yaml:"default" doc:"Storage limit of a user with no limit of their own and whose domain has none, e.g. 1G or 500M; 0 for none (the reference installation's behaviour)." kind:"size"`
	Grace   string `yaml:"grace" doc:"How far the message that crosses the limit may exceed it (Dovecot's quota_grace): a percentage of the limit (10%) or a size (10M). Later messages are refused." kind:"grace"`
	Status  string `yaml:"status" doc:"Listener of Dovecot's quota-status service, which Postfix asks at RCPT (check_policy_service) so that mail to a full mailbox is refused with 552 5.2.2 before it is accepted: unix:/path (under the Postfix queue directory when Postfix runs chrooted) or inet:127.0.0.1:PORT. Empty: no check at RCPT, LMTP still refuses what does not fit (Postfix then bounces it)." kind:"addr"`
}

// StatusCheck reports whether Postfix asks Dovecot's quota-status service at
// RCPT.
func (q Quota) StatusCheck() bool { return q.Enabled && q.Status != "" }

// DefaultBytes is Default in bytes (0: no limit).
func (q Quota) DefaultBytes() int64 {
	n, _ := bytesize.Parse(q.Default) // validated
	return n
}

// homePathRE is a path in Dovecot's Sieve settings: ~/ (the user's home) or
// absolute, with the characters of the "path" kind.
var homePathRE = regexp.MustCompile(`^(~|/)[A-Za-z0-9/._+@-]*$`)

func checkHomePath(s string) string {
	if !strings.HasPrefix(s, "~/") && !strings.HasPrefix(s, "/") {
		return fmt.Sprintf("%q is neither under the user's home (~/) nor absolute", s)
	}
	if !homePathRE.MatchString(s) {
		return fmt.Sprintf("%q holds %s, which Dovecot would read as syntax", s, firstOutside("/"+strings.TrimPrefix(s, "~"), pathRE))
	}
	if strings.HasSuffix(s, "/") || strings.Contains(s, "/../") || strings.HasSuffix(s, "/..") {
		return fmt.Sprintf("%q: name a file or directory, without a trailing / or ..", s)
	}
	return ""
}

func checkSize(s string) string {
	if _, err := bytesize.Parse(s); err != nil {
		return fmt.Sprintf("%q is not a size", s)
	}
	return ""
}

func checkGrace(s string) string {
	if p, ok := strings.CutSuffix(s, "%"); ok {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 100 {
			return fmt.Sprintf("%q is not a percentage from 0%% to 100%%", s)
		}
		return ""
	}
	return checkSize(s)
}

func init() {
	kinds["homepath"] = kind{check: checkHomePath,
		hint: "a path under the user's home such as ~/sieve, or an absolute one; letters, digits and / . _ - + @"}
	kinds["size"] = kind{check: checkSize,
		hint: "a size such as 500M, 1G or 1.5G (binary units), or 0 for none"}
	kinds["grace"] = kind{check: checkGrace,
		hint: "a percentage of the limit such as 10%, or a size such as 10M"}
}

// validateMailbox checks the Sieve locations and the quota settings.
func (c *Config) validateMailbox(f *File, bad map[string]bool) []*Error {
	var errs []*Error
	s := c.Sieve
	if s.UserDir != "" && s.UserActive != "" && !bad["sieve.user_active"] && !bad["sieve.user_dir"] {
		if s.UserActive == s.UserDir {
			errs = append(errs, f.Errorf("sieve.user_active", "e.g. "+s.UserDir+"/.dovecot.sieve", "is the script directory itself: name the active script's file"))
		}
	}
	if c.Sieve.Enabled && (s.UserDir == "") != (s.UserActive == "") {
		errs = append(errs, f.Errorf("sieve.user_dir", "set both sieve.user_dir and sieve.user_active, or empty both to give users no scripts of their own", "user_dir and user_active go together"))
	}
	if c.Sieve.ManageSieve != "" && s.UserDir == "" && c.Sieve.Enabled {
		errs = append(errs, f.Errorf("sieve.managesieve", "set sieve.user_dir, or empty sieve.managesieve", "ManageSieve needs a script directory (sieve.user_dir)"))
	}
	q := c.Mailbox.Quota
	if q.StatusCheck() && c.Postfix.Chroot && !bad["mailbox.quota.status"] && !bad["paths.postfix_queue"] && strings.HasPrefix(q.Status, "unix:") {
		qd := strings.TrimSuffix(c.Paths.PostfixQueue, "/") + "/"
		if !strings.HasPrefix(strings.TrimPrefix(q.Status, "unix:"), qd) {
			errs = append(errs, f.Errorf("mailbox.quota.status", "put the socket under "+qd+"private/ or use inet:127.0.0.1:PORT", "%q is outside the Postfix chroot %s: chrooted smtpd cannot reach it", q.Status, qd))
		}
	}
	return errs
}
