package main

import (
	"bytes"
	"crypto/md5"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/postkit/postkit/internal/apply"
	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/internal/testlib"
	"github.com/spf13/pflag"
)

// runPostkit executes the postkit command tree with args and returns its
// output. Cobra keeps flag values between runs: they are reset first.
func runPostkit(t *testing.T, args ...string) (string, error) {
	t.Helper()
	for _, c := range rootCmd.Commands() {
		if c.Name() != "generate" && c.Name() != "apply" {
			continue
		}
		c.Flags().VisitAll(func(f *pflag.Flag) { // scalar flags only here
			f.Value.Set(f.DefValue)
			f.Changed = false
		})
	}
	var out bytes.Buffer
	rootCmd.SetOut(&out)
	rootCmd.SetErr(&out)
	rootCmd.SetArgs(args)
	err := rootCmd.Execute()
	return out.String(), err
}

type genResult struct {
	Changed bool `json:"changed"`
	Files   []struct {
		Path   string `json:"path"`
		Action string `json:"action"`
	} `json:"files"`
}

func TestGenerateIdempotent(t *testing.T) {
	root := t.TempDir()
	cfg := "../../examples/postkit.yaml"
	out, err := runPostkit(t, "generate", "-c", cfg, "--root", root, "--check", "--json")
	if exitCode(err) != 2 {
		t.Fatalf("--check with changes pending: %v; want exit 2", err)
	}
	var r genResult
	if err := json.Unmarshal([]byte(out), &r); err != nil || !r.Changed || len(r.Files) == 0 {
		t.Fatalf("--check on an empty root: %v %+v", err, r)
	}
	if entries, _ := os.ReadDir(root); len(entries) != 0 {
		t.Fatalf("--check wrote %d entries under the root", len(entries))
	}
	if _, err := runPostkit(t, "generate", "-c", cfg, "--root", root, "--json"); err != nil {
		t.Fatal(err)
	}
	main, err := os.ReadFile(filepath.Join(root, "etc/postfix/main.cf"))
	if err != nil || !bytes.Contains(main, []byte("myhostname = mail.exemple.fr")) {
		t.Fatalf("main.cf not written: %v", err)
	}
	out, err = runPostkit(t, "generate", "-c", cfg, "--root", root, "--json")
	if err != nil {
		t.Fatal(err)
	}
	r = genResult{}
	if err := json.Unmarshal([]byte(out), &r); err != nil || r.Changed {
		t.Fatalf("second run: %v changed=%v\n%s", err, r.Changed, out)
	}
	for _, f := range r.Files {
		if f.Action != "unchanged" {
			t.Errorf("second run: %s %s", f.Path, f.Action)
		}
	}
	if _, err := runPostkit(t, "generate", "-c", cfg, "--root", root, "--check"); err != nil {
		t.Errorf("--check with nothing pending: %v; want exit 0", err)
	}
	// A hand edit is reported with its diff and kept; --force replaces it
	// and keeps a backup.
	edited := append(main, "biff = yes\n"...)
	os.WriteFile(filepath.Join(root, "etc/postfix/main.cf"), edited, 0o644)
	out, err = runPostkit(t, "generate", "-c", cfg, "--root", root, "--check", "--diff")
	if exitCode(err) != 6 || !strings.Contains(out, "-biff = yes") || !strings.Contains(out, "--- /etc/postfix/main.cf") {
		t.Errorf("--diff after a hand edit: %v\n%s", err, out)
	}
	out, err = runPostkit(t, "generate", "-c", cfg, "--root", root)
	if exitCode(err) != 6 || !strings.Contains(out, "-biff = yes") || !strings.Contains(err.Error(), "--force") {
		t.Errorf("generate over a hand edit: %v; want exit 6 naming --force, with the diff\n%s", err, out)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/postfix/main.cf")); !bytes.Equal(b, edited) {
		t.Fatal("generate replaced the hand-edited main.cf")
	}
	out, err = runPostkit(t, "generate", "-c", cfg, "--root", root, "--force", "--json")
	if err != nil {
		t.Fatalf("--force: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/postfix/main.cf")); !bytes.Equal(b, main) {
		t.Error("--force did not put the generated main.cf back")
	}
	baks, _ := filepath.Glob(filepath.Join(root, "etc/postfix/main.cf.postkit-bak.*"))
	if len(baks) != 1 {
		t.Fatalf("backups: %v; want one", baks)
	}
	if b, _ := os.ReadFile(baks[0]); !bytes.Equal(b, edited) {
		t.Error("the backup is not the edited file")
	}
	// Files an older postkit wrote, without a manifest, carry its header:
	// they are replaced.
	os.Remove(filepath.Join(root, "var/lib/postkit/manifest.json"))
	os.WriteFile(filepath.Join(root, "etc/postfix/main.cf"), append(main, "# an older postkit\n"...), 0o644)
	if out, err := runPostkit(t, "generate", "-c", cfg, "--root", root); err != nil {
		t.Errorf("over files of a postkit without a manifest: %v\n%s", err, out)
	}
	// A file postkit never wrote is not replaced either.
	other := t.TempDir()
	os.MkdirAll(filepath.Join(other, "etc/postfix"), 0o755)
	os.WriteFile(filepath.Join(other, "etc/postfix/master.cf"), []byte("# the admin's\n"), 0o644)
	if _, err := runPostkit(t, "generate", "-c", cfg, "--root", other); exitCode(err) != 6 {
		t.Errorf("over a file postkit never wrote: %v; want exit 6", err)
	}
	if _, err := os.Stat(filepath.Join(other, "etc/postfix/main.cf")); err == nil {
		t.Error("refused generate wrote main.cf")
	}
}

