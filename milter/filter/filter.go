// Package filter is the contract between postkit's milter daemon and the filters
// of its chain (scrub, spam, DKIM): each filter sees one message once, in chain
// order, and records its changes in one shared set that the daemon sends back to
// the MTA (Sendmail milter protocol, as spoken by Postfix's MILTER_README).
package filter

import (
	"net/netip"
	"strings"
)

// Conn holds the facts of one SMTP connection. The daemon keeps it for every
// message of the connection.
type Conn struct {
	Hostname string     // client host name as Postfix resolved it ("unknown" if none)
	Addr     netip.Addr // client address; invalid for local submissions (sendmail, pickup)
	Port     int
	Helo     string
	Macros   map[string]string // macros sent at CONNECT and HELO
}

// Header is one header field as the MTA sent it: Value is the text after the
// colon without the single leading space, continuation lines kept ("\r\n\t…").
type Header struct {
	Name  string
	Value string
}

// Message is one message of a connection, as the chain sees it.
type Message struct {
	Conn     *Conn
	QueueID  string            // Postfix's queue id (macro i), "" until known
	MailFrom string            // envelope sender without angle brackets
	MailArgs []string          // ESMTP arguments of MAIL FROM
	Rcpts    []string          // envelope recipients without angle brackets
	Macros   map[string]string // every macro received so far for this message, all stages merged
	// Outbound is true when the message is submitted by our own users
	// (SASL-authenticated, trusted network, or a service marked ORIGINATING).
	Outbound bool
	// Headers is the current view: the headers as received, with the changes
	// recorded by the filters that ran before applied in order.
	Headers []Header
}

// Macro returns a macro's value, looking in the message's then the connection's macros.
// Names may be given with or without braces ("auth_authen" or "{auth_authen}").
func (m *Message) Macro(name string) string {
	if len(name) > 1 && !strings.HasPrefix(name, "{") {
		name = "{" + name + "}"
	}
	if v, ok := m.Macros[name]; ok {
		return v
	}
	if m.Conn != nil {
		return m.Conn.Macros[name]
	}
	return ""
}

// Filter is one step of the chain.
type Filter interface {
	// Name identifies the filter in logs and configuration ("scrub", "dkim", …).
	Name() string
	// Headers is called once all headers are known (end of headers), in chain
	// order. m.Headers already reflects earlier filters' changes. It returns a
	// Body to receive the body and the end of the message, or nil if the
	// filter is done with this message. An error is a message-level fault: the
	// daemon applies its configured fault action (tempfail by default).
	Headers(m *Message, c *Changes) (Body, error)
}

// Needs declares what a filter reads beyond the headers, the body and
// Message.Outbound (which the daemon always provides), so that the daemon
// can ask the MTA to leave the rest out of the conversation: the HELO and
// RCPT events (SMFIP_NOHELO, SMFIP_NORCPT) and the macros no filter reads
// (SMFIR_SETSYMLIST). Every event the MTA skips is a packet it does not
// build, send or wait for.
type Needs struct {
	Helo  bool // Conn.Helo
	Rcpts bool // Message.Rcpts
	// Macros lists the macros the filter reads with Message.Macro or from
	// the Macros maps, spelled as Postfix does ("j", "{client_addr}").
	Macros []string
}

// Declarer is implemented by a Filter that declares its Needs. A filter that
// does not is assumed to read everything: HELO, recipients and every macro
// the daemon requests by default.
type Declarer interface {
	Needs() Needs
}

// Declare returns f declaring n, for a filter that does not implement
// Declarer itself; its Name, Headers and Bodies are f's own.
func Declare(f Filter, n Needs) Filter { return declared{f, n} }

type declared struct {
	Filter
	needs Needs
}

func (d declared) Needs() Needs { return d.needs }

// NeedsOf returns what f declares, and false for a filter that declares
// nothing (and so needs everything).
func NeedsOf(f Filter) (Needs, bool) {
	if d, ok := f.(Declarer); ok {
		return d.Needs(), true
	}
	return Needs{}, false
}

// Body receives a message's body in the chunks the MTA sends (at most 64 KiB
// each, CRLF line endings), then the end of the message.
type Body interface {
	// Write must not keep chunk after it returns (the io.Writer rule): the
	// daemon reuses the buffer for the next packet.
	Write(chunk []byte) error
	// End is called at end of message, in chain order, after every chunk was
	// written to every filter.
	End(m *Message, c *Changes) error
}

// Verdict is the chain's answer for a message.
type Verdict int

const (
	Accept   Verdict = iota // deliver, with the recorded changes
	Reject                  // permanent refusal (5xx)
	Tempfail                // temporary refusal (4xx)
	Discard                 // accept and drop silently
)

// OpKind is the kind of one recorded modification.
type OpKind int

