package milterd

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/postkit/postkit/milter/filter"
)

func TestParseConnect(t *testing.T) {
	tests := []struct {
		in       string
		wantErr  bool
		host     string
		family   byte
		port     int
		ip       string // "" = invalid
		wantAddr string
	}{
		{"mail.example\x004\x10\x92192.0.2.1\x00", false, "mail.example", '4', 4242, "192.0.2.1", "192.0.2.1"},
		{"h\x006\x00\x19IPv6:2001:db8::1\x00", false, "h", '6', 25, "2001:db8::1", "IPv6:2001:db8::1"},
		{"h\x006\x00\x19::ffff:192.0.2.9\x00", false, "h", '6', 25, "192.0.2.9", "::ffff:192.0.2.9"},
		{"localhost\x00U", false, "localhost", 'U', 0, "", ""},
		{"h\x00L\x00\x00/run/sock\x00", false, "h", 'L', 0, "", "/run/sock"},
		{"h\x00L/run/sock", false, "h", 'L', 0, "", "/run/sock"},
		{"h\x004\x00", true, "", 0, 0, "", ""},
		{"h\x004\x00\x19192.0.2.1", true, "", 0, 0, "", ""},
		{"h", true, "", 0, 0, "", ""},
		{"h\x00Z", true, "", 0, 0, "", ""},
		{"h\x004\x00\x19garbage\x00", false, "h", '4', 25, "", "garbage"},
	}
	for _, tc := range tests {
		ci, err := parseConnect([]byte(tc.in))
		if (err != nil) != tc.wantErr {
			t.Errorf("parseConnect(%q) error %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if err != nil {
			continue
		}
		ip := ""
		if a := ci.ip(); a.IsValid() {
			ip = a.String()
		}
		if ci.hostname != tc.host || ci.family != tc.family || ci.port != tc.port || ip != tc.ip || ci.addr != tc.wantAddr {
			t.Errorf("parseConnect(%q) = %+v ip %q; want host %q family %c port %d ip %q addr %q", tc.in, ci, ip, tc.host, tc.family, tc.port, tc.ip, tc.wantAddr)
		}
	}
}

func TestParseMacros(t *testing.T) {
	tests := []struct {
		in      string
		wantErr bool
		want    map[string]string
	}{
		{"Mi\x00ABC\x00{auth_type}\x00PLAIN\x00auth_authen\x00bob\x00", false, map[string]string{"i": "ABC", "{auth_type}": "PLAIN", "{auth_authen}": "bob"}},
		{"C", false, map[string]string{}},
		{"Cj\x00mx", false, map[string]string{"j": "mx"}},
		{"Cj", true, map[string]string{}},
		{"", true, map[string]string{}},
	}
	for _, tc := range tests {
		got := map[string]string{}
		_, err := parseMacros([]byte(tc.in), got)
		if (err != nil) != tc.wantErr {
			t.Errorf("parseMacros(%q) error %v", tc.in, err)
		}
		if !tc.wantErr && !equalMaps(got, tc.want) {
			t.Errorf("parseMacros(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestPacketReader(t *testing.T) {
	pkt := func(cmd byte, data string) []byte {
		b := binary.BigEndian.AppendUint32(nil, uint32(len(data)+1))
		return append(append(b, cmd), data...)
	}
	in := append(pkt('B', strings.Repeat("x", 70000)), pkt('E', "")...)
	pr := packetReader{r: bufio.NewReader(bytes.NewReader(in)), max: 65536 + 1}
	if _, _, err := pr.next(); err == nil {
		t.Fatal("70000-byte packet accepted with a 65537 limit")
	}
	pr = packetReader{r: bufio.NewReader(bytes.NewReader(in)), max: DefaultMaxPacket}
	cmd, data, err := pr.next()
	if err != nil || cmd != 'B' || len(data) != 70000 {
		t.Fatalf("first packet: %c %d %v", cmd, len(data), err)
	}
	cmd, data, err = pr.next()
	if err != nil || cmd != 'E' || len(data) != 0 {
		t.Fatalf("second packet: %c %d %v", cmd, len(data), err)
	}
	if _, _, err := pr.next(); err != io.EOF {
		t.Fatalf("after the last packet: %v, want EOF", err)
	}
	pr = packetReader{r: bufio.NewReader(bytes.NewReader(in[:100])), max: DefaultMaxPacket}
	if _, _, err := pr.next(); err != io.ErrUnexpectedEOF {
		t.Fatalf("truncated packet: %v, want unexpected EOF", err)
	}
}

func TestOutbound(t *testing.T) {
	st, err := NewChain(Config{Trusted: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}, Originating: []string{"ORIGINATING", "submission"}})
	if err != nil {
		t.Fatal(err)
	}
	def, err := NewChain(Config{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		st      *Chain
		addr    string
		connMac map[string]string
		msgMac  map[string]string
		wantOut bool
	}{
		{"foreign, no auth", st, "192.0.2.1", nil, nil, false},
		{"sasl authen", st, "192.0.2.1", nil, map[string]string{"{auth_authen}": "bob"}, true},
		{"sasl type only", st, "192.0.2.1", nil, map[string]string{"{auth_type}": "PLAIN"}, true},
		{"trusted network", st, "198.51.100.20", nil, nil, true},
		{"originating daemon", st, "192.0.2.1", map[string]string{"{daemon_name}": "submission"}, nil, true},
		{"other daemon", st, "192.0.2.1", map[string]string{"{daemon_name}": "smtpd"}, nil, false},
		{"loopback not trusted when list replaced", st, "127.0.0.1", nil, nil, false},
		{"loopback trusted by default", def, "127.0.0.1", nil, nil, true},
		{"ipv6 loopback trusted by default", def, "::1", nil, nil, true},
		{"local submission (no address)", st, "", nil, nil, true},
	}
	for _, tc := range tests {
		c := &filter.Conn{Macros: tc.connMac}
		if tc.addr != "" {
			c.Addr = netip.MustParseAddr(tc.addr)
		}
		m := &filter.Message{Conn: c, Macros: tc.msgMac}
		if got := tc.st.outbound(m); got != tc.wantOut {
			t.Errorf("%s: outbound = %v, want %v", tc.name, got, tc.wantOut)
		}
	}
}

func TestTranslateOps(t *testing.T) {
	orig := []filter.Header{{Name: "Received"}, {Name: "X-A"}, {Name: "X-A"}, {Name: "Subject"}}
	tests := []struct {
		name string
		ops  []filter.Op
		want []int // translated Index per op
	}{
		{"top stays top", []filter.Op{{Kind: filter.OpInsertHeader, Index: 0}}, []int{0}},
		{"after first view header skips Postfix's Received", []filter.Op{{Kind: filter.OpInsertHeader, Index: 1}}, []int{2}},
		{"past the end is clamped", []filter.Op{{Kind: filter.OpInsertHeader, Index: 99}}, []int{5}},
		{"after a top insert stays above Postfix's Received",
			[]filter.Op{{Kind: filter.OpInsertHeader, Index: 0}, {Kind: filter.OpInsertHeader, Index: 1}}, []int{0, 1}},
		{"deletes shift later inserts",
			[]filter.Op{{Kind: filter.OpChangeHeader, Name: "x-a", Index: 1}, {Kind: filter.OpInsertHeader, Index: 2}}, []int{1, 3}},
		{"change indexes are per name and untouched",
			[]filter.Op{{Kind: filter.OpChangeHeader, Name: "Received", Index: 1, Value: "v"}, {Kind: filter.OpInsertHeader, Index: 3}}, []int{1, 4}},
		{"appends count for later inserts",
			[]filter.Op{{Kind: filter.OpAddHeader, Name: "X-End"}, {Kind: filter.OpInsertHeader, Index: 5}}, []int{0, 6}},
	}
	for _, tc := range tests {
		got := translateOps(orig, tc.ops)
		for i := range tc.want {
			if got[i].Index != tc.want[i] {
				t.Errorf("%s: op %d index %d, want %d", tc.name, i, got[i].Index, tc.want[i])
			}
		}
	}
}

// memConn is a net.Conn reading a fixed input and recording writes.
type memConn struct {
	r   io.Reader
	out bytes.Buffer
}

func (c *memConn) Read(p []byte) (int, error)         { return c.r.Read(p) }
func (c *memConn) Write(p []byte) (int, error)        { return c.out.Write(p) }
func (c *memConn) Close() error                       { return nil }
func (c *memConn) LocalAddr() net.Addr                { return &net.UnixAddr{Name: "mem"} }
func (c *memConn) RemoteAddr() net.Addr               { return &net.UnixAddr{Name: "mem"} }
func (c *memConn) SetDeadline(t time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(t time.Time) error { return nil }

type fuzzFilter struct{}

func (fuzzFilter) Name() string { return "fuzz" }
func (fuzzFilter) Headers(m *filter.Message, c *filter.Changes) (filter.Body, error) {
	c.InsertHeader(1, "X-F", "1")
	c.DeleteHeader("Received", 1)
	return fuzzBody{}, nil
}

type fuzzBody struct{}

func (fuzzBody) Write([]byte) error { return nil }
func (fuzzBody) End(m *filter.Message, c *filter.Changes) error {
	c.ChangeFrom("x@y", "")
	return nil
}

// FuzzSession feeds arbitrary bytes to a session: it must never panic and
// always end.
func FuzzSession(f *testing.F) {
	p := func(cmd byte, data string) string {
		b := binary.BigEndian.AppendUint32(nil, uint32(len(data)+1))
		return string(append(append(b, cmd), data...))
	}
	opt := p('O', "\x00\x00\x00\x06\x00\x00\x01\xff\x00\x1f\xff\xff")
	f.Add([]byte(opt + p('D', "Cj\x00mx\x00") + p('C', "h\x004\x00\x19192.0.2.1\x00") + p('H', "helo") +
		p('D', "Mi\x00Q1\x00") + p('M', "<a@b>\x00SIZE=10\x00") + p('R', "<c@d>\x00") +
		p('L', "Received\x00from x\x00") + p('L', "Subject\x00hi\x00") + p('N', "") + p('B', "body\r\n") + p('E', "") + p('A', "") + p('Q', "")))
	f.Add([]byte(opt + p('L', "X\x00") + p('E', "") + p('K', "") + p('T', "") + p('U', "x")))
	f.Add([]byte(p('B', "") + p('N', "") + p('E', "")))
	f.Add([]byte{0, 0, 0, 2, 'D'})
	f.Fuzz(func(t *testing.T, in []byte) {
		srv, err := New(Config{
			Chains: map[string][]filter.Filter{DefaultChain: {fuzzFilter{}}},
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		conn := &memConn{r: bytes.NewReader(in)}
		s := newSession(srv, conn, DefaultChain)
		s.serve()
		// Whatever the MTA sent, the milter answers with whole packets of
		// replies the protocol defines, and changes a message only when
		// answering its end of body.
		out := conn.out.Bytes()
		replies, rest := splitPackets(out)
		if rest != 0 {
			t.Fatalf("reply stream % x ends in %d bytes of a partial packet", out, rest)
		}
		sawEOB := bytes.IndexByte(commands(in), cmdEOB) >= 0
		for _, r := range replies {
			switch r {
			case cmdOptNeg, repAccept, repContinue, repDiscard, repReject, repTempfail, repReplyCode:
			case repAddRcpt, repDelRcpt, repChgFrom, repAddHeader, repInsHeader, repChgHeader, repQuarantine:
				if !sawEOB {
					t.Fatalf("modification %q sent although the MTA never ended a body; replies %q", r, replies)
				}
			default:
				t.Fatalf("reply %q is no milter response code; replies %q", r, replies)
			}
		}
	})
}

// splitPackets returns the command byte of each whole packet of a milter
// stream (a 4-byte length, the command, its data) and how many
// bytes are left over.
func splitPackets(b []byte) (cmds []byte, rest int) {
	for len(b) >= 5 {
		n := binary.BigEndian.Uint32(b)
		if n == 0 || uint64(n) > uint64(len(b)-4) {
			break
		}
		cmds = append(cmds, b[4])
		b = b[4+n:]
	}
	return cmds, len(b)
}

// commands is the command byte of each whole packet the MTA sent.
func commands(in []byte) []byte {
	cmds, _ := splitPackets(in)
	return cmds
}

func FuzzParsers(f *testing.F) {
	f.Add([]byte("h\x004\x00\x19192.0.2.1\x00"))
	f.Add([]byte("Mi\x00ABC\x00{auth_type}\x00PLAIN\x00"))
	f.Add([]byte("<a@b>\x00SIZE=1\x00"))
	f.Fuzz(func(t *testing.T, in []byte) {
		if ci, err := parseConnect(in); err == nil {
			ci.ip()
		}
		parseMacros(in, map[string]string{})
		for _, s := range cstrings(in) {
			if strings.IndexByte(s, 0) >= 0 {
				t.Fatalf("cstrings kept a NUL in %q", s)
			}
		}
		parseOptneg(in)
	})
}

// cstrLF turns every CRLF into LF and nothing else, then terminates.
func TestCstrLF(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"plain", "plain"},
		{"a=1;\r\n\tb=2", "a=1;\n\tb=2"},
		{"a\r\n\tb\r\n\tc\r\n", "a\n\tb\n\tc\n"},
		{"bare\nLF\tkept", "bare\nLF\tkept"},
		{"lone\rCR", "lone\rCR"},
		{"\r\r\n", "\r\n"},
	}
	for _, tc := range tests {
		var p packetWriter
		p.begin('h')
		p.cstrLF(tc.in)
		if got := string(p.scratch[5:]); got != tc.want+"\x00" {
			t.Errorf("cstrLF(%q) = %q, want %q", tc.in, got, tc.want+"\x00")
		}
	}
}

// A macro sent again replaces the value when it changed and keeps it when
// it did not (Postfix repeats the end-of-header list before every header).
func TestParseMacrosRepeated(t *testing.T) {
	tests := []struct {
		have map[string]string
		in   string
		want map[string]string
	}{
		{map[string]string{"i": "Q1"}, "Li\x00Q1\x00", map[string]string{"i": "Q1"}},
		{map[string]string{"i": "Q1"}, "Li\x00Q2\x00", map[string]string{"i": "Q2"}},
		{map[string]string{"{auth_type}": "PLAIN"}, "M{auth_type}\x00LOGIN\x00", map[string]string{"{auth_type}": "LOGIN"}},
		{map[string]string{"{auth_type}": "PLAIN"}, "Mauth_type\x00PLAIN\x00j\x00mx\x00", map[string]string{"{auth_type}": "PLAIN", "j": "mx"}},
	}
	for _, tc := range tests {
		if _, err := parseMacros([]byte(tc.in), tc.have); err != nil {
			t.Fatalf("parseMacros(%q): %v", tc.in, err)
		}
		if !equalMaps(tc.have, tc.want) {
			t.Errorf("parseMacros(%q) = %v, want %v", tc.in, tc.have, tc.want)
		}
	}
}