func TestGenerateRefusesOpenRelay(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "relay.yaml")
	os.WriteFile(cfg, []byte("hostname: mail.exemple.fr\ndomains: [exemple.fr]\ntrusted_networks: [0.0.0.0/0]\n"), 0o644)
	root := filepath.Join(dir, "root")
	_, err := runPostkit(t, "generate", "-c", cfg, "--root", root)
	if err == nil || !strings.Contains(err.Error(), "open relay") || !strings.Contains(err.Error(), "relay.yaml:3:") {
		t.Fatalf("generate with 0.0.0.0/0 = %v; want an open-relay error with its position", err)
	}
	if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Error("refused generate wrote files")
	}
	if _, err := runPostkit(t, "generate", "-c", cfg, "--root", root, "--i-know-this-is-an-open-relay"); err != nil {
		t.Fatalf("with --i-know-this-is-an-open-relay: %v", err)
	}
	main, _ := os.ReadFile(filepath.Join(root, "etc/postfix/main.cf"))
	if !bytes.Contains(main, []byte("mynetworks = 0.0.0.0/0")) {
		t.Error("the acknowledged open relay was not generated")
	}
}

// The open-relay guard judges the networks Postfix will read: postconf -n on
// the generated tree lists exactly the networks config judged, and judging
// what postconf reads gives the same verdict. 256 separate /8 networks are
// all of IPv4 and are refused without --i-know-this-is-an-open-relay.
func TestOpenRelayUnionAsPostfixReadsIt(t *testing.T) {
	postconf := testlib.NeedProgram(t, "postconf")
	var all4 []string
	for i := 0; i < 256; i++ {
		all4 = append(all4, fmt.Sprintf("%d.0.0.0/8", i))
	}
	for _, tt := range []struct {
		name, nets string
		open       bool
	}{
		{"all of IPv4 in /8s", "[" + strings.Join(all4, ", ") + "]", true},
		{"IPv4-mapped", `["::ffff:0.0.0.0/96"]`, true},
		{"two /8s", "[10.0.0.0/8, 11.0.0.0/8]", true},
		{"a /8 in halves, loopback", `[10.0.0.0/9, 10.128.0.0/9, 127.0.0.0/8, "::1", "::ffff:127.0.0.1"]`, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			y := "hostname: mail.exemple.fr\ndomains: [exemple.fr]\ntrusted_networks: " + tt.nets + "\n"
			cfgPath := filepath.Join(dir, "postkit.yaml")
			os.WriteFile(cfgPath, []byte(y), 0o644)
			root := filepath.Join(dir, "root")
			_, err := runPostkit(t, "generate", "-c", cfgPath, "--root", root)
			if tt.open != (err != nil && strings.Contains(err.Error(), "open relay")) {
				t.Fatalf("generate = %v; want open relay refused: %v", err, tt.open)
			}
			if tt.open {
				if _, err := runPostkit(t, "generate", "-c", cfgPath, "--root", root, "--i-know-this-is-an-open-relay"); err != nil {
					t.Fatal(err)
				}
			}
			out, err := exec.Command(postconf, "-c", filepath.Join(root, "etc/postfix"), "-h", "mynetworks").Output()
			if err != nil {
				t.Fatalf("postconf -h mynetworks: %v", err)
			}
			cfg, _, err := config.Parse("x.yaml", []byte(y))
			if err != nil {
				t.Fatal(err)
			}
			var judged, read []string
			for _, n := range cfg.RelayNetworks() {
				judged = append(judged, n.Prefix.String())
			}
			for _, item := range strings.FieldsFunc(string(out), func(r rune) bool { return r == ',' || r == ' ' || r == '\n' }) {
				p, err := config.ParseCIDR(item)
				if err != nil {
					t.Fatalf("postconf mynetworks item %q: %v", item, err)
				}
				read = append(read, strconv.Quote(p.String()))
			}
			if got := strings.Join(read, ","); got != `"`+strings.Join(judged, `","`)+`"` {
				t.Fatalf("Postfix reads mynetworks %s; config judged %v", got, judged)
			}
			// Judge what Postfix reads: the same verdict.
			asRead, f, err := config.Parse("postconf", []byte("hostname: mail.exemple.fr\ndomains: [exemple.fr]\ntrusted_networks: ["+strings.Join(read, ", ")+"]\n"))
			if err != nil {
				t.Fatal(err)
			}
			if open := asRead.OpenRelay(f) != nil; open != tt.open {
				t.Errorf("judging postconf's mynetworks: open=%v; want %v", open, tt.open)
			}
		})
	}
}

