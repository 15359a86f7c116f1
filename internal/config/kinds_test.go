package config

import (
	"bytes"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// stringKey is one string of the schema, found by reflection: the YAML path
// to it and, when it sits in a list of mappings (milter.scrub.rules), the
// path of that list and the field's name in an item.
type stringKey struct {
	key    string       // dotted, with [0] for list items: milter.scrub.rules[0].header
	path   []string     // YAML names down to the field (or to the list of mappings)
	item   reflect.Type // the item type when the string is inside a list of mappings
	field  string       // the field's YAML name inside such an item
	isList bool         // the field is a list of strings
	sf     reflect.StructField
}

// schemaStrings lists every string of Config by reflection on the types, so
// that a key added later is in the list without anyone adding it.
func schemaStrings(t reflect.Type, path []string) []stringKey {
	var out []stringKey
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		name := yamlName(sf)
		if name == "" {
			continue
		}
		p := append(append([]string(nil), path...), name)
		ft := sf.Type
		switch {
		case ft == durationType:
		case ft.Kind() == reflect.String:
			out = append(out, stringKey{key: strings.Join(p, "."), path: p, sf: sf})
		case ft.Kind() == reflect.Struct:
			out = append(out, schemaStrings(ft, p)...)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.String:
			out = append(out, stringKey{key: strings.Join(p, ".") + "[0]", path: p, isList: true, sf: sf})
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			for _, sub := range schemaStrings(ft.Elem(), nil) {
				out = append(out, stringKey{
					key: strings.Join(p, ".") + "[0]." + sub.key, path: p, item: ft.Elem(), field: sub.path[0], sf: sub.sf,
				})
			}
		}
	}
	return out
}

// goodValue is a valid value of each kind, as one key alone would hold it.
// A kind without one fails TestEveryStringHasAKind.
var goodValue = map[string]string{
	"path":      "/var/spool/postfix/private/x", // under the queue: fits listeners.lmtp too
	"pgdsn":     "postgres://postkit@127.0.0.1:5432/postkit?sslmode=disable",
	"listen":    "127.0.0.1:2525",
	"addr":      "inet:127.0.0.1:9999",
	"hostname":  "mx.example.org",
	"domain":    "example.org",
	"email":     "a@example.org",
	"address":   "a@example.org",
	"sender":    "@example.org",
	"user":      "postfix",
	"group":     "postfix",
	"cidr":      "192.0.2.0/24",
	"relayhost": "[smtp.example.net]:587",
	"maps":      "hash:/etc/postfix/transport",
	"layout":    "%d/%n",
	"folder":    "Junk",
	"name":      "ORIGINATING",
	"selector":  "s1",
	"header":    "X-Test",
	"regexp":    "^a",
	"text":      "hidden",
	"mode":      "0660",
	"delimiter": "+",
	"hostport":  "127.0.0.1:53",
	"ip":        "192.0.2.25",
	"dnsbl":     "bl.example.org=127.0.0.2*3",
	"addrglob":  "*@example.org",
	"signfrom":  "*@*.example.org",
	"rcptglob":  "postmaster@",
	"hostglob":  "/^mail[0-9]*\\.example\\.org$/",
	"testname":  "RCVD_IN_TEST",
	"dnszone":   "bl.example.org=127.0.0.2",
	"homepath":  "~/sieve/x",
	"size":      "1G",
	"grace":     "10%",
}

func good(sf reflect.StructField) string {
	if k := sf.Tag.Get("kind"); k == "enum" {
		return strings.Split(sf.Tag.Get("enum"), ",")[0]
	}
	return goodValue[sf.Tag.Get("kind")]
}

