package rules

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/postkit/postkit/spam/content"
)

// Context is what rules are evaluated against.
type Context struct {
	Msg *content.Message
	// Raw is the message as received, for full rules.
	Raw []byte
	// Bayes is the classifier's spam probability, or -1 when it did not vote.
	Bayes float64
	// Facts are what the caller established outside the message text and
	// eval fact(NAME) reads: e.g. "from_allowlisted", "spf_pass".
	Facts map[string]bool
	// Now is when the message arrived; zero when the caller does not know
	// (a stored message): the newest Received field's date stands for it.
	Now time.Time
	// Helo is the SMTP client's HELO name, "" when unknown.
	Helo string

	skewDone, skewOK bool
	skew             time.Duration
	dateDone, dateOK bool
	dateVal          time.Time

	body      string
	bodyOK    bool
	bodyFold  string
	rawFold   string
	rawFoldOK bool
	headers   map[string]string
	// Which prefilter strings the folded body and raw text hold, found in
	// one pass over each (litMatcher), when a rule first asks.
	lit               *litMatcher
	bodyLits, rawLits []bool
}

// mayMatch reports whether the found strings satisfy every clause of the
// prefilter ids (true when it has none); *found is computed from folded
// when first needed.
func (c *Context) mayMatch(r *Rule, folded string, found *[]bool) bool {
	return c.clausesHold(r.lits, r.litIDs, folded, found)
}

// matchText runs a body or raw body rule's regexp over text: branch by
// branch, each only when its prefilter holds, when the rule was split.
func (c *Context) matchText(r *Rule, text, folded string, found *[]bool) bool {
	if !c.mayMatch(r, folded, found) {
		return false
	}
	if r.branches == nil {
		return r.re.MatchString(text)
	}
	for i := range r.branches {
		b := &r.branches[i]
		if c.clausesHold(b.lits, b.litIDs, folded, found) && b.re.MatchString(text) {
			return true
		}
	}
	return false
}

