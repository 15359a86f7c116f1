package templates

import (
	"strings"

	"github.com/postkit/postkit/internal/bytesize"
)

// ManageSieveOn reports whether Dovecot serves ManageSieve.
func (v *view) ManageSieveOn() bool { return v.C.Sieve.Enabled && v.C.Sieve.ManageSieve != "" }

// IMAPPlugins are the plugins IMAP loads beyond the global mail_plugins.
func (v *view) IMAPPlugins() string {
	var p []string
	if v.C.Mailbox.Quota.Enabled {
		p = append(p, "imap_quota") // GETQUOTAROOT (RFC 2087)
	}
	if v.C.LearnFromMoves() {
		p = append(p, "imap_sieve")
	}
	return strings.Join(p, " ")
}

// QuotaDefault is mailbox.quota.default in a Dovecot quota rule (0: none).
func (v *view) QuotaDefault() string {
	return bytesize.Format(v.C.Mailbox.Quota.DefaultBytes())
}

// QuotaGrace is mailbox.quota.grace for Dovecot, which expands % in plugin
// settings: a percentage is written %%.
func (v *view) QuotaGrace() string {
	g := v.C.Mailbox.Quota.Grace
	if p, ok := strings.CutSuffix(g, "%"); ok {
		return p + "%%"
	}
	n, _ := bytesize.Parse(g) // validated
	return bytesize.Format(n)
}

// QuotaStatusAddr is the quota-status service as Postfix names it.
func (v *view) QuotaStatusAddr() string { return v.endpoint(v.C.Mailbox.Quota.Status) }

// QuotaStatusUnix is the quota-status socket path, "" for an inet listener.
func (v *view) QuotaStatusUnix() string {
	p, _ := strings.CutPrefix(v.C.Mailbox.Quota.Status, "unix:")
	if p == v.C.Mailbox.Quota.Status {
		return ""
	}
	return p
}

// QuotaStatusInet is the quota-status inet listener.
func (v *view) QuotaStatusInet() hostPort {
	return listen(strings.TrimPrefix(v.C.Mailbox.Quota.Status, "inet:"))
}
