package milterd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/postkit/postkit/milter/filter"
)

// session is one MTA connection. Postfix keeps it open for a whole SMTP
// session and sends every message of that session over it.
type session struct {
	srv   *Server
	conn  net.Conn
	chain string
	rd    packetReader
	wr    packetWriter
	log   *slog.Logger

	// Negotiated with SMFIC_OPTNEG.
	actions, proto uint32

	// Connection facts, kept across messages.
	connMacros map[string]string
	conn0      *filter.Conn

	// The message in progress; nil between messages.
	msg        *msgState
	msgMacros  map[string]string
	headerBuf  []filter.Header
	idleMu     sync.Mutex
	idle, poke bool

	// The deadlines last set on conn (readDeadline, flush).
	readDL, writeDL time.Time
}

// Per-connection buffers outlive their connection in these pools: Postfix
// opens a milter connection for every SMTP session, and most SMTP sessions
// carry one message.
var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 8192) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4096) }}
	packetPool sync.Pool // *[]byte, at most maxPooledPacket
)

// maxPooledPacket keeps a packet buffer for reuse up to one full body chunk
// (MILTER_CHUNK_SIZE plus the command byte); larger ones (long headers) go
// to the garbage collector.
const maxPooledPacket = 65536 + 1

func newSession(s *Server, c net.Conn, chain string) *session {
	st := s.h.Current()
	r, w := newSocketIO(c)
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(r)
	bw := writerPool.Get().(*bufio.Writer)
	bw.Reset(w)
	var buf []byte
	if p, ok := packetPool.Get().(*[]byte); ok {
		buf = *p
	}
	return &session{
		srv:        s,
		conn:       c,
		chain:      chain,
		rd:         packetReader{r: br, max: st.maxPacket, buf: buf},
		wr:         packetWriter{w: bw},
		log:        st.log,
		connMacros: map[string]string{},
	}
}

// release returns the session's buffers to the pools; the session is done.
func (s *session) release() {
	s.rd.r.Reset(nil)
	readerPool.Put(s.rd.r)
	s.wr.w.Reset(nil)
	writerPool.Put(s.wr.w)
	if b := s.rd.buf; cap(b) > 0 && cap(b) <= maxPooledPacket {
		b = b[:0]
		packetPool.Put(&b)
	}
	s.rd = packetReader{}
	s.wr = packetWriter{}
}

// pokeIfIdle wakes a session waiting between messages so it can close.
func (s *session) pokeIfIdle() {
	s.idleMu.Lock()
	defer s.idleMu.Unlock()
	if s.idle && !s.poke {
		s.poke = true
		s.conn.SetReadDeadline(time.Unix(1, 0))
	}
}

// errQuit ends a session normally.
var errQuit = errors.New("quit")

func (s *session) serve() {
	defer s.release()
	defer s.conn.Close()
	// A dropped connection never ends its message: release its bodies.
	defer s.resetMessage()
	for {
		err := s.step()
		if err == nil {
			continue
		}
		if errors.Is(err, errQuit) || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
			if s.msg != nil {
				s.log.Warn("milter connection closed by the MTA in the middle of a message", "queue_id", s.msg.qid(), "chain", s.chain)
			}
			return
		}
		if errors.Is(err, os.ErrDeadlineExceeded) && s.srv.isClosing() {
			return
		}
		if o := s.settings().observer; o != nil {
			o.ObserveError("connection")
		}
		attrs := []any{"err", err, "remote", s.conn.RemoteAddr().String(), "chain", s.chain}
		if s.msg != nil {
			attrs = append(attrs, "queue_id", s.msg.qid())
		}
		s.log.Error("milter connection dropped; the MTA applies milter_default_action to the message in progress", attrs...)
		return
	}
}

// readDeadline arms the idle timeout before the session waits for the MTA.
// Moving a deadline costs a timer update in the runtime, and the session
// waits several times per message, so the deadline moves only once it lags
// the wanted one by more than 1/64 of the timeout: an idle connection is
// closed after between 63/64 and all of IdleTimeout of silence.
func (s *session) readDeadline(st *Chain, force bool) {
	want := st.now().Add(st.idle)
	if force || want.Sub(s.readDL) > st.idle/64 {
		s.readDL = want
		s.conn.SetReadDeadline(want)
	}
}

