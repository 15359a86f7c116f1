// Package content takes a message apart for spam scoring: its header fields
// (RFC 5322 §2.2, unfolded, RFC 2047 words decoded on request), the decoded
// text of its MIME parts (RFC 2045 transfer encodings, RFC 2046 multipart,
// charsets converted to UTF-8), HTML rendered to text, and the URIs it links
// to. The rules engine and the Bayes tokenizer both read a Message.
//
// Parsing never fails: mail is what it is, and a malformed message is scored,
// not refused. What could not be read is noted in Message.Faults (rules can
// score it) and the text read so far is kept. Every loop is bounded (parts,
// nesting, text kept, header size) and the context is checked between parts,
// so that a hostile message costs at most the caller's time budget.
//
// The MIME structure is read with github.com/emersion/go-message; only the
// top-level header is split here, leniently, because spam often carries header
// lines that a strict parser refuses and its header still has to be scored.
package content

import (
	"bytes"
	"context"
	"errors"
	"io"
	"mime"
	"net/mail"
	"strings"

	"github.com/emersion/go-message"
	_ "github.com/emersion/go-message/charset" // charsets beyond UTF-8 and US-ASCII
	"github.com/emersion/go-message/textproto"
)

// Limits bound the work Parse does on one message. Zero fields take the
// defaults.
type Limits struct {
	// MaxText bounds the decoded text kept (Text and RawText each).
	// Default 256 KiB.
	MaxText int
	// MaxParts bounds the MIME parts read. Default 100.
	MaxParts int
	// MaxDepth bounds multipart nesting. Default 16.
	MaxDepth int
	// MaxHeader bounds the top-level header block. Default 256 KiB.
	MaxHeader int
	// MaxURIs bounds the URIs kept. Default 200.
	MaxURIs int
}

func (l Limits) withDefaults() Limits {
	if l.MaxText <= 0 {
		l.MaxText = 256 << 10
	}
	if l.MaxParts <= 0 {
		l.MaxParts = 100
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = 16
	}
	if l.MaxHeader <= 0 {
		l.MaxHeader = 256 << 10
	}
	if l.MaxURIs <= 0 {
		l.MaxURIs = 200
	}
	return l
}

// Field is one header field as received: Name as written, Value unfolded
// (line breaks and the white space after them replaced by one space) and
// trimmed, RFC 2047 encoded words left as they are.
type Field struct {
	Name, Value string
}

// Part describes one leaf MIME part.
type Part struct {
	Type        string // media type, lower case, e.g. text/plain
	Charset     string // lower case; "" when not given
	Encoding    string // Content-Transfer-Encoding, lower case
	Filename    string
	Disposition string // inline, attachment or ""
	Size        int    // decoded bytes read (bounded)
	Depth       int    // 0 for a single-part message
}

// HTMLStats sums what the HTML parts contained.
type HTMLStats struct {
	Parts     int // HTML parts
	Tags      int // start tags
	Images    int // img tags
	TextBytes int // rendered text
	// Tokens are tag and attribute features for the Bayes tokenizer, e.g.
	// "font", "font:color", "img"; at most a few hundred.
	Tokens []string
}

// Fault kinds noted in Message.Faults.
const (
	FaultHeader    = "header"    // a header line without a colon, or a header too large
	FaultBoundary  = "boundary"  // multipart without a usable boundary or end
	FaultEncoding  = "encoding"  // unknown or undecodable transfer encoding (bad base64)
	FaultCharset   = "charset"   // unknown charset
	FaultPartLimit = "parts"     // more parts than MaxParts
	FaultDepth     = "depth"     // nesting deeper than MaxDepth
	FaultPartHead  = "part-head" // a part header that could not be read
)

// Message is a parsed message.
type Message struct {
	Header []Field
	// RawBody is the body as received (transfer encoding not decoded).
	RawBody []byte
	// Text is the readable text: text/plain parts, and HTML parts rendered
	// to text, separated by blank lines. Bounded by Limits.MaxText.
	Text string
	// RawText is the decoded text parts with HTML markup kept. Bounded by
	// Limits.MaxText.
	RawText string
	// URIs are the links found in text and HTML, in order, without
	// duplicates.
	URIs  []string
	Parts []Part
	HTML  HTMLStats
	// Faults are the kinds of damage found, without duplicates.
	Faults []string
	// Truncated reports that a limit cut the text or the parts short.
	Truncated bool
	// Partial reports that the context ended before the whole message was
	// read.
	Partial bool

	lim     Limits
	uriSeen map[string]bool
}

