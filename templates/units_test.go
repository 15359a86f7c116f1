package templates

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/postkit/postkit/internal/apply"
	"github.com/postkit/postkit/internal/testlib"
)

// unitsOf renders the units of an example config with the milter and the
// policy daemon enabled.
func unitsOf(t *testing.T, src string) []File {
	t.Helper()
	cfg := load(t, src)
	cfg.Milter.Enabled, cfg.Policy.Enabled = true, true
	cfg.Milter.DMARC.Enabled, cfg.Milter.DMARC.Report.Enabled = true, true
	files, err := Units(cfg, "/etc/postkit/postkit.yaml", "postkit")
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// The units of the example config are examples/systemd, kept in step
// (refresh with go test ./templates -update).
func TestUnitsGolden(t *testing.T) {
	files := unitsOf(t, "../examples/postkit.yaml")
	if len(files) != 6 {
		t.Fatalf("%d units; want milter, policyd, spam-learn and dmarc-report services and timers", len(files))
	}
	for _, f := range files {
		golden := filepath.Join("..", "examples", "systemd", filepath.Base(f.Path))
		if *update {
			os.MkdirAll(filepath.Dir(golden), 0o755)
			if err := os.WriteFile(golden, f.Data, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatalf("%v (run go test ./templates -update)", err)
		}
		if !bytes.Equal(f.Data, want) {
			t.Errorf("%s differs from %s:\n%s", f.Path, golden, apply.Unified(f.Path, want, f.Data))
		}
	}
	// The paths come from postkit.yaml.
	cfg := load(t, "../examples/postkit.yaml")
	cfg.Milter.Enabled = true
	cfg.Paths.PostkitRun, cfg.Paths.Postkit = "/srv/pk", "/opt/pk/postkit"
	cfg.Milter.Listen = "unix:/var/spool/postfix/pk/m.sock" // the Bayes store stays in /var/lib/postkit
	cfg.Paths.SystemdUnits = "/usr/lib/systemd/system"
	files, err := Units(cfg, "/srv/postkit.yaml", "pk")
	if err != nil || len(files) == 0 || files[0].Path != "/usr/lib/systemd/system/postkit-milter.service" {
		t.Fatalf("Units = %v, %v", files, err)
	}
	for _, want := range []string{"ExecStart=/opt/pk/postkit milter -c /srv/postkit.yaml", "User=pk\n", "ReadWritePaths=/srv/pk /var/lib/postkit /var/spool/postfix/pk\n"} {
		if !strings.Contains(string(files[0].Data), want) {
			t.Errorf("milter unit lacks %q:\n%s", want, files[0].Data)
		}
	}
	if _, err := Units(cfg, "/srv/post kit.yaml", "pk"); err == nil {
		t.Error("a config path with a space was written into a unit")
	}
	cfg.Paths.SystemdUnits = ""
	if files, _ := Units(cfg, "/srv/postkit.yaml", "pk"); len(files) != 0 {
		t.Error("empty paths.systemd_units still rendered units")
	}
}

// systemd-analyze verify accepts every unit, and every service scores at
// most 2.0 in systemd-analyze security --offline (no systemd needs to run).
func TestUnitsVerifyAndExposure(t *testing.T) {
	sa := testlib.NeedProgram(t, "systemd-analyze")
	dir := t.TempDir()
	var names []string
	for _, f := range unitsOf(t, "../examples/postkit.yaml") {
		// The units name /usr/local/bin/postkit, which verify wants to
		// exist: point them at a binary that does.
		data := bytes.ReplaceAll(f.Data, []byte("/usr/local/bin/postkit"), []byte("/bin/true"))
		p := filepath.Join(dir, filepath.Base(f.Path))
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		names = append(names, p)
	}
	out, err := exec.Command(sa, append([]string{"verify", "--man=no"}, names...)...).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	overall := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)
	for _, n := range names {
		if !strings.HasSuffix(n, ".service") {
			continue
		}
		// --threshold is in tenths: exit non-zero above 2.0.
		out, err := exec.Command(sa, "security", "--offline=true", "--threshold=20", n).CombinedOutput()
		m := overall.FindSubmatch(out)
		if m == nil {
			t.Fatalf("systemd-analyze security %s: %v; no overall exposure in\n%s", n, err, out)
		}
		score, _ := strconv.ParseFloat(string(m[1]), 64)
		t.Logf("%s: exposure %.1f", filepath.Base(n), score)
		if err != nil || score > 2.0 {
			t.Errorf("%s: exposure %.1f (%v); want at most 2.0:\n%s", filepath.Base(n), score, err, out)
		}
	}
}
