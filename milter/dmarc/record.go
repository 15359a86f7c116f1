package dmarc

import (
	"errors"
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
)

// Policy is a Domain Owner's requested handling (RFC 7489 section 6.3, p=).
type Policy string

// The policies of p=, sp= and np=.
const (
	PolicyNone       Policy = "none"
	PolicyQuarantine Policy = "quarantine"
	PolicyReject     Policy = "reject"
)

func parsePolicy(s string) (Policy, bool) {
	switch p := Policy(strings.ToLower(s)); p {
	case PolicyNone, PolicyQuarantine, PolicyReject:
		return p, true
	}
	return "", false
}

// weaker returns the next less strict policy (RFC 7489 section 6.6.4: a
// message not sampled by pct= gets it).
func (p Policy) weaker() Policy {
	switch p {
	case PolicyReject:
		return PolicyQuarantine
	default:
		return PolicyNone
	}
}

// Record is a parsed DMARC policy record (RFC 7489 section 6.3).
type Record struct {
	P     Policy
	SP    Policy // "" when absent: p= applies to subdomains
	NP    Policy // "" when absent: sp= (then p=) applies to non-existent subdomains (DMARCbis)
	ADKIM byte   // 'r' or 's'
	ASPF  byte   // 'r' or 's'
	Pct   int    // 0..100
	RUA   []URI
	RUF   []URI
	FO    string
	// Repaired says p= or sp= was invalid and the record stands as p=none
	// because rua= names a valid URI (section 6.6.3 step 6).
	Repaired bool
}

// URI is one entry of rua= or ruf= (section 6.2): a mailto: address and an
// optional size limit in bytes (0: none).
type URI struct {
	Addr  string // the address of a mailto: URI
	Limit int64
	Raw   string
}

// ErrNotDMARC marks a TXT record that is not a DMARC record (it does not
// start with v=DMARC1) and is discarded (section 6.6.3 step 3).
var ErrNotDMARC = errors.New("dmarc: not a DMARC record")

// ParseRecord parses one TXT record. It returns ErrNotDMARC for a record
// that does not start with "v=DMARC1", and another error for a DMARC record
// so broken that no policy can be read from it (section 6.6.3 step 6: bad
// p= and no valid rua=). Unknown tags are ignored (section 6.3).
func ParseRecord(txt string) (*Record, error) {
	parts := strings.Split(txt, ";")
	k, v, ok := strings.Cut(parts[0], "=")
	if !ok || strings.TrimSpace(k) != "v" || strings.TrimSpace(v) != "DMARC1" {
		return nil, ErrNotDMARC
	}
	r := &Record{ADKIM: 'r', ASPF: 'r', Pct: 100}
	var problems []string
	seenP, badP, badSP := false, false, false
	for _, part := range parts[1:] {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			problems = append(problems, fmt.Sprintf("%q is not tag=value", part))
			continue
		}
		k, v = strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(v)
		switch k {
		case "p":
			seenP = true
			if r.P, ok = parsePolicy(v); !ok {
				badP = true
				problems = append(problems, fmt.Sprintf("p=%s", v))
			}
		case "sp":
			if r.SP, ok = parsePolicy(v); !ok {
				badSP = true
				problems = append(problems, fmt.Sprintf("sp=%s", v))
			}
		case "np":
			// DMARCbis: an invalid np= is ignored.
			r.NP, _ = parsePolicy(v)
		case "adkim", "aspf":
			m := strings.ToLower(v)
			if m != "r" && m != "s" {
				problems = append(problems, k+"="+v)
				continue
			}
			if k == "adkim" {
				r.ADKIM = m[0]
			} else {
				r.ASPF = m[0]
			}
		case "pct":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > 100 {
				problems = append(problems, "pct="+v)
				continue
			}
			r.Pct = n
		case "rua":
			r.RUA = parseURIs(v)
		case "ruf":
			r.RUF = parseURIs(v)
		case "fo":
			r.FO = v
		}
	}
	if !seenP {
		badP = true
		problems = append(problems, "no p=")
	}
	if badP || badSP {
		// Section 6.6.3 step 6.
		if len(r.RUA) == 0 {
			return nil, fmt.Errorf("dmarc: invalid record: %s", strings.Join(problems, ", "))
		}
		r.P, r.SP, r.Repaired = PolicyNone, "", true
	}
	return r, nil
}

// parseURIs reads a comma-separated list of DMARC URIs (section 6.2),
// keeping the mailto: ones that parse; the others cannot be used.
func parseURIs(v string) []URI {
	var out []URI
	for _, raw := range strings.Split(v, ",") {
		raw = strings.TrimSpace(raw)
		u := URI{Raw: raw}
		s := raw
		// A size limit follows the last "!" (section 6.2): digits and an
		// optional unit k, m, g, t.
		if i := strings.LastIndexByte(s, '!'); i >= 0 {
			lim := strings.ToLower(s[i+1:])
			mult := int64(1)
			if n := len(lim); n > 0 {
				switch lim[n-1] {
				case 'k':
					mult = 1 << 10
				case 'm':
					mult = 1 << 20
				case 'g':
					mult = 1 << 30
				case 't':
					mult = 1 << 40
				}
				if mult != 1 {
					lim = lim[:n-1]
				}
			}
			n, err := strconv.ParseInt(lim, 10, 64)
			if err != nil || n < 0 || n > math.MaxInt64/mult {
				continue
			}
			u.Limit = n * mult
			s = s[:i]
		}
		pu, err := url.Parse(s)
		if err != nil || !strings.EqualFold(pu.Scheme, "mailto") {
			continue
		}
		addr := pu.Opaque
		if addr == "" {
			addr = pu.Path
		}
		if dec, err := url.PathUnescape(addr); err == nil {
			addr = dec
		}
		if i := strings.LastIndexByte(addr, '@'); i <= 0 || i == len(addr)-1 || !printableAddr(addr) {
			continue
		}
		u.Addr = addr
		out = append(out, u)
	}
	return out
}

// printableAddr accepts visible ASCII without the characters that would
// end an address in a header field (the report's To:) or a list.
func printableAddr(a string) bool {
	for i := 0; i < len(a); i++ {
		if c := a[i]; c <= ' ' || c >= 0x7f || strings.IndexByte("<>,;()\\\"", c) >= 0 {
			return false
		}
	}
	return true
}
