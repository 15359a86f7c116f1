package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Pos is a position in the YAML file.
type Pos struct{ Line, Column int }

// Error is one problem in a config file, at a position, with a hint.
type Error struct {
	File string
	Pos  Pos
	Key  string // dotted path, e.g. "milter.dkim.keys[0].selector"
	Msg  string
	Hint string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Pos.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", e.Pos.Line, e.Pos.Column)
	}
	b.WriteString(": ")
	if e.Key != "" {
		b.WriteString(e.Key + ": ")
	}
	b.WriteString(e.Msg)
	if e.Hint != "" {
		b.WriteString(" (" + e.Hint + ")")
	}
	return b.String()
}

// Errors is every problem found in a file, in file order.
type Errors []*Error

func (es Errors) Error() string {
	s := make([]string, len(es))
	for i, e := range es {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n")
}

// File is a loaded config with the position of every key, so that later checks
// (Validate, the generator) can point at the line that caused a problem.
type File struct {
	Name    string
	pos     map[string]Pos
	sources []string // Override.Source of each override applied
	builtin bool     // no file: a daemon's built-in document (LoadDaemon)
}

// Pos returns where key (a dotted path) was written, or the zero Pos if it
// was not written in the file (left at its default, or set by an override).
func (f *File) Pos(key string) Pos {
	if p := f.pos[key]; p.Line > 0 {
		return p
	}
	return Pos{}
}

// Builtin reports whether no postkit.yaml was read: the config is a
// daemon's built-in document with the flags' overrides (LoadDaemon).
func (f *File) Builtin() bool { return f.builtin }

// where names what wrote a value at p: the file at a line, or an override.
func (f *File) where(p Pos) (string, Pos) {
	if p.Line < 0 && -p.Line <= len(f.sources) {
		return f.sources[-p.Line-1], Pos{}
	}
	return f.Name, p
}

// posOrOverride is key's position; for a key never written, the position
// of the closest section above it that an override created (an item added
// by --set milter.dkim.keys[0].selector=s lacks its domain: the override
// is at fault, not the file).
func (f *File) posOrOverride(key string) Pos {
	if p, ok := f.pos[key]; ok {
		return p
	}
	for k := key; k != ""; {
		i := strings.LastIndexAny(k, ".[")
		if i < 0 {
			break
		}
		k = k[:i]
		if p, ok := f.pos[k]; ok {
			if p.Line < 0 {
				return p
			}
			break
		}
	}
	return Pos{}
}

// Errorf builds an Error at key's position: the file's line, or the
// override that set it.
func (f *File) Errorf(key, hint, format string, args ...any) *Error {
	name, pos := f.where(f.posOrOverride(key))
	return &Error{File: name, Pos: pos, Key: key, Msg: fmt.Sprintf(format, args...), Hint: hint}
}

// MaxSize is the largest config file Load and Parse accept. A complete
// postkit.yaml (examples/postkit.yaml, every key with its documentation) is
// about 11 KiB; anything near a mebibyte is the wrong file, and decoding one
// of 100 MB took 16 s and 685 MB of memory.
const MaxSize = 1 << 20

// Load reads, strictly decodes and validates a config file, with the
// overrides applied to it first (see Override). A file over MaxSize is
// refused without being read whole.
func Load(path string, overrides ...Override) (*Config, *File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("config: %w", err)
	}
	defer fh.Close()
	if st, err := fh.Stat(); err == nil && st.Mode().IsRegular() && st.Size() > MaxSize {
		return nil, nil, tooLarge(path, st.Size())
	}
	// Read one byte more than allowed: a pipe or a file growing meanwhile
	// is caught too.
	data, err := io.ReadAll(io.LimitReader(fh, MaxSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data, overrides...)
}

func tooLarge(name string, size int64) *Error {
	what := fmt.Sprintf("%d bytes", size)
	if size == MaxSize+1 {
		what = "more than 1 MiB"
	}
	return &Error{File: name, Msg: fmt.Sprintf("file is %s; a postkit.yaml may be at most 1 MiB (%d bytes)", what, MaxSize),
		Hint: "is this the right file? A complete postkit.yaml is a few kilobytes: start from the output of 'postkit config example'"}
}

// Parse decodes and validates config text, with the overrides applied to
// it first; name is used in error messages. Text over MaxSize is refused.
func Parse(name string, data []byte, overrides ...Override) (*Config, *File, error) {
	if len(data) > MaxSize {
		return nil, nil, tooLarge(name, int64(len(data)))
	}
	return parse(&File{Name: name, pos: map[string]Pos{}}, data, overrides)
}

func parse(f *File, data []byte, overrides []Override) (*Config, *File, error) {
	name := f.Name
	cfg := Defaults()
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
		return nil, nil, &Error{File: name, Msg: "file is empty", Hint: "start from 'postkit config example', or write hostname and domains"}
	} else if err != nil {
		return nil, nil, &Error{File: name, Pos: yamlErrPos(err), Msg: "not valid YAML: " + cleanYAMLErr(err), Hint: "check indentation and quoting"}
	}
	if len(doc.Content) == 0 {
		return nil, nil, &Error{File: name, Msg: "file is empty", Hint: "start from 'postkit config example', or write hostname and domains"}
	}
	root := doc.Content[0]
	if f.builtin {
		mark(root, -1) // the document has no lines to point at
	}
	var errs Errors
	for i, o := range overrides {
		f.sources = append(f.sources, o.Source)
		if e := f.apply(root, o, i); e != nil {
			errs = append(errs, e)
		}
	}
	d := decoder{file: f, errs: &errs}
	d.decode(root, reflect.ValueOf(cfg).Elem(), "")
	// Validation runs even when decoding failed, so that one run reports
	// every problem of the file; a key that could not be decoded kept its
	// default and is not judged again.
	cfg.normalize()
	if err := cfg.Validate(f); err != nil {
		var verrs Errors
		if !errors.As(err, &verrs) {
			return nil, nil, err
		}
		for _, e := range verrs {
			if !under(e.Key, errs) {
				errs = append(errs, e)
			}
		}
	}
	if len(errs) > 0 {
		sortErrors(errs)
		return nil, nil, errs
	}
	if f.builtin && cfg.Hostname == "" {
		// As the daemons always did without postkit.yaml; not validated:
		// a container's host name may be a single label.
		h, _ := os.Hostname()
		cfg.Hostname = strings.ToLower(strings.TrimSuffix(h, "."))
	}
	cfg.applyDerived()
	return cfg, f, nil
}

