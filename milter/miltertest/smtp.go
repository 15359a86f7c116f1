package miltertest

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// SMTPClient is a minimal SMTP client for driving a sandboxed Postfix: it
// keeps one connection for several messages and exposes raw commands
// (XCLIENT, RSET) that net/smtp hides.
type SMTPClient struct {
	c net.Conn
	r *bufio.Reader
}

// DialSMTP connects, reads the greeting and sends EHLO helo.
func DialSMTP(addr, helo string) (*SMTPClient, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	sc := &SMTPClient{c: c, r: bufio.NewReader(c)}
	if code, text, err := sc.read(); err != nil || code != 220 {
		c.Close()
		return nil, fmt.Errorf("miltertest: greeting %d %s: %v", code, text, err)
	}
	if err := sc.Expect(250, "EHLO "+helo); err != nil {
		c.Close()
		return nil, err
	}
	return sc, nil
}

// Cmd sends one command line and returns the reply.
func (s *SMTPClient) Cmd(line string) (int, string, error) {
	s.c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := fmt.Fprintf(s.c, "%s\r\n", line); err != nil {
		return 0, "", err
	}
	return s.read()
}

// Expect sends a command and fails unless the reply code is want.
func (s *SMTPClient) Expect(want int, line string) error {
	code, text, err := s.Cmd(line)
	if err != nil {
		return err
	}
	if code != want {
		return fmt.Errorf("miltertest: %q: got %d %s, want %d", line, code, text, want)
	}
	return nil
}

func (s *SMTPClient) read() (int, string, error) {
	var text []string
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return 0, strings.Join(text, "\n"), err
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) < 3 {
			return 0, line, fmt.Errorf("miltertest: short SMTP reply %q", line)
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil {
			return 0, line, fmt.Errorf("miltertest: bad SMTP reply %q", line)
		}
		text = append(text, strings.TrimLeft(line[3:], " -"))
		if len(line) == 3 || line[3] == ' ' {
			return code, strings.Join(text, "\n"), nil
		}
	}
}

// Send runs MAIL, RCPT and DATA and returns the reply to the final dot (or
// to the first command refused).
func (s *SMTPClient) Send(from string, rcpts []string, data []byte) (int, string, error) {
	if code, text, err := s.Cmd("MAIL FROM:<" + from + ">"); err != nil || code != 250 {
		return code, text, err
	}
	for _, r := range rcpts {
		if code, text, err := s.Cmd("RCPT TO:<" + r + ">"); err != nil || code != 250 {
			return code, text, err
		}
	}
	if code, text, err := s.Cmd("DATA"); err != nil || code != 354 {
		return code, text, err
	}
	var b bytes.Buffer
	for _, line := range bytes.SplitAfter(data, []byte("\n")) {
		if len(line) > 0 && line[0] == '.' {
			b.WriteByte('.')
		}
		b.Write(line)
	}
	if b.Len() > 0 && !bytes.HasSuffix(b.Bytes(), []byte("\r\n")) {
		b.WriteString("\r\n")
	}
	b.WriteString(".\r\n")
	s.c.SetDeadline(time.Now().Add(120 * time.Second))
	if _, err := s.c.Write(b.Bytes()); err != nil {
		return 0, "", err
	}
	return s.read()
}

// Close sends QUIT and closes the connection.
func (s *SMTPClient) Close() error {
	s.Cmd("QUIT")
	return s.c.Close()
}
