package milterd

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// Protocol constants. The names follow libmilter's mfdef.h; the values are
// those of milter-protocol.txt ("THE SENDMAIL MILTER PROTOCOL, VERSION 2") and
// its version 6 extensions (milter-protocol-extras.txt), both shipped with
// go-milter.
const (
	protoVersion = 6 // SMFI_PROT_VERSION

	// Commands from the MTA ("COMMAND CODES").
	cmdAbort   = 'A' // SMFIC_ABORT
	cmdBody    = 'B' // SMFIC_BODY
	cmdConnect = 'C' // SMFIC_CONNECT
	cmdMacro   = 'D' // SMFIC_MACRO
	cmdEOB     = 'E' // SMFIC_BODYEOB
	cmdHelo    = 'H' // SMFIC_HELO
	cmdQuitNC  = 'K' // SMFIC_QUIT_NC: quit, but a new connection follows on this socket
	cmdHeader  = 'L' // SMFIC_HEADER
	cmdMail    = 'M' // SMFIC_MAIL
	cmdEOH     = 'N' // SMFIC_EOH
	cmdOptNeg  = 'O' // SMFIC_OPTNEG
	cmdQuit    = 'Q' // SMFIC_QUIT
	cmdRcpt    = 'R' // SMFIC_RCPT
	cmdData    = 'T' // SMFIC_DATA
	cmdUnknown = 'U' // SMFIC_UNKNOWN

	// Replies to the MTA ("RESPONSE CODES").
	repAddRcpt    = '+' // SMFIR_ADDRCPT
	repDelRcpt    = '-' // SMFIR_DELRCPT
	repAccept     = 'a' // SMFIR_ACCEPT
	repContinue   = 'c' // SMFIR_CONTINUE
	repDiscard    = 'd' // SMFIR_DISCARD
	repChgFrom    = 'e' // SMFIR_CHGFROM
	repAddHeader  = 'h' // SMFIR_ADDHEADER
	repInsHeader  = 'i' // SMFIR_INSHEADER
	repChgHeader  = 'm' // SMFIR_CHGHEADER
	repQuarantine = 'q' // SMFIR_QUARANTINE
	repReject     = 'r' // SMFIR_REJECT
	repTempfail   = 't' // SMFIR_TEMPFAIL
	repReplyCode  = 'y' // SMFIR_REPLYCODE

	// Actions (SMFIF_*), offered by the MTA and requested by the milter.
	actAddHdrs    = 0x001 // add and insert headers
	actAddRcpt    = 0x004
	actDelRcpt    = 0x008
	actChgHdrs    = 0x010 // change and delete headers
	actQuarantine = 0x020
	actChgFrom    = 0x040
	actSetSymList = 0x100

	// Protocol steps (SMFIP_*): parts of the conversation the milter asks the
	// MTA to skip, and replies it will not send.
	optNoHelo    = 0x00000002 // SMFIP_NOHELO
	optNoRcpt    = 0x00000008 // SMFIP_NORCPT
	optNoUnknown = 0x00000100 // SMFIP_NOUNKNOWN
	optNoData    = 0x00000200 // SMFIP_NODATA
	optNRHdr     = 0x00000080 // SMFIP_NR_HDR
	optNRConn    = 0x00001000 // SMFIP_NR_CONN
	optNRHelo    = 0x00002000 // SMFIP_NR_HELO
	optNRMail    = 0x00004000 // SMFIP_NR_MAIL
	optNRRcpt    = 0x00008000 // SMFIP_NR_RCPT
	optNREOH     = 0x00040000 // SMFIP_NR_EOH
	optNRBody    = 0x00080000 // SMFIP_NR_BODY

	// Macro stages of SMFIR_SETSYMLIST (libmilter's SMFIM_* in mfapi.h,
	// Postfix's smfim_table in milter8.c).
	stageConnect = 0
	stageHelo    = 1
	stageMail    = 2
	stageRcpt    = 3
	stageData    = 4
	stageEOM     = 5
	stageEOH     = 6
	numStages    = 7
)

