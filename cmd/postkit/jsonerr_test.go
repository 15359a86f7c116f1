package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// runMain runs a command tree as main does: the error, if any, goes
// through reportError; it returns stdout, stderr and the exit status.
func runMain(t *testing.T, root *cobra.Command, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var o, e bytes.Buffer
	root.SetArgs(args)
	root.SetIn(strings.NewReader(stdin))
	root.SetOut(&o)
	root.SetErr(&e)
	root.SilenceUsage, root.SilenceErrors = true, true
	cmd, err := root.ExecuteContextC(context.Background())
	code := 0
	if err != nil {
		code = reportError(cmd, err, &o, &e)
	}
	return o.String(), e.String(), code
}

// With --json a failure is one JSON object on stdout (nothing on stderr),
// with the same exit status as without; without --json it is the
// "postkit: …" line on stderr.
func TestJSONErrors(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "postfix.sqlite")
	if out, errOut, code := runMain(t, newDBCommand(), "", "--db", db, "init", "exemple.fr"); code != 0 {
		t.Fatalf("init: %s %s", out, errOut)
	}
	runMain(t, newDBCommand(), "a-long-passphrase\n", "--db", db, "user", "add", "test@exemple.fr", "--password-stdin")
	runMain(t, newDBCommand(), "", "--db", db, "valias", "add", "contact@exemple.fr", "test@exemple.fr")
	badYAML := filepath.Join(dir, "bad.yaml")
	os.WriteFile(badYAML, []byte("hostname: mail.exemple.fr\ndomains: []\nmessage_size_limit: 10\nfoo: 1\n"), 0o600)
	relay := filepath.Join(dir, "relay.yaml")
	os.WriteFile(relay, []byte("hostname: mail.exemple.fr\ndomains: [exemple.fr]\ntrusted_networks: [0.0.0.0/0]\n"), 0o600)

	type item struct {
		File    string `json:"file"`
		Line    int    `json:"line"`
		Key     string `json:"key"`
		Message string `json:"message"`
		Hint    string `json:"hint"`
	}
	type jerr struct {
		Error  string `json:"error"`
		Hint   string `json:"hint"`
		Exit   int    `json:"exit"`
		Errors []item `json:"errors"`
	}
	for _, tt := range []struct {
		name    string
		root    func() *cobra.Command
		stdin   string
		args    []string
		wantErr string // substring of "error"
		hint    string // substring of "hint"
		items   int    // len(errors)
	}{
		{"db missing", newDBCommand, "", []string{"--db", filepath.Join(dir, "none.sqlite"), "domain", "list", "--json"}, "no such file", "'postkit db init'", 0},
		{"user delete in use", newDBCommand, "", []string{"--db", db, "user", "delete", "test@exemple.fr", "--json"}, "destination of 1 alias(es)", "pass --cascade", 0},
		{"bad password", newDBCommand, "court\n", []string{"--db", db, "user", "passwd", "test@exemple.fr", "--password-stdin", "--json"}, "at least 12", "", 0},
		{"import", newDBCommand, "domain,exemple.fr\nfoo,bar\nuser,x@exemple.fr\n", []string{"--db", db, "import", "-", "--format", "csv", "--json"}, "import refused", "", 2},
		{"config check", newConfigCommand, "", []string{"check", "-c", badYAML, "--json"}, "domains: is required", "", 3},
		{"open relay", newConfigCommand, "", []string{"check", "-c", relay, "--json"}, "open relay", "list only your own networks", 1},
		{"lookup", func() *cobra.Command { return newLookupCommand(func(int) {}) }, "", []string{"--db", db, "nomap", "x", "--json"}, "unknown map", "use one of", 0},
	} {
		out, errOut, code := runMain(t, tt.root(), tt.stdin, tt.args...)
		var j jerr
		if err := json.Unmarshal([]byte(out), &j); err != nil || code != 1 || j.Exit != 1 || errOut != "" {
			t.Errorf("%s: stdout %q stderr %q exit %d: %v; want one JSON object, exit 1, empty stderr", tt.name, out, errOut, code, err)
			continue
		}
		if !strings.Contains(j.Error, tt.wantErr) || !strings.Contains(j.Hint, tt.hint) || len(j.Errors) != tt.items {
			t.Errorf("%s: %+v; want error ~%q hint ~%q and %d items", tt.name, j, tt.wantErr, tt.hint, tt.items)
		}
		for _, it := range j.Errors {
			if it.Line == 0 || it.File == "" || it.Message == "" {
				t.Errorf("%s: item %+v lacks its position", tt.name, it)
			}
		}
		// Without --json: text on stderr, same status.
		args := []string{}
		for _, a := range tt.args {
			if a != "--json" {
				args = append(args, a)
			}
		}
		out, errOut, code = runMain(t, tt.root(), tt.stdin, args...)
		if code != 1 || !strings.HasPrefix(errOut, "postkit: ") || strings.HasPrefix(out, "{") {
			t.Errorf("%s without --json: stdout %q stderr %q exit %d", tt.name, out, errOut, code)
		}
	}
	// The config check items are in file order, each at its line.
	out, _, _ := runMain(t, newConfigCommand(), "", "check", "-c", badYAML, "--json")
	var j jerr
	json.Unmarshal([]byte(out), &j)
	var lines []int
	for _, it := range j.Errors {
		lines = append(lines, it.Line)
	}
	if len(lines) != 3 || lines[0] != 2 || lines[1] != 3 || lines[2] != 4 {
		t.Errorf("config check --json error lines = %v; want [2 3 4]", lines)
	}
	// generate shares the helper: its config errors come as JSON too.
	resetGenerate := func() {
		for _, c := range rootCmd.Commands() {
			if c.Name() == "generate" {
				c.Flags().VisitAll(func(f *pflag.Flag) { f.Value.Set(f.DefValue); f.Changed = false })
			}
		}
	}
	resetGenerate()
	defer resetGenerate()
	out, errOut, code := runMain(t, rootCmd, "", "generate", "-c", badYAML, "--root", dir, "--json")
	j = jerr{}
	if err := json.Unmarshal([]byte(out), &j); err != nil || code != 1 || errOut != "" || len(j.Errors) != 3 {
		t.Errorf("generate --json with a bad config: %q %q exit %d: %v", out, errOut, code, err)
	}
	// And success.
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("hostname: mail.exemple.fr\ndomains: [exemple.fr]\n"), 0o600)
	if out, _, code := runMain(t, newConfigCommand(), "", "check", "-c", good, "--json"); code != 0 || !strings.Contains(out, `"ok":true`) {
		t.Errorf("config check --json of a good file: %q exit %d", out, code)
	}
}
