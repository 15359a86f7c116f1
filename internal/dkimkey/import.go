package dkimkey

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/postkit/postkit/internal/mailaddr"
)

// ImportedKey is one signing key found in OpenDKIM's tables, with the From
// patterns it signs (mailaddr.Pattern strings; empty means every address of
// Domain, postkit's default).
type ImportedKey struct {
	Domain   string
	Selector string
	KeyFile  string
	From     []string
}

// Imported is the result of ImportTables.
type Imported struct {
	Keys []ImportedKey
	// Warnings are the rules postkit cannot express or that OpenDKIM never
	// used, one line each, with file:line.
	Warnings []string
}

// Dataset splits an OpenDKIM data set name (opendkim(8), DATA SETS) into
// its type and file: "refile:/path", "file:/path" or a plain "/path".
// Other types (db:, dsn:, ldap:, lua:…) are refused: export them to a flat
// file first.
func Dataset(spec string) (refile bool, path string, err error) {
	typ, rest, ok := strings.Cut(spec, ":")
	if !ok || strings.HasPrefix(spec, "/") || strings.HasPrefix(spec, ".") {
		return false, spec, nil
	}
	switch typ {
	case "refile":
		return true, rest, nil
	case "file":
		return false, rest, nil
	}
	return false, "", fmt.Errorf("dkimkey: data set %q: only flat files are read (file:/path, refile:/path or /path); dump %s: tables to a flat file first", spec, typ)
}

// rulePattern turns a SigningTable key into a postkit From pattern. For a
// refile: table the key is a wildcard pattern matched against the whole
// From address; for a plain table OpenDKIM looks up, in order,
// user@host, host, user@.parent, .parent, user@* and * (opendkim.conf(5),
// SigningTable). skip says why OpenDKIM never matched the key or postkit
// cannot express it; approx that the translation signs a little less
// than OpenDKIM did.
func rulePattern(key string, refile bool) (p mailaddr.Pattern, skip, approx string) {
	parse := func(s string) (mailaddr.Pattern, string) {
		pt, err := mailaddr.ParsePattern(s)
		if err != nil {
			return pt, "postkit signs one address, a domain or its sub-domains: " + err.Error()
		}
		return pt, ""
	}
	if !refile {
		local, dom, hasAt := strings.Cut(key, "@")
		switch {
		case key == "*" || dom == "*":
			return p, "catch-all entries (every sender, or a user in any domain) are not imported: list the domains", ""
		case !hasAt && strings.HasPrefix(dom, "."):
			p, skip = parse("*@*" + dom)
		case !hasAt:
			p, skip = parse("*@" + key)
		case strings.Contains(local, "*"):
			return p, "a plain SigningTable has no wildcards: OpenDKIM never matched this entry (write refile: for patterns)", ""
		case strings.HasPrefix(dom, "."):
			return p, "per-user entries for sub-domains (user@.domain) are not supported: list the addresses", ""
		default:
			p, skip = parse(key)
		}
		return p, skip, ""
	}
	local, dom, hasAt := strings.Cut(key, "@")
	switch {
	case !hasAt && !strings.Contains(key, "*"):
		return p, "OpenDKIM matches refile: patterns against the whole address, so a bare domain never matched: write *@" + key, ""
	case !hasAt && strings.HasPrefix(key, "*."):
		p, skip = parse("*@" + key) // user@x.domain
	case !hasAt && strings.HasPrefix(key, "*") && !strings.Contains(key[1:], "*"):
		// *example.org matched user@example.org, user@x.example.org and
		// user@otherexample.org; postkit takes the first two.
		p, skip = parse("*@" + strings.TrimPrefix(key[1:], "@"))
		approx = "also matched domains merely ending in " + key[1:] + "; imported as " + p.String() + " (add *@*." + key[1:] + " for its sub-domains)"
	case !hasAt:
		return p, "the catch-all pattern " + key + " is not imported: list the domains", ""
	case local != "*" && strings.Contains(local, "*"):
		return p, "partial local-part wildcards are not supported: list the addresses", ""
	case strings.Contains(strings.TrimPrefix(dom, "*."), "*"):
		return p, "wildcards inside a domain are not supported: list the domains", ""
	default:
		p, skip = parse(key)
	}
	return p, skip, approx
}

// covers reports whether every address a matches, b matches too: with
// refile: first-match order, a rule after a covering one is never used.
func covers(a, b mailaddr.Pattern) bool {
	if a.Local != "" && a != b {
		return false
	}
	if a.Sub {
		return b.Domain == a.Domain && b.Sub || strings.HasSuffix(b.Domain, "."+a.Domain)
	}
	return b.Domain == a.Domain && !b.Sub
}