// settings returns the chain whose settings (timeouts, clock) apply now:
// the message's while one is in progress, else the current one. Only a
// message takes a reference (message); between messages the session holds
// none, so that a reload closes the old chain without waiting for idle
// connections.
func (s *session) settings() *Chain {
	if s.msg != nil {
		return s.msg.st
	}
	return s.srv.h.Current()
}

// step reads and handles one packet.
func (s *session) step() error {
	st := s.settings()
	if s.rd.r.Buffered() == 0 {
		if s.msg == nil {
			if s.srv.isClosing() {
				return errQuit
			}
			s.idleMu.Lock()
			s.idle = true
			s.idleMu.Unlock()
		}
		s.readDeadline(st, false)
		_, err := s.rd.r.Peek(1)
		s.idleMu.Lock()
		s.idle = false
		if s.poke && err == nil {
			// Shutdown poked us just as a packet arrived: serve this
			// message, then close.
			s.readDeadline(st, true)
		}
		s.idleMu.Unlock()
		if err != nil {
			return err
		}
	}
	cmd, data, err := s.rd.next()
	if err != nil {
		return err
	}
	return s.handle(cmd, data)
}

func (s *session) handle(cmd byte, data []byte) error {
	switch cmd {
	case cmdOptNeg:
		return s.negotiate(data)
	case cmdMacro:
		return s.macros(data)
	case cmdConnect:
		ci, err := parseConnect(data)
		if err != nil {
			return err
		}
		s.conn0 = &filter.Conn{Hostname: ci.hostname, Addr: ci.ip(), Port: ci.port, Helo: "", Macros: s.connMacros}
		return s.reply(optNRConn)
	case cmdHelo:
		helo, _, _ := cstring(append(data, 0))
		s.connection().Helo = helo
		return s.reply(optNRHelo)
	case cmdMail:
		args := cstrings(data)
		if len(args) == 0 {
			return errors.New("milterd: MAIL without sender")
		}
		m := s.message()
		m.msg.MailFrom = stripAngle(args[0])
		m.msg.MailArgs = args[1:]
		return s.reply(optNRMail)
	case cmdRcpt:
		args := cstrings(data)
		if len(args) == 0 {
			return errors.New("milterd: RCPT without recipient")
		}
		m := s.message()
		m.msg.Rcpts = append(m.msg.Rcpts, stripAngle(args[0]))
		return s.reply(optNRRcpt)
	case cmdData, cmdUnknown:
		// Requested away with SMFIP_NODATA / SMFIP_NOUNKNOWN when the MTA
		// allows it; answered otherwise.
		s.message()
		return s.replyNow(repContinue)
	case cmdHeader:
		name, rest, ok := cstring(data)
		if !ok {
			return errors.New("milterd: header name not NUL-terminated")
		}
		value, _, _ := cstring(append(rest, 0))
		value = crlfFolds(value)
		m := s.message()
		if m.headersRun {
			return errors.New("milterd: header after end of headers")
		}
		s.headerBuf = append(s.headerBuf, filter.Header{Name: name, Value: value})
		return s.reply(optNRHdr)
	case cmdEOH:
		m := s.message()
		if !m.headersRun {
			s.runHeaders(m)
		}
		if s.proto&optNREOH != 0 {
			// SMFIP_NR_EOH: the MTA does not read an answer here; the
			// body follows, and the verdict goes out at end of message.
			return nil
		}
		if v, _, _, _ := m.verdict(); v != filter.Accept || (len(m.bodies) == 0 && len(m.changes.Ops) == 0) {
			// Nothing more to do for this message: answer now and let the
			// MTA skip the body for this milter.
			return s.finish(m)
		}
		return s.replyNow(repContinue)
	case cmdBody:
		m := s.message()
		if !m.headersRun {
			s.runHeaders(m)
		}
		m.body(data)
		return s.reply(optNRBody)
	case cmdEOB:
		m := s.message()
		if !m.headersRun {
			s.runHeaders(m)
		}
		m.end()
		return s.finish(m)
	case cmdAbort:
		// SMFIC_ABORT: the MTA gave up on the message (RSET, client
		// disconnect, another milter refused); the connection stays.
		if s.msg != nil && s.msg.headersRun {
			s.log.Debug("milter message aborted by the MTA", "queue_id", s.msg.qid(), "chain", s.chain)
		}
		s.resetMessage()
		return nil
	case cmdQuitNC:
		// SMFIC_QUIT_NC: a new SMTP connection follows on this socket.
		s.resetMessage()
		s.connMacros = map[string]string{}
		s.conn0 = nil
		return nil
	case cmdQuit:
		return errQuit
	}
	return fmt.Errorf("milterd: unknown command %q (%d bytes); closing the connection", cmd, len(data))
}

