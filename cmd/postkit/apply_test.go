package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postkit/postkit/internal/testlib"
)

type applyResult struct {
	Changed bool `json:"changed"`
	Steps   []struct {
		Name    string `json:"name"`
		Changed bool   `json:"changed"`
	} `json:"steps"`
	Files []struct {
		Path   string `json:"path"`
		Action string `json:"action"`
		Edited bool   `json:"edited"`
	} `json:"files"`
	Diff string `json:"diff"`
	Exit int    `json:"exit"`
}

// postkit apply --json: --check exits 2 with the diffs in the report and
// writes nothing; the run, then a second one that changes nothing (exit
// 0); a hand edit is kept (exit 6) until --force.
func TestApplyCommand(t *testing.T) {
	testlib.NeedBinary(t, "postconf", "doveconf", "sievec")
	root := t.TempDir()
	cfg := filepath.Join(root, "etc/postkit/postkit.yaml")
	os.MkdirAll(filepath.Dir(cfg), 0o755)
	os.WriteFile(cfg, []byte("hostname: mail.exemple.fr\ndomains: [exemple.fr]\nmilter: {enabled: true, spam: {learn: {user: postkit-test-none}}, dkim: {keys: [{domain: exemple.fr, selector: mail}]}}\n"), 0o644)
	get := func(args ...string) (applyResult, int, string) {
		t.Helper()
		out, err := runPostkit(t, append([]string{"apply", "-c", cfg, "--root", root, "--json"}, args...)...)
		var r applyResult
		line := out[strings.LastIndex(strings.TrimSuffix(out, "\n"), "\n{")+1:]
		if jerr := json.Unmarshal([]byte(line), &r); jerr != nil {
			t.Fatalf("apply %v: %v, no JSON report: %v\n%s", args, err, jerr, out)
		}
		if n := strings.Count("\n"+out, "\n{"); n != 1 || r.Exit != exitCode(err) {
			t.Fatalf("apply %v: %d JSON documents, exit %d in it, %d really; want one that says it\n%s", args, n, r.Exit, exitCode(err), out)
		}
		return r, exitCode(err), out
	}
	r, code, out := get("--check", "--diff")
	if code != 2 || !r.Changed || !strings.Contains(r.Diff, "+myhostname = mail.exemple.fr") {
		t.Fatalf("--check --diff on a bare root: exit %d, changed %v\n%s", code, r.Changed, out)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/postfix")); err == nil {
		t.Fatal("--check wrote files")
	}
	if r, code, out = get(); code != 0 || !r.Changed {
		t.Fatalf("apply: exit %d, changed %v\n%s", code, r.Changed, out)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/systemd/system/postkit-milter.service")); err != nil {
		t.Error(err)
	}
	if r, code, out = get(); code != 0 || r.Changed {
		t.Fatalf("second apply: exit %d, changed %v\n%s", code, r.Changed, out)
	}
	if _, code, _ = get("--check"); code != 0 {
		t.Errorf("--check with nothing to do: exit %d", code)
	}
	unit := filepath.Join(root, "etc/systemd/system/postkit-milter.service")
	data, _ := os.ReadFile(unit)
	os.WriteFile(unit, append(data, "# mine\n"...), 0o644)
	r, code, out = get()
	if code != 6 || !strings.Contains(r.Diff, "-# mine") {
		t.Errorf("apply over a hand-edited unit: exit %d\n%s", code, out)
	}
	if r, code, out = get("--force"); code != 0 || !r.Changed {
		t.Errorf("--force: exit %d\n%s", code, out)
	}
	if baks, _ := filepath.Glob(unit + ".postkit-bak.*"); len(baks) != 1 {
		t.Errorf("backups of the unit: %v", baks)
	}
}