// tree is every entry under root: path -> mode, owner and contents.
func tree(t *testing.T, root string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		v := st.Mode().String()
		if s, ok := st.Sys().(*syscall.Stat_t); ok {
			v += fmt.Sprintf(" %d:%d", s.Uid, s.Gid)
		}
		if st.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			v += " " + string(b)
		}
		m[strings.TrimPrefix(p, root)] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func sameTree(t *testing.T, what string, before, after map[string]string) {
	t.Helper()
	for p, v := range after {
		if w, ok := before[p]; !ok {
			t.Errorf("%s: %s was created", what, p)
		} else if w != v {
			t.Errorf("%s: %s changed:\n%s", what, p, apply.Unified(p, []byte(w), []byte(v)))
		}
	}
	for p := range before {
		if _, ok := after[p]; !ok {
			t.Errorf("%s: %s was removed", what, p)
		}
	}
}

// fakeProgram puts a program that fails, saying so, first on PATH.
func fakeProgram(t *testing.T, name string) {
	t.Helper()
	dir := t.TempDir()
	script := "#!/bin/sh\necho \"" + name + ": fake refusal of $*\" >&2\nexit 1\n"
	if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
}

func exitCode(err error) int {
	if e, ok := err.(interface{ ExitCode() int }); ok {
		return e.ExitCode()
	}
	if err != nil {
		return 1
	}
	return 0
}

// generate is all or nothing: when Postfix, Dovecot or sievec refuses the
// new set, nothing under the root changes, byte for byte, and the exit
// status and message say what refused it; --check runs the same checks and
// writes nothing. sievec judges the script every time, not only when it
// changed.
func TestGenerateAllOrNothing(t *testing.T) {
	testlib.NeedBinary(t, "postconf", "doveconf", "sievec")
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	write := func(name, extra string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte("hostname: mail.exemple.fr\ndomains: [exemple.fr]\n"+extra), 0o644)
		return p
	}
	first := write("first.yaml", "")
	if out, err := runPostkit(t, "generate", "-c", first, "--root", root); err != nil {
		t.Fatalf("first generate: %v\n%s", err, out)
	}
	live := tree(t, root)
	svbin := "/var/mail/sieve/before/spam.svbin"
	if !strings.Contains(live[svbin], "/var/mail/sieve/before/spam.sieve") {
		t.Fatalf("the live Sieve binary was not compiled at its live path: %q", live[svbin])
	}

	// The script does not change here: only main.cf, dovecot.conf…
	renamed := write("renamed.yaml", "origin: exemple.fr\npostmaster: root@exemple.fr\n")
	// …and here most files do, the Sieve script too.
	moved := write("moved.yaml", "origin: exemple.fr\nsieve: {spam_folder: Junk}\nmailbox: {layout: \"%d/%n/Maildir\"}\n")
	missingMap := write("map.yaml", "postfix: {transport_maps: \"mysql:/etc/postfix/no-such-postkit-map.cf\"}\n")

	for _, tt := range []struct {
		name, fake, cfg string
		want            []string
	}{
		{"failing sievec, script unchanged", "sievec", renamed, []string{"sievec refused the generated files", "sievec: fake refusal of -c <staged>/etc/dovecot/dovecot.conf <staged>/var/mail/sieve/before/spam.sieve"}},
		{"failing sievec, script changed", "sievec", moved, []string{"sievec refused"}},
		{"failing doveconf", "doveconf", moved, []string{"doveconf refused the generated files", "doveconf: fake refusal of -c <staged>/etc/dovecot/dovecot.conf -n"}},
		{"failing postconf", "postconf", moved, []string{"postconf refused"}},
		{"postconf warns of a missing map", "", missingMap, []string{"postconf refused", `open "mysql" configuration "/etc/postfix/no-such-postkit-map.cf": No such file or directory`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.fake != "" {
				fakeProgram(t, tt.fake)
			}
			for _, check := range []bool{false, true} {
				args := []string{"generate", "-c", tt.cfg, "--root", root}
				if check {
					args = append(args, "--check")
				}
				out, err := runPostkit(t, args...)
				if exitCode(err) != 3 {
					t.Errorf("generate (check=%v) = exit %d, %v\n%s; want exit 3", check, exitCode(err), err, out)
				}
				for _, w := range append(tt.want, "nothing under "+root+" was changed") {
					if err != nil && !strings.Contains(err.Error(), w) {
						t.Errorf("generate error:\n%v\nwant it to contain %q", err, w)
					}
				}
				sameTree(t, fmt.Sprintf("%s (check=%v)", tt.name, check), live, tree(t, root))
				if t.Failed() {
					return
				}
			}
		})
	}

	// --check reports, checks and writes nothing; then the real run, then a
	// second one that changes nothing.
	out, err := runPostkit(t, "generate", "-c", moved, "--root", root, "--check", "--json")
	var r genResult
	if exitCode(err) != 2 || json.Unmarshal([]byte(out), &r) != nil || !r.Changed {
		t.Fatalf("--check --json: %v %+v\n%s", err, r, out)
	}
	sameTree(t, "--check", live, tree(t, root))
	if out, err := runPostkit(t, "generate", "-c", moved, "--root", root, "--json"); err != nil || !strings.Contains(out, `"changed":true`) {
		t.Fatalf("generate: %v\n%s", err, out)
	}
	after := tree(t, root)
	if !strings.Contains(after["/var/mail/sieve/before/spam.sieve"], `fileinto :create "Junk"`) || after[svbin] == live[svbin] {
		t.Errorf("the new Sieve script or its binary is not in place")
	}
	out, err = runPostkit(t, "generate", "-c", moved, "--root", root, "--json")
	r = genResult{}
	if err != nil || json.Unmarshal([]byte(out), &r) != nil || r.Changed {
		t.Fatalf("second run: %v changed=%v\n%s", err, r.Changed, out)
	}
	sameTree(t, "second run", after, tree(t, root))
}

