// Package rules is the spam rules engine: tests over a message's header
// fields, decoded text, raw text, full source and links, and meta rules that
// combine them, each with a name, a score and a description, read from
// rules files that admins extend and override.
//
// # The rules file
//
// One directive a line; blank lines and lines starting with # are ignored.
// The syntax is close to SpamAssassin's configuration files so that admins
// find their way, but it is postkit's own: the shipped rules (default.rules,
// embedded in the binary) are written for postkit, and regular expressions
// are Go's (RE2: no backreferences, no lookaround).
//
//	header   NAME  Field =~ /regexp/flags   the field's value (RFC 2047 decoded, unfolded;
//	                                        several fields joined by newlines; "" when missing)
//	header   NAME  Field !~ /regexp/flags   hits when the value does not match
//	header   NAME  Field:addr =~ /re/       the field's addresses only (From:addr, To:addr…);
//	                                        Field:name the display names, Field:raw undecoded
//	header   NAME  ALL =~ /re/              the whole header, one "Name: value" line per field
//	header   NAME  exists:Field             hits when the field is present
//	body     NAME  /regexp/flags            Subject and readable text (HTML rendered), white
//	                                        space runs as one space, paragraphs on lines
//	rawbody  NAME  /regexp/flags            decoded text parts with HTML markup kept
//	full     NAME  /regexp/flags            the message as received (header and body)
//	uri      NAME  /regexp/flags            each link found in text and HTML
//	meta     NAME  expression               rule names (1 when hit, else 0), numbers,
//	                                        ! && || + - * < <= > >= == != and parentheses
//	eval     NAME  function(args)           a built-in test (see Funcs)
//	score    NAME  number                   the score; 0 disables the rule
//	describe NAME  text                     one line for reports
//	whitelist_from PATTERN…                 sender addresses to let through (*@exemple.fr);
//	                                        also welcomelist_from, allowlist_from
//	blacklist_from PATTERN…                 sender addresses to mark as spam; also blocklist_from
//
// Flags: i (ignore case), m (^ and $ at line ends), s (. matches newline).
// A rule's regexp may also be written m{…}, m!…! or with any other
// punctuation as delimiter.
//
// Files are read in order: the shipped rules, then each rules directory's
// *.rules files in lexical order. A later definition of a rule replaces the
// test (and keeps the score unless it sets one); a later score replaces the
// score. A rule without a score scores 1, except rules whose names start
// with "__", which only feed meta rules. Errors name file:line and say what
// to write instead.
package rules

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode"
)

// Kind is what a rule tests.
type Kind uint8

// Rule kinds.
const (
	Header Kind = iota + 1
	Body
	RawBody
	Full
	URI
	Meta
	Eval
)

var kindNames = map[string]Kind{
	"header": Header, "body": Body, "rawbody": RawBody, "full": Full,
	"uri": URI, "meta": Meta, "eval": Eval,
}

func (k Kind) String() string {
	for n, v := range kindNames {
		if v == k {
			return n
		}
	}
	return "?"
}

// Pos is a place in a rules file.
type Pos struct {
	File string
	Line int
}

func (p Pos) String() string { return fmt.Sprintf("%s:%d", p.File, p.Line) }

// Error is a rules file error at a position, with a hint saying what to
// write instead.
type Error struct {
	Pos
	Msg  string
	Hint string
}

func (e *Error) Error() string {
	s := e.Pos.String() + ": " + e.Msg
	if e.Hint != "" {
		s += "; " + e.Hint
	}
	return s
}

// Rule is one rule of a Set.
type Rule struct {
	Name        string
	Kind        Kind
	Description string
	// Source is the rule's test as written after its name.
	Source string
	// Pos is where the test was defined; ScorePos where its score was.
	Pos, ScorePos Pos

	score    float64
	hasScore bool

	// header tests
	field  string // canonical field name; "ALL" for the whole header
	mod    string // "", "addr", "name", "raw"
	exists bool
	negate bool
	re     *regexp.Regexp

	meta *node
	eval *evalCall
	// lits: every match contains one string of each clause (prefilter.go);
	// litIDs: the same strings as indexes into the set's litMatcher.
	lits   [][]string
	litIDs [][]int32
	// branches: the alternatives of a body or raw body regexp that is one
	// alternation, each with its prefilter (branches.go); nil otherwise.
	branches []branch
}

// Score returns the rule's score: its set score, else 1, or 0 for "__"
// rules.
func (r *Rule) Score() float64 {
	if r.hasScore {
		return r.score
	}
	if strings.HasPrefix(r.Name, "__") {
		return 0
	}
	return 1
}

// Enabled reports whether the rule counts: scored rules other than 0, and
// the "__" rules meta rules read.
func (r *Rule) Enabled() bool {
	if strings.HasPrefix(r.Name, "__") {
		return !r.hasScore || r.score != 0
	}
	return r.Score() != 0
}

