package sqlmaps

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// ImportRow is one row of an import file: a domain, a user, a local alias
// or a virtual alias, with where it was written.
type ImportRow struct {
	Pos          string // file:line
	Kind         Kind   // Domains, Users, Aliases or VirtualAliases
	Key          string // domain, address, alias name or virtual source
	Default      bool   // domains: make it the default
	Active       *bool  // nil: active (a new row) or as stored
	Name         string // users
	PasswordHash string // users: "{SCHEME}…", stored as is
	Password     string // users: plaintext, hashed by ImportOptions.Hash
	Privilege    string // users
	UID, GID     int    // users; 0 means ImportOptions' defaults
	Destination  string // aliases
}

// ImportError is every problem of an import, each at its file:line.
type ImportError []string

func (e ImportError) Error() string {
	return "sqlmaps: import refused, nothing changed:\n" + strings.Join(e, "\n")
}

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e ImportError) Unwrap() error { return ErrInvalid }

// ImportFormats are the formats ParseImport reads.
var ImportFormats = []string{"csv", "json"}

// ParseImport reads an import file. CSV: one row per line, its first field
// the kind, '#' starts a comment line:
//
//	domain,exemple.fr[,default]
//	user,test@exemple.fr,{SHA512-CRYPT}$6$…[,Full Name[,privilege]]
//	alias,postmaster,test@exemple.fr[,more destinations…]
//	valias,contact@exemple.fr,test@exemple.fr[,…]
//
// An empty hash field in CSV means "password from the password column of
// JSON only": CSV never carries plaintext. JSON: an object with the lists
// "domains", "users", "aliases" and "valiases", whose items use the field
// names of 'postkit db … list --json' (domain, default, active; user, name,
// privilege, uid, gid, password_hash or password; source, destination).
func ParseImport(name string, data []byte, format string) ([]ImportRow, error) {
	switch format {
	case "csv":
		return parseCSV(name, data)
	case "json":
		return parseJSON(name, data)
	}
	return nil, errf(ErrInvalid, "import format %q: use csv or json", format)
}

func parseCSV(name string, data []byte) ([]ImportRow, error) {
	r := csv.NewReader(bytes.NewReader(data))
	r.FieldsPerRecord = -1
	r.Comment = '#'
	r.TrimLeadingSpace = true
	var rows []ImportRow
	var errs ImportError
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return nil, ImportError{fmt.Sprintf("%s:%d: not valid CSV: %v", name, pe.Line, pe.Err)}
			}
			return nil, ImportError{fmt.Sprintf("%s: %v", name, err)}
		}
		line, _ := r.FieldPos(0)
		pos := fmt.Sprintf("%s:%d", name, line)
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue
		}
		bad := func(format string, args ...any) { errs = append(errs, pos+": "+fmt.Sprintf(format, args...)) }
		row := ImportRow{Pos: pos}
		kind := strings.ToLower(strings.TrimSpace(rec[0]))
		args := rec[1:]
		switch kind {
		case "domain":
			if len(args) < 1 || len(args) > 2 {
				bad("want domain,NAME[,default]")
				continue
			}
			row.Kind, row.Key = Domains, args[0]
			if len(args) == 2 {
				switch strings.ToLower(strings.TrimSpace(args[1])) {
				case "default":
					row.Default = true
				case "":
				default:
					bad("third field %q: only \"default\" (or nothing) is allowed", args[1])
					continue
				}
			}
		case "user":
			if len(args) < 2 || len(args) > 4 {
				bad("want user,ADDRESS,{SCHEME}HASH[,FULL NAME[,PRIVILEGE]]")
				continue
			}
			row.Kind, row.Key, row.PasswordHash = Users, args[0], args[1]
			if len(args) > 2 {
				row.Name = args[2]
			}
			if len(args) > 3 {
				row.Privilege = args[3]
			}
			if row.PasswordHash == "" {
				bad("user %s has no password hash: CSV carries hashes only ({SCHEME}…); plaintext passwords go in JSON with --allow-plaintext", args[0])
				continue
			}
		case "alias", "valias":
			if len(args) < 2 {
				bad("want %s,SOURCE,DESTINATION[,DESTINATION…]", kind)
				continue
			}
			row.Kind, row.Key, row.Destination = Aliases, args[0], strings.Join(args[1:], ",")
			if kind == "valias" {
				row.Kind = VirtualAliases
			}
		default:
			bad("first field %q: want domain, user, alias or valias", rec[0])
			continue
		}
		if strings.TrimSpace(row.Key) == "" {
			bad("the second field, the %s, is empty", kind)
			continue
		}
		rows = append(rows, row)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return rows, nil
}

