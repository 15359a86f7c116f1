package spfcheck

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
)

// Level is when an identity's result refuses the message in enforce mode,
// with the values of postfix-policyd-spf-python's HELO_reject and
// Mail_From_reject (policyd-spf.conf(5)), lowercase.
type Level string

const (
	// RejectFail refuses fail (the default of both identities).
	RejectFail Level = "fail"
	// RejectSoftfail refuses fail and softfail.
	RejectSoftfail Level = "softfail"
	// RejectNotPass refuses fail, softfail and neutral. RFC 7208 section
	// 8.2 treats neutral like none; the peer offers it all the same, for
	// HELO names (which have no forwarding to excuse them) above all.
	// permerror is left to Config.PermErrorReject, as the peer leaves it
	// to PermError_reject (TestLevelsAgreeWithPolicydSPF).
	RejectNotPass Level = "spf_not_pass"
	// RejectNull refuses a HELO fail only for the null sender (the
	// pre-RFC 4408 practice). HELO only.
	RejectNull Level = "null"
	// RejectNever checks and records the result, never refuses.
	RejectNever Level = "false"
	// NoCheck does not evaluate the identity at all. For MAIL FROM, a
	// null sender is still checked through its HELO (section 2.4), and a
	// sender in one of our domains still is (Config.OwnDomain).
	NoCheck Level = "no_check"
)

// ParseLevel checks a level; helo says which identity it is for (null is
// HELO only). "" is RejectFail; "true" (an older postkit.yaml's
// helo_reject: true) is RejectFail too.
func ParseLevel(s string, helo bool) (Level, error) {
	l := Level(strings.ToLower(strings.TrimSpace(s)))
	switch l {
	case "", "true":
		return RejectFail, nil
	case RejectFail, RejectSoftfail, RejectNotPass, RejectNever, NoCheck:
		return l, nil
	case RejectNull:
		if helo {
			return l, nil
		}
	}
	if helo {
		return "", fmt.Errorf("spfcheck: HELO reject level %q: want fail, softfail, spf_not_pass, null, false or no_check", s)
	}
	return "", fmt.Errorf("spfcheck: MAIL FROM reject level %q: want fail, softfail, spf_not_pass, false or no_check", s)
}

// refuses reports whether level l refuses result r; nullSender matters
// to RejectNull.
func (l Level) refuses(r Result, nullSender bool) bool {
	switch l {
	case RejectFail, "":
		return r == Fail
	case RejectSoftfail:
		return r == Fail || r == SoftFail
	case RejectNotPass:
		return r == Fail || r == SoftFail || r == Neutral
	case RejectNull:
		return r == Fail && nullSender
	}
	return false
}

// HeaderType is the field the check prepends with its result.
type HeaderType string

const (
	// ReceivedSPF prepends Received-SPF (RFC 7208 section 9.1), the default.
	ReceivedSPF HeaderType = "spf"
	// AuthResults prepends Authentication-Results (RFC 8601, spf method,
	// smtp.mailfrom or smtp.helo), as the peer's Header_Type = AR.
	AuthResults HeaderType = "ar"
	// NoHeader prepends nothing (the peer's Header_Type = None).
	NoHeader HeaderType = "none"
)

// rejectText is the reply of a refused result that is not fail, which has
// its explanation (section 6.2).
func rejectText(o Outcome, ip netip.Addr, why string) string {
	code := "550 5.7.23" // RFC 7372 section 3.2: SPF validation failed
	if o.Result == PermError {
		code = "550 5.7.24" // SPF validation error
	}
	who := o.Sender
	if o.Identity == "helo" {
		who = "HELO " + o.Domain
	}
	return fmt.Sprintf("%s SPF %s for %s from %s: %s", code, o.Result, who, ip, why)
}

// notPassDomain reports whether the sender's domain is listed in
// Config.RejectNotPassDomains.
func (c *Check) notPassDomain(domain string) bool {
	for _, d := range c.cfg.RejectNotPassDomains {
		if strings.EqualFold(strings.TrimSuffix(d, "."), strings.TrimSuffix(domain, ".")) {
			return true
		}
	}
	return false
}

// heloConfirmed reports whether helo, a name of Config.AllowHelos, has an
// address record holding ip: a forged HELO name skips nothing (the peer's
// HELO_Whitelist makes the same forward check).
func (c *Check) heloConfirmed(ctx context.Context, helo string, ip netip.Addr) bool {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	addrs, err := c.res.LookupIPAddr(ctx, strings.TrimSuffix(helo, "."))
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if x, ok := netip.AddrFromSlice(a.IP); ok && x.Unmap() == ip.Unmap() {
			return true
		}
	}
	return false
}