// clausesHold is mayMatch for one prefilter: lits, or the same as ids into
// the set's litMatcher.
func (c *Context) clausesHold(lits [][]string, ids [][]int32, folded string, found *[]bool) bool {
	if len(lits) == 0 {
		return true
	}
	if c.lit == nil || len(ids) != len(lits) {
		return mayMatch(lits, folded)
	}
	if *found == nil {
		*found = c.lit.scan(folded)
	}
	f := *found
	for _, cl := range ids {
		ok := false
		for _, id := range cl {
			if f[id] {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func (c *Context) foldedBody() string {
	c.bodyText()
	return c.bodyFold
}

func (c *Context) foldedRaw() string {
	if !c.rawFoldOK {
		c.rawFold, c.rawFoldOK = foldText(c.Msg.RawText), true
	}
	return c.rawFold
}

// Hit is a rule that matched.
type Hit struct {
	Name        string
	Score       float64
	Description string
}

// evalFunc is an eval function: its one-line documentation and the parser of
// its arguments, which returns the test.
type evalFunc struct {
	doc   string
	parse func(args []string) (func(*Context) bool, error)
}

// evalCall is a parsed eval function call.
type evalCall struct {
	fn   string
	test func(c *Context) bool
}

// funcs are the eval functions: each parses its arguments once and returns
// the test.
var funcs = map[string]evalFunc{
	"bayes": {"bayes(LO, HI): the Bayes probability is in [LO, HI) (HI 1 includes 1)", func(a []string) (func(*Context) bool, error) {
		lo, hi, err := twoFloats(a)
		if err != nil {
			return nil, err
		}
		return func(c *Context) bool {
			return c.Bayes >= 0 && c.Bayes >= lo && (c.Bayes < hi || hi >= 1 && c.Bayes <= 1)
		}, nil
	}},
	"fact": {"fact(NAME): the caller established NAME (from_allowlisted, from_blocklisted, domain_allowlisted, spf_pass, spf_fail, spf_softfail, dkim_valid, dkim_valid_from, truncated)", func(a []string) (func(*Context) bool, error) {
		if len(a) != 1 || a[0] == "" {
			return nil, errors.New("fact takes one name")
		}
		n := a[0]
		return func(c *Context) bool { return c.Facts[n] }, nil
	}},
	"mime_fault": {"mime_fault() or mime_fault(KIND): the MIME structure is damaged (KIND: header, boundary, encoding, charset, parts, depth, part-head)", func(a []string) (func(*Context) bool, error) {
		if len(a) > 1 {
			return nil, errors.New("mime_fault takes at most one kind")
		}
		if len(a) == 0 {
			return func(c *Context) bool { return len(c.Msg.Faults) > 0 }, nil
		}
		k := a[0]
		return func(c *Context) bool { return c.Msg.HasFault(k) }, nil
	}},
	"html_only": {"html_only(): HTML text and no plain text", func(a []string) (func(*Context) bool, error) {
		if len(a) != 0 {
			return nil, errors.New("html_only takes no arguments")
		}
		return func(c *Context) bool {
			if c.Msg.HTML.Parts == 0 {
				return false
			}
			for _, p := range c.Msg.Parts {
				if p.Type == "text/plain" && p.Size > 20 && p.Disposition != "attachment" {
					return false
				}
			}
			return true
		}, nil
	}},
	"html_little_text": {"html_little_text(BYTES): HTML with images and less than BYTES of text", func(a []string) (func(*Context) bool, error) {
		n, err := oneInt(a)
		if err != nil {
			return nil, err
		}
		return func(c *Context) bool {
			h := c.Msg.HTML
			return h.Parts > 0 && h.Images > 0 && len(strings.TrimSpace(c.Msg.Text)) < n
		}, nil
	}},
	"html_feature": {"html_feature(NAME): the HTML has the tag or feature (font, font:color, style:hidden…)", func(a []string) (func(*Context) bool, error) {
		if len(a) != 1 || a[0] == "" {
			return nil, errors.New("html_feature takes one feature name")
		}
		f := a[0]
		return func(c *Context) bool {
			for _, t := range c.Msg.HTML.Tokens {
				if t == f {
					return true
				}
			}
			return false
		}, nil
	}},
	"uri_count": {"uri_count(MIN): at least MIN distinct links", func(a []string) (func(*Context) bool, error) {
		n, err := oneInt(a)
		if err != nil {
			return nil, err
		}
		return func(c *Context) bool { return len(c.Msg.URIs) >= n }, nil
	}},
	"caps_ratio": {"caps_ratio(MIN): of at least 100 letters of text, a share MIN (0 to 1) or more are capitals", func(a []string) (func(*Context) bool, error) {
		if len(a) != 1 {
			return nil, errors.New("caps_ratio takes one number")
		}
		v, err := strconv.ParseFloat(a[0], 64)
		if err != nil || v <= 0 || v > 1 {
			return nil, fmt.Errorf("caps_ratio(%s): want a number in (0, 1]", a[0])
		}
		return func(c *Context) bool {
			letters, caps := 0, 0
			for _, r := range c.Msg.Text {
				if unicode.IsLetter(r) {
					letters++
					if unicode.IsUpper(r) {
						caps++
					}
				}
			}
			return letters >= 100 && float64(caps)/float64(letters) >= v
		}, nil
	}},
	"shouting": {"shouting(N): N or more words in a row of four or more capitals (A to Z) in the body text, as /\\b[A-Z]{4,}(?:\\s+[A-Z]{4,}){N-1}\\b/ finds them, without the regexp's cost", func(a []string) (func(*Context) bool, error) {
		if len(a) != 1 {
			return nil, errors.New("shouting takes one number")
		}
		n, err := strconv.Atoi(a[0])
		if err != nil || n < 1 || n > 100 {
			return nil, fmt.Errorf("shouting(%s): want a number of words from 1 to 100", a[0])
		}
		return func(c *Context) bool { return shouting(c.bodyText(), n) }, nil
	}},
	"reply_to_recipient": {"reply_to_recipient(): Reply-To names one of the To or Cc addresses, not the sender (a discussion list's post)", func(a []string) (func(*Context) bool, error) {
		if len(a) != 0 {
			return nil, errors.New("reply_to_recipient takes no arguments")
		}
		return func(c *Context) bool {
			from := map[string]bool{}
			for _, f := range c.Msg.Addresses("From") {
				from[strings.ToLower(f.Addr)] = true
			}
			rcpt := map[string]bool{}
			for _, field := range []string{"To", "Cc"} {
				for _, r := range c.Msg.Addresses(field) {
					rcpt[strings.ToLower(r.Addr)] = true
				}
			}
			for _, r := range c.Msg.Addresses("Reply-To") {
				a := strings.ToLower(r.Addr)
				if a != "" && rcpt[a] && !from[a] {
					return true
				}
			}
			return false
		}, nil
	}},
	"attachment": {"attachment(REGEXP): an attached file's name matches (case-insensitive)", func(a []string) (func(*Context) bool, error) {
		if len(a) != 1 || a[0] == "" {
			return nil, errors.New("attachment takes one regexp")
		}
		re, err := regexp.Compile("(?i)" + a[0])
		if err != nil {
			return nil, err
		}
		return func(c *Context) bool {
			for _, p := range c.Msg.Parts {
				if p.Filename != "" && re.MatchString(p.Filename) {
					return true
				}
			}
			return false
		}, nil
	}},
}

// FuncNames returns the eval functions, sorted.
func FuncNames() []string {
	var out []string
	for n := range funcs {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// FuncDoc returns the one-line documentation of an eval function.
func FuncDoc(name string) string { return funcs[name].doc }

func parseEval(s string) (*evalCall, error) {
	open := strings.IndexByte(s, '(')
	if open < 0 || !strings.HasSuffix(s, ")") {
		return nil, fmt.Errorf("%q is not a function call", s)
	}
	name := strings.TrimSpace(s[:open])
	f, ok := funcs[name]
	if !ok {
		return nil, fmt.Errorf("unknown function %q", name)
	}
	var args []string
	if in := strings.TrimSpace(s[open+1 : len(s)-1]); in != "" {
		for _, a := range strings.Split(in, ",") {
			a = strings.TrimSpace(a)
			if len(a) >= 2 && (a[0] == '"' || a[0] == '\'') && a[len(a)-1] == a[0] {
				a = a[1 : len(a)-1]
			}
			args = append(args, a)
		}
	}
	t, err := f.parse(args)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return &evalCall{fn: name, test: t}, nil
}

func twoFloats(a []string) (float64, float64, error) {
	if len(a) != 2 {
		return 0, 0, errors.New("want two numbers")
	}
	lo, err1 := strconv.ParseFloat(a[0], 64)
	hi, err2 := strconv.ParseFloat(a[1], 64)
	if err1 != nil || err2 != nil || lo < 0 || hi > 1 || lo >= hi {
		return 0, 0, fmt.Errorf("want 0 <= LO < HI <= 1, got %s, %s", a[0], a[1])
	}
	return lo, hi, nil
}

func oneInt(a []string) (int, error) {
	if len(a) != 1 {
		return 0, errors.New("want one number")
	}
	n, err := strconv.Atoi(a[0])
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q: want a whole number", a[0])
	}
	return n, nil
}

// bodyText is the Subject and readable text, white space runs as one space
// and blank-line separated paragraphs on lines of their own.
func (c *Context) bodyText() string {
	if c.bodyOK {
		return c.body
	}
	c.bodyOK = true
	var b strings.Builder
	b.Grow(len(c.Msg.Text) + 128)
	b.WriteString(strings.Join(strings.Fields(c.Msg.Decoded("Subject")), " "))
	b.WriteByte('\n')
	start := b.Len()
	space, newlines := false, 0
	for _, r := range c.Msg.Text {
		if unicode.IsSpace(r) {
			space = true
			if r == '\n' {
				newlines++
			}
			continue
		}
		if space && b.Len() > start {
			if newlines >= 2 {
				b.WriteByte('\n')
			} else {
				b.WriteByte(' ')
			}
		}
		space, newlines = false, 0
		b.WriteRune(r)
	}
	c.body = b.String()
	c.bodyFold = foldText(c.body)
	return c.body
}

// headerValue returns the value a header rule tests.
func (c *Context) headerValue(field, mod string) string {
	key := field + ":" + mod
	if v, ok := c.headers[key]; ok {
		return v
	}
	if c.headers == nil {
		c.headers = map[string]string{}
	}
	var v string
	switch {
	case field == "ALL":
		var b strings.Builder
		for _, f := range c.Msg.Header {
			b.WriteString(f.Name + ": " + content.Decode(f.Value) + "\n")
		}
		v = b.String()
	case mod == "raw":
		v = strings.Join(c.Msg.Values(field), "\n")
	case mod == "addr" || mod == "name":
		var parts []string
		for _, a := range c.Msg.Addresses(field) {
			if mod == "addr" {
				parts = append(parts, a.Addr)
			} else {
				parts = append(parts, a.Name)
			}
		}
		v = strings.Join(parts, "\n")
	default:
		v = c.Msg.Decoded(field)
	}
	c.headers[key] = v
	return v
}

// test runs one non-meta rule.
func (r *Rule) test(c *Context) bool {
	switch r.Kind {
	case Header:
		if r.exists {
			return c.Msg.Has(r.field)
		}
		return r.re.MatchString(c.headerValue(r.field, r.mod)) != r.negate
	case Body:
		text := c.bodyText()
		return c.matchText(r, text, c.bodyFold, &c.bodyLits)
	case RawBody:
		return c.matchText(r, c.Msg.RawText, c.foldedRaw(), &c.rawLits)
	case Full:
		return r.re.Match(c.Raw)
	case URI:
		for _, u := range c.Msg.URIs {
			if r.re.MatchString(u) {
				return true
			}
		}
		return false
	case Eval:
		return r.eval.test(c)
	}
	return false
}

// Eval runs every enabled rule against c and returns the scored hits,
// sorted by name. When ctx ends it stops and returns the hits so far with
// ctx's error.
func (s *Set) Eval(ctx context.Context, c *Context) ([]Hit, error) {
	if !s.compiled {
		return nil, errors.New("rules: Eval before Compile")
	}
	c.lit = s.lit
	hit := make(map[string]bool, 16)
	var out []Hit
	var err error
	for i, r := range s.order {
		if i%8 == 0 {
			if err = ctx.Err(); err != nil {
				break
			}
		}
		var ok bool
		if r.Kind == Meta {
			ok = r.meta.value(func(n string) bool { return hit[n] }) != 0
		} else {
			ok = r.test(c)
		}
		if !ok {
			continue
		}
		hit[r.Name] = true
		if sc := r.Score(); sc != 0 && !strings.HasPrefix(r.Name, "__") {
			out = append(out, Hit{Name: r.Name, Score: sc, Description: r.Description})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, err
}

func isUpperASCII(c byte) bool { return c >= 'A' && c <= 'Z' }

// isWordASCII is \w as regexp reads \b: ASCII letters, digits, _.
func isWordASCII(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

// isSpaceASCII is \s in regexp's Perl syntax.
func isSpaceASCII(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r' }

// shouting reports whether t holds n words in a row of four or more
// capitals: \b[A-Z]{4,}(\s+[A-Z]{4,}){n-1}\b.
func shouting(t string, n int) bool {
	for i := 0; i < len(t); i++ {
		if !isUpperASCII(t[i]) || i > 0 && isWordASCII(t[i-1]) {
			continue
		}
		j, words := i, 0
		for {
			k := j
			for k < len(t) && isUpperASCII(t[k]) {
				k++
			}
			if k-j < 4 {
				break
			}
			words++
			if words >= n && (k == len(t) || !isWordASCII(t[k])) {
				return true
			}
			m := k
			for m < len(t) && isSpaceASCII(t[m]) {
				m++
			}
			if m == k {
				break
			}
			j = m
		}
	}
	return false
}