// Set is a parsed collection of rules. Build it with NewSet or Default, add
// files with Parse, then Compile before Eval. A compiled Set is read-only and
// safe for concurrent use.
type Set struct {
	rules map[string]*Rule
	// scores and descriptions given before their rule is defined
	scores map[string]scoreDef
	descs  map[string]string

	// Allow and Block are the whitelist_from and blacklist_from patterns,
	// in order.
	Allow, Block []string
	// Warnings are oddities that do not stop loading: a score for a rule no
	// file defines, a meta rule reading a disabled rule.
	Warnings []string

	compiled bool
	order    []*Rule // evaluation order: tests, then metas after what they read
	lit      *litMatcher
}

type scoreDef struct {
	v   float64
	pos Pos
}

// NewSet returns an empty set.
func NewSet() *Set {
	return &Set{rules: map[string]*Rule{}, scores: map[string]scoreDef{}, descs: map[string]string{}}
}

// maxErrors bounds the errors one Parse reports.
const maxErrors = 20

// Parse reads one rules file's directives into the set. It reports every
// error of the file (up to 20), each an *Error, joined.
func (s *Set) Parse(file string, data []byte) error {
	if s.compiled {
		return errors.New("rules: Parse after Compile")
	}
	var errs []error
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	line := 0
	for sc.Scan() {
		line++
		if err := s.parseLine(Pos{file, line}, sc.Text()); err != nil {
			errs = append(errs, err)
			if len(errs) >= maxErrors {
				break
			}
		}
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, &Error{Pos{file, line + 1}, "line longer than 64 KiB", "split the rule or shorten its regexp"})
	}
	return errors.Join(errs...)
}

func (s *Set) parseLine(pos Pos, text string) error {
	t := strings.TrimSpace(text)
	if t == "" || strings.HasPrefix(t, "#") {
		return nil
	}
	if !utf8Valid(t) {
		return &Error{pos, "line is not valid UTF-8", "save the rules file as UTF-8"}
	}
	dir, rest := cutSpace(t)
	dir = strings.ToLower(dir)
	switch dir {
	case "whitelist_from", "welcomelist_from", "allowlist_from", "blacklist_from", "blocklist_from":
		pats := strings.Fields(rest)
		if len(pats) == 0 {
			return &Error{pos, dir + " without an address pattern", "write e.g. " + dir + " *@exemple.fr"}
		}
		for _, p := range pats {
			if err := checkPattern(p); err != nil {
				return &Error{pos, fmt.Sprintf("%s %q: %v", dir, p, err), "write an address with * and ? wildcards, e.g. *@exemple.fr"}
			}
			if strings.HasPrefix(dir, "bl") {
				s.Block = append(s.Block, strings.ToLower(p))
			} else {
				s.Allow = append(s.Allow, strings.ToLower(p))
			}
		}
		return nil
	}
	name, arg := cutSpace(rest)
	if _, ok := kindNames[dir]; !ok && dir != "score" && dir != "describe" {
		return &Error{pos, fmt.Sprintf("unknown directive %q", dir), "use header, body, rawbody, full, uri, meta, eval, score, describe, whitelist_from or blacklist_from"}
	}
	if name == "" {
		return &Error{pos, dir + " without a rule name", "write " + dir + " NAME …"}
	}
	if !validName(name) {
		return &Error{pos, fmt.Sprintf("rule name %q", name), "use letters, digits and _ only, starting with a letter or _ (e.g. SUBJ_ALL_CAPS)"}
	}
	switch dir {
	case "score":
		fs := strings.Fields(arg)
		if len(fs) != 1 {
			return &Error{pos, fmt.Sprintf("score %s: want one number, got %q", name, arg), "write e.g. score " + name + " 1.5 (0 disables the rule)"}
		}
		v, err := strconv.ParseFloat(fs[0], 64)
		if err != nil || v != v || v > 10000 || v < -10000 {
			return &Error{pos, fmt.Sprintf("score %s: %q is not a number between -10000 and 10000", name, fs[0]), "write e.g. score " + name + " 1.5"}
		}
		if r, ok := s.rules[name]; ok {
			r.score, r.hasScore, r.ScorePos = v, true, pos
		} else {
			s.scores[name] = scoreDef{v, pos}
		}
		return nil
	case "describe":
		if r, ok := s.rules[name]; ok {
			r.Description = arg
		} else {
			s.descs[name] = arg
		}
		return nil
	}
	if arg == "" {
		return &Error{pos, dir + " " + name + " without a test", hintFor(dir, name)}
	}
	r := &Rule{Name: name, Kind: kindNames[dir], Source: arg, Pos: pos}
	var err error
	switch r.Kind {
	case Header:
		err = parseHeaderTest(r, arg)
	case Body, RawBody, Full, URI:
		r.re, err = parseRegexp(arg)
		if err == nil && (r.Kind == Body || r.Kind == RawBody) {
			r.lits = requiredLiterals(r.re, r.Kind == Body)
			r.branches = splitBranches(r.re, r.Kind == Body)
		}
	case Meta:
		r.meta, err = parseMeta(arg)
	case Eval:
		r.eval, err = parseEval(arg)
	}
	if err != nil {
		return &Error{pos, fmt.Sprintf("%s %s: %v", dir, name, err), hintFor(dir, name)}
	}
	if old, ok := s.rules[name]; ok {
		r.score, r.hasScore, r.ScorePos, r.Description = old.score, old.hasScore, old.ScorePos, old.Description
	}
	if d, ok := s.scores[name]; ok {
		r.score, r.hasScore, r.ScorePos = d.v, true, d.pos
		delete(s.scores, name)
	}
	if d, ok := s.descs[name]; ok {
		r.Description = d
		delete(s.descs, name)
	}
	s.rules[name] = r
	return nil
}