const (
	OpAddHeader    OpKind = iota // append a header at the end
	OpInsertHeader               // insert at Index (0 = top)
	OpChangeHeader               // replace the Index-th (1-based) header named Name; empty Value deletes it
	OpChangeFrom                 // replace the envelope sender (Value), ESMTP args in Args
	OpAddRcpt
	OpDelRcpt
	OpQuarantine // hold the message in Postfix's hold queue, reason in Value
)

// Op is one modification, in the MTA's terms.
type Op struct {
	Kind  OpKind
	Name  string
	Value string
	Index int
	Args  string
}

// Changes collects the modifications and the verdict for one message. Header
// operations also update the message's header view, so later filters see them.
type Changes struct {
	msg     *Message
	Ops     []Op
	Verdict Verdict
	Code    string // SMTP reply code for Reject/Tempfail, e.g. "550"
	Ext     string // enhanced status code, e.g. "5.7.1"
	Text    string // reply text
}

// NewChanges starts the change set of a message.
func NewChanges(m *Message) *Changes { return &Changes{msg: m} }

// occurrence returns the position in the view of the nth (1-based) header named name.
func (c *Changes) occurrence(name string, nth int) int {
	n := 0
	for i, h := range c.msg.Headers {
		if strings.EqualFold(h.Name, name) {
			n++
			if n == nth {
				return i
			}
		}
	}
	return -1
}

// AddHeader appends a header after the last one.
func (c *Changes) AddHeader(name, value string) {
	c.Ops = append(c.Ops, Op{Kind: OpAddHeader, Name: name, Value: value})
	c.msg.Headers = append(c.msg.Headers, Header{Name: name, Value: value})
}

// InsertHeader inserts a header before the index-th header of the view (0 = top).
func (c *Changes) InsertHeader(index int, name, value string) {
	if index < 0 {
		index = 0
	}
	if index > len(c.msg.Headers) {
		index = len(c.msg.Headers)
	}
	c.Ops = append(c.Ops, Op{Kind: OpInsertHeader, Name: name, Value: value, Index: index})
	hs := append(c.msg.Headers, Header{})
	copy(hs[index+1:], hs[index:])
	hs[index] = Header{Name: name, Value: value}
	c.msg.Headers = hs
}

// ChangeHeader replaces the value of the nth (1-based) header named name.
// It reports false, recording nothing, if there is no such header.
func (c *Changes) ChangeHeader(name string, nth int, value string) bool {
	i := c.occurrence(name, nth)
	if i < 0 {
		return false
	}
	if value == "" {
		return c.DeleteHeader(name, nth)
	}
	c.Ops = append(c.Ops, Op{Kind: OpChangeHeader, Name: name, Value: value, Index: nth})
	c.msg.Headers[i].Value = value
	return true
}

// DeleteHeader removes the nth (1-based) header named name. Indexes always
// refer to the current view, so deleting occurrence 1 twice removes the first two.
func (c *Changes) DeleteHeader(name string, nth int) bool {
	i := c.occurrence(name, nth)
	if i < 0 {
		return false
	}
	c.Ops = append(c.Ops, Op{Kind: OpChangeHeader, Name: name, Value: "", Index: nth})
	c.msg.Headers = append(c.msg.Headers[:i], c.msg.Headers[i+1:]...)
	return true
}

// ChangeFrom replaces the envelope sender.
func (c *Changes) ChangeFrom(addr, esmtpArgs string) {
	c.Ops = append(c.Ops, Op{Kind: OpChangeFrom, Value: addr, Args: esmtpArgs})
	c.msg.MailFrom = addr
}

// Quarantine asks the MTA to hold the message.
func (c *Changes) Quarantine(reason string) {
	c.Ops = append(c.Ops, Op{Kind: OpQuarantine, Value: reason})
}

// Refuse sets a Reject or Tempfail verdict with its SMTP reply.
func (c *Changes) Refuse(v Verdict, code, ext, text string) {
	c.Verdict, c.Code, c.Ext, c.Text = v, code, ext, text
}

// A Meter counts what filters do, for the daemon's metrics: event names a
// counter (EventDKIMSigned, EventDKIMVerified, EventSpamVerdict) and value
// its label, from a small fixed set (a DKIM result, a spam verdict). It
// must be safe for concurrent use. Filters call it through Count, which
// takes a nil Meter.
type Meter interface {
	Count(event, value string)
}

// Events a filter counts with a Meter.
const (
	EventDKIMSigned   = "dkim_signed"   // one DKIM-Signature made; value: the d= domain
	EventDKIMVerified = "dkim_verified" // one signature verified; value: its result (pass, fail, permerror…), none for a message without
	EventSpamVerdict  = "spam_verdict"  // one message scored; value: ham, spam, reject or error
)

// Count counts one event on m; a nil m counts nothing.
func Count(m Meter, event, value string) {
	if m != nil {
		m.Count(event, value)
	}
}
