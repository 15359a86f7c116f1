package config

import (
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Overrides. postkit.yaml is the source of every setting; the command line
// changes keys of it, never fields of the daemons' typed configurations:
//
//	--set policy.greylist.delay=10m                 a key gets a value
//	--set policy.checks=[spf,dnsbl]                 a list, written as YAML
//	--set 'policy.ratelimit.limits=[{key: sasl_user, max: 10, window: 1m}]'
//	--set milter.dkim.keys[0].selector=s1           an item of a list, by index
//	--set milter.dkim.keys[2]={domain: a.example, selector: s}
//	                                                index = length adds an item
//	--set policy.checks+=greylist                   appended to the list
//	--set policy.checks-=spf                        every item "spf" removed
//
// A value is YAML text (a scalar, or a flow sequence or mapping), as it
// would be written after the key in the file. Each override is applied, in
// order, to the YAML node tree of the file (or of a daemon's built-in
// document, LoadDaemon) before the strict decode, so that it is decoded and
// validated exactly like the file: an unknown key gets the same "did you
// mean", a bad value the same message and hint, and the error names the
// override as typed instead of a line of the file:
//
//	--set policy.greylist.delay=10x: policy.greylist.delay: "10x" is not a duration (write a duration like 300s, 5m or 24h)
//	--greylist-delay 10x: policy.greylist.delay: "10x" is not a duration (…)
//
// A list that neither the file nor an earlier override wrote starts from
// its default when an override appends to it, removes from it or addresses
// an item of it: --set policy.checks+=greylist gives [blacklist, spf,
// greylist]. The daemons' flags are shorthands for overrides (Shorthands).

// Op is how an override changes its key.
type Op int

const (
	// Set replaces the key's value: KEY=VALUE.
	Set Op = iota
	// Append adds VALUE at the end of the list, or every item of VALUE
	// when it is a list: KEY+=VALUE.
	Append
	// Remove drops every item of the list equal to VALUE (or to an item of
	// VALUE when it is a list): KEY-=VALUE.
	Remove
)

func (op Op) String() string {
	return [...]string{"=", "+=", "-="}[op]
}

// Override is one change to postkit.yaml given on the command line.
type Override struct {
	Key    string // dotted path: policy.greylist.delay, milter.dkim.keys[0].selector
	Op     Op
	Value  string // YAML text: a scalar, or a flow sequence or mapping
	Source string // the flag as typed, which errors name: "--set policy.greylist.delay=10m"

	node *yaml.Node // the value, when a shorthand built it
}

// String renders the override as --set would take it.
func (o Override) String() string { return o.Key + o.Op.String() + o.Value }

// keyRE is one segment of a key path: a name and any list indexes.
var (
	keyRE   = regexp.MustCompile(`^([A-Za-z0-9_-]+)((?:\[[0-9]+\])*)$`)
	indexRE = regexp.MustCompile(`\[([0-9]+)\]`)
)

const setHint = "write --set KEY=VALUE, KEY+=VALUE or KEY-=VALUE with KEY a dotted path of postkit.yaml such as policy.greylist.delay or milter.dkim.keys[0].selector"

// ParseSet parses the argument of --set: KEY=VALUE, KEY+=VALUE (append to a
// list) or KEY-=VALUE (remove from a list).
func ParseSet(arg string) (Override, error) {
	o := Override{Source: "--set " + arg}
	i := strings.IndexByte(arg, '=')
	if i < 0 {
		return o, &Error{File: o.Source, Msg: "no '=' between the key and the value", Hint: setHint}
	}
	o.Key, o.Value = arg[:i], arg[i+1:]
	switch {
	case strings.HasSuffix(o.Key, "+"):
		o.Key, o.Op = o.Key[:len(o.Key)-1], Append
	case strings.HasSuffix(o.Key, "-"):
		o.Key, o.Op = o.Key[:len(o.Key)-1], Remove
	}
	if _, err := parseKey(o.Key); err != nil {
		return o, &Error{File: o.Source, Msg: err.Error(), Hint: setHint}
	}
	return o, nil
}

// segment is one name of a key path with its list indexes.
type segment struct {
	name string
	idx  []int
}

func parseKey(key string) ([]segment, error) {
	if key == "" {
		return nil, fmt.Errorf("no key before '='")
	}
	var out []segment
	for _, part := range strings.Split(key, ".") {
		m := keyRE.FindStringSubmatch(part)
		if m == nil {
			return nil, fmt.Errorf("%q is not a key path", key)
		}
		s := segment{name: m[1]}
		for _, im := range indexRE.FindAllStringSubmatch(m[2], -1) {
			n, err := strconv.Atoi(im[1])
			if err != nil || n > 1<<16 {
				return nil, fmt.Errorf("%q: index %s is too large", key, im[1])
			}
			s.idx = append(s.idx, n)
		}
		out = append(out, s)
	}
	return out, nil
}

// value returns the override's value as a YAML node.
func (o Override) value() (*yaml.Node, error) {
	if o.node != nil {
		return o.node, nil
	}
	if strings.TrimSpace(o.Value) == "" {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null"}, nil
	}
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(o.Value), &doc); err != nil {
		return nil, fmt.Errorf("not valid YAML: %s", cleanYAMLErr(err))
	}
	if len(doc.Content) == 0 {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null"}, nil
	}
	return doc.Content[0], nil
}

