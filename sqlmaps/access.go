package sqlmaps

import (
	"context"
	"strings"
)

// AccessOptions are the main.cf settings an access(5) search depends on.
type AccessOptions struct {
	// RecipientDelimiter is main.cf's recipient_delimiter ("" for none).
	RecipientDelimiter string
	// ParentMatches is true when parent_domain_matches_subdomains lists
	// smtpd_access_maps (Postfix's default): the key example.com also
	// matches sub.example.com. When false, only .example.com does.
	ParentMatches bool
	// NullKey is smtpd_null_access_lookup_key, the key of the null
	// sender (<>, Postfix's default).
	NullKey string
}

// AccessKeys lists the keys check_sender_access and check_recipient_access
// try for an address, in order, as access(5) EMAIL ADDRESS PATTERNS and
// ADDRESS EXTENSION say: user+ext@domain, user@domain, the domain and its
// parents (example.com, com; or .example.com, .com without parent
// matching), user+ext@, user@. The null address is the null key alone.
func AccessKeys(address string, o AccessOptions) []string {
	if address == "" || address == "<>" {
		if o.NullKey == "" {
			return []string{"<>"}
		}
		return []string{o.NullKey}
	}
	i := strings.LastIndexByte(address, '@')
	local, domain := address, ""
	if i >= 0 {
		local, domain = address[:i], address[i+1:]
	}
	base := ""
	if o.RecipientDelimiter != "" {
		if j := strings.IndexAny(local, o.RecipientDelimiter); j > 0 {
			base = local[:j]
		}
	}
	keys := []string{address} // the whole address, or a bare name as given
	if i >= 0 && base != "" {
		keys = append(keys, base+"@"+domain)
	}
	for name := domain; name != ""; {
		keys = append(keys, name)
		j := strings.IndexByte(name[1:], '.')
		if j < 0 {
			break
		}
		name = name[j+1:] // ".rest"
		if o.ParentMatches {
			name = name[1:]
		}
	}
	if local != "" {
		keys = append(keys, local+"@")
		if base != "" {
			keys = append(keys, base+"@")
		}
	}
	return keys
}

// AccessLookup searches m, an access(5) table, as the Postfix SMTP server
// does for an envelope address: the keys of AccessKeys in order, the first
// that is found decides. It returns that value and key; tried lists every
// key asked.
func (s *Store) AccessLookup(ctx context.Context, m Map, address string, fold Fold, o AccessOptions) (value, matched string, tried []string, warnings []Warning, err error) {
	if fold == FoldASCII {
		address = asciiLower(address)
	}
	for _, k := range AccessKeys(address, o) {
		tried = append(tried, k)
		v, found, w, err := s.Lookup(ctx, m, k, fold)
		warnings = append(warnings, w...)
		if err != nil {
			return "", "", tried, warnings, err
		}
		if found {
			return v, k, tried, warnings, nil
		}
	}
	return "", "", tried, warnings, nil
}

// IsAccessMap reports whether m is read by check_sender_access or
// check_recipient_access (an access(5) table).
func IsAccessMap(m Map) bool {
	return m.Name == "liste-noire-expediteurs" || m.Name == "liste-noire-destinataires"
}
