package templates

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/internal/testlib"
	"github.com/postkit/postkit/sqlmaps"
)

// oddValue is a valid but unusual value of each kind: every character the
// kind allows that could mean something to Postfix, Dovecot or Sieve. n
// makes values of one kind differ (two domains, two ports).
func oddValue(kind string, n int) string {
	switch kind {
	case "path":
		return fmt.Sprintf("/srv/odd.d-ir_+@~/v%d", n)
	case "listen":
		if n%2 == 0 {
			return fmt.Sprintf("[::1]:%d", 20000+n)
		}
		return fmt.Sprintf("127.0.0.2:%d", 20000+n)
	case "addr":
		return fmt.Sprintf("inet:[::1]:%d", 20000+n)
	case "hostname":
		return "mx-1.odd-host.example"
	case "domain":
		return fmt.Sprintf("odd-%d.xn--bcher-kva.example", n)
	case "email":
		return "post-master_1+x.y@xn--bcher-kva.example"
	case "address":
		return fmt.Sprintf("o'brien%%x&y{z}-%d@xn--bcher-kva.example", n)
	case "sender":
		return fmt.Sprintf("@odd-%d.xn--bcher-kva.example", n)
	case "user":
		return "_odd-user.1"
	case "group":
		return "_odd-group.1"
	case "cidr":
		if n%2 == 0 {
			return fmt.Sprintf("[2001:db8:%x::]/48", n)
		}
		return fmt.Sprintf("198.51.100.%d", n%256)
	case "relayhost":
		return "[relay-1.odd.example]:2525, [ipv6:::1]:submission"
	case "maps":
		return "inline:{ odd-1.invalid=error:5.1.1_x+y, { b.invalid = smtp:[::1]:25 } }, texthash:/srv/odd.d-ir_+@~/transport"
	case "layout":
		return "%Ld/%2.256Hn/Maildir.x"
	case "folder":
		return "Indésirables.x-1+y"
	case "name":
		return fmt.Sprintf("odd-name_%d.x", n)
	case "selector":
		return fmt.Sprintf("s%d-odd.x", n)
	case "header":
		return "X-Odd_Header.1"
	case "regexp":
		return `^(?i)from \S+ \(.*\)$`
	case "text":
		return `from [127.0.0.1] by x (odd "quotes" \ & $ % # , ; {})`
	case "mode":
		return "0640"
	case "delimiter":
		return "-"
	case "hostport":
		return fmt.Sprintf("[::1]:%d", 5300+n)
	case "ip":
		return fmt.Sprintf("2001:db8::%x", n)
	case "dnsbl":
		return fmt.Sprintf("bl-%d.odd.example=127.0.[0..255].[1;3]*-2", n)
	case "testname":
		return fmt.Sprintf("ODD_TEST_%d", n)
	case "dnszone":
		return fmt.Sprintf("bl-%d.odd.example=127.0.[0..255].[1;3]", n)
	case "postconf":
		return "smtpd_tls_loglevel"
	case "postconfvalue":
		return `odd "quotes" \ & $mail_name % # , ; {} x`
	case "masteroption":
		return `smtpd_banner=odd"quotes"\&$mail_name%#,;x`
	case "masterservice":
		return fmt.Sprintf("127.0.0.3:%d", 21000+n)
	case "mastercommand":
		return "smtpd"
	case "masterarg":
		return "-v"
	case "masterwakeup":
		return "60?"
	case "maxproc":
		return "0"
	case "dovecotname":
		if n%2 == 0 {
			return fmt.Sprintf("odd_plugin_setting_%d", n)
		}
		return "login_greeting"
	case "dovecotvalue":
		return `odd "quoted" value_1 x.y:z/w=v;a,b @ %u ~`
	case "homepath":
		return fmt.Sprintf("~/odd.d-ir_+@/v%d", n)
	case "size":
		return "1.5G"
	case "grace":
		return "100%"
	case "pgdsn":
		return fmt.Sprintf("postgres://odd_user.%d@[::1]:5433/odd-db.%d?sslmode=prefer&connect_timeout=3", n, n)
	case "addrglob":
		return fmt.Sprintf("o_d+d=y-*?%d@*.xn--bcher-kva.example", n)
	case "signfrom":
		return fmt.Sprintf("o'd+d%d@xn--bcher-kva.example", n)
	case "hostglob":
		return fmt.Sprintf(`/^odd-%d[0-9]*\.(x|y)\.example$/`, n)
	case "rcptglob":
		return fmt.Sprintf("o'd+d%d@", n)
	}
	return ""
}

