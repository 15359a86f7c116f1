package dmarc

import (
	"context"
	"errors"
	"net"
	"strings"

	"golang.org/x/net/publicsuffix"
)

// Resolver is the DNS the evaluation needs; internal/dnsclient's Resolver
// satisfies it. Not-found answers (NXDOMAIN, no data) must be *net.DNSError
// with IsNotFound; any other error is temporary.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

// Result is a DMARC result as Authentication-Results spells it (RFC 7489
// section 11.2).
type Result string

// The results of section 11.2.
const (
	ResultPass      Result = "pass"
	ResultFail      Result = "fail"
	ResultNone      Result = "none"
	ResultTempError Result = "temperror"
	ResultPermError Result = "permerror"
)

// Input is what one evaluation is made of: the RFC5322.From domain and the
// results of SPF and DKIM of the same pass.
type Input struct {
	FromDomain string
	// SPFDomain is the domain SPF evaluated: the MAIL FROM domain, or the
	// HELO name for a null sender (section 3.1.2, RFC 7208 section 2.4).
	SPFDomain string
	SPFResult string // RFC 7208 section 2.6 word: pass, fail, …
	// DKIM are the signatures verified in this pass.
	DKIM []DKIMResult
}

// DKIMResult is one DKIM signature's outcome.
type DKIMResult struct {
	Domain   string // d=
	Selector string
	Result   string // pass, fail, …
}

// Evaluation is the outcome.
type Evaluation struct {
	Result Result
	// Domain is the From domain; PolicyDomain where the record was found
	// (the From domain or its organizational domain); OrgDomain the From
	// domain's organizational domain.
	Domain, PolicyDomain, OrgDomain string
	Record                          *Record // nil without a usable record
	// Policy is the policy that applies to the From domain (p=, sp= or np=);
	// "" without a record.
	Policy Policy
	// SPFAligned and DKIMAligned say which identifier passed aligned
	// (section 3.1); DKIMDomain is the aligned signing domain, or the
	// first passing one when none aligns.
	SPFAligned, DKIMAligned bool
	// Problem says what went wrong for temperror and permerror.
	Problem string
}

// OrgDomain returns the organizational domain of d (RFC 7489 section 3.2):
// the public suffix of d under the Public Suffix List plus one label, or d
// itself when d is a public suffix or shorter.
func OrgDomain(d string) string {
	d = canon(d)
	od, err := publicsuffix.EffectiveTLDPlusOne(d)
	if err != nil || od == "" {
		return d
	}
	return od
}

func canon(d string) string { return strings.ToLower(strings.TrimSuffix(strings.TrimSpace(d), ".")) }

// aligned reports whether a and from are aligned in mode 's' (strict:
// identical) or 'r' (relaxed: same organizational domain), section 3.1.
func aligned(a, from string, mode byte) bool {
	a, from = canon(a), canon(from)
	if a == "" || from == "" {
		return false
	}
	if a == from {
		return true
	}
	return mode != 's' && OrgDomain(a) == OrgDomain(from)
}