// DefaultMaxPacket bounds one packet from the MTA. Body chunks are at most
// 65535 bytes (MILTER_CHUNK_SIZE), but one header may be as long as Postfix's
// header_size_limit (102400 by default), so the bound sits above that.
const DefaultMaxPacket = 256 << 10

var (
	errPacketTooLarge = errors.New("milterd: packet larger than the configured limit; raise MaxPacket if the MTA really sends this")
	errEmptyPacket    = errors.New("milterd: packet of length 0 (no command byte)")
)

// packetReader reads "uint32 len, char cmd, char data[len-1]" packets
// ("LINK/PACKET PROTOCOL"), reusing one buffer.
type packetReader struct {
	r   *bufio.Reader
	buf []byte
	max int
}

// next returns the next packet. data is valid until the following call.
func (p *packetReader) next() (cmd byte, data []byte, err error) {
	var hdr [4]byte
	if _, err := io.ReadFull(p.r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 {
		return 0, nil, errEmptyPacket
	}
	if int64(n) > int64(p.max) {
		return 0, nil, fmt.Errorf("%w (%d > %d bytes)", errPacketTooLarge, n, p.max)
	}
	if cap(p.buf) < int(n) {
		p.buf = make([]byte, n, max(int(n), 4096))
	}
	p.buf = p.buf[:n]
	if _, err := io.ReadFull(p.r, p.buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return p.buf[0], p.buf[1:], nil
}

// packetWriter encodes replies into a buffered writer; flush sends them.
type packetWriter struct {
	w       *bufio.Writer
	scratch []byte
}

func (p *packetWriter) begin(cmd byte) {
	p.scratch = append(p.scratch[:0], 0, 0, 0, 0, cmd)
}

func (p *packetWriter) u32(v uint32) { p.scratch = binary.BigEndian.AppendUint32(p.scratch, v) }

func (p *packetWriter) cstr(s string) {
	p.scratch = append(p.scratch, s...)
	p.scratch = append(p.scratch, 0)
}

func (p *packetWriter) end() error {
	binary.BigEndian.PutUint32(p.scratch, uint32(len(p.scratch)-4))
	_, err := p.w.Write(p.scratch)
	return err
}

func (p *packetWriter) simple(cmd byte) error {
	p.begin(cmd)
	return p.end()
}

// cstrings splits a NUL-terminated string array ("char array[][]"). A
// missing final NUL is tolerated; the last element then ends at the packet end.
func cstrings(data []byte) []string {
	var out []string
	for len(data) > 0 {
		i := indexNUL(data)
		if i < 0 {
			out = append(out, string(data))
			break
		}
		out = append(out, string(data[:i]))
		data = data[i+1:]
	}
	return out
}

func indexNUL(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return -1
}

// cstring reads one NUL-terminated string and returns the rest.
func cstring(data []byte) (string, []byte, bool) {
	i := indexNUL(data)
	if i < 0 {
		return "", nil, false
	}
	return string(data[:i]), data[i+1:], true
}

// optneg is the SMFIC_OPTNEG payload: "uint32 version, uint32 actions,
// uint32 protocol".
type optneg struct {
	version, actions, protocol uint32
}

func parseOptneg(data []byte) (optneg, error) {
	if len(data) < 12 {
		return optneg{}, fmt.Errorf("milterd: option negotiation of %d bytes, want at least 12", len(data))
	}
	return optneg{
		version:  binary.BigEndian.Uint32(data),
		actions:  binary.BigEndian.Uint32(data[4:]),
		protocol: binary.BigEndian.Uint32(data[8:]),
	}, nil
}

// connectInfo is the SMFIC_CONNECT payload.
type connectInfo struct {
	hostname string
	family   byte // 'U', 'L', '4', '6'
	port     int
	addr     string // as sent: IP, or socket path for 'L'
}

// parseConnect decodes "char hostname[], char family, uint16 port, char
// address[]". For SMFIA_UNKNOWN ('U') port and address are absent. Sendmail
// and Postfix send a port of 0 for SMFIA_UNIX ('L'); some clients omit it, which
// is recognised by the path starting right after the family byte.
func parseConnect(data []byte) (connectInfo, error) {
	var ci connectInfo
	host, rest, ok := cstring(data)
	if !ok || len(rest) < 1 {
		return ci, errors.New("milterd: connect: truncated host name or family")
	}
	ci.hostname, ci.family, rest = host, rest[0], rest[1:]
	switch ci.family {
	case 'U':
		return ci, nil
	case 'L':
		if len(rest) > 0 && rest[0] == '/' {
			ci.addr, _, _ = cstring(append(rest, 0))
			return ci, nil
		}
	case '4', '6':
	default:
		return ci, fmt.Errorf("milterd: connect: unknown protocol family %q", ci.family)
	}
	if len(rest) < 2 {
		return ci, errors.New("milterd: connect: truncated port")
	}
	ci.port = int(binary.BigEndian.Uint16(rest))
	addr, _, ok := cstring(rest[2:])
	if !ok {
		return ci, errors.New("milterd: connect: address not NUL-terminated")
	}
	ci.addr = addr
	return ci, nil
}

// ip returns the client's IP address, invalid for unknown and unix families.
// Sendmail writes IPv6 addresses as "IPv6:…"; Postfix does not.
func (ci connectInfo) ip() netip.Addr {
	if ci.family != '4' && ci.family != '6' {
		return netip.Addr{}
	}
	s := ci.addr
	if len(s) > 5 && strings.EqualFold(s[:5], "IPv6:") {
		s = s[5:]
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

// parseMacros decodes SMFIC_MACRO: "char cmdcode, char nameval[][]" and adds the
// pairs to dst. Names are stored with braces for long names ("{auth_type}")
// and bare for one-letter names ("i", "j"), the way Postfix spells them.
func parseMacros(data []byte, dst map[string]string) (stage byte, err error) {
	if len(data) < 1 {
		return 0, errors.New("milterd: macro packet without command code")
	}
	stage, data = data[0], data[1:]
	for len(data) > 0 {
		i := indexNUL(data)
		if i < 0 {
			return stage, errors.New("milterd: macro name not NUL-terminated")
		}
		name, rest := data[:i], data[i+1:]
		val, rest2 := rest, []byte(nil)
		if j := indexNUL(rest); j >= 0 {
			val, rest2 = rest[:j], rest[j+1:]
		} // else tolerate a value that runs to the packet end
		data = rest2
		// Postfix repeats the end-of-header macros before every header:
		// an unchanged value costs a lookup, not two strings.
		if len(name) > 1 && name[0] != '{' {
			dst[normMacro(string(name))] = string(val)
			continue
		}
		if old, ok := dst[string(name)]; ok && old == string(val) {
			continue
		}
		dst[string(name)] = string(val)
	}
	return stage, nil
}

// normMacro spells a macro name the way Message.Macro looks it up: one
// character bare, longer names in braces.
func normMacro(name string) string {
	if len(name) <= 1 || strings.HasPrefix(name, "{") {
		return name
	}
	return "{" + name + "}"
}

// stripAngle removes the <> qualification of a MAIL or RCPT address.
func stripAngle(s string) string {
	if len(s) >= 2 && s[0] == '<' && s[len(s)-1] == '>' {
		return s[1 : len(s)-1]
	}
	return s
}

// validReply reports whether code is a 3-digit SMTP code of the wanted class.
func validReply(code string, class byte) bool {
	if len(code) != 3 || code[0] != class {
		return false
	}
	_, err := strconv.Atoi(code)
	return err == nil
}