func (s *session) negotiate(data []byte) error {
	o, err := parseOptneg(data)
	if err != nil {
		return err
	}
	if o.version < 2 {
		return fmt.Errorf("milterd: MTA speaks milter protocol %d; set milter_protocol = 6", o.version)
	}
	st := s.srv.h.Current()
	version := min(o.version, protoVersion)
	want := uint32(actAddHdrs | actChgHdrs | actAddRcpt | actDelRcpt | actQuarantine | actChgFrom)
	if version >= 6 {
		want |= actSetSymList
	}
	s.actions = want & o.actions
	cp := st.protos[s.chain]
	var proto uint32
	if version >= 6 {
		// Events no filter reads (filter.Needs), and the replies the
		// daemon never needs to send (milter-protocol-extras: SMFIP_NR_*).
		proto = optNoUnknown | optNoData | cp.skip
		if !st.replies {
			proto |= optNRConn | optNRHelo | optNRMail | optNRRcpt | optNRHdr | optNRBody
			if len(st.chains[s.chain]) > 0 {
				// No answer at end of headers either: the MTA sends the
				// body right behind the headers instead of waiting for a
				// round trip, and a verdict reached on the headers is
				// given at end of message. The cost: when no filter
				// takes a message's body, the MTA still sends it, where an
				// early answer would have let it skip the body. Every
				// message of postkit's own chain goes to dkimsign
				// (outbound) or dkimverify (inbound), so the round trip
				// is the better bargain; WithReplies restores the answer.
				proto |= optNREOH
			}
		}
	}
	s.proto = proto & o.protocol
	s.wr.begin(cmdOptNeg)
	s.wr.u32(version)
	s.wr.u32(s.actions)
	s.wr.u32(s.proto)
	if s.actions&actSetSymList != 0 {
		// SMFIR_SETSYMLIST data appended to the OPTNEG reply, as libmilter's
		// smfi_setsymlist: "uint32 stage, char macros[]" per stage.
		for i, list := range cp.macros {
			if !cp.send[i] {
				continue
			}
			s.wr.u32(uint32(i))
			s.wr.cstr(list)
		}
	}
	if err := s.wr.end(); err != nil {
		return err
	}
	return s.flush()
}

func (s *session) macros(data []byte) error {
	if len(data) < 1 {
		return errors.New("milterd: macro packet without command code")
	}
	dst := s.connMacros
	switch data[0] {
	case cmdConnect, cmdHelo:
	default:
		if s.msgMacros == nil {
			s.msgMacros = map[string]string{}
		}
		dst = s.msgMacros
	}
	_, err := parseMacros(data, dst)
	return err
}

func (s *session) connection() *filter.Conn {
	if s.conn0 == nil {
		// No CONNECT event (SMFIP_NOCONNECT or a stray order): an unknown client.
		s.conn0 = &filter.Conn{Hostname: "unknown", Macros: s.connMacros}
	}
	return s.conn0
}

// message returns the message in progress, starting one if needed with the
// chain current at that moment, which it holds until resetMessage.
func (s *session) message() *msgState {
	if s.msg != nil {
		return s.msg
	}
	st, release := s.srv.h.Acquire()
	if s.msgMacros == nil {
		s.msgMacros = map[string]string{}
	}
	fs, ok := st.chains[s.chain]
	s.msg = &msgState{
		st:      st,
		release: release,
		filters: fs,
		timings: make([]time.Duration, len(fs)),
		outcome: make([]uint8, len(fs)),
		start:   st.now(),
		msg:     &filter.Message{Conn: s.connection(), Macros: s.msgMacros},
	}
	if !ok {
		// A reload dropped the chain this listener serves (a Holder
		// swapped without the checks of Reload): the message gets the
		// fault action, never an empty chain.
		s.msg.fault, s.msg.faultFilter = fmt.Errorf("milterd: chain %q is missing from the running configuration; restart the daemon", s.chain), "milterd"
	}
	return s.msg
}

// resetMessage forgets the message in progress, aborting the bodies of
// filters that did not see its end, and gives its chain back.
func (s *session) resetMessage() {
	if s.msg != nil {
		s.msg.abort()
		s.msg.release()
	}
	s.msg = nil
	s.msgMacros = nil
	clear(s.headerBuf)
	s.headerBuf = s.headerBuf[:0]
}

