package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/postkit/postkit/e2e/harness"
)

// Mail from a foreign client (127.0.0.2, outside trusted_networks) to an
// existing user goes smtpd -> cleanup -> LMTP -> Dovecot and lands in the
// user's Maildir, BASE/%d/%n, owned by vmail.
func TestInboundDelivery(t *testing.T) {
	s := harness.Need(t)
	tok := harness.Token()
	c, err := s.SMTP(harness.OutsideIP)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := harness.Send(c, stranger, []string{alice}, harness.Message(stranger, alice, tok)); err != nil {
		t.Fatalf("send from %s to %s: %v", harness.OutsideIP, alice, err)
	}
	m, err := s.WaitMail(ctx(t), alice, "", tok)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(s.Paths.MailBase, harness.Domain, "alice")
	if got := filepath.Dir(filepath.Dir(m.Path)); got != dir {
		t.Errorf("delivered to %s, want Maildir %s", m.Path, dir)
	}
	fi, err := os.Stat(m.Path)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != s.UID || int(st.Gid) != s.GID {
		t.Errorf("%s owned by %d:%d, want vmail %d:%d", m.Path, st.Uid, st.Gid, s.UID, s.GID)
	}
	// Dovecot LMTP (RFC 2033) adds the envelope as Return-Path and Delivered-To.
	if got := m.Header("Return-Path"); got != "<"+stranger+">" {
		t.Errorf("Return-Path = %q, want <%s>", got, stranger)
	}
	if got := m.Header("Delivered-To"); got != alice {
		t.Errorf("Delivered-To = %q, want %s", got, alice)
	}
	// Postfix's Received line (under Dovecot's) names the client address:
	// proof the mail came from outside the trusted network.
	recv := m.Headers("Received")
	if !strings.Contains(strings.Join(recv, "\n"), "["+harness.OutsideIP+"])") {
		t.Errorf("Received = %q, want one naming the client [%s]", recv, harness.OutsideIP)
	}
}

// Aliases are expanded before delivery: a virtual alias (postfix_alias_virtuels)
// and a local alias of the host's own domain (postfix_alias).
func TestAliasDelivery(t *testing.T) {
	s := harness.Need(t)
	tests := []struct {
		name    string
		rcpt    string
		mailbox string
	}{
		{"virtual alias", info, bob},
		{"local alias", postmasterAlias, alice},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := harness.Token()
			c, err := s.SMTP(harness.OutsideIP)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := harness.Send(c, stranger, []string{tt.rcpt}, harness.Message(stranger, tt.rcpt, tok)); err != nil {
				t.Fatalf("send to %s: %v", tt.rcpt, err)
			}
			m, err := s.WaitMail(ctx(t), tt.mailbox, "", tok)
			if err != nil {
				t.Fatalf("mail to %s did not reach %s: %v", tt.rcpt, tt.mailbox, err)
			}
			if got := m.Header("Delivered-To"); got != tt.mailbox {
				t.Errorf("Delivered-To = %q, want %s", got, tt.mailbox)
			}
		})
	}
}

// Refusals happen in the SMTP dialogue (at RCPT, smtpd_delay_reject), with the
// code and text an administrator configured, so the sender gets a bounce from
// its own server and no mail is lost or accepted silently.
func TestRefusedAtRCPT(t *testing.T) {
	s := harness.Need(t)
	tests := []struct {
		name     string
		from, to string
		code     int
		text     string
	}{
		{"unknown recipient", stranger, "nobody@" + harness.Domain, 550, "User unknown"},
		{"disabled user", stranger, carol, 550, "User unknown"},
		{"sender blacklist", spammer, alice, blacklistCode, "Go away, spammer"},
		{"recipient blacklist", stranger, dave, 554, "mailbox closed by its owner"},
		{"relay to outside", stranger, "friend@" + harness.OutsideDomain, 554, "Relay access denied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := s.SMTP(harness.OutsideIP)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Mail(tt.from, nil); err != nil {
				t.Fatalf("MAIL FROM:<%s> refused (want the refusal at RCPT): %v", tt.from, err)
			}
			err = c.Rcpt(tt.to, nil)
			var se *smtp.SMTPError
			if !errors.As(err, &se) {
				t.Fatalf("RCPT TO:<%s> = %v, want %d …%s…", tt.to, err, tt.code, tt.text)
			}
			if se.Code != tt.code || !strings.Contains(se.Message, tt.text) {
				t.Errorf("RCPT TO:<%s> = %d %s, want %d …%s…", tt.to, se.Code, se.Message, tt.code, tt.text)
			}
		})
	}
}