// oddConfig is templates/testdata/full.yaml (every optional part on) with
// every string of the schema, found by reflection, set to an odd value of
// its kind; lists get at least one item. A key added later is covered
// without anyone adding it here.
func oddConfig(t *testing.T) *config.Config {
	t.Helper()
	cfg := load(t, "testdata/full.yaml")
	n := 0
	var fill func(v reflect.Value)
	fill = func(v reflect.Value) {
		for i := 0; i < v.NumField(); i++ {
			fv, sf := v.Field(i), v.Type().Field(i)
			set := func(e reflect.Value) {
				n++
				kind := sf.Tag.Get("kind")
				if kind == "enum" {
					if e.String() == "" {
						e.SetString(strings.Split(sf.Tag.Get("enum"), ",")[0])
					}
					return
				}
				odd := oddValue(kind, n)
				if odd == "" {
					t.Fatalf("%s: no odd value for kind %q", sf.Name, kind)
				}
				e.SetString(odd)
			}
			switch {
			case fv.Kind() == reflect.String:
				set(fv)
			case fv.Kind() == reflect.Struct:
				fill(fv)
			case fv.Kind() == reflect.Slice:
				if fv.Len() == 0 && sf.Tag.Get("kind") != "enum" {
					fv.Set(reflect.Append(fv, reflect.Zero(fv.Type().Elem())))
				}
				for j := 0; j < fv.Len(); j++ {
					if e := fv.Index(j); e.Kind() == reflect.Struct {
						fill(e)
					} else if e.Kind() == reflect.String {
						set(e)
					}
				}
			}
		}
	}
	fill(reflect.ValueOf(cfg).Elem())
	// What one key alone cannot know: the chroot wants Postfix's sockets
	// under the queue directory.
	q := cfg.Paths.PostfixQueue
	cfg.Listeners.LMTP = q + "/private/odd-lmtp+1"
	cfg.Listeners.Auth = q + "/private/odd_auth@1"
	cfg.Milter.Listen = "unix:" + q + "/postkit/odd~milter.sock"
	// Options for a generated service are lines added inside postkit's
	// services by design (TestMasterCFOptions), from validated name=value
	// words; a setting in dovecot.settings must be one Dovecot knows.
	cfg.Postfix.MasterCFOptions = nil
	for i := range cfg.Dovecot.Settings {
		cfg.Dovecot.Settings[i].Name = "login_greeting"
	}
	for i := range cfg.Policy.RateLimit.Limits {
		cfg.Policy.RateLimit.Limits[i].Max = 1
		cfg.Policy.RateLimit.Limits[i].Window = config.Duration(3600e9)
	}
	if err := cfg.Validate(&config.File{Name: "odd"}); err != nil {
		t.Fatalf("the odd config does not validate: %v", err)
	}
	return cfg
}

// linePatterns turns a template into one regexp per line it can produce:
// its literal text, with every action standing for any text on that line.
// Lines holding only actions that start with {{- produce no line.
func linePatterns(t *testing.T, name string) []*regexp.Regexp {
	t.Helper()
	src, err := tmplFS.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	inlineIf := regexp.MustCompile(`\{\{-? *if [^}]*\}\}.*?\{\{-? *end *-?\}\}`)
	action := regexp.MustCompile(`\{\{.*?\}\}`)
	var pats []*regexp.Regexp
	for i, orig := range strings.Split(strings.TrimSuffix(expandDefines(string(src)), "\n"), "\n") {
		if strings.Contains(orig, "-}}") {
			t.Fatalf("%s:%d: -}} joins lines; this test cannot follow it", name, i+1)
		}
		line := action.ReplaceAllString(inlineIf.ReplaceAllString(orig, "\x00"), "\x00")
		if strings.Contains(line, "\x00") && strings.TrimSpace(strings.ReplaceAll(line, "\x00", "")) == "" {
			if !strings.HasPrefix(strings.TrimLeft(orig, " \t"), "{{-") {
				t.Fatalf("%s:%d: a line of actions alone without {{- writes an empty line", name, i+1)
			}
			continue
		}
		pats = append(pats, regexp.MustCompile("^"+strings.NewReplacer("\x00", ".*", "%00", ".*").Replace(regexp.QuoteMeta(line))+"$"))
	}
	return pats
}

