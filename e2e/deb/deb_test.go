// Package deb tests the Debian package as an administrator meets it: `make
// deb`, lintian, `dpkg -i`, `postkit version`, `man postkit`, then remove and
// purge leaving nothing behind. It installs into the real system (as root,
// POSTKIT_E2E=1), so it refuses to run over an installed postkit and purges
// whatever it installed even when it fails. The other end-to-end tests run
// the binary they build themselves, never /usr/bin/postkit.
package deb

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/postkit/postkit/internal/testlib"
)

const pkg = "postkit"

func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := run(t, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// installed reports whether dpkg knows the package in any state (installed,
// or removed with its configuration files: "rc").
func installed(t *testing.T) (string, bool) {
	out, err := exec.Command("dpkg-query", "-W", "-f=${db:Status-Abbrev}", pkg).Output()
	if err != nil {
		return "", false
	}
	s := strings.TrimSpace(string(out))
	return s, s != "" && s != "un"
}

func TestPackage(t *testing.T) {
	testlib.NeedRoot(t)
	testlib.NeedBinary(t, "make", "git", "dpkg", "dpkg-deb", "dpkg-shlibdeps", "lintian", "man", "adduser")
	if st, ok := installed(t); ok {
		t.Fatalf("package %s is already known to dpkg (%s): this test installs and purges it; purge it first (dpkg --purge %s)", pkg, st, pkg)
	}
	if _, err := os.Lstat("/usr/bin/postkit"); err == nil {
		t.Fatalf("/usr/bin/postkit exists and belongs to no package: this test would replace it; move it away first")
	}
	_, userBefore := run(t, "getent", "passwd", "postkit")
	hadUser := userBefore == nil

	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	dist := t.TempDir()
	cmd := exec.Command("make", "-C", root, "deb")
	cmd.Env = append(os.Environ(), "DIST="+dist)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make deb: %v\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dist, "postkit_*_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb wrote %v; want one dist/postkit_<version>_<arch>.deb", debs)
	}
	deb := debs[0]
	arch := strings.TrimSpace(mustRun(t, "dpkg", "--print-architecture"))
	m := regexp.MustCompile(`^postkit_(.+)_` + regexp.QuoteMeta(arch) + `\.deb$`).FindStringSubmatch(filepath.Base(deb))
	if m == nil {
		t.Fatalf("%s: want postkit_<version>_%s.deb", filepath.Base(deb), arch)
	}
	debVersion := m[1]
	if f := strings.TrimSpace(mustRun(t, "dpkg-deb", "-f", deb, "Version")); f != debVersion {
		t.Errorf("control Version %q; file name says %q", f, debVersion)
	}
	gitVersion := strings.TrimSpace(mustRun(t, "git", "-C", root, "describe", "--tags", "--always", "--dirty"))

	// Contents: what an installed system relies on.
	contents := mustRun(t, "dpkg-deb", "-c", deb)
	for _, want := range []string{
		"./usr/bin/postkit",
		"./lib/systemd/system/postkit-milter.service",
		"./lib/systemd/system/postkit-policyd.service",
		"./usr/share/man/man1/postkit.1.gz",
		"./usr/share/man/man1/postkit-dns-records.1.gz",
		"./usr/share/bash-completion/completions/postkit",
		"./usr/share/zsh/vendor-completions/_postkit",
		"./usr/share/fish/vendor_completions.d/postkit.fish",
		"./usr/share/doc/postkit/copyright",
		"./usr/share/doc/postkit/changelog.gz",
		"./usr/share/doc/postkit/examples/postkit.yaml",
	} {
		if !strings.Contains(contents, want+"\n") {
			t.Errorf("package lacks %s", want)
		}
	}
	if strings.Contains(contents, "/usr/local/bin") {
		t.Errorf("package ships /usr/local paths:\n%s", contents)
	}

	// lintian: no errors; warnings are logged.
	lint, err := run(t, "lintian", "--fail-on", "error", deb)
	t.Logf("lintian:\n%s", lint)
	if err != nil || regexp.MustCompile(`(?m)^E: `).MatchString(lint) {
		t.Errorf("lintian reports errors (%v):\n%s", err, lint)
	}

	// From here on the system changes: purge whatever happens.
	t.Cleanup(func() {
		if _, ok := installed(t); ok {
			if out, err := run(t, "dpkg", "--purge", pkg); err != nil {
				t.Errorf("cleanup: dpkg --purge %s: %v\n%s", pkg, err, out)
			}
		}
	})
	mustRun(t, "dpkg", "-i", deb)
	if st, _ := installed(t); st != "ii" {
		t.Fatalf("after dpkg -i: dpkg status %q; want ii", st)
	}
	if v := strings.TrimSpace(mustRun(t, "dpkg-query", "-W", "-f=${Version}", pkg)); v != debVersion {
		t.Errorf("installed version %q; want %q", v, debVersion)
	}
	var info struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, "/usr/bin/postkit", "version", "--json")), &info); err != nil {
		t.Fatal(err)
	}
	if info.Version != gitVersion {
		t.Errorf("postkit version says %q; git describe says %q", info.Version, gitVersion)
	}
	line := mustRun(t, "/usr/bin/postkit", "version")
	if !strings.HasPrefix(line, "postkit "+gitVersion+" ") {
		t.Errorf("postkit version: %q; want it to start with postkit %s", line, gitVersion)
	}
	if !hadUser {
		if out, err := run(t, "getent", "passwd", "postkit"); err != nil || !strings.Contains(out, "(postkit package)") {
			t.Errorf("postinst did not create the postkit account: %v %q", err, out)
		}
	}

	// man postkit renders (man-db through groff), with the command's text.
	manCmd := exec.Command("man", "postkit")
	manCmd.Env = append(os.Environ(), "MANPAGER=cat", "PAGER=cat", "MANWIDTH=80", "LANG=C.UTF-8")
	page, err := manCmd.CombinedOutput()
	if err != nil {
		t.Fatalf("man postkit: %v\n%s", err, page)
	}
	for _, want := range []string{"NAME", "postkit", "SEE ALSO", "postkit-dns(1)"} {
		if !strings.Contains(string(page), want) {
			t.Errorf("man postkit lacks %q:\n%s", want, page)
		}
	}
	if regexp.MustCompile(`\\f[BIRP]|^\.TH`).Match(page) {
		t.Errorf("man postkit shows raw roff:\n%s", page)
	}

	// The installed binary provisions a tree from the example it ships: a
	// first apply changes it, a second has nothing to do.
	tree := t.TempDir()
	example, err := os.ReadFile("/usr/share/doc/postkit/examples/postkit.yaml")
	if err != nil {
		t.Fatalf("the package ships no example postkit.yaml: %v", err)
	}
	cfg := filepath.Join(tree, "etc/postkit/postkit.yaml")
	if err := os.MkdirAll(filepath.Dir(cfg), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, example, 0o640); err != nil {
		t.Fatal(err)
	}
	for i, want := range []bool{true, false} {
		var rep struct {
			Changed bool `json:"changed"`
		}
		cmd := exec.Command("/usr/bin/postkit", "apply", "-c", cfg, "--root", tree, "--json")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("apply %d: %v\n%s%s", i+1, err, out, stderr.String())
		}
		if err := json.Unmarshal(out, &rep); err != nil {
			t.Fatalf("apply %d --json: %v\n%s", i+1, err, out)
		}
		if rep.Changed != want {
			t.Errorf("apply %d with the packaged example: changed=%v, want %v\n%s", i+1, rep.Changed, want, out)
		}
	}
	if _, err := os.Stat(filepath.Join(tree, "etc/postfix/main.cf")); err != nil {
		t.Errorf("apply --root wrote no main.cf: %v", err)
	}

	files := strings.Split(strings.TrimSpace(mustRun(t, "dpkg-query", "-L", pkg)), "\n")

	// Remove: the files go, dpkg keeps the "rc" record until purge.
	mustRun(t, "dpkg", "-r", pkg)
	if _, err := os.Stat("/usr/bin/postkit"); err == nil {
		t.Errorf("/usr/bin/postkit still there after dpkg -r")
	}
	mustRun(t, "dpkg", "--purge", pkg)
	if st, ok := installed(t); ok {
		t.Errorf("after purge dpkg still knows %s (%s)", pkg, st)
	}
	if out, err := run(t, "dpkg", "-l", pkg); err == nil {
		t.Errorf("dpkg -l %s still lists it after purge:\n%s", pkg, out)
	}
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil || st.IsDir() {
			continue // directories such as /usr/bin (or /lib, a link to one) are shared
		}
		t.Errorf("%s left after purge", f)
	}
	for _, d := range []string{"/usr/share/doc/postkit", "/usr/share/doc/postkit/examples"} {
		if _, err := os.Lstat(d); err == nil {
			t.Errorf("%s left after purge", d)
		}
	}
	if !hadUser {
		if out, err := run(t, "getent", "passwd", "postkit"); err == nil {
			t.Errorf("purge left the postkit account: %s", out)
		}
		if out, err := run(t, "getent", "group", "postkit"); err == nil {
			t.Errorf("purge left the postkit group: %s", out)
		}
	}
}
