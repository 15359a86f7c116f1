package dnsrecords

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// Status is the verdict on one record.
type Status string

// The verdicts of Check.
const (
	OK      Status = "ok"      // published as it should be
	Missing Status = "missing" // nothing of its kind at that name
	Wrong   Status = "wrong"   // something else is published there
	Failed  Status = "error"   // DNS did not answer (temporary error): try again
)

// Resolver is the part of postkit's resolver (internal/dnsclient) Check uses.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
	LookupIP(ctx context.Context, network, host string) ([]net.IP, error)
}

// Result is what DNS says about one record.
type Result struct {
	Record Record   `json:"-"`
	Name   string   `json:"name"`
	Type   string   `json:"type"`
	Kind   Kind     `json:"kind"`
	Status Status   `json:"status"`
	Found  []string `json:"found,omitempty"`
	Detail string   `json:"detail,omitempty"`
	// Fix is the zone line to publish (empty when OK).
	Fix string `json:"fix,omitempty"`
}

// Check looks each record up through r and compares what is published with
// what should be.
func Check(ctx context.Context, r Resolver, rs []Record) []Result {
	out := make([]Result, 0, len(rs))
	for _, rec := range rs {
		res := Result{Record: rec, Name: rec.Name, Type: rec.Type, Kind: rec.Kind}
		res.Status, res.Found, res.Detail = check(ctx, r, rec)
		if res.Status != OK {
			res.Fix = strings.TrimSuffix(Zone([]Record{{Name: rec.Name, Type: rec.Type, Data: rec.Data}}), "\n")
		}
		out = append(out, res)
	}
	return out
}

// notFound tells a void answer (NXDOMAIN, no data) from a failure.
func notFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

func lookupErr(err error) (Status, []string, string) {
	return Failed, nil, "lookup failed: " + err.Error() + " (check dns.servers, then run again)"
}