// ImportTables reads an OpenDKIM KeyTable and SigningTable (each a flat
// file: /path, file:/path or refile:/path, as opendkim.conf names them)
// into postkit's signing keys and their From rules. Key file paths
// relative to the KeyTable are made absolute; "%" in a KeyTable domain or
// key path becomes the signed domain. A malformed line is an error with
// file:line; a rule postkit cannot express, or that OpenDKIM never used,
// is a warning.
func ImportTables(keyTable, signingTable string) (*Imported, error) {
	_, ktPath, err := Dataset(keyTable)
	if err != nil {
		return nil, err
	}
	refile, stPath, err := Dataset(signingTable)
	if err != nil {
		return nil, err
	}
	kf, err := os.Open(ktPath)
	if err != nil {
		return nil, fmt.Errorf("dkimkey: KeyTable: %w", err)
	}
	defer kf.Close()
	keys, err := ParseKeyTable(kf, ktPath)
	if err != nil {
		return nil, err
	}
	sf, err := os.Open(stPath)
	if err != nil {
		return nil, fmt.Errorf("dkimkey: SigningTable: %w", err)
	}
	defer sf.Close()
	rules, err := ParseSigningTable(sf, stPath)
	if err != nil {
		return nil, err
	}
	byName := make(map[string]TableKey, len(keys))
	for _, k := range keys {
		if !filepath.IsAbs(k.KeyFile) {
			k.KeyFile = filepath.Join(filepath.Dir(ktPath), k.KeyFile)
		}
		byName[k.Name] = k
	}
	im := &Imported{}
	warn := func(r SigningRule, format string, args ...any) {
		im.Warnings = append(im.Warnings, fmt.Sprintf("%s:%d: %s: ", stPath, r.Line, r.Pattern)+fmt.Sprintf(format, args...))
	}
	type ident struct{ domain, selector string }
	index := map[ident]int{}
	var earlier []mailaddr.Pattern
	for _, r := range rules {
		for _, name := range r.KeyNames {
			if _, ok := byName[name]; !ok {
				return nil, fmt.Errorf("dkimkey: %s:%d: key %q is not in %s: add it to the KeyTable or fix the name", stPath, r.Line, name, ktPath)
			}
		}
		p, skip, approx := rulePattern(r.Pattern, refile)
		if skip != "" {
			warn(r, "%s", skip)
			continue
		}
		if refile {
			shadowed := false
			for _, e := range earlier {
				if covers(e, p) {
					warn(r, "never used: OpenDKIM takes the first matching line of a refile: table, and %s comes before it", e)
					shadowed = true
					break
				}
			}
			if shadowed {
				continue
			}
			earlier = append(earlier, p)
		}
		if approx != "" {
			warn(r, "%s", approx)
		}
		if r.Signer != "" {
			warn(r, "the signer %q (i=) is not written by postkit; signatures carry d= only", r.Signer)
		}
		for _, name := range r.KeyNames {
			k := byName[name]
			d, file := k.Domain, k.KeyFile
			if d == "%" {
				if p.Sub {
					warn(r, "key %s signs with d= the sender's own domain, which for sub-domains postkit cannot do: give them a key of their own", name)
					continue
				}
				d = p.Domain
			}
			file = strings.ReplaceAll(file, "%", p.Domain)
			id := ident{d, k.Selector}
			i, ok := index[id]
			if !ok {
				i = len(im.Keys)
				index[id] = i
				im.Keys = append(im.Keys, ImportedKey{Domain: d, Selector: k.Selector, KeyFile: file})
			} else if im.Keys[i].KeyFile != file {
				return nil, fmt.Errorf("dkimkey: %s:%d: selector %s._domainkey.%s is given two key files, %s and %s: one selector has one key", stPath, r.Line, k.Selector, d, im.Keys[i].KeyFile, file)
			}
			ps := p.String()
			dup := false
			for _, f := range im.Keys[i].From {
				dup = dup || f == ps
			}
			if !dup {
				im.Keys[i].From = append(im.Keys[i].From, ps)
			}
		}
	}
	// A key whose only rule is its own domain needs no from: list.
	for i := range im.Keys {
		k := &im.Keys[i]
		if len(k.From) == 1 && k.From[0] == "*@"+k.Domain {
			k.From = nil
		}
	}
	return im, nil
}

// YAML renders the import as the milter.dkim section of postkit.yaml.
func (im *Imported) YAML() string {
	var b strings.Builder
	b.WriteString("milter:\n  dkim:\n    sign: true\n")
	if len(im.Keys) == 0 {
		b.WriteString("    keys: []\n")
	} else {
		b.WriteString("    keys:\n")
	}
	for _, k := range im.Keys {
		fmt.Fprintf(&b, "      - domain: %s\n        selector: %s\n        key_file: %s\n", yamlScalar(k.Domain), yamlScalar(k.Selector), yamlScalar(k.KeyFile))
		if len(k.From) > 0 {
			q := make([]string, len(k.From))
			for i, f := range k.From {
				q[i] = `"` + f + `"`
			}
			fmt.Fprintf(&b, "        from: [%s]\n", strings.Join(q, ", "))
		}
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
