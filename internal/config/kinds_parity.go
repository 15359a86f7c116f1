package config

import (
	"fmt"
	"net/netip"
	"reflect"
	"regexp"
	"strings"

	"github.com/postkit/postkit/internal/mailaddr"
)

// BoolWord is a string that may also be written as true or false without
// quotes, for the settings whose words include them (policy.spf.helo_reject:
// false, as postfix-policyd-spf-python's HELO_reject = False).
type BoolWord string

var boolWordType = reflect.TypeOf(BoolWord(""))

// checkSignFrom checks a DKIM signing pattern (milter.dkim.keys[].from).
func checkSignFrom(s string) string {
	if _, err := mailaddr.ParsePattern(s); err != nil {
		return err.Error()
	}
	return ""
}

// partialIPv4RE is the first one to three octets of an address, which
// postgrey's client lists match as a prefix (192.0.2 for 192.0.2.0/24).
var partialIPv4RE = regexp.MustCompile(`^(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])){0,2}$`)

// checkHostGlob checks a client pattern as postgrey's whitelist_clients
// writes them: an address or network, a host name (which also matches its
// sub-domains), .domain, or a /regexp/ over the client's host name.
func checkHostGlob(s string) string {
	if strings.HasPrefix(s, "/") {
		if len(s) < 3 || !strings.HasSuffix(s, "/") {
			return fmt.Sprintf("%q starts a /regexp/ but does not end with /", s)
		}
		if _, err := regexp.Compile("(?i)" + s[1:len(s)-1]); err != nil {
			return fmt.Sprintf("%q: %v", s, err)
		}
		return ""
	}
	if _, err := netip.ParsePrefix(s); err == nil {
		return ""
	}
	if _, err := netip.ParseAddr(s); err == nil {
		return ""
	}
	if mailaddr.ValidDomain(strings.TrimPrefix(s, ".")) || partialIPv4RE.MatchString(s) {
		return ""
	}
	return fmt.Sprintf("%q is not a client pattern", s)
}

// checkRcptGlob checks a recipient pattern as postgrey's
// whitelist_recipients writes them.
func checkRcptGlob(s string) string {
	if strings.HasPrefix(s, "/") {
		return checkHostGlob(s)
	}
	local, dom, at := strings.Cut(s, "@")
	switch {
	case !at && mailaddr.ValidDomain(strings.TrimPrefix(s, ".")):
		return ""
	case at && dom == "" && local != "" && mailaddr.ValidAddress(local+"@example.org"):
		return ""
	case at && mailaddr.ValidAddress(s):
		return ""
	}
	return fmt.Sprintf("%q is not a recipient pattern", s)
}