// A missing checker is a note, not a failure: the files are installed, as
// on a host without Postfix or Dovecot.
func TestGenerateNotesMissingCheckers(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	root := t.TempDir()
	out, err := runPostkit(t, "generate", "-c", "../../examples/minimal.yaml", "--root", root)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{
		"postkit: note: postconf not found (apt-get install postfix): main.cf and master.cf not checked before being installed",
		"postkit: note: doveconf not found",
		"postkit: note: sievec not found (apt-get install dovecot-sieve)",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "etc/postfix/main.cf")); err != nil {
		t.Error(err)
	}
}

// Files Debian's packages installed and nobody changed (dovecot-core's copy
// of /usr/share/dovecot, a dpkg conffile with its recorded MD5) are
// replaced without --force; the same files changed by the admin are kept.
func TestGeneratePristinePackageFiles(t *testing.T) {
	for _, edited := range []bool{false, true} {
		root := t.TempDir()
		put := func(p, data string) {
			os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755)
			os.WriteFile(filepath.Join(root, p), []byte(data), 0o644)
		}
		shipped := "## Authentication processes\n#disable_plaintext_auth = yes\n"
		put("usr/share/dovecot/conf.d/10-auth.conf", shipped)
		mainCF := "# Debian's main.cf\nbiff = no\n"
		put("var/lib/dpkg/status", fmt.Sprintf("Package: postfix\nStatus: install ok installed\nConffiles:\n /etc/postfix/main.cf %x\n /etc/postfix/other.cf 00000000000000000000000000000000 obsolete\nDescription: x\n", md5.Sum([]byte(mainCF))))
		if edited {
			shipped += "auth_mechanisms = plain login\n"
			mainCF += "relayhost = [smtp.example.net]\n"
		}
		put("etc/dovecot/conf.d/10-auth.conf", shipped)
		put("etc/postfix/main.cf", mainCF)
		out, err := runPostkit(t, "generate", "-c", "../../examples/postkit.yaml", "--root", root, "--json")
		var r genResult
		json.Unmarshal([]byte(out[strings.LastIndex(out, "{\"changed\""):]), &r)
		if !edited && (err != nil || !r.Changed) {
			t.Errorf("over pristine package files: %v\n%s", err, out)
		}
		if edited && exitCode(err) != 6 {
			t.Errorf("over package files the admin changed: %v; want exit 6\n%s", err, out)
		}
		got, _ := os.ReadFile(filepath.Join(root, "etc/postfix/main.cf"))
		if replaced := strings.HasPrefix(string(got), "# generated by postkit"); replaced == edited {
			t.Errorf("edited=%v: main.cf replaced=%v", edited, replaced)
		}
	}
}
