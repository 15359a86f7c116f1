// Package dkimverify is the milter chain's DKIM verifier (RFC 6376 section 6)
// for inbound mail: it checks every DKIM-Signature with go-msgauth and
// records the outcome in an Authentication-Results header field (RFC 8601,
// with the header.s/header.a/header.b properties of RFC 6008 and RFC 8601
// section 2.7.1). It never rejects: what to do with a failure is left to
// DMARC, spam scoring and Sieve.
package dkimverify

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
	"time"

	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dkim"
	"github.com/postkit/postkit/milter/filter"
	"github.com/postkit/postkit/milter/header"
)

// Resolver is the DNS lookup the verifier needs; internal/dnsclient's
// Resolver satisfies it. A *net.DNSError with IsNotFound is a missing key
// (permerror); any other error is a temporary failure (temperror).
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
}

// Defaults for Config.
const (
	DefaultLookupTimeout  = 10 * time.Second
	DefaultMaxSignatures  = 8
	DefaultMessageTimeout = 15 * time.Minute
)

// Config configures a Verifier.
type Config struct {
	Resolver Resolver // required
	// AuthservID names this host in Authentication-Results (RFC 8601
	// section 2.5). Default: the host name.
	AuthservID string
	// LookupTimeout bounds one key lookup. Default: DefaultLookupTimeout.
	LookupTimeout time.Duration
	// MaxSignatures is how many signatures of a message are checked; the rest
	// are ignored (RFC 6376 section 6.1 lets verifiers limit the work).
	// Default: DefaultMaxSignatures.
	MaxSignatures int
	// MessageTimeout abandons a message whose end never comes (a dropped
	// connection) so its verification does not linger. Default:
	// DefaultMessageTimeout, above Postfix's milter_content_timeout.
	MessageTimeout time.Duration
	// BodyLength is what a signature with l= is worth. Default:
	// BodyLengthPass, as OpenDKIM and dkimpy.
	BodyLength BodyLength
	// Sealed reports whether an Authentication-Results field with our
	// authserv-id was added by our policy daemon for m (its SPF result,
	// sealed: internal/seal); such a field is kept. Nil: none is.
	Sealed func(m *filter.Message, name, value string) bool
	Logger *slog.Logger
	// Meter counts each signature's result (filter.EventDKIMVerified); nil counts none.
	Meter filter.Meter
}

// Verifier is the "dkimverify" filter. It is safe for concurrent use.
type Verifier struct {
	res        Resolver
	id         string
	timeout    time.Duration
	maxSigs    int
	msgTimeout time.Duration
	bodyLength BodyLength
	sealed     func(m *filter.Message, name, value string) bool
	log        *slog.Logger
	meter      filter.Meter
}

// New checks cfg and returns the filter.
func New(cfg Config) (*Verifier, error) {
	if cfg.Resolver == nil {
		return nil, errors.New("dkimverify: no resolver configured")
	}
	v := &Verifier{res: cfg.Resolver, id: cfg.AuthservID, timeout: cfg.LookupTimeout,
		maxSigs: cfg.MaxSignatures, msgTimeout: cfg.MessageTimeout, bodyLength: cfg.BodyLength, sealed: cfg.Sealed, log: cfg.Logger, meter: cfg.Meter}
	if v.bodyLength < BodyLengthPass || v.bodyLength > BodyLengthPolicy {
		return nil, fmt.Errorf("dkimverify: BodyLength %d: want BodyLengthPass, BodyLengthComplete or BodyLengthPolicy", v.bodyLength)
	}
	if v.id == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return nil, fmt.Errorf("dkimverify: no authserv-id configured and no host name (%v): set one", err)
		}
		v.id = h
	}
	if strings.ContainsAny(v.id, " \t\r\n;()\"") {
		return nil, fmt.Errorf("dkimverify: authserv-id %q must be a single token such as mail.example.org", v.id)
	}
	if v.timeout <= 0 {
		v.timeout = DefaultLookupTimeout
	}
	if v.maxSigs <= 0 {
		v.maxSigs = DefaultMaxSignatures
	}
	if v.msgTimeout <= 0 {
		v.msgTimeout = DefaultMessageTimeout
	}
	if v.log == nil {
		v.log = slog.Default()
	}
	return v, nil
}