// under reports whether key is, or is inside, a key of an error in errs.
func under(key string, errs Errors) bool {
	for _, e := range errs {
		if e.Key == "" {
			continue
		}
		if key == e.Key || strings.HasPrefix(key, e.Key+".") || strings.HasPrefix(key, e.Key+"[") {
			return true
		}
	}
	return false
}

// sortErrors orders errors by file position; those without one (defaults,
// overrides) keep their order after the positioned ones of their source.
func sortErrors(errs Errors) {
	sort.SliceStable(errs, func(i, j int) bool {
		a, b := errs[i], errs[j]
		if a.File != b.File {
			return false
		}
		if (a.Pos.Line > 0) != (b.Pos.Line > 0) {
			return a.Pos.Line > 0
		}
		if a.Pos.Line != b.Pos.Line {
			return a.Pos.Line < b.Pos.Line
		}
		return a.Pos.Column < b.Pos.Column
	})
}

func yamlErrPos(err error) Pos {
	s := err.Error()
	if i := strings.Index(s, "line "); i >= 0 {
		n := 0
		for _, c := range s[i+5:] {
			if c < '0' || c > '9' {
				break
			}
			n = n*10 + int(c-'0')
		}
		return Pos{Line: n, Column: 1}
	}
	return Pos{}
}

func cleanYAMLErr(err error) string {
	s := strings.TrimPrefix(err.Error(), "yaml: ")
	if i := strings.Index(s, ": "); i >= 0 && strings.HasPrefix(s, "line ") {
		s = s[i+2:]
	}
	return s
}

type decoder struct {
	file *File
	errs *Errors
}

func (d *decoder) fail(n *yaml.Node, key, hint, format string, args ...any) {
	name, pos := d.file.where(Pos{n.Line, n.Column})
	*d.errs = append(*d.errs, &Error{File: name, Pos: pos, Key: key, Msg: fmt.Sprintf(format, args...), Hint: hint})
}

var (
	durationType = reflect.TypeOf(Duration(0))
)