// Evaluate runs DMARC for in (RFC 7489 section 6.6): policy discovery at the
// From domain then at its organizational domain, identifier alignment of
// SPF and DKIM, and the policy that applies.
func Evaluate(ctx context.Context, res Resolver, in Input) Evaluation {
	e := Evaluation{Domain: canon(in.FromDomain)}
	e.OrgDomain = OrgDomain(e.Domain)
	rec, where, err := discover(ctx, res, e.Domain, e.OrgDomain)
	e.PolicyDomain = where
	switch {
	case errors.Is(err, errTemp):
		e.Result, e.Problem = ResultTempError, err.Error()
		return e
	case err != nil:
		e.Result, e.Problem = ResultPermError, err.Error()
		return e
	case rec == nil:
		e.Result = ResultNone
		return e
	}
	e.Record = rec
	if in.SPFResult == "pass" && aligned(in.SPFDomain, e.Domain, rec.ASPF) {
		e.SPFAligned = true
	}
	for _, d := range in.DKIM {
		if d.Result == "pass" && aligned(d.Domain, e.Domain, rec.ADKIM) {
			e.DKIMAligned = true
			break
		}
	}
	e.Policy = rec.P
	if where != e.Domain {
		// Section 6.3: sp= applies to subdomains of the organizational
		// domain whose policy was found there; DMARCbis adds np= for
		// subdomains that do not exist.
		if rec.SP != "" {
			e.Policy = rec.SP
		}
		if rec.NP != "" && !e.SPFAligned && !e.DKIMAligned {
			if gone, err := nonExistent(ctx, res, e.Domain); err != nil {
				e.Result, e.Problem = ResultTempError, err.Error()
				return e
			} else if gone {
				e.Policy = rec.NP
			}
		}
	}
	switch {
	case e.SPFAligned || e.DKIMAligned:
		e.Result = ResultPass
	case tempAligned(in, e.Domain, rec):
		// An aligned identifier that could not be checked for DNS
		// trouble may pass on a later attempt: temperror (section 11.2),
		// which never acts on the message, rather than fail.
		e.Result, e.Problem = ResultTempError, "SPF or DKIM of an aligned domain failed temporarily"
	default:
		e.Result = ResultFail
	}
	return e
}

// tempAligned reports whether SPF or a DKIM signature of a domain aligned
// with from ended in temperror.
func tempAligned(in Input, from string, rec *Record) bool {
	if in.SPFResult == "temperror" && aligned(in.SPFDomain, from, rec.ASPF) {
		return true
	}
	for _, d := range in.DKIM {
		if d.Result == "temperror" && aligned(d.Domain, from, rec.ADKIM) {
			return true
		}
	}
	return false
}

var errTemp = errors.New("temporary DNS error")

type tempError struct{ msg string }

func (t tempError) Error() string        { return t.msg }
func (t tempError) Is(target error) bool { return target == errTemp }

// discover finds the DMARC record of domain, else of org (section 6.6.3).
// A nil record with a nil error means none was published.
func discover(ctx context.Context, res Resolver, domain, org string) (*Record, string, error) {
	if domain == "" {
		return nil, "", errors.New("no From domain")
	}
	rec, err := lookup(ctx, res, domain)
	if rec != nil || err != nil || org == domain {
		return rec, domain, err
	}
	rec, err = lookup(ctx, res, org)
	return rec, org, err
}

// lookup reads the record at _dmarc.domain: nil, nil when there is none,
// or several (section 6.6.3 step 3: no DMARC processing).
func lookup(ctx context.Context, res Resolver, domain string) (*Record, error) {
	name := "_dmarc." + domain
	txts, err := res.LookupTXT(ctx, name)
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return nil, nil
		}
		return nil, tempError{"looking up " + name + ": " + err.Error()}
	}
	var found *Record
	var broken error
	n := 0
	for _, t := range txts {
		r, err := ParseRecord(t)
		if errors.Is(err, ErrNotDMARC) {
			continue
		}
		n++
		if err != nil {
			broken = err
			continue
		}
		found = r
	}
	switch {
	case n > 1:
		return nil, nil
	case broken != nil:
		// Section 11.2: permerror for a syntactically incorrect record.
		return nil, broken
	}
	return found, nil
}

// nonExistent reports whether domain has no A, AAAA and MX records
// (DMARCbis: NXDOMAIN or no data for all three).
func nonExistent(ctx context.Context, res Resolver, domain string) (bool, error) {
	isNF := func(err error) (bool, error) {
		if err == nil {
			return false, nil
		}
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return true, nil
		}
		return false, tempError{"looking up " + domain + ": " + err.Error()}
	}
	_, err := res.LookupMX(ctx, domain)
	if nf, err := isNF(err); !nf || err != nil {
		return false, err
	}
	_, err = res.LookupIPAddr(ctx, domain)
	return isNF(err)
}