// Name implements filter.Filter.
func (v *Verifier) Name() string { return "dkimverify" }

// Needs declares that verification reads only the message and
// Message.Outbound, and the HELO name when seals are checked (Config.Sealed).
func (v *Verifier) Needs() filter.Needs { return filter.Needs{Helo: v.sealed != nil} }

// AuthservID returns the authserv-id used in Authentication-Results.
func (v *Verifier) AuthservID() string { return v.id }

// Result is the outcome for one signature.
type Result struct {
	Value     authres.ResultValue // pass, fail, neutral, policy, temperror, permerror
	Reason    string              // why it did not pass
	Domain    string              // d=
	Selector  string              // s=
	Algorithm string              // a=
	B         string              // the first 8 characters of b= (RFC 6008 section 4)
	Identity  string              // i=, or "@" d= when absent
}

// Headers implements filter.Filter: it deletes Authentication-Results fields
// forged with our authserv-id and starts verifying the message's signatures.
func (v *Verifier) Headers(m *filter.Message, c *filter.Changes) (filter.Body, error) {
	if m.Outbound {
		return nil, nil
	}
	hs := append([]filter.Header(nil), m.Headers...) // as received, for verification
	// RFC 8601 section 5: a field claiming our authserv-id that arrives from
	// outside is a forgery; delete it. Occurrence indexes refer to the
	// current view, so a deleted occurrence is not counted.
	nth := 1
	for _, h := range hs {
		if !strings.EqualFold(h.Name, "Authentication-Results") {
			continue
		}
		if strings.EqualFold(header.ServID(h.Value), v.id) && (v.sealed == nil || !v.sealed(m, h.Name, h.Value)) {
			c.DeleteHeader("Authentication-Results", nth)
			v.log.Info("dkimverify: deleted forged Authentication-Results", "queue_id", m.QueueID, "value", h.Value)
			continue
		}
		nth++
	}
	s := v.start(context.Background(), hs)
	return &body{v: v, s: s}, nil
}

// body streams one message into its verification.
type body struct {
	v *Verifier
	s *session
}

func (b *body) Write(chunk []byte) error {
	b.s.write(chunk)
	return nil
}

func (b *body) End(m *filter.Message, c *filter.Changes) error {
	results := b.s.finish(b.v)
	c.InsertHeader(0, "Authentication-Results", Format(b.v.id, results))
	args := []any{"queue_id", m.QueueID}
	if len(results) == 0 {
		filter.Count(b.v.meter, filter.EventDKIMVerified, "none")
	}
	for _, r := range results {
		filter.Count(b.v.meter, filter.EventDKIMVerified, string(r.Value))
		args = append(args, "dkim", string(r.Value)+" d="+r.Domain+" s="+r.Selector)
		if r.Reason != "" {
			args = append(args, "reason", r.Reason)
		}
	}
	b.v.log.Info("dkimverify: verified", args...)
	return nil
}

// Abort ends the verification of a message that will not be completed (the
// client went away); the daemon calls it when it has it (filter.Aborter).
func (b *body) Abort() { b.s.abort() }

// session is the verification of one message: go-msgauth reads the message
// through a filter.Stream while the chain writes the body chunk by chunk.
type session struct {
	hs      []filter.Header
	sigs    []sigTags
	lsigs   []*lengthSig   // signatures with l= that postkit verifies itself
	perSig  bool           // results has one entry per signature checked
	stream  *filter.Stream // nil without signatures
	results []Result       // set by the stream's consumer, read after Close
}