// Get returns the value of the first field called name (case-insensitive),
// undecoded, or "".
func (m *Message) Get(name string) string {
	for _, f := range m.Header {
		if strings.EqualFold(f.Name, name) {
			return f.Value
		}
	}
	return ""
}

// Has reports whether the header has a field called name.
func (m *Message) Has(name string) bool {
	for _, f := range m.Header {
		if strings.EqualFold(f.Name, name) {
			return true
		}
	}
	return false
}

// Values returns the values of every field called name, in order.
func (m *Message) Values(name string) []string {
	var out []string
	for _, f := range m.Header {
		if strings.EqualFold(f.Name, name) {
			out = append(out, f.Value)
		}
	}
	return out
}

var wordDecoder = mime.WordDecoder{CharsetReader: func(cs string, r io.Reader) (io.Reader, error) {
	if message.CharsetReader == nil {
		return nil, errors.New("no charset reader")
	}
	return message.CharsetReader(strings.ToLower(cs), r)
}}

// Decode returns s with its RFC 2047 encoded words decoded; words that do
// not decode are left as they are.
func Decode(s string) string {
	if !strings.Contains(s, "=?") {
		return s
	}
	d, err := wordDecoder.DecodeHeader(s)
	if err != nil {
		return s
	}
	return d
}

// Decoded returns the values of every field called name, RFC 2047 decoded,
// joined by newlines.
func (m *Message) Decoded(name string) string {
	vs := m.Values(name)
	for i, v := range vs {
		vs[i] = Decode(v)
	}
	return strings.Join(vs, "\n")
}

// Address is one address of an address field.
type Address struct {
	Name, Addr string // Addr is local@domain, lower-cased domain; "" when unparsable
}

// Addresses parses the address fields called name (From, To, Cc…). An
// unparsable field yields what a lenient scan finds.
func (m *Message) Addresses(name string) []Address {
	var out []Address
	for _, v := range m.Values(name) {
		list, err := (&mail.AddressParser{WordDecoder: &wordDecoder}).ParseList(v)
		if err == nil {
			for _, a := range list {
				out = append(out, Address{Name: a.Name, Addr: lowerDomain(a.Address)})
			}
			continue
		}
		for _, a := range scanAddrs(v) {
			out = append(out, Address{Name: Decode(strings.TrimSpace(strings.Trim(strings.SplitN(v, "<", 2)[0], `" `))), Addr: lowerDomain(a)})
		}
		if len(out) == 0 {
			out = append(out, Address{Name: Decode(v)})
		}
	}
	return out
}

func lowerDomain(a string) string {
	i := strings.LastIndexByte(a, '@')
	if i < 0 {
		return a
	}
	return a[:i] + "@" + strings.ToLower(a[i+1:])
}

// scanAddrs finds local@domain strings in s.
func scanAddrs(s string) []string {
	var out []string
	for i := 0; i < len(s); i++ {
		if s[i] != '@' {
			continue
		}
		a, b := i, i+1
		for a > 0 && isAddrByte(s[a-1]) {
			a--
		}
		for b < len(s) && (isAddrByte(s[b]) && s[b] != '@') {
			b++
		}
		if a < i && b > i+1 {
			out = append(out, strings.Trim(s[a:b], "."))
		}
		i = b - 1
	}
	return out
}

func isAddrByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		strings.IndexByte(".-_+=!#$%&'*/?^`{|}~", c) >= 0
}

// Domain returns the domain of an address, lower case, or "".
func Domain(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	return strings.ToLower(strings.TrimSuffix(addr[i+1:], "."))
}

func (m *Message) fault(kind string) {
	for _, f := range m.Faults {
		if f == kind {
			return
		}
	}
	m.Faults = append(m.Faults, kind)
}

// HasFault reports whether a fault of the kind was noted.
func (m *Message) HasFault(kind string) bool {
	for _, f := range m.Faults {
		if f == kind {
			return true
		}
	}
	return false
}