// mark gives n and everything under it the position of override i: a
// negative line, which File turns back into the override's Source; i = -1
// gives no position.
func mark(n *yaml.Node, i int) {
	n.Line, n.Column = -(i + 1), 0
	for _, c := range n.Content {
		mark(c, i)
	}
}

// apply applies override i to root, the document's top mapping.
func (f *File) apply(root *yaml.Node, o Override, i int) *Error {
	fail := func(key, hint, format string, args ...any) *Error {
		return &Error{File: o.Source, Key: key, Msg: fmt.Sprintf(format, args...), Hint: hint}
	}
	segs, err := parseKey(o.Key)
	if err != nil {
		return fail("", setHint, "%v", err)
	}
	val, err := o.value()
	if err != nil {
		return fail(o.Key, "quote the value as in the file, e.g. --set 'key=\"a: b\"'", "%v", err)
	}
	val = clone(val)
	mark(val, i)
	line := -(i + 1)
	cur, path := root, ""
	for si, s := range segs {
		if cur.Kind == yaml.AliasNode {
			cur = cur.Alias
		}
		if isNull(cur) {
			*cur = yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: line}
		}
		if cur.Kind != yaml.MappingNode {
			return fail(path, "fix the file first", "is a %s%s, not a section of keys", kindName(cur), f.at(cur))
		}
		path = join(path, s.name)
		last := si == len(segs)-1
		slot := mapValue(cur, s.name)
		if slot == nil {
			var v *yaml.Node
			switch {
			case len(s.idx) > 0 || (last && o.Op != Set):
				v = defaultNode(path)
			case last:
				v = val
			default:
				v = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: line}
			}
			cur.Content = append(cur.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s.name, Line: line}, v)
			slot = &cur.Content[len(cur.Content)-1]
		}
		for ii, n := range s.idx {
			seq := *slot
			if seq.Kind == yaml.AliasNode {
				seq = seq.Alias
			}
			if isNull(seq) {
				seq = defaultNode(path)
				*slot = seq
			}
			if seq.Kind != yaml.SequenceNode {
				return fail(path, "", "is a %s%s, not a list: it has no item [%d]", kindName(seq), f.at(seq), n)
			}
			lastIdx := last && ii == len(s.idx)-1
			switch {
			case n < len(seq.Content):
			case n == len(seq.Content):
				var item *yaml.Node
				switch {
				case lastIdx && o.Op == Set:
					item = val
				case lastIdx || ii < len(s.idx)-1:
					item = &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Line: line}
				default:
					item = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: line}
				}
				seq.Content = append(seq.Content, item)
			default:
				return fail(path, fmt.Sprintf("use [%d] to add an item, or %s+=VALUE", len(seq.Content), path),
					"index %d is past the end of the list, which has %d items", n, len(seq.Content))
			}
			slot = &seq.Content[n]
			path = fmt.Sprintf("%s[%d]", path, n)
		}
		if !last {
			cur = *slot
			continue
		}
		switch o.Op {
		case Set:
			*slot = val
		case Append, Remove:
			seq := *slot
			if seq.Kind == yaml.AliasNode {
				seq = seq.Alias
			}
			if isNull(seq) {
				seq = defaultNode(path)
				*slot = seq
			}
			if seq.Kind != yaml.SequenceNode {
				return fail(path, "use = to replace it", "is a %s%s, not a list: %s works on lists", kindName(seq), f.at(seq), o.Op)
			}
			items := []*yaml.Node{val}
			if val.Kind == yaml.SequenceNode {
				items = val.Content
			}
			if o.Op == Append {
				seq.Content = append(seq.Content, items...)
				break
			}
			for _, it := range items {
				if it.Kind != yaml.ScalarNode {
					return fail(path, "name the value to remove, e.g. --set policy.checks-=spf", "-= removes values, not a %s", kindName(it))
				}
				kept := seq.Content[:0]
				for _, c := range seq.Content {
					if c.Kind != yaml.ScalarNode || c.Value != it.Value {
						kept = append(kept, c)
					}
				}
				seq.Content = kept
			}
		}
	}
	return nil
}