func check(ctx context.Context, r Resolver, rec Record) (Status, []string, string) {
	switch rec.Kind {
	case KindMX:
		mxs, err := r.LookupMX(ctx, rec.Name)
		if notFound(err) {
			return Missing, nil, "no MX record"
		} else if err != nil {
			return lookupErr(err)
		}
		var found []string
		ok := false
		for _, mx := range mxs {
			found = append(found, fmt.Sprintf("%d %s", mx.Pref, mx.Host))
			ok = ok || strings.EqualFold(fqdn(mx.Host), rec.Text)
		}
		if len(found) == 0 {
			return Missing, nil, "no MX record"
		}
		if !ok {
			return Wrong, found, "no MX names " + rec.Text
		}
		return OK, found, ""
	case KindA, KindAAAA:
		network := "ip4"
		if rec.Kind == KindAAAA {
			network = "ip6"
		}
		ips, err := r.LookupIP(ctx, network, rec.Name)
		if notFound(err) {
			return Missing, nil, "the host has no " + rec.Type + " record"
		} else if err != nil {
			return lookupErr(err)
		}
		found, ok := addrs(ips, rec.Text)
		if !ok {
			return Wrong, found, "the host's addresses lack " + rec.Text
		}
		return OK, found, ""
	case KindPTR:
		names, err := r.LookupAddr(ctx, rec.Text)
		if notFound(err) {
			return Missing, nil, "no reverse DNS for " + rec.Text + ": ask the owner of the address to set it"
		} else if err != nil {
			return lookupErr(err)
		}
		ok := false
		for _, n := range names {
			ok = ok || strings.EqualFold(fqdn(n), rec.Data)
		}
		if !ok {
			return Wrong, names, rec.Text + " does not name " + rec.Data
		}
		// Forward-confirmed: the name has the address back.
		ips, err := r.LookupIP(ctx, "ip", rec.Data)
		if err != nil && !notFound(err) {
			return lookupErr(err)
		}
		if _, fwd := addrs(ips, rec.Text); !fwd {
			return Wrong, names, "not forward-confirmed: " + rec.Data + " does not resolve to " + rec.Text + " (publish its A/AAAA record)"
		}
		return OK, names, ""
	case KindMTASTSHost:
		ips, err := r.LookupIP(ctx, "ip", rec.Name)
		if notFound(err) {
			return Missing, nil, "the MTA-STS policy host does not resolve"
		} else if err != nil {
			return lookupErr(err)
		}
		want, err := r.LookupIP(ctx, "ip", rec.Text)
		if err != nil && !notFound(err) {
			return lookupErr(err)
		}
		var found []string
		shared := false
		for _, ip := range ips {
			found = append(found, ip.String())
			for _, w := range want {
				shared = shared || ip.Equal(w)
			}
		}
		if !shared {
			return Wrong, found, "not an address of " + rec.Text
		}
		return OK, found, ""
	}
	// TXT records: those of the kind at the name.
	txts, err := r.LookupTXT(ctx, rec.Name)
	if err != nil && !notFound(err) {
		return lookupErr(err)
	}
	prefix := map[Kind]string{KindSPF: "v=spf1", KindDKIM: "", KindDMARC: "v=DMARC1", KindMTASTS: "v=STSv1", KindTLSRPT: "v=TLSRPTv1"}[rec.Kind]
	var found []string
	for _, t := range txts {
		if rec.Kind == KindDKIM || versionIs(t, prefix) {
			found = append(found, t)
		}
	}
	if len(found) == 0 {
		return Missing, nil, "no " + string(rec.Kind) + " record"
	}
	if len(found) > 1 && rec.Kind != KindDKIM {
		return Wrong, found, fmt.Sprintf("%d %s records: receivers treat that as an error; keep exactly one", len(found), rec.Kind)
	}
	got := found[0]
	switch rec.Kind {
	case KindSPF:
		if normSPF(got) != normSPF(rec.Text) {
			return Wrong, found, "the SPF record differs"
		}
	case KindDKIM:
		want := tags(rec.Text)
		for _, f := range found {
			t := tags(f)
			if t["p"] == want["p"] && keyType(t) == keyType(want) {
				return OK, found, ""
			}
		}
		if len(found) == 1 && tags(found[0])["p"] == "" {
			return Wrong, found, "the key is revoked (empty p=)"
		}
		return Wrong, found, "the published key is not the key on disk"
	case KindDMARC:
		if g, w := strings.ToLower(tags(got)["p"]), tags(rec.Text)["p"]; g != w {
			return Wrong, found, "policy p=" + g + "; want p=" + w
		}
	case KindMTASTS:
		if tags(got)["id"] == "" {
			return Wrong, found, "no id= (RFC 8461 section 3.1)"
		}
	case KindTLSRPT:
		if !strings.EqualFold(tags(got)["rua"], tags(rec.Text)["rua"]) {
			return Wrong, found, "reports go elsewhere"
		}
	}
	return OK, found, ""
}

// addrs lists ips and says whether want is among them.
func addrs(ips []net.IP, want string) ([]string, bool) {
	w, _ := netip.ParseAddr(want)
	var found []string
	ok := false
	for _, ip := range ips {
		found = append(found, ip.String())
		if a, good := netip.AddrFromSlice(ip); good && a.Unmap() == w.Unmap() {
			ok = true
		}
	}
	return found, ok
}

// versionIs reports whether a TXT record starts with the version tag v
// (case-insensitive), as a whole term.
func versionIs(txt, v string) bool {
	txt = strings.TrimSpace(txt)
	if len(txt) < len(v) || !strings.EqualFold(txt[:len(v)], v) {
		return false
	}
	rest := txt[len(v):]
	return rest == "" || rest[0] == ' ' || rest[0] == ';' || rest[0] == '\t'
}

// normSPF compares SPF records term by term, case-insensitively.
func normSPF(s string) string { return strings.ToLower(strings.Join(strings.Fields(s), " ")) }

// tags parses a tag-list (RFC 6376 section 3.2, RFC 7489 section 6.4):
// names lower-cased, whitespace inside values removed (a DKIM key may be
// folded).
func tags(s string) map[string]string {
	m := map[string]string{}
	for _, part := range strings.Split(s, ";") {
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			continue
		}
		m[strings.ToLower(strings.TrimSpace(k))] = strings.Join(strings.Fields(v), "")
	}
	return m
}

func keyType(t map[string]string) string {
	if k := strings.ToLower(t["k"]); k != "" {
		return k
	}
	return "rsa"
}