// Parse takes raw apart (CRLF or LF line endings; a leading mbox "From "
// line is skipped). It always returns a message; ctx ending stops the
// reading of further parts and sets Partial.
func Parse(ctx context.Context, raw []byte, lim Limits) *Message {
	lim = lim.withDefaults()
	m := &Message{lim: lim, uriSeen: map[string]bool{}}
	if bytes.HasPrefix(raw, []byte("From ")) {
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			raw = raw[i+1:]
		} else {
			raw = nil
		}
	}
	head, body := splitHeader(raw)
	if len(head) > lim.MaxHeader {
		m.fault(FaultHeader)
		m.Truncated = true
		head = head[:lim.MaxHeader]
	}
	m.Header = parseFields(head, m)
	m.RawBody = body

	var h textproto.Header
	for i := len(m.Header) - 1; i >= 0; i-- {
		f := m.Header[i]
		switch strings.ToLower(f.Name) {
		case "content-type", "content-transfer-encoding", "content-disposition":
			h.Add(f.Name, f.Value)
		}
	}
	w := &walker{ctx: ctx, m: m, text: &boundedBuilder{max: lim.MaxText}, raw: &boundedBuilder{max: lim.MaxText}}
	w.entity(message.Header{Header: h}, bytes.NewReader(body), 0)
	m.Text = w.text.String()
	m.RawText = w.raw.String()
	if w.text.cut || w.raw.cut {
		m.Truncated = true
	}
	for _, u := range findURIs(m.Text) {
		m.addURI(u)
	}
	m.uriSeen = nil
	return m
}

// splitHeader splits raw at the first empty line.
func splitHeader(raw []byte) (head, body []byte) {
	if len(raw) > 0 && (raw[0] == '\n' || bytes.HasPrefix(raw, []byte("\r\n"))) {
		return nil, raw[bytes.IndexByte(raw, '\n')+1:]
	}
	i := bytes.Index(raw, []byte("\n\r\n"))
	j := bytes.Index(raw, []byte("\n\n"))
	switch {
	case i < 0 && j < 0:
		return raw, nil
	case i >= 0 && (j < 0 || i < j):
		return raw[:i+1], raw[i+3:]
	default:
		return raw[:j+1], raw[j+2:]
	}
}

// parseFields unfolds and splits the header block. A line that is neither a
// field nor a continuation is noted as a fault and skipped.
func parseFields(head []byte, m *Message) []Field {
	var out []Field
	lines := strings.Split(string(head), "\n")
	for _, l := range lines {
		l = strings.TrimRight(l, "\r")
		if l == "" {
			continue
		}
		if l[0] == ' ' || l[0] == '\t' {
			if len(out) == 0 {
				m.fault(FaultHeader)
				continue
			}
			last := &out[len(out)-1]
			last.Value = strings.TrimSpace(last.Value + " " + strings.TrimSpace(l))
			continue
		}
		name, value, ok := strings.Cut(l, ":")
		name = strings.TrimRight(name, " \t")
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			m.fault(FaultHeader)
			continue
		}
		out = append(out, Field{Name: name, Value: strings.TrimSpace(value)})
	}
	return out
}

type walker struct {
	ctx   context.Context
	m     *Message
	text  *boundedBuilder
	raw   *boundedBuilder
	parts int
}

// entity reads one entity: a multipart's parts in turn, or a leaf's text.
func (w *walker) entity(h message.Header, body io.Reader, depth int) {
	m := w.m
	if w.ctx.Err() != nil {
		m.Partial = true
		return
	}
	e, err := decodeEntity(h, body)
	if err != nil {
		if message.IsUnknownCharset(err) {
			m.fault(FaultCharset)
		} else {
			m.fault(FaultEncoding)
		}
	}
	if e == nil {
		return
	}
	mediaType, params, _ := h.ContentType()
	mediaType = strings.ToLower(mediaType)
	if mediaType == "" {
		mediaType = "text/plain"
	}
	if strings.HasPrefix(mediaType, "multipart/") {
		if params["boundary"] == "" {
			m.fault(FaultBoundary)
			w.leaf(h, "text/plain", params, e.Body, depth)
			return
		}
		if depth >= m.lim.MaxDepth {
			m.fault(FaultDepth)
			m.Truncated = true
			return
		}
		mr := textproto.NewMultipartReader(e.Body, params["boundary"])
		seen := 0
		for {
			if w.ctx.Err() != nil {
				m.Partial = true
				return
			}
			if w.parts >= m.lim.MaxParts {
				m.fault(FaultPartLimit)
				m.Truncated = true
				return
			}
			rp, err := mr.NextPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				// A part header that does not parse, or a body that
				// ends before its closing boundary.
				if seen == 0 {
					m.fault(FaultBoundary)
				} else {
					m.fault(FaultPartHead)
				}
				return
			}
			seen++
			w.parts++
			ph := message.Header{Header: rp.Header}
			ptype, pparams, _ := ph.ContentType()
			ptype = strings.ToLower(ptype)
			if strings.HasPrefix(ptype, "multipart/") {
				w.entity(ph, rp, depth+1)
				continue
			}
			if ptype == "" {
				ptype = "text/plain"
				if mediaType == "multipart/digest" {
					ptype = "message/rfc822"
				}
			}
			p, err := decodeEntity(ph, rp)
			if err != nil {
				if message.IsUnknownCharset(err) {
					m.fault(FaultCharset)
				} else if message.IsUnknownEncoding(err) {
					m.fault(FaultEncoding)
				}
			}
			w.leaf(ph, ptype, pparams, p.Body, depth+1)
		}
		if seen == 0 {
			m.fault(FaultBoundary)
		}
		return
	}
	if w.parts == 0 {
		w.parts++
	}
	w.leaf(h, mediaType, params, e.Body, depth)
}