// decode fills v from n, recording positions and collecting errors.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, key string) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if key != "" {
		d.file.pos[key] = Pos{n.Line, n.Column}
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" && v.Type() == boolWordType && n.Value != "" && n.Value != "~" {
		v.SetString(strings.ToLower(n.Value)) // helo_reject: null is the word
		return
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		v.Set(reflect.Zero(v.Type()))
		return
	}
	switch {
	case v.Type() == durationType:
		if n.Kind != yaml.ScalarNode {
			d.fail(n, key, "write a duration like 300s, 5m or 24h", "want a duration, got a %s", kindName(n))
			return
		}
		dur, err := time.ParseDuration(n.Value)
		if err != nil || dur < 0 {
			d.fail(n, key, "write a duration like 300s, 5m or 24h", "%q is not a duration", n.Value)
			return
		}
		v.SetInt(int64(dur))
	case v.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			d.fail(n, key, "indent the keys of this section under it", "want a mapping of keys, got a %s", kindName(n))
			return
		}
		fields := structFields(v.Type())
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			kn, vn := n.Content[i], n.Content[i+1]
			name := kn.Value
			sub := join(key, name)
			idx, ok := fields[name]
			if !ok {
				d.fail(kn, sub, suggest(name, fields), "unknown key %q", name)
				continue
			}
			if seen[name] {
				d.fail(kn, sub, "remove one of them", "key %q given twice", name)
				continue
			}
			seen[name] = true
			d.decode(vn, v.Field(idx), sub)
		}
	case v.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.fail(n, key, "write a list: one '- item' per line, or [a, b]", "want a list, got a %s", kindName(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, c := range n.Content {
			d.decode(c, s.Index(i), fmt.Sprintf("%s[%d]", key, i))
		}
		v.Set(s)
	default:
		if n.Kind != yaml.ScalarNode {
			d.fail(n, key, "give a single value", "want a %s, got a %s", typeName(v.Type()), kindName(n))
			return
		}
		d.scalar(n, v, key)
	}
}

func (d *decoder) scalar(n *yaml.Node, v reflect.Value, key string) {
	switch v.Kind() {
	case reflect.String:
		if n.Tag == "!!bool" && v.Type() == boolWordType {
			v.SetString(strings.ToLower(n.Value)) // e.g. helo_reject: false
			return
		}
		if n.Tag != "!!str" && n.Tag != "!!int" && n.Tag != "!!float" {
			d.fail(n, key, "quote it if you mean the text "+strconv.Quote(n.Value), "want a string, got %s", n.Value)
			return
		}
		v.SetString(n.Value)
	case reflect.Bool:
		b, ok := map[string]bool{"true": true, "false": false, "yes": true, "no": false}[strings.ToLower(n.Value)]
		if !ok || n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 {
			d.fail(n, key, "write true or false", "want true or false, got %q", n.Value)
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int64:
		i, err := strconv.ParseInt(n.Value, 0, 64)
		if err != nil || n.Tag != "!!int" {
			d.fail(n, key, "write a whole number without quotes or units", "want a whole number, got %q", n.Value)
			return
		}
		v.SetInt(i)
	case reflect.Float64:
		f, err := strconv.ParseFloat(n.Value, 64)
		if err != nil || (n.Tag != "!!float" && n.Tag != "!!int") {
			d.fail(n, key, "write a number such as 5.0", "want a number, got %q", n.Value)
			return
		}
		v.SetFloat(f)
	default:
		d.fail(n, key, "", "cannot decode into %s", v.Type())
	}
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	default:
		if n.Value == "" {
			return "empty value"
		}
		return "value " + strconv.Quote(n.Value)
	}
}

func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int64:
		return "whole number"
	case reflect.Float64:
		return "number"
	}
	return t.String()
}

func join(key, name string) string {
	if key == "" {
		return name
	}
	return key + "." + name
}

// structFields maps yaml names to field indexes.
func structFields(t reflect.Type) map[string]int {
	m := map[string]int{}
	for i := 0; i < t.NumField(); i++ {
		if tag := yamlName(t.Field(i)); tag != "" {
			m[tag] = i
		}
	}
	return m
}

func yamlName(f reflect.StructField) string {
	tag := f.Tag.Get("yaml")
	if i := strings.IndexByte(tag, ','); i >= 0 {
		tag = tag[:i]
	}
	if tag == "-" {
		return ""
	}
	return tag
}

// suggest names the closest known key, if one is close.
func suggest(name string, fields map[string]int) string {
	best, bestD := "", 1<<30
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if dd := editDistance(strings.ToLower(name), k); dd < bestD {
			best, bestD = k, dd
		}
	}
	if bestD <= 3 && bestD < len(name) {
		return "did you mean " + strconv.Quote(best) + "?"
	}
	return "known keys here: " + strings.Join(keys, ", ")
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := prev[j-1]
			if a[i-1] != b[j-1] {
				c++
			}
			cur[j] = min(c, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// ErrOpenRelay marks a config that would let anyone relay.
var ErrOpenRelay = errors.New("config: open relay")
