// Package e2e holds postkit's end-to-end scenarios: real Postfix and Dovecot,
// configured by `postkit generate`, run on loopback by package harness, and
// exercised over SMTP (RFC 5321), submission (RFC 6409, RFC 8314) and IMAP
// (RFC 9051) the way clients on the Internet would.
//
// Run them as root with the Debian packages installed:
//
//	POSTKIT_E2E=1 go test -count=1 ./e2e/...
//
// Without root or the packages they skip, unless POSTKIT_E2E=1.
package e2e
