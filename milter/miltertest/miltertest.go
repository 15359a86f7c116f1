// Package miltertest is a loopback harness for postkit's milter daemon: it
// starts a milterd server on a temporary unix socket or 127.0.0.1:0, drives
// it like Postfix does (Sendmail milter protocol version 6, MILTER_README)
// with go-milter's client, and applies the returned modifications the way
// Postfix's cleanup applies them, so tests can check final message bytes.
// It also starts throwaway Postfix instances and SMTP sinks for end-to-end
// tests.
package miltertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-milter"
	"github.com/postkit/postkit/milter/filter"
	"github.com/postkit/postkit/milter/milterd"
)

// Server is a milterd server on a loopback address.
type Server struct {
	*milterd.Server
	Network string // "unix" or "tcp"
	Address string // socket path or 127.0.0.1:port
}

// PostfixAddr is the address in Postfix syntax (unix:/path, inet:host:port).
func (s *Server) PostfixAddr() string {
	if s.Network == "unix" {
		return "unix:" + s.Address
	}
	return "inet:" + s.Address
}

// Start runs a milterd server with cfg on a temporary unix socket
// (network "unix") or 127.0.0.1:0 ("tcp"), serving milterd.DefaultChain, and
// shuts it down at cleanup. If cfg has no chains, filters becomes the default chain.
func Start(t testing.TB, network string, cfg milterd.Config, filters ...filter.Filter) *Server {
	t.Helper()
	if cfg.Chains == nil {
		cfg.Chains = map[string][]filter.Filter{milterd.DefaultChain: filters}
	}
	if cfg.Logger == nil {
		cfg.Logger = Logger(t)
	}
	srv, err := milterd.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return Serve(t, network, srv)
}

// Logger returns a logger writing warnings and errors to t's log.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// Serve serves srv (milterd.DefaultChain) on a temporary unix socket
// (network "unix") or 127.0.0.1:0 ("tcp") and shuts it down at cleanup.
func Serve(t testing.TB, network string, srv *milterd.Server) *Server {
	t.Helper()
	var ln net.Listener
	var err error
	switch network {
	case "unix":
		path := filepath.Join(PublicTempDir(t), "milter.sock")
		if ln, err = net.Listen("unix", path); err == nil {
			err = os.Chmod(path, 0o666) // Postfix's smtpd runs as postfix
		}
	case "tcp":
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	default:
		t.Fatalf("miltertest: network %q: want unix or tcp", network)
	}
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Server: srv, Network: network, Address: ln.Addr().String()}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-served
	})
	return s
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Message is what the MTA would send for one message.
type Message struct {
	From   string
	Rcpts  []string
	Raw    []byte            // header, empty line, body; CRLF or LF line ends
	Macros map[byte][]string // extra macros per command code ('M', 'R', 'N', 'E'…), name/value pairs
}

// Client is one MTA connection to the milter; it can carry several messages.
type Client struct {
	sess *milter.ClientSession
}

// ConnInfo is what the MTA sends at connection and HELO time.
type ConnInfo struct {
	Hostname string
	Addr     string // IP address; empty for a local submission ('U' family)
	Port     uint16
	Helo     string
	Macros   []string // macros sent before CONNECT, name/value pairs
}

// DefaultProtocol is what Postfix 3.7 offers in option negotiation: every
// skip and no-reply step.
const DefaultProtocol = milter.OptNoConnect | milter.OptNoHelo | milter.OptNoMailFrom |
	milter.OptNoRcptTo | milter.OptNoBody | milter.OptNoHeaders | milter.OptNoEOH |
	milter.OptNoUnknown | milter.OptNoData | milter.OptSkip | milter.OptRcptRej |
	milter.OptNoHeaderReply | milter.OptNoConnReply | milter.OptNoHeloReply |
	milter.OptNoMailReply | milter.OptNoRcptReply | milter.OptNoDataReply |
	milter.OptNoUnknownReply | milter.OptNoEOHReply | milter.OptNoBodyReply |
	milter.OptHeaderLeadingSpace

// DefaultActions is what Postfix 3.7 offers.
const DefaultActions = milter.OptAddHeader | milter.OptChangeBody | milter.OptAddRcpt |
	milter.OptRemoveRcpt | milter.OptChangeHeader | milter.OptQuarantine |
	milter.OptChangeFrom | milter.OptAddRcptWithArgs | milter.OptSetSymList

