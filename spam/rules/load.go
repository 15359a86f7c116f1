package rules

import (
	_ "embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// DefaultFile is the name the shipped rules are reported under.
const DefaultFile = "default.rules"

//go:embed default.rules
var defaultRules []byte

// DefaultSource returns the text of the shipped rules file.
func DefaultSource() []byte { return append([]byte(nil), defaultRules...) }

// Load returns the compiled set of the shipped rules followed by the *.rules
// files of each directory, in lexical order within a directory. A directory
// that does not exist is an error (a typo must not silently drop the
// admin's rules).
func Load(dirs ...string) (*Set, error) {
	s := NewSet()
	if err := s.Parse(DefaultFile, defaultRules); err != nil {
		return nil, fmt.Errorf("rules: shipped rules: %w", err)
	}
	for _, dir := range dirs {
		files, err := filepath.Glob(filepath.Join(dir, "*.rules"))
		if err == nil {
			_, err = os.Stat(dir)
		}
		if err != nil {
			return nil, fmt.Errorf("rules: rules directory %s: %w; create it or fix the path", dir, err)
		}
		sort.Strings(files)
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("rules: %w", err)
			}
			if err := s.Parse(f, data); err != nil {
				return nil, err
			}
		}
	}
	if err := s.Compile(); err != nil {
		return nil, err
	}
	return s, nil
}

// Compile checks the set (every rule a meta reads exists; no meta reads
// itself through others), fixes the evaluation order and makes the set
// read-only.
func (s *Set) Compile() error {
	if s.compiled {
		return nil
	}
	var errs []error
	names := make([]string, 0, len(s.rules))
	for n := range s.rules {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		r := s.rules[n]
		if r.Kind != Meta {
			continue
		}
		r.meta.names(func(ref string) {
			dep, ok := s.rules[ref]
			switch {
			case !ok:
				errs = append(errs, &Error{r.Pos, fmt.Sprintf("meta %s reads %s, which no rules file defines", n, ref), "define " + ref + " or remove it from the expression"})
			case !dep.Enabled():
				s.Warnings = append(s.Warnings, fmt.Sprintf("%s: meta %s reads %s, which is disabled (score 0): it never hits", r.Pos, n, ref))
			}
		})
	}
	unknown := make([]string, 0, len(s.scores))
	for n := range s.scores {
		unknown = append(unknown, n)
	}
	sort.Strings(unknown)
	for _, n := range unknown {
		s.Warnings = append(s.Warnings, fmt.Sprintf("%s: score for %s, which no rules file defines", s.scores[n].pos, n))
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	// Tests first (in name order), then metas depth first after what they read.
	var order []*Rule
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(r *Rule, path []string) error
	visit = func(r *Rule, path []string) error {
		switch state[r.Name] {
		case 2:
			return nil
		case 1:
			return &Error{r.Pos, "meta rules read each other in a loop: " + strings.Join(append(path, r.Name), " → "), "break the loop"}
		}
		state[r.Name] = 1
		var err error
		r.meta.names(func(ref string) {
			if dep := s.rules[ref]; err == nil && dep.Kind == Meta {
				err = visit(dep, append(path, r.Name))
			}
		})
		if err != nil {
			return err
		}
		state[r.Name] = 2
		if r.Enabled() {
			order = append(order, r)
		}
		return nil
	}
	for _, n := range names {
		if r := s.rules[n]; r.Kind != Meta && r.Enabled() {
			order = append(order, r)
		}
	}
	for _, n := range names {
		if r := s.rules[n]; r.Kind == Meta {
			if err := visit(r, nil); err != nil {
				return err
			}
		}
	}
	s.order = order
	// One matcher for the prefilter strings of all body and raw body rules.
	ids := map[string]int32{}
	var lits []string
	intern := func(cls [][]string) [][]int32 {
		var out [][]int32
		for _, cl := range cls {
			var cids []int32
			for _, l := range cl {
				id, ok := ids[l]
				if !ok {
					id = int32(len(lits))
					ids[l] = id
					lits = append(lits, l)
				}
				cids = append(cids, id)
			}
			out = append(out, cids)
		}
		return out
	}
	for _, r := range order {
		r.litIDs = intern(r.lits)
		for i := range r.branches {
			r.branches[i].litIDs = intern(r.branches[i].lits)
		}
	}
	s.lit = newLitMatcher(lits)
	s.compiled = true
	return nil
}

// Rules returns every rule, enabled or not, sorted by name.
func (s *Set) Rules() []*Rule {
	out := make([]*Rule, 0, len(s.rules))
	for _, r := range s.rules {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Rule returns the rule called name, or nil.
func (s *Set) Rule(name string) *Rule { return s.rules[name] }