// leaf reads one leaf part's decoded body.
func (w *walker) leaf(h message.Header, mediaType string, params map[string]string, body io.Reader, depth int) {
	m := w.m
	disp, dparams, _ := h.ContentDisposition()
	p := Part{
		Type:        mediaType,
		Charset:     strings.ToLower(params["charset"]),
		Encoding:    strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding"))),
		Disposition: strings.ToLower(disp),
		Depth:       depth,
	}
	p.Filename = dparams["filename"]
	if p.Filename == "" {
		p.Filename = params["name"]
	}
	isText := strings.HasPrefix(mediaType, "text/") && p.Disposition != "attachment"
	isMsg := mediaType == "message/rfc822"
	// Read at most what can be kept, plus a little to see the end; the rest
	// of the part is skipped by the multipart reader.
	limit := int64(m.lim.MaxText) + 1
	if !isText && !isMsg {
		limit = 64 << 10 // enough to find bad encodings, not to keep
	}
	data, err := io.ReadAll(io.LimitReader(body, limit))
	if err != nil {
		m.fault(FaultEncoding)
	}
	if int64(len(data)) == limit {
		m.Truncated = true
	}
	p.Size = len(data)
	m.Parts = append(m.Parts, p)
	switch {
	case isMsg:
		// An attached message: its text counts as text (spam forwarded
		// as an attachment is still spam), its header fields do not.
		if depth < m.lim.MaxDepth {
			hd, bd := splitHeader(data)
			var inner textproto.Header
			for _, f := range parseFields(hd, &Message{}) {
				switch strings.ToLower(f.Name) {
				case "content-type", "content-transfer-encoding", "content-disposition":
					inner.Add(f.Name, f.Value)
				}
			}
			w.entity(message.Header{Header: inner}, bytes.NewReader(bd), depth+1)
		}
	case isText && (mediaType == "text/html" || looksHTML(data)):
		s := textString(p, data, true)
		w.raw.add(s)
		rendered := w.renderHTML(s)
		w.text.add(rendered)
	case isText:
		s := textString(p, data, false)
		w.raw.add(s)
		w.text.add(s)
	}
}

// looksHTML catches text/plain parts that are HTML all the same, as many
// bulk mailers send them.
func looksHTML(b []byte) bool {
	n := len(b)
	if n > 2048 {
		n = 2048
	}
	head := bytes.ToLower(b[:n])
	return bytes.Contains(head, []byte("<html")) || bytes.Contains(head, []byte("<body")) ||
		(bytes.Contains(head, []byte("<p>")) && bytes.Contains(head, []byte("<a href")))
}

func toValidUTF8(b []byte) string {
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

func (m *Message) addURI(u string) {
	if len(m.URIs) >= m.lim.MaxURIs {
		return
	}
	if m.uriSeen[u] {
		return
	}
	m.uriSeen[u] = true
	m.URIs = append(m.URIs, u)
}

// boundedBuilder keeps at most max bytes of text, parts separated by blank
// lines.
type boundedBuilder struct {
	b   strings.Builder
	max int
	cut bool
}

func (b *boundedBuilder) add(s string) {
	if s == "" {
		return
	}
	if b.b.Len() > 0 {
		s = "\n\n" + s
	}
	room := b.max - b.b.Len()
	if room <= 0 {
		b.cut = true
		return
	}
	if len(s) > room {
		s = strings.ToValidUTF8(s[:room], "")
		b.cut = true
	}
	b.b.WriteString(s)
}

func (b *boundedBuilder) String() string { return b.b.String() }
