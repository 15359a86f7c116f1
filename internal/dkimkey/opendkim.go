package dkimkey

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// TableKey is one line of an OpenDKIM KeyTable (opendkim.conf(5), KeyTable):
//
//	NAME  DOMAIN:SELECTOR:KEYFILE
//
// DOMAIN may be "%", which OpenDKIM replaces with the signed domain.
type TableKey struct {
	Name     string
	Domain   string
	Selector string
	KeyFile  string
	Line     int
}

// SigningRule is one line of an OpenDKIM SigningTable: an address pattern and
// the KeyTable names to sign with (several only with MultipleSignatures).
type SigningRule struct {
	Pattern  string
	KeyNames []string
	Line     int
}

// tableLines calls fn with each significant line of an OpenDKIM data set
// file: comments (#) and blank lines are skipped, the key is split from the
// value at the first run of white space.
func tableLines(r io.Reader, file string, fn func(line int, key, value string) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		text := sc.Text()
		if i := strings.IndexByte(text, '#'); i >= 0 {
			text = text[:i]
		}
		text = strings.TrimSpace(text)
		if text == "" {
			continue
		}
		key, value, ok := strings.Cut(strings.ReplaceAll(text, "\t", " "), " ")
		value = strings.TrimSpace(value)
		if !ok || value == "" {
			return fmt.Errorf("dkimkey: %s:%d: %q has a key but no value: expected two fields", file, n, text)
		}
		if err := fn(n, key, value); err != nil {
			return fmt.Errorf("dkimkey: %s:%d: %w", file, n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("dkimkey: %s:%d: %w", file, n+1, err)
	}
	return nil
}

// ParseKeyTable reads an OpenDKIM KeyTable. file names the input in errors,
// which carry file:line. Key file paths are kept as written.
func ParseKeyTable(r io.Reader, file string) ([]TableKey, error) {
	var keys []TableKey
	seen := map[string]int{}
	err := tableLines(r, file, func(line int, name, value string) error {
		f := strings.SplitN(value, ":", 3)
		if len(f) != 3 {
			return fmt.Errorf("key %q: value %q is not DOMAIN:SELECTOR:KEYFILE", name, value)
		}
		dom, sel, path := strings.TrimSpace(f[0]), strings.TrimSpace(f[1]), strings.TrimSpace(f[2])
		if dom == "" || sel == "" || path == "" {
			return fmt.Errorf("key %q: empty field in %q: expected DOMAIN:SELECTOR:KEYFILE", name, value)
		}
		if err := CheckSelector(sel); err != nil {
			return err
		}
		if !strings.HasPrefix(path, "/") && !strings.HasPrefix(path, ".") {
			return fmt.Errorf("key %q: %q is not a file path (inline key data is not supported): write the key to a file", name, path)
		}
		if prev, ok := seen[name]; ok {
			return fmt.Errorf("key %q already defined on line %d", name, prev)
		}
		seen[name] = line
		keys = append(keys, TableKey{Name: name, Domain: strings.ToLower(dom), Selector: sel, KeyFile: path, Line: line})
		return nil
	})
	return keys, err
}

// ParseSigningTable reads an OpenDKIM SigningTable (plain or refile: the
// patterns are kept as written). Several key names may follow a pattern,
// separated by commas or blanks.
func ParseSigningTable(r io.Reader, file string) ([]SigningRule, error) {
	var rules []SigningRule
	err := tableLines(r, file, func(line int, pattern, value string) error {
		names := strings.FieldsFunc(value, func(c rune) bool { return c == ',' || c == ' ' })
		if len(names) == 0 {
			return fmt.Errorf("pattern %q has no key name", pattern)
		}
		rules = append(rules, SigningRule{Pattern: strings.ToLower(pattern), KeyNames: names, Line: line})
		return nil
	})
	return rules, err
}

// ImportedKey is one signing key found in OpenDKIM's tables.
type ImportedKey struct {
	Domain   string
	Selector string
	KeyFile  string
}

// Imported is the result of ImportTables.
type Imported struct {
	Keys []ImportedKey
	// Subdomains is true when a rule signed sub-domains with their parent's
	// key (pattern *.example.org or *@*.example.org).
	Subdomains bool
	// Warnings are the rules postkit cannot express (per-user rules, catch-all
	// patterns), one line each, with file:line.
	Warnings []string
}

// patternDomain interprets a SigningTable pattern: the domain it signs and
// whether it covers that domain's sub-domains. ok is false for patterns that
// name a single user or everything.
func patternDomain(p string) (domain string, sub, ok bool) {
	local, dom, hasAt := strings.Cut(p, "@")
	if !hasAt {
		dom, local = p, "*"
	}
	if local != "*" && local != "" {
		return "", false, false // user@domain: per-sender rule
	}
	switch {
	case dom == "*" || dom == "":
		return "", false, false
	case strings.HasPrefix(dom, "*."):
		dom, sub = dom[2:], true
	case strings.HasPrefix(dom, "."):
		dom, sub = dom[1:], true
	}
	if strings.ContainsAny(dom, "*?[]()|+\\") || !strings.Contains(dom, ".") {
		return "", false, false
	}
	return dom, sub, true
}

// ImportTables reads an OpenDKIM KeyTable and SigningTable into postkit's key
// list. Key file paths relative to the KeyTable are made absolute. A
// malformed line is an error with file:line; a rule postkit cannot express is
// a warning.
func ImportTables(keyTable, signingTable string) (*Imported, error) {
	kf, err := os.Open(keyTable)
	if err != nil {
		return nil, fmt.Errorf("dkimkey: %w", err)
	}
	defer kf.Close()
	keys, err := ParseKeyTable(kf, keyTable)
	if err != nil {
		return nil, err
	}
	sf, err := os.Open(signingTable)
	if err != nil {
		return nil, fmt.Errorf("dkimkey: %w", err)
	}
	defer sf.Close()
	rules, err := ParseSigningTable(sf, signingTable)
	if err != nil {
		return nil, err
	}
	byName := make(map[string]TableKey, len(keys))
	for _, k := range keys {
		if !filepath.IsAbs(k.KeyFile) {
			k.KeyFile = filepath.Join(filepath.Dir(keyTable), k.KeyFile)
		}
		byName[k.Name] = k
	}
	im := &Imported{}
	seen := map[ImportedKey]bool{}
	for _, r := range rules {
		dom, sub, ok := patternDomain(r.Pattern)
		if !ok {
			im.Warnings = append(im.Warnings, fmt.Sprintf("%s:%d: pattern %q is per-user or a catch-all; postkit signs by From domain: add the domain's keys by hand", signingTable, r.Line, r.Pattern))
			continue
		}
		im.Subdomains = im.Subdomains || sub
		for _, name := range r.KeyNames {
			k, ok := byName[name]
			if !ok {
				return nil, fmt.Errorf("dkimkey: %s:%d: key %q is not in %s: add it to the KeyTable or fix the name", signingTable, r.Line, name, keyTable)
			}
			d := k.Domain
			if d == "%" {
				d = dom
			}
			if d != dom {
				im.Warnings = append(im.Warnings, fmt.Sprintf("%s:%d: mail from %s is signed with d=%s; postkit signs each domain with its own keys", signingTable, r.Line, dom, d))
			}
			ik := ImportedKey{Domain: d, Selector: k.Selector, KeyFile: k.KeyFile}
			if !seen[ik] {
				seen[ik] = true
				im.Keys = append(im.Keys, ik)
			}
		}
	}
	return im, nil
}

// YAML renders the import as the milter.dkim section of postkit.yaml.
func (im *Imported) YAML() string {
	var b strings.Builder
	b.WriteString("milter:\n  dkim:\n    sign: true\n")
	if im.Subdomains {
		b.WriteString("    subdomains: true\n")
	}
	if len(im.Keys) == 0 {
		b.WriteString("    keys: []\n")
	} else {
		b.WriteString("    keys:\n")
	}
	for _, k := range im.Keys {
		fmt.Fprintf(&b, "      - domain: %s\n        selector: %s\n        key_file: %s\n", yamlScalar(k.Domain), yamlScalar(k.Selector), yamlScalar(k.KeyFile))
	}
	for _, w := range im.Warnings {
		b.WriteString("    # warning: " + w + "\n")
	}
	return b.String()
}

// yamlScalar quotes s when a plain YAML scalar would be misread.
func yamlScalar(s string) string {
	plain := s != ""
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._/", c) >= 0) {
			plain = false
			break
		}
	}
	if plain && !strings.HasPrefix(s, "-") && strings.Trim(s, "0123456789.") != "" {
		return s
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}