// reply answers an event unless the MTA agreed to skip that reply.
func (s *session) reply(noReplyOpt uint32) error {
	if s.proto&noReplyOpt != 0 {
		return nil
	}
	return s.replyNow(repContinue)
}

func (s *session) replyNow(code byte) error {
	if err := s.wr.simple(code); err != nil {
		return err
	}
	return s.flush()
}

// flush sends the buffered replies. The write deadline moves like the read
// deadline (readDeadline): a reply gets between 63/64 and all of
// WriteTimeout.
func (s *session) flush() error {
	st := s.settings()
	if want := st.now().Add(st.writeTO); want.Sub(s.writeDL) > st.writeTO/64 {
		s.writeDL = want
		s.conn.SetWriteDeadline(want)
	}
	return s.wr.w.Flush()
}

func (s *session) runHeaders(m *msgState) {
	// The message owns its header slice; the session's buffer is reused
	// for the next message.
	m.msg.Headers = append(make([]filter.Header, 0, len(s.headerBuf)+4), s.headerBuf...)
	m.msg.QueueID = m.msg.Macro("i")
	m.msg.Outbound = m.st.outbound(m.msg)
	m.headersRun = true
	m.changes = filter.NewChanges(m.msg)
	m.runHeaders()
}

// finish sends the modifications and the verdict of a message, logs it and
// resets the message state.
func (s *session) finish(m *msgState) error {
	verdict, code, ext, text := m.verdict()
	if m.msg.QueueID == "" {
		m.msg.QueueID = m.msg.Macro("i")
	}
	nops := 0
	if verdict == filter.Accept {
		var err error
		if nops, err = s.sendOps(m); err != nil {
			return err
		}
	}
	// Counted before the answer goes out, so that a scrape that follows
	// the MTA's reply sees the message.
	m.observe(verdict)
	if err := s.sendVerdict(verdict, code, ext, text); err != nil {
		return err
	}
	if err := s.flush(); err != nil {
		return err
	}
	s.logMessage(m, verdict, nops)
	s.resetMessage()
	return nil
}

func (s *session) sendVerdict(v filter.Verdict, code, ext, text string) error {
	switch v {
	case filter.Accept:
		return s.wr.simple(repAccept)
	case filter.Discard:
		return s.wr.simple(repDiscard)
	}
	class, plain := byte('5'), byte(repReject)
	if v == filter.Tempfail {
		class, plain = '4', repTempfail
	}
	if !validReply(code, class) {
		if text == "" {
			return s.wr.simple(plain)
		}
		code = string(class) + "50"
	}
	// SMFIR_REPLYCODE: "char smtpcode[3], ' ', char text[]"; '%' is doubled
	// because the MTA may format the text printf-style.
	line := code
	if ext != "" {
		line += " " + ext
	}
	if text != "" {
		line += " " + strings.ReplaceAll(sanitizeLine(text), "%", "%%")
	}
	s.wr.begin(repReplyCode)
	s.wr.cstr(line)
	return s.wr.end()
}

// crlfFolds turns the line breaks of a folded header value as the MTA sends
// it into CRLF, the form the filter contract promises (filter.Header).
// Postfix sends continuation lines separated by a bare LF ("one\n\ttwo",
// measured with Postfix 3.7): DKIM's simple header canonicalization (RFC 6376
// section 3.4.1) needs the CRLF that was on the wire.
func crlfFolds(v string) string {
	if !strings.Contains(v, "\n") {
		return v
	}
	var b strings.Builder
	b.Grow(len(v) + 8)
	for i := 0; i < len(v); i++ {
		if v[i] == '\n' && (i == 0 || v[i-1] != '\r') {
			b.WriteByte('\r')
		}
		b.WriteByte(v[i])
	}
	return b.String()
}

// cstrLF appends a header value recorded by a filter as a C string, its
// CRLF line breaks turned into the bare LF the MTA expects from a milter:
// smfi_insheader(3) and friends fold with "\n" followed by white space, and
// Postfix writes each LF as the line end, so a CRLF would reach the message
// as CR CR LF (measured). It writes straight into the packet: a folded
// DKIM-Signature is the one long value of nearly every message.
func (p *packetWriter) cstrLF(v string) {
	for {
		i := strings.Index(v, "\r\n")
		if i < 0 {
			break
		}
		p.scratch = append(p.scratch, v[:i]...)
		v = v[i+1:] // drop the CR, keep the LF
	}
	p.cstr(v)
}

func sanitizeLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// sendOps writes the message's modifications in the order they were
// recorded, with header indexes translated to what Postfix applies.
func (s *session) sendOps(m *msgState) (int, error) {
	if m.changes == nil || len(m.changes.Ops) == 0 {
		return 0, nil
	}
	n := 0
	for _, op := range translateOps(m.origHeaders(s.headerBuf), m.changes.Ops) {
		need := uint32(0)
		switch op.Kind {
		case filter.OpAddHeader:
			need = actAddHdrs
			s.wr.begin(repAddHeader)
			s.wr.cstr(op.Name)
			s.wr.cstrLF(op.Value)
		case filter.OpInsertHeader:
			need = actAddHdrs
			s.wr.begin(repInsHeader)
			s.wr.u32(uint32(op.Index))
			s.wr.cstr(op.Name)
			s.wr.cstrLF(op.Value)
		case filter.OpChangeHeader:
			need = actChgHdrs
			s.wr.begin(repChgHeader)
			s.wr.u32(uint32(op.Index))
			s.wr.cstr(op.Name)
			s.wr.cstrLF(op.Value)
		case filter.OpChangeFrom:
			need = actChgFrom
			s.wr.begin(repChgFrom)
			s.wr.cstr("<" + stripAngle(op.Value) + ">")
			if op.Args != "" {
				s.wr.cstr(op.Args)
			}
		case filter.OpAddRcpt:
			need = actAddRcpt
			s.wr.begin(repAddRcpt)
			s.wr.cstr("<" + stripAngle(op.Value) + ">")
		case filter.OpDelRcpt:
			need = actDelRcpt
			s.wr.begin(repDelRcpt)
			s.wr.cstr("<" + stripAngle(op.Value) + ">")
		case filter.OpQuarantine:
			need = actQuarantine
			s.wr.begin(repQuarantine)
			s.wr.cstr(sanitizeLine(op.Value))
		default:
			s.log.Warn("milter filter recorded an unknown modification; skipped", "queue_id", m.qid(), "kind", int(op.Kind))
			continue
		}
		if s.actions&need == 0 {
			s.log.Warn("milter modification not allowed by the MTA; skipped (check milter_protocol = 6)", "queue_id", m.qid(), "kind", int(op.Kind), "name", op.Name)
			continue
		}
		if err := s.wr.end(); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

func (s *session) logMessage(m *msgState, v filter.Verdict, nops int) {
	level, text := slog.LevelInfo, "milter message"
	if m.fault != nil {
		level = slog.LevelError
	}
	// One line per message at info: built only when it is written.
	ctx := context.Background()
	if !s.log.Enabled(ctx, level) {
		return
	}
	var b []byte
	for i, f := range m.filters {
		if i > 0 {
			b = append(b, ' ')
		}
		b = append(b, f.Name()...)
		b = append(b, '=')
		b = append(b, m.timings[i].Round(time.Microsecond).String()...)
	}
	attrs := make([]slog.Attr, 0, 12)
	attrs = append(attrs,
		slog.String("queue_id", m.qid()), slog.String("chain", s.chain), slog.String("verdict", verdictName(v)),
		slog.String("client", clientOf(m.msg.Conn)), slog.String("sender", m.msg.MailFrom),
		slog.Bool("outbound", m.msg.Outbound), slog.Int("ops", nops), slog.Int64("body_bytes", m.bodyBytes),
		slog.String("filters", string(b)), slog.Duration("elapsed", m.st.now().Sub(m.start).Round(time.Microsecond)))
	if m.fault != nil {
		attrs = append(attrs, slog.String("fault_filter", m.faultFilter), slog.String("fault", m.fault.Error()))
	}
	s.log.LogAttrs(ctx, level, text, attrs...)
}

func verdictName(v filter.Verdict) string {
	switch v {
	case filter.Accept:
		return "accept"
	case filter.Reject:
		return "reject"
	case filter.Tempfail:
		return "tempfail"
	case filter.Discard:
		return "discard"
	}
	return fmt.Sprintf("verdict(%d)", int(v))
}

// clientOf is the client's address as the policy daemon logs it
// (client_address), "" for local submission.
func clientOf(c *filter.Conn) string {
	if c == nil || !c.Addr.IsValid() {
		return ""
	}
	return c.Addr.String()
}