// parseJSON reads JSON through the YAML parser, a superset of it, for the
// line of every item.
func parseJSON(name string, data []byte) ([]ImportRow, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, ImportError{fmt.Sprintf("%s: not valid JSON: %s", name, strings.TrimPrefix(err.Error(), "yaml: "))}
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, ImportError{fmt.Sprintf("%s:1: want an object with the lists domains, users, aliases, valiases", name)}
	}
	fields := map[string]map[string]bool{
		"domains":  {"domain": true, "default": true, "active": true, "id": true},
		"users":    {"user": true, "name": true, "privilege": true, "uid": true, "gid": true, "password_hash": true, "password": true, "active": true, "id": true, "home": true, "prefix": true},
		"aliases":  {"source": true, "destination": true, "active": true, "id": true},
		"valiases": {"source": true, "destination": true, "active": true, "id": true},
	}
	kinds := map[string]Kind{"domains": Domains, "users": Users, "aliases": Aliases, "valiases": VirtualAliases}
	var rows []ImportRow
	var errs ImportError
	root := doc.Content[0]
	for i := 0; i+1 < len(root.Content); i += 2 {
		kn, list := root.Content[i], root.Content[i+1]
		known, ok := fields[kn.Value]
		if !ok {
			errs = append(errs, fmt.Sprintf("%s:%d: unknown list %q: want domains, users, aliases or valiases", name, kn.Line, kn.Value))
			continue
		}
		if list.Kind != yaml.SequenceNode {
			errs = append(errs, fmt.Sprintf("%s:%d: %s must be a list", name, list.Line, kn.Value))
			continue
		}
		for _, item := range list.Content {
			pos := fmt.Sprintf("%s:%d", name, item.Line)
			if item.Kind != yaml.MappingNode {
				errs = append(errs, pos+": want an object")
				continue
			}
			row := ImportRow{Pos: pos, Kind: kinds[kn.Value]}
			ok := true
			for j := 0; j+1 < len(item.Content); j += 2 {
				k, v := item.Content[j], item.Content[j+1]
				bad := func(want string) {
					errs = append(errs, fmt.Sprintf("%s:%d: %s: want %s", name, v.Line, k.Value, want))
					ok = false
				}
				if !known[k.Value] {
					errs = append(errs, fmt.Sprintf("%s:%d: unknown field %q in %s", name, k.Line, k.Value, kn.Value))
					ok = false
					continue
				}
				str := func(dst *string) {
					if v.Kind != yaml.ScalarNode || v.Tag != "!!str" {
						bad("a string")
						return
					}
					*dst = v.Value
				}
				boolean := func() (bool, bool) {
					b, err := strconv.ParseBool(v.Value)
					if v.Kind != yaml.ScalarNode || v.Tag != "!!bool" || err != nil {
						bad("true or false")
						return false, false
					}
					return b, true
				}
				integer := func(dst *int) {
					n, err := strconv.Atoi(v.Value)
					if v.Kind != yaml.ScalarNode || v.Tag != "!!int" || err != nil {
						bad("a whole number")
						return
					}
					*dst = n
				}
				switch k.Value {
				case "domain", "user", "source":
					str(&row.Key)
				case "default":
					row.Default, _ = boolean()
				case "active":
					if b, good := boolean(); good {
						row.Active = &b
					}
				case "name":
					str(&row.Name)
				case "privilege":
					str(&row.Privilege)
				case "password_hash":
					str(&row.PasswordHash)
				case "password":
					str(&row.Password)
				case "destination":
					str(&row.Destination)
				case "uid":
					integer(&row.UID)
				case "gid":
					integer(&row.GID)
				}
			}
			if ok && row.Key == "" {
				errs = append(errs, fmt.Sprintf("%s: no %s", pos, map[Kind]string{Domains: "domain", Users: "user", Aliases: "source", VirtualAliases: "source"}[row.Kind]))
				ok = false
			}
			if ok && row.Kind == Users && (row.PasswordHash == "") == (row.Password == "") {
				errs = append(errs, fmt.Sprintf("%s: user %s needs exactly one of password_hash and password", pos, row.Key))
				ok = false
			}
			if ok {
				rows = append(rows, row)
			}
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return rows, nil
}

// ImportOptions say how Import fills what a row leaves out.
type ImportOptions struct {
	UID, GID int // users without uid/gid
	// CheckIDs refuses a uid/gid the mail stack would not accept (nil: any
	// above 0).
	CheckIDs func(uid, gid int) error
	// Hash turns a plaintext password into a stored hash, after checking it
	// against the password policy; nil refuses plaintext passwords.
	Hash func(address, password string) (string, error)
}

// Import applies rows in one transaction: domains first, then users, then
// aliases, whatever their order in the file, so that a row may name what a
// later line adds. Each row is an idempotent add (a row stored with the
// same values is unchanged; other values are an error), then its active
// flag when given. Every problem is reported, each at its file:line, and
// then nothing is changed.
func (s *Store) Import(ctx context.Context, rows []ImportRow, o ImportOptions) ([]Result, error) {
	sorted := append([]ImportRow(nil), rows...)
	sort.SliceStable(sorted, func(i, j int) bool { return importOrder(sorted[i].Kind) < importOrder(sorted[j].Kind) })
	var results []Result
	var errs ImportError
	err := s.Batch(ctx, func(b *Store) error {
		for _, r := range sorted {
			res, err := b.importRow(ctx, r, o)
			if err != nil {
				errs = append(errs, r.Pos+": "+strings.TrimPrefix(err.Error(), "sqlmaps: "))
				continue
			}
			results = append(results, res)
		}
		if len(errs) > 0 {
			return errs
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return results, nil
}

func importOrder(k Kind) int {
	switch k {
	case Domains:
		return 0
	case Users:
		return 1
	}
	return 2
}

func (s *Store) importRow(ctx context.Context, r ImportRow, o ImportOptions) (Result, error) {
	var res Result
	var err error
	switch r.Kind {
	case Domains:
		res, err = s.AddDomain(ctx, r.Key, r.Default)
	case Users:
		u := NewUser{Address: r.Key, PasswordHash: r.PasswordHash, Name: r.Name, UID: r.UID, GID: r.GID, Privilege: r.Privilege}
		if u.UID == 0 {
			u.UID = o.UID
		}
		if u.GID == 0 {
			u.GID = o.GID
		}
		if o.CheckIDs != nil {
			if err := o.CheckIDs(u.UID, u.GID); err != nil {
				return Result{}, err
			}
		}
		if r.Password != "" {
			if o.Hash == nil {
				return Result{}, errf(ErrInvalid, "user %s has a plaintext password: pass --allow-plaintext (and feed the file on stdin, so that it never lies on disk) or give password_hash", r.Key)
			}
			if u.PasswordHash, err = o.Hash(r.Key, r.Password); err != nil {
				return Result{}, err
			}
		}
		res, err = s.AddUser(ctx, u)
	case Aliases:
		res, err = s.AddAlias(ctx, r.Key, r.Destination)
	case VirtualAliases:
		res, err = s.AddVirtualAlias(ctx, r.Key, r.Destination)
	default:
		return Result{}, fmt.Errorf("sqlmaps: import of %s rows is not supported", r.Kind)
	}
	if err != nil || r.Active == nil {
		return res, err
	}
	a, err := s.SetActive(ctx, r.Kind, res.Key, *r.Active)
	if err != nil {
		return Result{}, err
	}
	if a.Changed() && !res.Changed() {
		res.Change, res.Detail = Updated, a.Detail
	}
	return res, nil
}

// Items returns each problem, "file:line: message".
func (e ImportError) Items() []string { return e }
