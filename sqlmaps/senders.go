package sqlmaps

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// SenderLoginMap is the name of the map behind Postfix's
// smtpd_sender_login_maps (sqlite-sender-login.cf). Its query answers, for a
// sender address, the SASL logins that may use it. A login may use address A
// (the lookup key, folded to lower case as Postfix folds every key) when:
//
//  1. the login is A itself: an active row of postfix_utilisateurs;
//  2. the login is an active user named in the destination list of an active
//     row of postfix_alias_virtuels for A, directly or through further rows
//     named there: the users virtual(5) expansion delivers A's mail to
//     (a loop ends where it closes);
//  3. postkit.yaml's sender_logins grants A, or A's whole domain (@domain),
//     to the login (Map.With).
//
// With a recipient delimiter (Map.With), user+ext@domain is also judged as
// user@domain: a user may use every extension of the addresses they may use.
// Postfix would try user@domain itself after user+ext@domain found nothing,
// but a domain grant answers for every address of its domain, which would
// stop that second lookup; so the query asks both at once.
//
// A catch-all row (@domain) grants nothing: it is never the lookup key
// (the "@domain" probe of Postfix's mail_addr_find(3) is suppressed by %u,
// whose local part is empty) and the expansion only follows rows keyed by a
// full address. Delivering every unknown address of a domain to a user does
// not let that user send as every address of the domain; an administrator
// who wants that writes the grant in sender_logins, where it can be read.
// Local aliases (postfix_alias, the host's own names such as postmaster)
// grant nothing either.
const SenderLoginMap = "sender-login"

// destList turns a destination column into ",a@x,b@x,": lower case, every
// separator virtual(5) accepts (comma, space, tab, line breaks) a comma, one
// comma at the end so that the recursion below can cut one item at a time.
func destList(d dialect, col string) string {
	return "replace(replace(replace(replace(lower(" + col + "), ' ', ','), " + d.char(9) + ", ','), " + d.char(10) + ", ','), " + d.char(13) + ", ',') || ','"
}

// senderLoginQuery builds the map's query. k holds the keys asked: the
// address and, with a delimiter, the address without its extension. The
// recursive table e holds (addr, rest) pairs: a destination list still to
// cut (rest) and the address just cut from it (addr). Its three parts: the
// lists of the keys' own alias rows; cutting one address off a list; the
// list of the alias row of an address cut. UNION (not UNION ALL) drops pairs
// already seen, so alias loops end. Every step is an index search (the
// UNIQUE columns courriel and utilisateur; TestSenderLoginPlan). Several
// recursive parts need SQLite 3.34 or later: Debian 12 has 3.40.
//
// PostgreSQL allows one reference to e in the recursive part, so there the
// two steps are one lateral join from e; the rows are the same.
func senderLoginQuery(d dialect, delim string) string {
	keys := "SELECT '%u@%d'"
	if d.pg() {
		keys = "SELECT CAST('%u@%d' AS TEXT)"
	}
	if delim != "" {
		l := literal(delim)
		before := "substr('%u', 1, instr('%u', " + l + ") - 1)"
		if d.pg() {
			// PostgreSQL folds constants before WHERE and refuses a
			// negative length, so cut with split_part.
			before = "split_part('%u', " + l + ", 1)"
		}
		keys += " UNION SELECT " + before + " || '@%d' WHERE " + d.instr("'%u'", l) + " > 1"
	}
	first := "SELECT '', " + destList(d, "destination") + " FROM postfix_alias_virtuels WHERE courriel IN (SELECT addr FROM k) AND active = '1' "
	var steps string
	if d.pg() {
		first = "SELECT CAST('' AS TEXT), " + destList(d, "destination") + " FROM postfix_alias_virtuels WHERE courriel IN (SELECT addr FROM k) AND active = '1' "
		steps = "UNION SELECT s.addr, s.rest FROM e CROSS JOIN LATERAL (" +
			"SELECT split_part(e.rest, ',', 1) AS addr, substr(e.rest, strpos(e.rest, ',') + 1) AS rest WHERE e.rest <> '' " +
			"UNION ALL SELECT '', " + destList(d, "a.destination") + " FROM postfix_alias_virtuels a WHERE a.courriel = e.addr AND e.addr <> '' AND a.active = '1') s"
	} else {
		steps = "UNION SELECT substr(rest, 1, instr(rest, ',') - 1), substr(rest, instr(rest, ',') + 1) FROM e WHERE rest <> '' " +
			"UNION SELECT '', " + destList(d, "a.destination") + " FROM e JOIN postfix_alias_virtuels a ON a.courriel = e.addr WHERE e.addr <> '' AND a.active = '1'"
	}
	return "WITH RECURSIVE k(addr) AS (" + keys + "), e(addr, rest) AS (" + first + steps +
		") SELECT utilisateur FROM postfix_utilisateurs WHERE active = '1' AND (utilisateur IN (SELECT addr FROM k) OR utilisateur IN (SELECT addr FROM e))"
}

