package dnstest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"

	"github.com/miekg/dns"
	"gopkg.in/yaml.v3"
)

// SPFScenario is one document of the openspf/RFC 7208 test suite: tests
// sharing one set of DNS data.
type SPFScenario struct {
	Description string
	Tests       []SPFTest // sorted by name
	Zone        *Zone
}

// SPFTest is one test of the suite.
type SPFTest struct {
	Name        string
	Description string
	Spec        []string
	Helo        string
	Host        string // client IP
	MailFrom    string
	Results     []string // any of these is a pass
	Explanation string   // expected exp= text for fail results, if given
}

// LoadSPFSuite reads a suite file (e.g. rfc7208-tests.yml) and builds each
// scenario's zone from its zonedata:
//
//   - TXT, SPF (string, or list of strings for one multi-string record), A,
//     AAAA, PTR, CNAME, MX ([preference, host]).
//   - SPF entries are also served as TXT unless the name has TXT entries, the
//     suite's convention for "test drivers duplicate SPF to TXT".
//   - "TXT: NONE" marks a name as holding no TXT record.
//   - TIMEOUT: queries for types the name holds no data for are never
//     answered.
func LoadSPFSuite(path string) ([]SPFScenario, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("dnstest: %w", err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	var out []SPFScenario
	for {
		var doc struct {
			Description string                 `yaml:"description"`
			Tests       map[string]yaml.Node   `yaml:"tests"`
			ZoneData    map[string][]yaml.Node `yaml:"zonedata"`
		}
		var raw yaml.Node
		if err := dec.Decode(&raw); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("dnstest: %s: %w", path, err)
		}
		if err := raw.Decode(&doc); err != nil {
			return nil, fmt.Errorf("dnstest: %s: %w", path, err)
		}
		sc := SPFScenario{Description: doc.Description}
		if sc.Zone, err = spfZone(doc.ZoneData); err != nil {
			return nil, fmt.Errorf("dnstest: %s: scenario %q: %w", path, doc.Description, err)
		}
		for name, n := range doc.Tests {
			t, err := spfTest(name, &n)
			if err != nil {
				return nil, fmt.Errorf("dnstest: %s: test %s: %w", path, name, err)
			}
			sc.Tests = append(sc.Tests, t)
		}
		sort.Slice(sc.Tests, func(i, j int) bool { return sc.Tests[i].Name < sc.Tests[j].Name })
		out = append(out, sc)
	}
	return out, nil
}

func spfTest(name string, n *yaml.Node) (SPFTest, error) {
	var t struct {
		Description string    `yaml:"description"`
		Spec        yaml.Node `yaml:"spec"`
		Helo        string    `yaml:"helo"`
		Host        string    `yaml:"host"`
		MailFrom    string    `yaml:"mailfrom"`
		Result      yaml.Node `yaml:"result"`
		Explanation string    `yaml:"explanation"`
	}
	if err := n.Decode(&t); err != nil {
		return SPFTest{}, err
	}
	spec, err := strings1(&t.Spec)
	if err != nil {
		return SPFTest{}, err
	}
	res, err := strings1(&t.Result)
	if err != nil {
		return SPFTest{}, err
	}
	if len(res) == 0 {
		return SPFTest{}, errors.New("no result")
	}
	return SPFTest{Name: name, Description: t.Description, Spec: spec, Helo: t.Helo,
		Host: t.Host, MailFrom: t.MailFrom, Results: res, Explanation: t.Explanation}, nil
}

// strings1 decodes a scalar or a sequence of scalars.
func strings1(n *yaml.Node) ([]string, error) {
	switch n.Kind {
	case 0:
		return nil, nil
	case yaml.ScalarNode:
		return []string{n.Value}, nil
	case yaml.SequenceNode:
		var s []string
		err := n.Decode(&s)
		return s, err
	}
	return nil, fmt.Errorf("line %d: want a string or a list of strings", n.Line)
}

func spfZone(data map[string][]yaml.Node) (*Zone, error) {
	z := NewZone()
	for owner, entries := range data {
		var spf [][]string
		hasTXT := false
		for i := range entries {
			e := &entries[i]
			if e.Kind == yaml.ScalarNode {
				if e.Value != "TIMEOUT" {
					return nil, fmt.Errorf("line %d: unknown entry %q", e.Line, e.Value)
				}
				z.Timeout(owner)
				continue
			}
			var m map[string]yaml.Node
			if err := e.Decode(&m); err != nil || len(m) != 1 {
				return nil, fmt.Errorf("line %d: want one TYPE: value entry", e.Line)
			}
			for typ, v := range m {
				if err := addSuiteRecord(z, owner, typ, &v, &spf, &hasTXT); err != nil {
					return nil, fmt.Errorf("line %d: %s: %w", e.Line, typ, err)
				}
			}
		}
		for _, s := range spf {
			z.addRR(&dns.SPF{Hdr: hdr(owner, dns.TypeSPF, 300), Txt: rawStrings(s)})
			if !hasTXT {
				z.AddTXT(owner, 300, s...)
			}
		}
	}
	return z, nil
}

func addSuiteRecord(z *Zone, owner, typ string, v *yaml.Node, spf *[][]string, hasTXT *bool) error {
	vals, err := strings1(v)
	if err != nil && typ != "MX" {
		return err
	}
	switch typ {
	case "TXT":
		*hasTXT = true
		if len(vals) == 1 && vals[0] == "NONE" {
			return nil
		}
		z.AddTXT(owner, 300, vals...)
	case "SPF":
		*spf = append(*spf, vals)
	case "A", "AAAA":
		for _, s := range vals {
			ip := net.ParseIP(s)
			if ip == nil {
				return fmt.Errorf("bad address %q", s)
			}
			if typ == "A" && ip.To4() != nil {
				z.addRR(&dns.A{Hdr: hdr(owner, dns.TypeA, 300), A: ip.To4()})
			} else {
				z.addRR(&dns.AAAA{Hdr: hdr(owner, dns.TypeAAAA, 300), AAAA: ip})
			}
		}
	case "PTR":
		for _, s := range vals {
			z.addRR(&dns.PTR{Hdr: hdr(owner, dns.TypePTR, 300), Ptr: dns.Fqdn(s)})
		}
	case "CNAME":
		if len(vals) != 1 {
			return errors.New("want one target")
		}
		z.addRR(&dns.CNAME{Hdr: hdr(owner, dns.TypeCNAME, 300), Target: dns.Fqdn(vals[0])})
	case "MX":
		var mx []yaml.Node
		if err := v.Decode(&mx); err != nil || len(mx) != 2 {
			return errors.New("want [preference, host]")
		}
		var pref uint16
		var host string
		if err := mx[0].Decode(&pref); err != nil {
			return err
		}
		if err := mx[1].Decode(&host); err != nil {
			return err
		}
		z.addRR(&dns.MX{Hdr: hdr(owner, dns.TypeMX, 300), Preference: pref, Mx: dns.Fqdn(host)})
	default:
		return fmt.Errorf("unknown record type")
	}
	return nil
}
