package harness

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// SieveClient is a minimal ManageSieve client (RFC 5804): enough to log in
// as a user and look at or change their scripts, as a mail client would.
type SieveClient struct {
	conn net.Conn
	r    *bufio.Reader
	// Capabilities of the last greeting (after STARTTLS, the second one),
	// upper-case names: "SIEVE", "IMPLEMENTATION", "STARTTLS", "SASL"…
	Capabilities map[string]string
}

// ManageSieve connects to the stack's ManageSieve service and switches to
// TLS (STARTTLS, the stack's certificate), as clients do before they log in.
func (s *Stack) ManageSieve() (*SieveClient, error) {
	conn, err := net.DialTimeout("tcp", s.Addr(s.Ports.ManageSieve), 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("harness: managesieve: %w", err)
	}
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	c := &SieveClient{conn: conn, r: bufio.NewReader(conn)}
	if err := c.greeting(); err != nil {
		conn.Close()
		return nil, err
	}
	if _, ok := c.Capabilities["STARTTLS"]; !ok {
		conn.Close()
		return nil, fmt.Errorf("harness: managesieve offers no STARTTLS: %v", c.Capabilities)
	}
	if _, err := c.Cmd("STARTTLS"); err != nil {
		conn.Close()
		return nil, err
	}
	tc := tls.Client(conn, s.TLSConfig())
	if err := tc.Handshake(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("harness: managesieve STARTTLS: %w", err)
	}
	c.conn, c.r = tc, bufio.NewReader(tc)
	// RFC 5804 §2.2: the server sends its capabilities again after TLS.
	if err := c.greeting(); err != nil {
		tc.Close()
		return nil, err
	}
	return c, nil
}

func (c *SieveClient) greeting() error {
	lines, err := c.response()
	if err != nil {
		return err
	}
	c.Capabilities = map[string]string{}
	for _, l := range lines {
		name, val, _ := strings.Cut(l, " ")
		c.Capabilities[strings.ToUpper(strings.Trim(name, `"`))] = strings.Trim(val, `"`)
	}
	return nil
}

// Login authenticates with SASL PLAIN.
func (c *SieveClient) Login(user, password string) error {
	ir := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + password))
	_, err := c.Cmd(`AUTHENTICATE "PLAIN" "` + ir + `"`)
	return err
}

// Cmd sends one command and returns the lines of the answer before OK (a
// literal {N} is one line holding its N bytes). NO and BYE are errors.
func (c *SieveClient) Cmd(cmd string) ([]string, error) {
	if _, err := io.WriteString(c.conn, cmd+"\r\n"); err != nil {
		return nil, fmt.Errorf("harness: managesieve %s: %w", verb(cmd), err)
	}
	lines, err := c.response()
	if err != nil {
		return lines, fmt.Errorf("harness: managesieve %s: %w", verb(cmd), err)
	}
	return lines, nil
}

// PutScript uploads a script (PUTSCRIPT with a literal).
func (c *SieveClient) PutScript(name, script string) error {
	_, err := c.Cmd(fmt.Sprintf("PUTSCRIPT %q {%d+}\r\n%s", name, len(script), script))
	return err
}

// Close says LOGOUT and closes the connection.
func (c *SieveClient) Close() error {
	io.WriteString(c.conn, "LOGOUT\r\n")
	return c.conn.Close()
}

func verb(cmd string) string {
	v, _, _ := strings.Cut(cmd, " ")
	return v
}

// response reads lines up to OK, NO or BYE.
func (c *SieveClient) response() ([]string, error) {
	var lines []string
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			return lines, err
		}
		l = strings.TrimRight(l, "\r\n")
		if l == "" { // the line break after a literal
			continue
		}
		up := strings.ToUpper(l)
		switch {
		case up == "OK" || strings.HasPrefix(up, "OK "):
			return lines, nil
		case strings.HasPrefix(up, "NO") || strings.HasPrefix(up, "BYE"):
			return lines, fmt.Errorf("server said %s", l)
		}
		// A literal: {N} or {N+} at the end of the line, N bytes follow.
		if i := strings.LastIndexByte(l, '{'); i >= 0 && strings.HasSuffix(l, "}") {
			n, err := strconv.Atoi(strings.TrimSuffix(l[i+1:len(l)-1], "+"))
			if err == nil && n >= 0 && n < 1<<20 {
				buf := make([]byte, n)
				if _, err := io.ReadFull(c.r, buf); err != nil {
					return lines, err
				}
				lines = append(lines, string(buf))
				continue
			}
		}
		lines = append(lines, l)
	}
}