func hintFor(dir, name string) string {
	switch dir {
	case "header":
		return "write header " + name + " Subject =~ /regexp/i, Field !~ /re/, From:addr =~ /re/ or exists:Field"
	case "meta":
		return "write meta " + name + " RULE_A && (RULE_B || !RULE_C), or (RULE_A + RULE_B + RULE_C) >= 2"
	case "eval":
		return "write eval " + name + " function(args), one of " + strings.Join(FuncNames(), ", ")
	}
	return "write " + dir + " " + name + " /regexp/flags (Go RE2 syntax: no backreferences or lookaround; flags i, m, s)"
}

func cutSpace(s string) (string, string) {
	i := strings.IndexFunc(s, unicode.IsSpace)
	if i < 0 {
		return s, ""
	}
	return s[:i], strings.TrimSpace(s[i:])
}

func validName(n string) bool {
	if n == "" || len(n) > 64 {
		return false
	}
	for i, c := range n {
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

func validField(n string) bool {
	if n == "" || len(n) > 76 {
		return false
	}
	for i := 0; i < len(n); i++ {
		if n[i] <= ' ' || n[i] >= 127 || n[i] == ':' {
			return false
		}
	}
	return true
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "") == s }

// checkPattern accepts address patterns: printable, no white space, at most
// 254 bytes.
func checkPattern(p string) error {
	if len(p) > 254 {
		return errors.New("longer than 254 bytes")
	}
	for i := 0; i < len(p); i++ {
		if p[i] <= ' ' || p[i] >= 127 {
			return errors.New("white space or non-ASCII character")
		}
	}
	return nil
}

// parseHeaderTest parses "Field[:mod] =~ /re/", "Field !~ /re/" or
// "exists:Field".
func parseHeaderTest(r *Rule, arg string) error {
	if f, ok := strings.CutPrefix(arg, "exists:"); ok {
		f = strings.TrimSpace(f)
		if !validField(f) {
			return fmt.Errorf("exists:%s: not a header field name", f)
		}
		r.field, r.exists = f, true
		return nil
	}
	field, rest := cutSpace(arg)
	op, re := cutSpace(rest)
	switch op {
	case "=~":
	case "!~":
		r.negate = true
	default:
		return fmt.Errorf("want =~ or !~ after the field name, got %q", op)
	}
	if name, mod, ok := strings.Cut(field, ":"); ok {
		switch mod {
		case "addr", "name", "raw":
		default:
			return fmt.Errorf("field modifier %q: want :addr, :name or :raw", mod)
		}
		field, r.mod = name, mod
	}
	if !validField(field) {
		return fmt.Errorf("%q is not a header field name", field)
	}
	r.field = field
	var err error
	r.re, err = parseRegexp(re)
	return err
}

// parseRegexp parses /re/flags or m<delim>re<delim>flags into a Go regexp.
func parseRegexp(s string) (*regexp.Regexp, error) {
	if s == "" {
		return nil, errors.New("missing regexp")
	}
	open := s[0]
	body := s[1:]
	if open == 'm' && len(s) > 1 {
		open, body = s[1], s[2:]
	} else if open != '/' {
		return nil, fmt.Errorf("regexp %q must start with / (or m and a delimiter)", s)
	}
	if unicode.IsLetter(rune(open)) || unicode.IsDigit(rune(open)) || unicode.IsSpace(rune(open)) {
		return nil, fmt.Errorf("regexp delimiter %q: use / or punctuation", open)
	}
	closeDelim := open
	switch open {
	case '{':
		closeDelim = '}'
	case '(':
		closeDelim = ')'
	case '[':
		closeDelim = ']'
	case '<':
		closeDelim = '>'
	}
	end := strings.LastIndexByte(body, closeDelim)
	if end < 0 {
		return nil, fmt.Errorf("regexp %q has no closing %c", s, closeDelim)
	}
	pat, flags := body[:end], body[end+1:]
	if closeDelim == '/' {
		pat = strings.ReplaceAll(pat, `\/`, `/`)
	}
	var prefix string
	for _, f := range flags {
		switch f {
		case 'i', 'm', 's':
			if !strings.ContainsRune(prefix, f) {
				prefix += string(f)
			}
		default:
			return nil, fmt.Errorf("regexp flag %q: want i, m or s", f)
		}
	}
	if prefix != "" {
		pat = "(?" + prefix + ")" + pat
	}
	re, err := regexp.Compile(pat)
	if err != nil {
		return nil, fmt.Errorf("regexp: %v", err)
	}
	return re, nil
}