var (
	commentRE = regexp.MustCompile(`(?s)\{\{-? */\*.*?\*/ *-?\}\}`)
	defineRE  = regexp.MustCompile(`(?s)\{\{-? *define "([^"]+)" *-?\}\}(.*?)\{\{- *end *-?\}\}\n?`)
	callRE    = regexp.MustCompile(`\{\{-? *template "([^"]+)" *\.? *\}\}`)
)

// expandDefines drops template comments and writes the body of each
// {{define}} where it is called, so that a template's lines read in the
// order they are produced. The line a call trimmed stays in the source as an
// extra pattern, which can only make lineOutside more lenient by one line.
func expandDefines(src string) string {
	src = commentRE.ReplaceAllString(src, "")
	defs := map[string]string{}
	src = defineRE.ReplaceAllStringFunc(src, func(m string) string {
		sm := defineRE.FindStringSubmatch(m)
		defs[sm[1]] = sm[2]
		return ""
	})
	return callRE.ReplaceAllStringFunc(src, func(m string) string {
		return defs[callRE.FindStringSubmatch(m)[1]]
	})
}

// codePatterns is linePatterns for the files package sqlmaps writes: its own
// output with a marker in place of every value.
func codePatterns(t *testing.T, cfg *config.Config, base string) []*regexp.Regexp {
	t.Helper()
	var text string
	// Values become ".*": NUL, or %00 once percent-encoded.
	any := sqlmaps.PGParams{Host: "\x00", Port: 5433, User: "\x00", DBName: "\x00", Password: "\x00", SSLMode: "\x00"}
	if base == "dovecot-sql.conf.ext" {
		text = string(sqlmaps.DovecotSQL("\x00", "\x00", "\x00", true))
		if cfg.Database.PostgreSQL() {
			text = string(sqlmaps.DovecotPGSQL(any, "\x00", "\x00", true))
		}
	}
	for _, m := range sqlmaps.Maps() {
		if cfg.Database.PostgreSQL() && m.PGFile() == base {
			m, err := m.With(senderRules(cfg))
			if err != nil {
				t.Fatal(err)
			}
			text = string(m.PGCF(any))
		}
		if m.File == base {
			m, err := m.With(senderRules(cfg))
			if err != nil {
				t.Fatal(err)
			}
			text = string(m.CF("\x00"))
		}
	}
	if text == "" {
		return nil
	}
	var pats []*regexp.Regexp
	for _, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		pats = append(pats, regexp.MustCompile("^"+strings.NewReplacer("\x00", ".*", "%00", ".*").Replace(regexp.QuoteMeta(line))+"$"))
	}
	return pats
}

// lineOutside returns the first line of a generated file that is not a
// line of its template, taken in order, each template line used at most
// once; "" when there is none.
func lineOutside(data []byte, pats []*regexp.Regexp) string {
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	j := 0
	for i, l := range lines {
		for j < len(pats) && !pats[j].MatchString(l) {
			j++
		}
		if j == len(pats) {
			return fmt.Sprintf("line %d %q", i+1, l)
		}
		j++
	}
	return ""
}

// No generated file holds a line the templates did not write: with an odd
// but valid value in every string key, each line of each file matches its
// template line, in order.
func TestNoLineOutsideTemplates(t *testing.T) {
	cfg := oddConfig(t)
	// With driver postgresql too: the DSN's odd value and an odd password
	// (every character but a line break) reach the pgsql maps and Dovecot.
	pgcfg := *cfg
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("o'\"\\%s$#{}=&?@:/ x\nsecond line\n"), 0o600)
	pgcfg.Database.Driver, pgcfg.Database.PasswordFile = "postgresql", pw
	for _, cfg := range []*config.Config{cfg, &pgcfg} {
		noLineOutside(t, cfg)
	}
	// The same check fails when a value does carry a line: the proof can fail.
	cfg.Postfix.TransportMaps = "inline:{ x=y }\nmynetworks = 0.0.0.0/0"
	files, _ := Render(cfg)
	for _, f := range files {
		if f.Template == "postfix/main.cf.tmpl" {
			if lineOutside(f.Data, linePatterns(t, f.Template)) == "" {
				t.Errorf("lineOutside accepted a main.cf with an injected mynetworks line")
			}
		}
	}
}