// A string key without a kind would be written into a file unchecked: every
// string of the schema names a kind Validate knows, and enums are kind enum.
func TestEveryStringHasAKind(t *testing.T) {
	keys := schemaStrings(reflect.TypeOf(Config{}), nil)
	if len(keys) < 60 {
		t.Fatalf("found only %d string keys: the walk is broken", len(keys))
	}
	for _, k := range keys {
		kind := k.sf.Tag.Get("kind")
		if _, ok := kinds[kind]; !ok {
			t.Errorf("%s: kind %q is not one of the kinds in kinds.go: tag the field with what it is (path, listen, domain…)", k.key, kind)
			continue
		}
		if (kind == "enum") != (k.sf.Tag.Get("enum") != "") {
			t.Errorf("%s: kind enum goes with an enum tag, and an enum tag with kind enum", k.key)
		}
		if kind != "enum" && goodValue[kind] == "" {
			t.Errorf("%s: kind %q has no goodValue in kinds_test.go", k.key, kind)
		}
	}
}

// The walks above (and Validate's) know strings, numbers, booleans,
// durations, sections and lists of strings or sections; a field of another
// shape (a map, a pointer) would hide its strings from them.
func TestSchemaShapesAreWalked(t *testing.T) {
	var check func(t reflect.Type, key string)
	check = func(t2 reflect.Type, key string) {
		for i := 0; i < t2.NumField(); i++ {
			sf := t2.Field(i)
			k := join(key, yamlName(sf))
			switch ft := sf.Type; {
			case ft == durationType, ft.Kind() == reflect.String, ft.Kind() == reflect.Bool,
				ft.Kind() == reflect.Int, ft.Kind() == reflect.Int64, ft.Kind() == reflect.Float64:
			case ft.Kind() == reflect.Struct:
				check(ft, k)
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.String:
			case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
				check(ft.Elem(), k+"[]")
			default:
				t.Errorf("%s: a %s is not walked by eachString and schemaStrings; teach them", k, ft)
			}
		}
	}
	check(reflect.TypeOf(Config{}), "")
}