// Dial opens a milter connection, negotiates as Postfix does and sends the
// connection facts.
func (s *Server) Dial(ci ConnInfo) (*Client, error) {
	cl := milter.NewClientWithOptions(s.Network, s.Address, milter.ClientOptions{
		ReadTimeout:  30 * time.Second,
		WriteTimeout: 30 * time.Second,
		ActionMask:   DefaultActions,
		ProtocolMask: DefaultProtocol,
	})
	sess, err := cl.Session()
	if err != nil {
		return nil, err
	}
	c := &Client{sess: sess}
	if len(ci.Macros) > 0 {
		if err := sess.Macros(milter.CodeConn, ci.Macros...); err != nil {
			return nil, err
		}
	}
	fam, addr := milter.FamilyInet, ci.Addr
	switch {
	case ci.Addr == "":
		fam = milter.FamilyUnknown
	case strings.Contains(ci.Addr, ":"):
		fam = milter.FamilyInet6
	}
	host := ci.Hostname
	if host == "" {
		host = "localhost"
	}
	if act, err := sess.Conn(host, fam, ci.Port, addr); err != nil || act.Code != milter.ActContinue {
		return nil, fmt.Errorf("miltertest: connect answered %v: %v", act, err)
	}
	if ci.Helo != "" {
		if act, err := sess.Helo(ci.Helo); err != nil || act.Code != milter.ActContinue {
			return nil, fmt.Errorf("miltertest: helo answered %v: %v", act, err)
		}
	}
	return c, nil
}

// Result is the milter's answer for one message.
type Result struct {
	Stage  string // "mail", "rcpt", "header", "eoh", "body" or "eom": where the answer came
	Action milter.Action
	Mods   []milter.ModifyAction
	// Final is Raw with the header modifications applied as Postfix would.
	Final []byte
	// From and Rcpts are the envelope after ChangeFrom/AddRcpt/DelRcpt.
	From  string
	Rcpts []string
}

// Send runs one message through the milter.
func (c *Client) Send(m *Message) (*Result, error) {
	s := c.sess
	res := &Result{From: m.From, Rcpts: append([]string(nil), m.Rcpts...)}
	hdrs, body, err := SplitMessage(m.Raw)
	if err != nil {
		return nil, err
	}
	done := func(stage string, act *milter.Action) (*Result, error) {
		res.Stage, res.Action = stage, *act
		return res, nil
	}
	if err := c.macros(m, milter.CodeMail); err != nil {
		return nil, err
	}
	act, err := s.Mail(m.From, nil)
	if err != nil {
		return nil, err
	}
	if act.Code != milter.ActContinue {
		return done("mail", act)
	}
	for _, r := range m.Rcpts {
		if err := c.macros(m, milter.CodeRcpt); err != nil {
			return nil, err
		}
		if act, err = s.Rcpt(r, nil); err != nil {
			return nil, err
		}
		if act.Code != milter.ActContinue {
			return done("rcpt", act)
		}
	}
	if err := c.macros(m, milter.CodeHeader); err != nil {
		return nil, err
	}
	for _, h := range hdrs {
		// Postfix sends continuation lines with a bare LF.
		if act, err = s.HeaderField(h.Name, strings.ReplaceAll(h.Value, "\r\n", "\n")); err != nil {
			return nil, err
		}
		if act.Code != milter.ActContinue {
			return done("header", act)
		}
	}
	if err := c.macros(m, milter.CodeEOH); err != nil {
		return nil, err
	}
	if act, err = s.HeaderEnd(); err != nil {
		return nil, err
	}
	if act.Code != milter.ActContinue {
		return done("eoh", act)
	}
	for off := 0; off < len(body); off += milter.MaxBodyChunk {
		chunk := body[off:min(off+milter.MaxBodyChunk, len(body))]
		if act, err = s.BodyChunk(chunk); err != nil {
			return nil, err
		}
		if act.Code == milter.ActSkip {
			break
		}
		if act.Code != milter.ActContinue {
			return done("body", act)
		}
	}
	if err := c.macros(m, milter.CodeEOB); err != nil {
		return nil, err
	}
	mods, act, err := s.End()
	if err != nil {
		return nil, err
	}
	res.Stage, res.Action, res.Mods = "eom", *act, mods
	if act.Code == milter.ActAccept || act.Code == milter.ActContinue {
		final, err := Apply(hdrs, body, mods)
		if err != nil {
			return nil, err
		}
		res.Final = final
		for _, md := range mods {
			switch md.Code {
			case milter.ActChangeFrom:
				res.From = strings.Trim(md.From, "<>")
			case milter.ActAddRcpt:
				res.Rcpts = append(res.Rcpts, strings.Trim(md.Rcpt, "<>"))
			case milter.ActDelRcpt:
				for i, r := range res.Rcpts {
					if r == strings.Trim(md.Rcpt, "<>") {
						res.Rcpts = append(res.Rcpts[:i], res.Rcpts[i+1:]...)
						break
					}
				}
			}
		}
	}
	return res, nil
}

