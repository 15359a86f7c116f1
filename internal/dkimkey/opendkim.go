package dkimkey

import (
	"bufio"
	"fmt"
	"io"
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

// SigningRule is one line of an OpenDKIM SigningTable: an address pattern,
// the KeyTable names to sign with, and the optional signer (i=) after a
// colon.
type SigningRule struct {
	Pattern  string
	KeyNames []string
	Signer   string
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
// separated by commas or blanks; a colon starts the signer field.
func ParseSigningTable(r io.Reader, file string) ([]SigningRule, error) {
	var rules []SigningRule
	err := tableLines(r, file, func(line int, pattern, value string) error {
		value, signer, _ := strings.Cut(value, ":")
		names := strings.FieldsFunc(value, func(c rune) bool { return c == ',' || c == ' ' })
		if len(names) == 0 {
			return fmt.Errorf("pattern %q has no key name", pattern)
		}
		rules = append(rules, SigningRule{Pattern: strings.ToLower(pattern), KeyNames: names, Signer: strings.TrimSpace(signer), Line: line})
		return nil
	})
	return rules, err
}