// start begins the verification of a message with headers hs.
func (v *Verifier) start(ctx context.Context, hs []filter.Header) *session {
	s := &session{hs: hs}
	for _, h := range hs {
		if strings.EqualFold(h.Name, "DKIM-Signature") {
			t := parseTags(h.Value)
			t.malformed = malformed(h.Value)
			if t.l && t.malformed == "" && v.bodyLength != BodyLengthPolicy && len(s.sigs) < v.maxSigs {
				s.lsigs = append(s.lsigs, newLengthSig(len(s.sigs), h))
			}
			s.sigs = append(s.sigs, t)
		}
	}
	if len(s.sigs) == 0 {
		return s // RFC 8601 section 2.7.1: dkim=none
	}
	s.stream = filter.NewStream(ctx, v.msgTimeout, func(ctx context.Context, r io.Reader) {
		vs, err := dkim.VerifyWithOptions(r, &dkim.VerifyOptions{
			LookupTXT:        v.lookup(ctx),
			MaxVerifications: v.maxSigs,
		})
		s.results = v.results(s.sigs, vs, err)
		s.perSig = err == nil || errors.Is(err, dkim.ErrTooManySignatures)
	})
	// The header block as the MTA has it, then the separator line.
	var hb strings.Builder
	for _, h := range hs {
		hb.WriteString(h.Name)
		hb.WriteString(": ")
		hb.WriteString(h.Value)
		hb.WriteString("\r\n")
	}
	hb.WriteString("\r\n")
	s.stream.Write([]byte(hb.String()))
	return s
}

// write takes a chunk of the body.
func (s *session) write(p []byte) {
	if s.stream != nil {
		s.stream.Write(p)
	}
	for _, ls := range s.lsigs {
		ls.canon.Write(p)
	}
}

// finish ends the body and waits for the results; signatures with l= are
// checked here, with v's resolver.
func (s *session) finish(v *Verifier) []Result {
	if s.stream == nil {
		return []Result{{Value: authres.ResultNone}}
	}
	if !s.stream.Close() {
		return []Result{{Value: authres.ResultTempError, Reason: "message not received in time"}}
	}
	for _, ls := range s.lsigs {
		if !s.perSig || ls.index >= len(s.results) {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), v.timeout)
		r := ls.verify(ctx, v, s.hs, v.bodyLength)
		cancel()
		old := s.results[ls.index]
		r.Domain, r.Selector, r.Algorithm, r.B, r.Identity = old.Domain, old.Selector, old.Algorithm, old.B, old.Identity
		s.results[ls.index] = r
	}
	return s.results
}

// abort stops a verification whose message will not be completed.
func (s *session) abort() {
	if s.stream != nil {
		s.stream.Abort()
	}
}

// lookup adapts the Resolver to go-msgauth, which tells a temporary failure
// by a net.Error whose Temporary() is true (RFC 6376 section 6.1.2: a key
// query that fails temporarily is TEMPFAIL, a missing key PERMFAIL).
func (v *Verifier) lookup(ctx context.Context) func(string) ([]string, error) {
	return func(name string) ([]string, error) {
		lctx, cancel := context.WithTimeout(ctx, v.timeout)
		defer cancel()
		txts, err := v.res.LookupTXT(lctx, name)
		if err == nil {
			return txts, nil
		}
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return nil, fmt.Errorf("%s: no key record", name) // permanent
		}
		return nil, &net.DNSError{Err: err.Error(), Name: name, IsTemporary: true}
	}
}

// sigTags are the tags of a DKIM-Signature needed for the report.
type sigTags struct {
	d, s, a, b, i string
	l             bool   // has a body length count
	malformed     string // why the signature does not parse, or ""
}

// parseTags reads the tag=value list of a DKIM-Signature (RFC 6376 section
// 3.2) leniently: a malformed signature still gets a line in the report.
func parseTags(value string) sigTags {
	var t sigTags
	for _, tag := range strings.Split(value, ";") {
		name, val, ok := strings.Cut(tag, "=")
		if !ok {
			continue
		}
		val = strings.Join(strings.Fields(val), "")
		switch strings.TrimSpace(name) {
		case "d":
			t.d = val
		case "s":
			t.s = val
		case "a":
			t.a = val
		case "i":
			t.i = val
		case "l":
			t.l = true
		case "b":
			t.b = val
			if len(t.b) > 8 {
				t.b = t.b[:8]
			}
		}
	}
	return t
}