// SMTP smuggling (smtpd_forbid_bare_newline = normalize): a foreign client
// ends its DATA with <LF>.<LF>, pipelines a second transaction behind it,
// and ends with a proper <CR><LF>.<CR><LF>. Postfix must read one message,
// not two: the "smuggled" commands are text of the first message, the
// second recipient gets nothing, and the client sees a single 250 for
// the data. Lines ending in a bare <LF> are still accepted (normalized).
func TestBareNewlineSmuggling(t *testing.T) {
	s := harness.Need(t)
	tok, smuggled := harness.Token(), harness.Token()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(harness.OutsideIP)}}
	conn, err := d.Dial("tcp", harness.Addr(s.Ports.SMTP))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(conn)
	// reply reads one (multi-line) reply and returns its code and text.
	reply := func() (int, string) {
		var text string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("reading the reply: %v (so far %q)", err, text)
			}
			text += line
			if len(line) < 4 || line[3] != '-' {
				code, _ := strconv.Atoi(line[:3])
				return code, text
			}
		}
	}
	expect := func(cmd string, code int) {
		t.Helper()
		if cmd != "" {
			fmt.Fprint(conn, cmd+"\r\n")
		}
		if got, text := reply(); got != code {
			t.Fatalf("%q: %s, want %d", cmd, strings.TrimSpace(text), code)
		}
	}
	expect("", 220)
	expect("EHLO client."+harness.OutsideDomain, 250)
	expect("MAIL FROM:<"+stranger+">", 250)
	expect("RCPT TO:<"+alice+">", 250)
	expect("DATA", 354)
	fmt.Fprint(conn, "From: <"+stranger+">\r\nTo: <"+alice+">\r\nSubject: carrier "+tok+"\r\n\r\n"+
		"a line ending in a bare LF\nbody "+tok+"\n.\n"+
		"MAIL FROM:<"+stranger+">\r\nRCPT TO:<"+bob+">\r\nDATA\r\n"+
		"From: <"+stranger+">\r\nTo: <"+bob+">\r\nSubject: smuggled "+smuggled+"\r\n\r\nsmuggled "+smuggled+"\r\n.\r\n")
	code, text := reply()
	if code != 250 {
		t.Fatalf("end of data: %s, want 250 for one message", strings.TrimSpace(text))
	}
	fmt.Fprint(conn, "QUIT\r\n")
	// Whatever the server answered after the first 250 belongs to a second
	// transaction: there must be none before QUIT's 221.
	if code, text := reply(); code != 221 {
		t.Errorf("after the data: %s, want 221 to QUIT (the smuggled commands were executed)", strings.TrimSpace(text))
	}
	m, err := s.WaitMail(ctx(t), alice, "", tok)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(m.Data, []byte("smuggled "+smuggled)) || !bytes.Contains(m.Data, []byte("RCPT TO:<"+bob+">")) {
		t.Errorf("the smuggled commands are not part of the first message:\n%s", m.Data)
	}
	if !bytes.Contains(m.Data, []byte("a line ending in a bare LF\n")) {
		t.Errorf("the bare-LF line was not delivered:\n%s", m.Data)
	}
	// Nothing for bob: wait until Postfix's queue is empty, then look.
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _ := exec.Command("postqueue", "-c", s.Paths.PostfixConfig, "-p").CombinedOutput()
		if strings.Contains(string(out), "Mail queue is empty") || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := s.FindMail(bob, "", smuggled); len(got) > 0 {
		t.Errorf("the smuggled message reached %s: %s", bob, got[0].Path)
	}
}
