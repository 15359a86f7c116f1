// Package examples tests the examples against the real programs: the
// Ansible role with ansible-playbook.
package examples

import (
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/postkit/postkit/internal/testlib"
)

// buildPostkit builds the postkit binary into dir.
func buildPostkit(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "postkit")
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/postkit").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

var recap = regexp.MustCompile(`(?m)^localhost\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)`)

// playbook runs examples/ansible/playbook.yml against localhost with vars
// and returns the output and the recap's changed count.
func playbook(t *testing.T, vars map[string]any, args ...string) (string, int) {
	t.Helper()
	data, _ := json.Marshal(vars)
	varsFile := filepath.Join(t.TempDir(), "vars.json")
	os.WriteFile(varsFile, data, 0o600)
	cmd := exec.Command("ansible-playbook", append([]string{"-i", "localhost,", "-c", "local",
		"-e", "@" + varsFile, "ansible/playbook.yml"}, args...)...)
	tmp := t.TempDir()
	cmd.Env = append(os.Environ(), "ANSIBLE_NOCOLOR=1", "ANSIBLE_LOCAL_TEMP="+tmp, "ANSIBLE_REMOTE_TEMP="+tmp,
		"ANSIBLE_RETRY_FILES_ENABLED=0", "ANSIBLE_GATHERING=explicit", "ANSIBLE_PYTHON_INTERPRETER=/usr/bin/python3",
		"ANSIBLE_CONFIG="+filepath.Join(tmp, "none.cfg"))
	out, err := cmd.CombinedOutput()
	m := recap.FindSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("ansible-playbook %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if string(m[3]) != "0" || string(m[4]) != "0" {
		t.Fatalf("ansible-playbook %s: unreachable or failed tasks\n%s", strings.Join(args, " "), out)
	}
	n, _ := strconv.Atoi(string(m[2]))
	return string(out), n
}

// snapshot maps every file under root to its mode and contents.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	m := map[string]string{}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		st, _ := d.Info()
		v := st.Mode().String()
		if d.Type().IsRegular() {
			b, _ := os.ReadFile(p)
			v += string(b)
		}
		m[p] = v
		return nil
	})
	return m
}

// The role, run by real Ansible against localhost into a --root sandbox
// with a given binary: the first run changes, the second reports changed=0,
// --check --diff shows a change of postkit.yaml in the generated files and
// changes nothing.
func TestAnsibleRole(t *testing.T) {
	testlib.NeedBinary(t, "ansible-playbook", "postconf", "doveconf", "sievec")
	bin := buildPostkit(t, t.TempDir())
	root := t.TempDir()
	vars := map[string]any{
		"postkit_root":     root,
		"postkit_binary":   bin,
		"postkit_hostname": "mail.exemple.fr",
		"ansible_become":   false,
		// The daemons' account: one this host does not have, whatever
		// else installs or removes a postkit account meanwhile.
		"postkit_config_extra": map[string]any{"milter": map[string]any{"spam": map[string]any{"learn": map[string]any{"user": "postkit-test-none"}}}},
	}
	out, changed := playbook(t, vars)
	if changed == 0 {
		t.Fatalf("first run changed nothing\n%s", out)
	}
	main, err := os.ReadFile(filepath.Join(root, "etc/postfix/main.cf"))
	if err != nil || !strings.Contains(string(main), "myhostname = mail.exemple.fr\n") {
		t.Fatalf("main.cf after the first run: %v\n%s", err, out)
	}
	for _, p := range []string{"usr/local/bin/postkit", "etc/postkit/postkit.yaml", "etc/dkimkeys/exemple.fr/mail.private",
		"etc/systemd/system/postkit-milter.service", "etc/postfix/bdd/postfix.sqlite", "etc/postfix/tls/courriel.pem"} {
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("after the first run: %v", err)
		}
	}
	before := snapshot(t, root)
	if out, changed := playbook(t, vars); changed != 0 {
		t.Fatalf("second run: changed=%d; want 0\n%s", changed, out)
	}

	vars["postkit_hostname"] = "mail2.exemple.fr"
	out, changed = playbook(t, vars, "--check", "--diff")
	if changed == 0 {
		t.Errorf("--check with a new hostname reports no change\n%s", out)
	}
	for _, want := range []string{"-myhostname = mail.exemple.fr", "+myhostname = mail2.exemple.fr", "+hostname: mail2.exemple.fr"} {
		if !strings.Contains(out, want) {
			t.Errorf("--check --diff does not show %q\n%s", want, out)
		}
	}
	after := snapshot(t, root)
	for p, v := range before {
		if after[p] != v {
			t.Errorf("--check changed %s", p)
		}
	}
	if len(after) != len(before) {
		t.Errorf("--check added files: %d entries, was %d", len(after), len(before))
	}
}
