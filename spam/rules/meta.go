package rules

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// node is a meta expression: a number, a rule name, or an operator over
// one or two operands.
type node struct {
	op   string // "num", "name", "!", "neg", or a binary operator
	num  float64
	name string
	a, b *node
}

// maxMetaDepth bounds the nesting of a meta expression.
const maxMetaDepth = 64

type metaParser struct {
	toks  []string
	i     int
	depth int
}

func parseMeta(s string) (*node, error) {
	toks, err := lexMeta(s)
	if err != nil {
		return nil, err
	}
	if len(toks) == 0 {
		return nil, errors.New("empty expression")
	}
	p := &metaParser{toks: toks}
	n, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.i < len(p.toks) {
		return nil, fmt.Errorf("unexpected %q", p.toks[p.i])
	}
	return n, nil
}

func lexMeta(s string) ([]string, error) {
	var out []string
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t':
			i++
		case strings.HasPrefix(s[i:], "&&"), strings.HasPrefix(s[i:], "||"),
			strings.HasPrefix(s[i:], ">="), strings.HasPrefix(s[i:], "<="),
			strings.HasPrefix(s[i:], "=="), strings.HasPrefix(s[i:], "!="):
			out = append(out, s[i:i+2])
			i += 2
		case strings.IndexByte("()!+-*<>", c) >= 0:
			out = append(out, s[i:i+1])
			i++
		case c >= '0' && c <= '9' || c == '.':
			j := i
			for j < len(s) && (s[j] >= '0' && s[j] <= '9' || s[j] == '.') {
				j++
			}
			out = append(out, s[i:j])
			i = j
		case c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z':
			j := i
			for j < len(s) && (s[j] == '_' || s[j] >= 'A' && s[j] <= 'Z' || s[j] >= 'a' && s[j] <= 'z' || s[j] >= '0' && s[j] <= '9') {
				j++
			}
			out = append(out, s[i:j])
			i = j
		default:
			return nil, fmt.Errorf("character %q at column %d", c, i+1)
		}
		if len(out) > 1000 {
			return nil, errors.New("expression longer than 1000 tokens")
		}
	}
	return out, nil
}

func (p *metaParser) peek() string {
	if p.i < len(p.toks) {
		return p.toks[p.i]
	}
	return ""
}

func (p *metaParser) binary(next func() (*node, error), ops ...string) (*node, error) {
	a, err := next()
	if err != nil {
		return nil, err
	}
	for {
		op := p.peek()
		found := false
		for _, o := range ops {
			if o == op {
				found = true
			}
		}
		if !found {
			return a, nil
		}
		p.i++
		b, err := next()
		if err != nil {
			return nil, err
		}
		a = &node{op: op, a: a, b: b}
	}
}

func (p *metaParser) or() (*node, error)  { return p.binary(p.and, "||") }
func (p *metaParser) and() (*node, error) { return p.binary(p.cmp, "&&") }
func (p *metaParser) cmp() (*node, error) {
	return p.binary(p.sum, ">", ">=", "<", "<=", "==", "!=")
}
func (p *metaParser) sum() (*node, error)  { return p.binary(p.prod, "+", "-") }
func (p *metaParser) prod() (*node, error) { return p.binary(p.unary, "*") }

func (p *metaParser) unary() (*node, error) {
	p.depth++
	defer func() { p.depth-- }()
	if p.depth > maxMetaDepth {
		return nil, errors.New("expression nested too deep")
	}
	switch p.peek() {
	case "!":
		p.i++
		a, err := p.unary()
		if err != nil {
			return nil, err
		}
		return &node{op: "!", a: a}, nil
	case "-":
		p.i++
		a, err := p.unary()
		if err != nil {
			return nil, err
		}
		return &node{op: "neg", a: a}, nil
	case "(":
		p.i++
		n, err := p.or()
		if err != nil {
			return nil, err
		}
		if p.peek() != ")" {
			return nil, errors.New("missing )")
		}
		p.i++
		return n, nil
	case "":
		return nil, errors.New("expression ends too early")
	}
	t := p.toks[p.i]
	p.i++
	if t[0] >= '0' && t[0] <= '9' || t[0] == '.' {
		v, err := strconv.ParseFloat(t, 64)
		if err != nil {
			return nil, fmt.Errorf("number %q", t)
		}
		return &node{op: "num", num: v}, nil
	}
	if !validName(t) {
		return nil, fmt.Errorf("unexpected %q", t)
	}
	return &node{op: "name", name: t}, nil
}

// names calls f for every rule name the expression reads.
func (n *node) names(f func(string)) {
	if n == nil {
		return
	}
	if n.op == "name" {
		f(n.name)
	}
	n.a.names(f)
	n.b.names(f)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// value evaluates the expression; hit says whether a rule hit.
func (n *node) value(hit func(string) bool) float64 {
	switch n.op {
	case "num":
		return n.num
	case "name":
		return b2f(hit(n.name))
	case "!":
		return b2f(n.a.value(hit) == 0)
	case "neg":
		return -n.a.value(hit)
	case "&&":
		return b2f(n.a.value(hit) != 0 && n.b.value(hit) != 0)
	case "||":
		return b2f(n.a.value(hit) != 0 || n.b.value(hit) != 0)
	}
	a, b := n.a.value(hit), n.b.value(hit)
	switch n.op {
	case "+":
		return a + b
	case "-":
		return a - b
	case "*":
		return a * b
	case ">":
		return b2f(a > b)
	case ">=":
		return b2f(a >= b)
	case "<":
		return b2f(a < b)
	case "<=":
		return b2f(a <= b)
	case "==":
		return b2f(a == b)
	case "!=":
		return b2f(a != b)
	}
	return 0
}