// docWith returns minimal + the key set to v, with the required fields of a
// list item filled in.
func docWith(t *testing.T, k stringKey, v string) []byte {
	t.Helper()
	// Without the chroot, the paths need not sit under the queue directory.
	doc := map[string]any{"hostname": "mail.exemple.fr", "domains": []any{"exemple.fr"}, "postfix": map[string]any{"chroot": false}}
	m := doc
	for _, p := range k.path[:len(k.path)-1] {
		n, ok := m[p].(map[string]any)
		if !ok {
			n = map[string]any{}
			m[p] = n
		}
		m = n
	}
	last := k.path[len(k.path)-1]
	switch {
	case k.item != nil:
		item := map[string]any{}
		for i := 0; i < k.item.NumField(); i++ {
			sf := k.item.Field(i)
			if sf.Tag.Get("required") != "true" {
				continue
			}
			switch {
			case sf.Type == durationType:
				item[yamlName(sf)] = "1h"
			case sf.Type.Kind() == reflect.Int:
				item[yamlName(sf)] = 1
			case sf.Type.Kind() == reflect.Slice:
				item[yamlName(sf)] = []any{good(sf)}
			default:
				item[yamlName(sf)] = good(sf)
			}
		}
		item[k.field] = placeholder
		if k.sf.Type.Kind() == reflect.Slice {
			item[k.field] = []any{placeholder}
		}
		m[last] = []any{item}
	case k.isList:
		m[last] = []any{placeholder}
	default:
		m[last] = placeholder
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	// The value goes in double-quoted, escapes and all ("\n", "\x00",
	// "\u2028" mean the same in Go and YAML), so that it reaches Parse as
	// it is and not as yaml.Marshal would fold it.
	return bytes.Replace(out, []byte(placeholder), []byte(strconv.Quote(v)), 1)
}

const placeholder = "postkit-test-value-here"

// Every string key of the schema refuses a line break, a carriage return
// and NUL with file:line:column, the key and a hint, whatever its kind; the
// same key with a good value is accepted, so the refusal is the character's.
func TestControlCharactersRefused(t *testing.T) {
	pos := regexp.MustCompile(`^x\.yaml:[0-9]+:[0-9]+: `)
	for _, k := range schemaStrings(reflect.TypeOf(Config{}), nil) {
		g := good(k.sf)
		if _, _, err := Parse("x.yaml", docWith(t, k, g)); err != nil {
			t.Errorf("%s = %q: %v; want it accepted", k.key, g, err)
			continue
		}
		for _, tc := range []struct{ v, what string }{
			{g + "\nmynetworks = 0.0.0.0/0", "a line break (U+000A)"},
			{g + "\r", "a line break (U+000D)"},
			{"\x00" + g, "a NUL byte"},
			{g + "\u2028x", "a line break (U+2028)"},
			{g + "\tx", "a control character (U+0009)"},
		} {
			_, _, err := Parse("x.yaml", docWith(t, k, tc.v))
			if err == nil {
				t.Errorf("%s = %q accepted; want it refused", k.key, tc.v)
				continue
			}
			es, ok := err.(Errors)
			if !ok || len(es) != 1 {
				t.Errorf("%s = %q: %v; want exactly one error", k.key, tc.v, err)
				continue
			}
			msg := es[0].Error()
			if !pos.MatchString(msg) || es[0].Key != k.key || !strings.Contains(msg, tc.what) || es[0].Hint == "" {
				t.Errorf("%s = %q: error %q; want file:line:column, the key, %q and a hint", k.key, tc.v, msg, tc.what)
			}
		}
	}
}

// Each kind accepts what Postfix and Dovecot read as one value and refuses
// what they would split, expand or read as syntax.
func TestKinds(t *testing.T) {
	tests := []struct {
		kind string
		good []string
		bad  []string
	}{
		{"path", []string{"/etc/postfix", "/var/mail/sieve", "/tmp/TestX_1/001/tls/cert.pem", "/srv/a-b/c+d@e~f.g"},
			[]string{"relative/path", "/a b", "/a,b", "/a:b", "/a%d", "/a$b", "/a#b", "/a<b", "/a{b}", "/é"}},
		{"listen", []string{"25", "127.0.0.1:2525", "[::1]:25", "*:25", ":25"},
			[]string{"0", "70000", "localhost:25", "[fe80::1%eth0]:25", "1.2.3.4:x"}},
		{"addr", []string{"unix:/var/spool/postfix/postkit/milter.sock", "inet:127.0.0.1:8891", "inet:[::1]:8891"},
			[]string{"/run/m.sock", "unix:rel.sock", "unix:/a b", "inet:8891", "inet:localhost:1", "tcp:1.2.3.4:5"}},
		{"hostname", []string{"mail.exemple.fr", "xn--bcher-kva.example"}, []string{"mail_x", "localhost", "a..b", "-a.b"}},
		{"email", []string{"postmaster@exemple.fr", "first.last+tag@a-b.example"},
			[]string{"postmaster", "a%d@x.org", "a#b@x.org", "a'b@x.org", "@x.org", "a@b"}},
		{"address", []string{"a@example.org", "o'brien@example.org"}, []string{"a", "@example.org", "a@b", "a b@example.org"}},
		{"sender", []string{"billing@example.org", "@example.org"}, []string{"example.org", "@a", "a@", "@a b.org"}},
		{"user", []string{"postfix", "vmail", "_postkit", "Debian-exim", "a.b"}, []string{"1abc", "a b", "a:b", "root$", strings.Repeat("a", 33)}},
		{"cidr", []string{"10.0.0.0/8", "::1", "[::1]/128", "192.0.2.1"}, []string{"10.0.0.1/8", "10.0.0.0/33", "a", " 10.0.0.0/8"}},
		{"relayhost", []string{"[smtp.example.net]:587", "smtp.example.net", "[127.0.0.1]:2525", "[ipv6:::1]:25", "a.example:submission", "[a.example]:25, [b.example]:25", "localhost"},
			[]string{"[a.example", "[a.example]x", "a.example:0", "a.example:70000", "[ipv6:zz]:25", "a$b", "a.example;b", "[a b]"}},
		{"maps", []string{"hash:/etc/postfix/transport", "inline:{ nothing.invalid=error:x }", "inline:{ a=b, { c = d } }, texthash:/etc/postfix/t", "proxy:sqlite:/etc/postfix/x.cf", "socketmap:inet:127.0.0.1:9:name", "socketmap:unix:/run/x.sock:name"},
			[]string{"transport", "hash:relative", "inline:{ a=b", "inline:{ a=b } x", "HASH:/x", "hash:/a b", "mynetworks = 0.0.0.0/0", "inline:{a}}"}},
		{"layout", []string{"%d/%n", "%Ld/%Ln", "%d/%n/Maildir", "%2.256Hu/%u", "%{user}", "users/%u"},
			[]string{"/%d/%n", "%d//%n", "%d/../%n", "%d:INDEX=/x", "%d %n", "%d/%n,x"}},
		{"folder", []string{"Spam", "Junk", "INBOX/Spam", "Indésirables", "Spam-1_x.y+z"},
			[]string{"Junk Mail", "Sp\"am", "Sp\\am", "/Spam", "Spam/", "a//b", "..", "Sp{am", "Spam;x"}},
		{"name", []string{"ORIGINATING", "mail.exemple.fr", "a_b-c"}, []string{"a b", "-a", "a;b", "a.b."}},
		{"header", []string{"X-Mailer", "Received"}, []string{"X Mailer", "X:Mailer", "Xé"}},
		{"regexp", []string{`^from .* with ESMTPSA`, `\s+`}, []string{"(", "a{2,1}"}},
		{"mode", []string{"0660", "660"}, []string{"999", "0o660", "u+rw"}},
		{"pgdsn", []string{"postgres://postkit@127.0.0.1:5432/postkit", "postgresql://mail@db.example.net/mail?sslmode=verify-full", "postgres://postkit@/postkit?host=/var/run/postgresql", "postgres://postkit@[::1]:5433/postkit?connect_timeout=3"},
			[]string{"postgres://postkit:secret@127.0.0.1/postkit", "host=127.0.0.1 user=postkit dbname=postkit", "postgres://127.0.0.1/postkit", "postgres://postkit@127.0.0.1/", "postgres://postkit@127.0.0.1/a b",
				"postgres://postkit@127.0.0.1/postkit?password=x", "postgres://postkit@127.0.0.1/postkit?sslmode=maybe", "postgres://postkit@127.0.0.1:0/postkit", "postgres://post'kit@127.0.0.1/postkit", "postgres://postkit@a$b/postkit"}},
		{"delimiter", []string{"+", "-"}, []string{"++", "$", "#", ","}},
		{"hostport", []string{"127.0.0.1:53", "[::1]:53", "ns.example:53"}, []string{"127.0.0.1", "1.2.3.4:0", "a b:53", "[fe80::1%eth0]:53"}},
		{"ip", []string{"192.0.2.25", "2001:db8::25"}, []string{"192.0.2.256", "mail.example.org", "::ffff:192.0.2.1", "fe80::1%eth0", "192.0.2.0/24"}},
		{"dnsbl", []string{"zen.spamhaus.org=127.0.0.[2..11]*3", "list.dnswl.org=127.0.[0..255].[1..3]*-2", "bl.example"},
			[]string{"bl example", "bl.example=a", "bl.example*x"}},
	}
	for _, tt := range tests {
		k, ok := kinds[tt.kind]
		if !ok {
			t.Fatalf("no kind %q", tt.kind)
		}
		for _, v := range tt.good {
			if msg := k.check(v); msg != "" {
				t.Errorf("kind %s: %q refused (%s); want it accepted", tt.kind, v, msg)
			}
		}
		for _, v := range tt.bad {
			if msg := k.check(v); msg == "" {
				t.Errorf("kind %s: %q accepted; want it refused", tt.kind, v)
			}
		}
	}
}

// The example: a table that smuggles a second mynetworks line.
func TestInjectionExample(t *testing.T) {
	y := minimal + "postfix:\n  transport_maps: \"inline:{ nothing.invalid=error:x }\\nmynetworks = 0.0.0.0/0\"\n"
	_, _, err := Parse("x.yaml", []byte(y))
	want := `x.yaml:4:19: postfix.transport_maps: "inline:{ nothing.invalid=error:x }\nmynetworks = 0.0.0.0/0" holds a line break (U+000A)`
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Fatalf("Parse = %v; want %s…", err, want)
	}
}
