package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