// results maps go-msgauth's verifications to report lines, in signature
// order (go-msgauth keeps it).
func (v *Verifier) results(sigs []sigTags, vs []*dkim.Verification, err error) []Result {
	if err != nil && !errors.Is(err, dkim.ErrTooManySignatures) {
		return []Result{{Value: authres.ResultPermError, Reason: reason(err)}}
	}
	out := make([]Result, 0, len(vs))
	for i, ver := range vs {
		r := Result{Value: authres.ResultPass}
		if i < len(sigs) {
			t := sigs[i]
			r.Domain, r.Selector, r.Algorithm, r.B, r.Identity = t.d, t.s, t.a, t.b, t.i
		}
		if ver.Domain != "" {
			r.Domain = ver.Domain
		}
		if ver.Identifier != "" {
			r.Identity = ver.Identifier
		}
		if i < len(sigs) && sigs[i].malformed != "" {
			// RFC 6376 section 6.1.1: PERMFAIL, whatever else is wrong.
			r.Value, r.Reason = authres.ResultPermError, "malformed signature: "+sigs[i].malformed
		} else if e := ver.Err; e != nil {
			r.Reason = reason(e)
			switch {
			case dkim.IsTempFail(e):
				r.Value = authres.ResultTempError
			case dkim.IsPermFail(e):
				// RFC 6376 section 6.1: a signature that cannot be
				// evaluated (syntax, missing or revoked key) is PERMFAIL.
				r.Value = authres.ResultPermError
			case strings.Contains(e.Error(), "body length"):
				// l= refused by local policy (BodyLengthPolicy); the
				// other settings replace this result in finish.
				r.Value = authres.ResultPolicy
			default:
				r.Value = authres.ResultFail
			}
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return []Result{{Value: authres.ResultNone}}
	}
	return out
}

func reason(err error) string {
	return strings.TrimPrefix(err.Error(), "dkim: ")
}

// Format builds the Authentication-Results value: the authserv-id, then one
// dkim= result per signature, folded one per line (RFC 8601 section 2.2).
func Format(authservID string, results []Result) string {
	var b strings.Builder
	b.WriteString(authservID)
	if len(results) == 0 {
		results = []Result{{Value: authres.ResultNone}}
	}
	for _, r := range results {
		params := map[string]string{}
		if r.Value != authres.ResultNone {
			params["header.d"] = r.Domain
			params["header.i"] = r.Identity
			params["header.s"] = r.Selector
			params["header.a"] = r.Algorithm
			params["header.b"] = r.B
			if r.Value != authres.ResultPass {
				params["reason"] = r.Reason
			}
		}
		f := authres.Format("x", []authres.Result{&authres.GenericResult{Method: "dkim", Value: r.Value, Params: params}})
		b.WriteString(";\r\n\t")
		b.WriteString(strings.TrimSpace(strings.TrimPrefix(f, "x; ")))
	}
	return b.String()
}

// VerifyMessage verifies a whole message read from r, outside the milter
// chain (`postkit dkim verify`, tests).
func (v *Verifier) VerifyMessage(ctx context.Context, r io.Reader) ([]Result, error) {
	br := bufio.NewReader(r)
	hs, err := header.Read(br)
	if err != nil {
		return nil, fmt.Errorf("dkimverify: %w", err)
	}
	s := v.start(ctx, hs)
	buf := make([]byte, 64<<10)
	for {
		n, err := br.Read(buf)
		s.write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			s.abort()
			return nil, fmt.Errorf("dkimverify: reading message: %w", err)
		}
	}
	return s.finish(v), nil
}

var _ filter.Declarer = (*Verifier)(nil)
