package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/internal/testlib"
	"github.com/spf13/pflag"
)

// runPostkit executes the postkit command tree with args and returns its
// output. Cobra keeps flag values between runs: they are reset first.
func runPostkit(t *testing.T, args ...string) (string, error) {
	t.Helper()
	for _, c := range rootCmd.Commands() {
		if c.Name() != "generate" {
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
	if err != nil {
		t.Fatal(err)
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
	// A hand edit is reported, diffed and repaired.
	os.WriteFile(filepath.Join(root, "etc/postfix/main.cf"), append(main, "biff = yes\n"...), 0o644)
	out, err = runPostkit(t, "generate", "-c", cfg, "--root", root, "--check", "--diff")
	if err != nil || !strings.Contains(out, "-biff = yes") || !strings.Contains(out, "--- /etc/postfix/main.cf") {
		t.Errorf("--diff after a hand edit: %v\n%s", err, out)
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