func noLineOutside(t *testing.T, cfg *config.Config) {
	files, err := Render(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		var pats []*regexp.Regexp
		if f.Template != "" {
			pats = linePatterns(t, f.Template)
		} else if pats = codePatterns(t, cfg, filepath.Base(f.Path)); pats == nil {
			t.Errorf("%s: no template and no sqlmaps writer: how was it made?", f.Path)
			continue
		}
		if bad := lineOutside(f.Data, pats); bad != "" {
			t.Errorf("%s: %s is no line of %s", f.Path, bad, f.Template)
		}
	}
}

// Postfix and Dovecot read the odd config as the config meant it: postconf
// lists exactly the parameters main.cf.tmpl writes, and mynetworks,
// relayhost and transport_maps hold what config judged; doveconf and
// sievec accept their files.
func TestOddValuesAsPostfixReadsThem(t *testing.T) {
	bins := testlib.NeedBinary(t, "postconf", "doveconf", "sievec")
	postconf, doveconf, sievec := bins[0], bins[1], bins[2]
	cfg := oddConfig(t)
	files, err := Render(cfg)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	for i := range files {
		files[i].Path = filepath.Join(root, files[i].Path)
	}
	write(t, files)

	out, err := exec.Command(postconf, "-c", filepath.Join(root, cfg.Paths.PostfixConfig), "-n").CombinedOutput()
	if err != nil {
		t.Fatalf("postconf -n: %v\n%s", err, out)
	}
	params := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if strings.Contains(l, "postconf: warning: open \"sqlite\" configuration \""+cfg.Paths.PostfixConfig+"/sqlite-") {
			continue // the maps sit at their live path, which is not here
		}
		k, v, ok := strings.Cut(l, " =")
		v = strings.TrimPrefix(v, " ")
		if !ok {
			t.Errorf("postconf -n: unexpected line %q", l)
			continue
		}
		params[k] = v
	}
	known := map[string]bool{"config_directory": true} // from -c
	for _, p := range cfg.Postfix.MainCF {
		known[p.Name] = true // postfix.main_cf
	}
	src, _ := tmplFS.ReadFile("postfix/main.cf.tmpl")
	for _, m := range regexp.MustCompile(`(?m)^([a-z0-9_]+) =`).FindAllStringSubmatch(string(src), -1) {
		known[m[1]] = true
	}
	for k := range params {
		if !known[k] {
			t.Errorf("postconf -n shows %s, which main.cf.tmpl never sets", k)
		}
	}
	var judged []netip.Prefix
	for _, n := range cfg.TrustedNetworks {
		p, err := config.ParseCIDR(string(n))
		if err != nil {
			t.Fatal(err)
		}
		judged = append(judged, p)
	}
	var read []netip.Prefix
	for _, s := range strings.Split(params["mynetworks"], ", ") {
		p, err := config.ParseCIDR(s)
		if err != nil {
			t.Fatalf("postconf mynetworks item %q: %v", s, err)
		}
		read = append(read, p)
	}
	if !reflect.DeepEqual(read, judged) {
		t.Errorf("Postfix reads mynetworks = %v; config judged %v", read, judged)
	}
	for k, want := range map[string]string{"relayhost": cfg.Postfix.RelayHost, "transport_maps": cfg.Postfix.TransportMaps, "mail_owner": cfg.Postfix.MailOwner, "queue_directory": cfg.Paths.PostfixQueue} {
		if params[k] != want {
			t.Errorf("Postfix reads %s = %q; config has %q", k, params[k], want)
		}
	}

	conf := filepath.Join(root, cfg.Paths.DovecotConfig, "dovecot.conf")
	out, err = exec.Command(doveconf, "-c", conf, "-n").CombinedOutput()
	if err != nil || strings.Contains(string(out), "Warning") {
		t.Fatalf("doveconf -n: %v\n%s", err, out)
	}
	for _, want := range []string{
		"mail_location = maildir:" + cfg.Mailbox.BaseDir + "/" + cfg.Mailbox.Layout,
		"mailbox " + cfg.Sieve.SpamFolder + " {",
		"postmaster_address = " + cfg.Postmaster,
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("doveconf -n lacks %q:\n%s", want, out)
		}
	}
	script := filepath.Join(root, cfg.Sieve.Dir, "before", "spam.sieve")
	if out, err := exec.Command(sievec, "-c", conf, script, filepath.Join(t.TempDir(), "spam.svbin")).CombinedOutput(); err != nil {
		t.Errorf("sievec: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(script); !strings.Contains(string(b), `fileinto :create "`+cfg.Sieve.SpamFolder+`";`) {
		t.Errorf("spam.sieve does not file into %q:\n%s", cfg.Sieve.SpamFolder, b)
	}
}