func (c *Client) macros(m *Message, code milter.Code) error {
	if kv := m.Macros[byte(code)]; len(kv) > 0 {
		return c.sess.Macros(code, kv...)
	}
	return nil
}

// Abort tells the milter the MTA gave up on the current message.
func (c *Client) Abort() error { return c.sess.Abort() }

// Close ends the connection with QUIT.
func (c *Client) Close() error { return c.sess.Close() }

// Send runs one message on a fresh connection from a trusted loopback client.
func (s *Server) Send(m *Message) (*Result, error) {
	c, err := s.Dial(ConnInfo{Hostname: "localhost", Addr: "127.0.0.1", Port: 40000, Helo: "client.postkit.test"})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Send(m)
}

// SplitMessage splits raw message bytes into header fields (name; value
// after the colon without leading white space, continuation lines kept with
// CRLF, the filter.Header form; Client.Send sends them with a bare LF, as
// Postfix does), and the body with CRLF line ends.
func SplitMessage(raw []byte) ([]filter.Header, []byte, error) {
	raw = toCRLF(raw)
	var hs []filter.Header
	for len(raw) > 0 {
		if bytes.HasPrefix(raw, []byte("\r\n")) {
			return hs, raw[2:], nil
		}
		end := 0
		for {
			i := bytes.Index(raw[end:], []byte("\r\n"))
			if i < 0 {
				end = len(raw)
				break
			}
			end += i + 2
			if end >= len(raw) || (raw[end] != ' ' && raw[end] != '\t') {
				break
			}
		}
		field := string(bytes.TrimSuffix(raw[:end], []byte("\r\n")))
		raw = raw[end:]
		name, value, ok := strings.Cut(field, ":")
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return nil, nil, fmt.Errorf("miltertest: malformed header line %q", field)
		}
		hs = append(hs, filter.Header{Name: name, Value: strings.TrimLeft(value, " \t")})
	}
	return hs, nil, nil
}

func toCRLF(b []byte) []byte {
	if bytes.Contains(b, []byte("\r\n")) || !bytes.Contains(b, []byte("\n")) {
		return b
	}
	return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n"))
}

// Apply applies header modifications to a message the way Postfix 3.7's
// cleanup does (checked against the real Postfix by TestPostfixHeaderIndexes
// in milterd): modifications apply in order; Postfix's own Received header,
// which the milter never sees, sits at the top; SMFIR_INSHEADER's index
// counts every header from the top including that Received header (0 inserts
// above it); SMFIR_CHGHEADER's index counts the headers of that name from 1,
// case-insensitively, without Postfix's own Received, and an empty value
// deletes (an index past the last appends, as smfi_chgheader documents;
// not measured, postkit's filters never do it); SMFIR_ADDHEADER appends. The result leaves out Postfix's
// Received header.
func Apply(hdrs []filter.Header, body []byte, mods []milter.ModifyAction) ([]byte, error) {
	type entry struct {
		filter.Header
		hidden bool
	}
	hs := []entry{{Header: filter.Header{Name: "Received"}, hidden: true}}
	for _, h := range hdrs {
		hs = append(hs, entry{Header: h})
	}
	for _, md := range mods {
		// Postfix ends each line of a milter's value where it has a LF
		// (a CRLF from the milter would give CR CR LF).
		nh := entry{Header: filter.Header{Name: md.HeaderName, Value: strings.ReplaceAll(md.HeaderValue, "\n", "\r\n")}}
		switch md.Code {
		case milter.ActAddHeader:
			hs = append(hs, nh)
		case milter.ActInsertHeader:
			i := min(int(md.HeaderIndex), len(hs))
			hs = append(hs[:i], append([]entry{nh}, hs[i:]...)...)
		case milter.ActChangeHeader:
			pos, n := -1, 0
			for i, h := range hs {
				if !h.hidden && strings.EqualFold(h.Name, md.HeaderName) {
					n++
					if n == int(md.HeaderIndex) {
						pos = i
						break
					}
				}
			}
			switch {
			case pos >= 0 && md.HeaderValue == "":
				hs = append(hs[:pos], hs[pos+1:]...)
			case pos >= 0:
				hs[pos].Value = nh.Value
			case md.HeaderValue != "":
				hs = append(hs, nh)
			}
		case milter.ActReplBody:
			return nil, errors.New("miltertest: body replacement is not supported by postkit")
		}
	}
	var b bytes.Buffer
	for _, h := range hs {
		if h.hidden {
			continue
		}
		b.WriteString(h.Name)
		b.WriteString(": ")
		b.WriteString(h.Value)
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes(), nil
}

// Headers parses the header section of a final message (for assertions).
func Headers(raw []byte) []filter.Header {
	hs, _, _ := SplitMessage(raw)
	return hs
}