// at renders " in FILE:LINE:COLUMN" for a node of the file.
func (f *File) at(n *yaml.Node) string {
	if n.Line <= 0 {
		return ""
	}
	return fmt.Sprintf(" in %s:%d:%d", f.Name, n.Line, n.Column)
}

func isNull(n *yaml.Node) bool {
	return n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

// mapValue returns the slot of key's value in mapping m, or nil.
func mapValue(m *yaml.Node, key string) **yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return &m.Content[i+1]
		}
	}
	return nil
}

func clone(n *yaml.Node) *yaml.Node {
	c := *n
	c.Content = make([]*yaml.Node, len(n.Content))
	for i, k := range n.Content {
		c.Content[i] = clone(k)
	}
	return &c
}

// defaultNode is the default of path (a list, or a section) as a node, so
// that appending to a list the file does not write starts from its default.
// An unknown path gives an empty list: the decode reports the key.
func defaultNode(path string) *yaml.Node {
	v, ok := lookup(reflect.ValueOf(Defaults()).Elem(), path)
	if !ok || (v.Kind() != reflect.Slice && v.Kind() != reflect.Struct) {
		return &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
	}
	return toNode(v)
}

// lookup finds the value at a dotted path (indexes allowed) under v.
func lookup(v reflect.Value, path string) (reflect.Value, bool) {
	segs, err := parseKey(path)
	if err != nil {
		return reflect.Value{}, false
	}
	for _, s := range segs {
		if v.Kind() != reflect.Struct {
			return reflect.Value{}, false
		}
		i, ok := structFields(v.Type())[s.name]
		if !ok {
			return reflect.Value{}, false
		}
		v = v.Field(i)
		for _, n := range s.idx {
			if v.Kind() != reflect.Slice || n >= v.Len() {
				return reflect.Value{}, false
			}
			v = v.Index(n)
		}
	}
	return v, true
}

// fieldType is the Go type a path (indexes allowed, beyond the end too)
// decodes into, or nil for an unknown key.
func fieldType(path string) reflect.Type {
	segs, err := parseKey(path)
	if err != nil {
		return nil
	}
	t := reflect.TypeOf(Config{})
	for _, s := range segs {
		if t.Kind() != reflect.Struct {
			return nil
		}
		i, ok := structFields(t)[s.name]
		if !ok {
			return nil
		}
		t = t.Field(i).Type
		for range s.idx {
			if t.Kind() != reflect.Slice {
				return nil
			}
			t = t.Elem()
		}
	}
	return t
}

// toNode renders a value of the model as the YAML the decoder reads back.
func toNode(v reflect.Value) *yaml.Node {
	switch {
	case v.Type() == durationType:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: fmtDuration(v.Interface().(Duration).D())}
	case v.Kind() == reflect.Struct:
		m := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		for i := 0; i < v.NumField(); i++ {
			if name := yamlName(v.Type().Field(i)); name != "" {
				m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: name}, toNode(v.Field(i)))
			}
		}
		return m
	case v.Kind() == reflect.Slice:
		s := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
		for i := 0; i < v.Len(); i++ {
			s.Content = append(s.Content, toNode(v.Index(i)))
		}
		return s
	}
	return scalarFor(v.Type(), fmt.Sprint(v.Interface()))
}

// scalarFor is a plain value as a scalar of the type t decodes from: a
// flag's value is text, never YAML, so "true" stays text for a string key
// and "0660" stays "0660".
func scalarFor(t reflect.Type, s string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
	if t == nil {
		return n
	}
	switch {
	case t == durationType:
	case t.Kind() == reflect.Bool:
		n.Tag = "!!bool"
	case t.Kind() == reflect.Int || t.Kind() == reflect.Int64:
		n.Tag = "!!int"
	case t.Kind() == reflect.Float64:
		n.Tag = "!!float"
	}
	return n
}

// Default returns the default of key (a dotted path of postkit.yaml) as
// text, as `postkit config example` writes it: "5m" for a duration, "a,b"
// for a list; "" for an empty one. ok is false for an unknown key.
func Default(key string) (value string, ok bool) {
	v, ok := lookup(reflect.ValueOf(Defaults()).Elem(), key)
	if !ok {
		return "", false
	}
	return render(v), true
}

func render(v reflect.Value) string {
	switch {
	case v.Type() == durationType:
		return fmtDuration(v.Interface().(Duration).D())
	case v.Kind() == reflect.Slice:
		items := make([]string, v.Len())
		for i := range items {
			items[i] = render(v.Index(i))
		}
		return strings.Join(items, ",")
	case v.Kind() == reflect.Struct:
		return ""
	}
	return fmt.Sprint(v.Interface())
}
