package harness

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// OutsideIP is the loopback address "foreign" clients bind to: it is not in the
// stack's trusted networks (127.0.0.1/32).
const OutsideIP = "127.0.0.2"

// dialFrom connects to the stack's port from the local address (""= any).
func (s *Stack) dialFrom(port int, local string) (net.Conn, error) {
	d := net.Dialer{Timeout: 5 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	c, err := d.Dial("tcp", s.Addr(port))
	if err != nil {
		return nil, fmt.Errorf("harness: dial %s from %s: %w", s.Addr(port), local, err)
	}
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	return c, nil
}

// SMTP connects to the port-25 service from local (OutsideIP for a foreign
// client, "" for the trusted host) and says EHLO.
func (s *Stack) SMTP(local string) (*smtp.Client, error) {
	return s.dialSMTP(s.Ports.SMTP, local, "none")
}

// Submission connects to the port-587 service from local, says EHLO and, if
// starttls, upgrades the connection.
func (s *Stack) Submission(local string, starttls bool) (*smtp.Client, error) {
	mode := "none"
	if starttls {
		mode = "starttls"
	}
	return s.dialSMTP(s.Ports.Submission, local, mode)
}

// Submissions connects to the port-465 service (implicit TLS) from local.
func (s *Stack) Submissions(local string) (*smtp.Client, error) {
	return s.dialSMTP(s.Ports.Submissions, local, "implicit")
}

func (s *Stack) dialSMTP(port int, local, mode string) (*smtp.Client, error) {
	c, err := s.dialFrom(port, local)
	if err != nil {
		return nil, err
	}
	var cl *smtp.Client
	switch mode {
	case "implicit":
		tc := tls.Client(c, s.TLSConfig())
		if err := tc.Handshake(); err != nil {
			c.Close()
			return nil, fmt.Errorf("harness: TLS to %s: %w", s.Addr(port), err)
		}
		cl = smtp.NewClient(tc)
	case "starttls":
		cl, err = smtp.NewClientStartTLS(c, s.TLSConfig())
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("harness: STARTTLS to %s: %w", s.Addr(port), err)
		}
	default:
		cl = smtp.NewClient(c)
	}
	if err := cl.Hello("client." + OutsideDomain); err != nil {
		cl.Close()
		return nil, err
	}
	return cl, nil
}

// Plain is SASL PLAIN (RFC 4616) for Client.Auth.
func Plain(user, password string) sasl.Client { return sasl.NewPlainClient("", user, password) }

// Send runs one mail transaction on c. The error is the server's refusal, an
// *smtp.SMTPError, whatever the stage.
func Send(c *smtp.Client, from string, to []string, msg []byte) error {
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	for _, r := range to {
		if err := c.Rcpt(r, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}

// Code returns the SMTP reply code carried by err, or 0.
func Code(err error) int {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// Token returns a random word that marks one test's message.
func Token() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Message builds a small RFC 5322 message with CRLF line ends. extra holds
// additional header fields ("X-Spam-Flag: YES"); the token goes in the
// Subject and the body so that the message can be found.
func Message(from, to, token string, extra ...string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: <%s>\r\nTo: <%s>\r\nSubject: postkit e2e %s\r\n", from, to, token)
	fmt.Fprintf(&b, "Date: %s\r\nMessage-ID: <%s@%s>\r\n", time.Now().Format(time.RFC1123Z), token, OutsideDomain)
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	fmt.Fprintf(&b, "\r\nHello from the postkit end-to-end tests.\r\ntoken %s\r\n", token)
	return b.Bytes()
}

// Maildir returns the Maildir of addr (layout %d/%n), or of one of its
// folders (Maildir++: ".Folder").
func (s *Stack) Maildir(addr, folder string) string {
	local, domain, _ := strings.Cut(strings.ToLower(addr), "@")
	dir := filepath.Join(s.Paths.MailBase, domain, local)
	if folder != "" && !strings.EqualFold(folder, "INBOX") {
		dir = filepath.Join(dir, "."+folder)
	}
	return dir
}

// Delivered is a message file found in a Maildir.
type Delivered struct {
	Path string
	Data []byte
}

// Header returns the first value of a header field, or "".
func (d Delivered) Header(name string) string { return headerValue(d.Data, name) }

// Headers returns every value of a header field, top first.
func (d Delivered) Headers(name string) []string { return headerValues(d.Data, name) }

// FindMail returns the messages of a Maildir folder (new/ and cur/: an IMAP
// SELECT moves mail to cur/) that contain token, in file name order.
func (s *Stack) FindMail(addr, folder, token string) []Delivered {
	dir := s.Maildir(addr, folder)
	var out []Delivered
	for _, sub := range []string{"new", "cur"} {
		files, _ := filepath.Glob(filepath.Join(dir, sub, "*"))
		sort.Strings(files)
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err == nil && bytes.Contains(b, []byte(token)) {
				out = append(out, Delivered{Path: f, Data: b})
			}
		}
	}
	return out
}

// WaitMail waits until a message containing token is in the folder of addr.
func (s *Stack) WaitMail(ctx context.Context, addr, folder, token string) (Delivered, error) {
	for {
		if m := s.FindMail(addr, folder, token); len(m) > 0 {
			return m[0], nil
		}
		select {
		case <-ctx.Done():
			return Delivered{}, fmt.Errorf("harness: no message %s in %s: %w", token, s.Maildir(addr, folder), ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// CurlResult is the outcome of one curl run.
type CurlResult struct {
	Exit   int // curl's exit code: 0 success, 67 login denied, …
	Stdout string
	Stderr string
}

// IMAP runs curl against the IMAP service: implicit TLS on the IMAPS port, or
// STARTTLS (required) on the IMAP port. path is the URL path ("INBOX",
// "INBOX;UID=1"), request an optional custom command (-X), e.g. "SEARCH ALL".
func (s *Stack) IMAP(ctx context.Context, implicitTLS bool, user, password, path, request string) (CurlResult, error) {
	return s.IMAPFrom(ctx, "", implicitTLS, user, password, path, request)
}

// IMAPFrom is IMAP from a given local address (e.g. 127.0.0.3). Dovecot delays
// each failed login longer per client address: refusal tests use their own.
func (s *Stack) IMAPFrom(ctx context.Context, local string, implicitTLS bool, user, password, path, request string) (CurlResult, error) {
	url := fmt.Sprintf("imap://%s:%d/%s", s.Hostname, s.Ports.IMAP, path)
	args := []string{"--ssl-reqd"}
	if implicitTLS {
		url = fmt.Sprintf("imaps://%s:%d/%s", s.Hostname, s.Ports.IMAPS, path)
		args = nil
	}
	args = append(args, "--silent", "--show-error", "--max-time", "20",
		"--cacert", s.Paths.Cert,
		"--resolve", fmt.Sprintf("%s:%d:%s", s.Hostname, s.Ports.IMAP, s.IP),
		"--resolve", fmt.Sprintf("%s:%d:%s", s.Hostname, s.Ports.IMAPS, s.IP),
		"--user", user+":"+password, "--url", url)
	if request != "" {
		args = append(args, "--request", request)
	}
	if local != "" {
		args = append(args, "--interface", local)
	}
	return runCurl(ctx, args...)
}

func runCurl(ctx context.Context, args ...string) (CurlResult, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "curl", args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := CurlResult{Stdout: out.String(), Stderr: errb.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.Exit = ee.ExitCode()
		return r, nil
	}
	if err != nil {
		return r, fmt.Errorf("harness: curl: %w (install curl)", err)
	}
	return r, nil
}