// SenderGrant lets logins use a sender address, or every address of a
// domain, beyond what the database says (postkit.yaml sender_logins).
type SenderGrant struct {
	Sender string   // user@domain, or @domain for every address of the domain
	Logins []string // SASL logins: user addresses
}

// SenderRules are the settings of postkit.yaml the sender-login map depends on.
type SenderRules struct {
	Grants    []SenderGrant
	Delimiter string // recipient_delimiter: one character, or "" for none
}

// With returns m as the rules shape it when m is the sender-login map;
// other maps do not depend on them and come back as they are. A grant is
// one row of a VALUES list matched against the keys and against "@" and the
// key's domain, so that a domain grant holds even for an address that also
// has an owner in the database.
func (m Map) With(r SenderRules) (Map, error) {
	if m.Name != SenderLoginMap {
		return m, nil
	}
	if len(r.Delimiter) > 1 || strings.ContainsAny(r.Delimiter, "@ \t\r\n\x00\\") {
		return m, errf(ErrInvalid, "recipient delimiter %q: use one character such as +", r.Delimiter)
	}
	m.Query = senderLoginQuery(sqliteDialect, r.Delimiter)
	m.PGQuery = senderLoginQuery(postgresDialect, r.Delimiter)
	var rows []string
	for _, g := range r.Grants {
		sender, err := CheckVirtualSource(g.Sender)
		if err != nil {
			return m, fmt.Errorf("sqlmaps: sender grant: %w", err)
		}
		if len(g.Logins) == 0 {
			return m, errf(ErrInvalid, "sender grant %s names no login: list the user addresses that may use it", sender)
		}
		for _, l := range g.Logins {
			login, err := CheckAddress(l)
			if err != nil {
				return m, fmt.Errorf("sqlmaps: sender grant %s: login: %w", sender, err)
			}
			rows = append(rows, "("+literal(sender)+", "+literal(login)+")")
		}
	}
	if len(rows) > 0 {
		m.Query += " UNION SELECT column2 FROM (VALUES " + strings.Join(rows, ", ") + ") WHERE column1 IN (SELECT addr FROM k UNION ALL SELECT '@%d')"
		// PostgreSQL 15 wants a name for the VALUES list.
		m.PGQuery += " UNION SELECT column2 FROM (VALUES " + strings.Join(rows, ", ") + ") AS g WHERE column1 IN (SELECT addr FROM k UNION ALL SELECT '@%d')"
	}
	return m, nil
}

// literal quotes s for the query: ” for a quote (SQL), %% for a percent
// sign (sqlite_table(5) expands % even inside literals). The values are
// validated addresses: no control characters, no backslashes.
func literal(s string) string {
	return "'" + strings.NewReplacer("'", "''", "%", "%%").Replace(s) + "'"
}

// Senders answers whether a login may use a sender address with the
// sender-login map, as Postfix's reject_sender_login_mismatch asks it: the
// one definition of "may use" for smtpd (the envelope sender) and for the
// milter (the From header).
type Senders struct {
	store *Store
	m     Map
	fold  Fold
}

// Senders returns the sender-login check over s with the rules of
// postkit.yaml; fold is how Postfix folds keys (smtputf8_enable).
func (s *Store) Senders(r SenderRules, fold Fold) (*Senders, error) {
	m, ok := MapByName(SenderLoginMap)
	if !ok {
		return nil, errors.New("sqlmaps: no sender-login map")
	}
	m, err := m.With(r)
	if err != nil {
		return nil, err
	}
	return &Senders{store: s, m: m, fold: fold}, nil
}

// Owners returns the logins that may use addr: the map's answer for addr,
// split on commas and white space as smtpd splits it (CHARS_COMMA_SP).
// Postfix's later probes (user@domain after user+ext@domain, "@domain",
// bare "user") find nothing the first lookup did not: the query asks the
// address without extension itself and needs a local part and a domain.
func (c *Senders) Owners(ctx context.Context, addr string) ([]string, error) {
	v, found, _, err := c.store.Lookup(ctx, c.m, addr, c.fold)
	if err != nil || !found {
		return nil, err
	}
	return strings.FieldsFunc(v, func(r rune) bool { return strings.ContainsRune(", \t\r\n", r) }), nil
}

// MayUse reports whether login owns addr. Logins compare without regard to
// case, as smtpd compares them (strcasecmp_utf8).
func (c *Senders) MayUse(ctx context.Context, login, addr string) (bool, error) {
	owners, err := c.Owners(ctx, addr)
	if err != nil {
		return false, err
	}
	for _, o := range owners {
		if strings.EqualFold(o, login) {
			return true, nil
		}
	}
	return false, nil
}
