package templates

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/postkit/postkit/internal/config"
)

// Milters is smtpd_milters and non_smtpd_milters: postfix.milters_before,
// postkit's milter when it is enabled, postfix.milters_after, in the order
// Postfix calls them. Empty when there is no milter at all.
func (v *view) Milters() string {
	var out []string
	for _, m := range v.C.Postfix.MiltersBefore {
		out = append(out, v.endpoint(m))
	}
	if v.C.Milter.Enabled {
		out = append(out, v.MilterAddr())
	}
	for _, m := range v.C.Postfix.MiltersAfter {
		out = append(out, v.endpoint(m))
	}
	return strings.Join(out, ", ")
}

// extraService is a postfix.master_cf entry.
type extraService struct {
	Service string   // the name, padded as postkit's
	Type    string   // inet, unix…
	Rest    string   // the columns after the type, the command and its arguments
	Options []string // name=value
}

// ExtraServices are the postfix.master_cf entries, written after
// postkit's services.
func (v *view) ExtraServices() []extraService {
	var out []extraService
	col := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	for _, s := range v.C.Postfix.MasterCF {
		priv := col(s.Private)
		if s.Type == "inet" && s.Private == "" {
			priv = "n" // inet services are never private
		}
		rest := fmt.Sprintf("%-7s %-7s %-7s %-7s %-7s %s", priv, col(s.Unpriv), col(s.Chroot), col(s.Wakeup), col(s.Maxproc), s.Command)
		if len(s.Args) > 0 {
			rest += " " + strings.Join(s.Args, " ")
		}
		out = append(out, extraService{Service: fmt.Sprintf("%-9s", s.Service), Type: s.Type, Rest: rest, Options: s.Options})
	}
	return out
}

var paramLineRE = regexp.MustCompile(`^([a-z][a-z0-9_]*)\s*=`)

// overrideMainCF drops postkit's own setting of each parameter that
// postfix.main_cf sets (the template writes those at the end): the line and
// its continuation lines. Postfix would take the last one anyway; leaving
// one setting makes main.cf say what is in force.
func overrideMainCF(data []byte, cfg *config.Config) []byte {
	if len(cfg.Postfix.MainCF) == 0 {
		return data
	}
	set := map[string]bool{}
	for _, p := range cfg.Postfix.MainCF {
		set[p.Name] = true
	}
	lines := strings.SplitAfter(string(data), "\n")
	marker := "# --- postfix.main_cf of postkit.yaml"
	var b strings.Builder
	skipping, extra := false, false
	for _, l := range lines {
		if strings.HasPrefix(l, marker) {
			extra = true
		}
		if !extra {
			if m := paramLineRE.FindStringSubmatch(l); m != nil {
				skipping = set[m[1]]
				if skipping {
					continue
				}
			} else if skipping && (strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t")) {
				continue
			} else {
				skipping = false
			}
		}
		b.WriteString(l)
	}
	return []byte(b.String())
}

var serviceLineRE = regexp.MustCompile(`^(\S+)\s+(inet|unix|unix-dgram|fifo|pass)\s`)

// overrideMasterCF adds the options of postfix.master_cf_options to the
// service of that name and type, after its own options (the last -o of a
// parameter wins). It refuses an entry naming no generated service, and a
// postfix.master_cf service whose name and type postkit already uses.
func overrideMasterCF(data []byte, cfg *config.Config) ([]byte, error) {
	lines := strings.SplitAfter(string(data), "\n")
	// Where each generated service's block ends (the index after its last
	// line).
	ends := map[string]int{}
	cur := ""
	for i, l := range lines {
		if strings.HasPrefix(l, "# --- postfix.master_cf of postkit.yaml") {
			break
		}
		if m := serviceLineRE.FindStringSubmatch(l); m != nil {
			cur = m[1] + "/" + m[2]
			ends[cur] = i + 1
			continue
		}
		if cur != "" && (strings.HasPrefix(l, " ") || strings.HasPrefix(l, "\t")) {
			ends[cur] = i + 1
			continue
		}
		cur = ""
	}
	for i, s := range cfg.Postfix.MasterCF {
		if id := s.Service + "/" + s.Type; ends[id] > 0 {
			return nil, fmt.Errorf("templates: postfix.master_cf[%d]: postkit already generates the service %s; add options to it with postfix.master_cf_options", i, id)
		}
	}
	insert := map[int][]string{}
	for i, s := range cfg.Postfix.MasterCFOptions {
		id := s.Service + "/" + s.Type
		end, ok := ends[id]
		if !ok {
			names := make([]string, 0, len(ends))
			for n := range ends {
				names = append(names, n)
			}
			return nil, fmt.Errorf("templates: postfix.master_cf_options[%d]: master.cf has no service %s to add options to (postkit generates %s); add a new service with postfix.master_cf", i, id, strings.Join(sorted(names), ", "))
		}
		for _, o := range s.Options {
			insert[end] = append(insert[end], "  -o "+o+"\n")
		}
	}
	if len(insert) == 0 {
		return data, nil
	}
	var b strings.Builder
	for i, l := range lines {
		for _, x := range insert[i] {
			b.WriteString(x)
		}
		b.WriteString(l)
	}
	for _, x := range insert[len(lines)] {
		b.WriteString(x)
	}
	return []byte(b.String()), nil
}

func sorted(s []string) []string {
	sort.Strings(s)
	return s
}
