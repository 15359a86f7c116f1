package provision

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/internal/dkimkey"
	"github.com/postkit/postkit/internal/testlib"
)

// writeConfig writes the example config, with both daemons and a DKIM
// key, and extra lines, as ROOT/etc/postkit/postkit.yaml.
func writeConfig(t *testing.T, root, extra string) string {
	t.Helper()
	ex, err := os.ReadFile("../../examples/postkit.yaml")
	if err != nil {
		t.Fatal(err)
	}
	y := strings.Replace(string(ex), "\n    keys: []\n", "\n    keys: [{domain: exemple.fr, selector: mail}]\n", 1)
	y = strings.ReplaceAll(y, "\n  enabled: false\n", "\n  enabled: true\n") // milter and policy
	// The daemons' account: one this host does not have, whatever else
	// installs or removes a postkit account meanwhile.
	y = strings.Replace(y, "\n      user: postkit\n", "\n      user: postkit-test-none\n", 1)
	p := filepath.Join(root, "etc/postkit/postkit.yaml")
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte(y+extra), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func runApply(t *testing.T, root, cfgPath string, check bool) (*Report, error) {
	t.Helper()
	cfg, _, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.Milter.Enabled || !cfg.Policy.Enabled || len(cfg.Milter.DKIM.Keys) != 1 {
		t.Fatal("the test config does not enable both daemons with a key")
	}
	return Run(context.Background(), cfg, Options{Root: root, Check: check, ConfigPath: cfgPath})
}

// tree maps every path under root to its mode and contents.
func tree(t *testing.T, root string) map[string]string {
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
			v += " " + string(b)
		}
		m[strings.TrimPrefix(p, root)] = v
		return nil
	})
	return m
}

func sameTree(t *testing.T, what string, a, b map[string]string) {
	t.Helper()
	for p, v := range a {
		if b[p] != v {
			t.Errorf("%s: %s changed", what, p)
		}
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			t.Errorf("%s: %s appeared", what, p)
		}
	}
}

// apply into a directory tree: everything a host needs, a second run
// changes nothing, --check on an up-to-date tree has nothing to do.
func TestApplyRoot(t *testing.T) {
	testlib.NeedBinary(t, "postconf", "doveconf", "sievec")
	root := t.TempDir()
	cfgPath := writeConfig(t, root, "")
	// --check on a bare tree: everything pending, nothing written.
	before := tree(t, root)
	rep, err := runApply(t, root, cfgPath, true)
	if err != nil || !rep.Changed {
		t.Fatalf("--check on a bare tree: changed=%v, %v", rep.Changed, err)
	}
	sameTree(t, "--check", before, tree(t, root))

	rep, err = runApply(t, root, cfgPath, false)
	if err != nil || !rep.Changed {
		t.Fatalf("first apply: changed=%v, %v", rep != nil && rep.Changed, err)
	}
	steps := map[string]*Step{}
	for _, s := range rep.Steps {
		steps[s.Name] = s
	}
	for _, name := range []string{"directories", "tls", "dkim", "files", "config", "database"} {
		if steps[name] == nil || !steps[name].Changed {
			t.Errorf("first apply: step %s did not change anything: %+v", name, steps[name])
		}
	}
	if s := steps["reload"]; s == nil || s.Changed || !strings.Contains(strings.Join(s.Detail, ""), "nothing reloaded") {
		t.Errorf("reload under --root: %+v", s)
	}
	mode := func(p string) fs.FileMode {
		st, err := os.Stat(filepath.Join(root, p))
		if err != nil {
			t.Error(err)
			return 0
		}
		return st.Mode()
	}
	for p, want := range map[string]fs.FileMode{
		"/var/mail/utilisateurs":                fs.ModeDir | 0o770,
		"/var/lib/postkit":                      fs.ModeDir | 0o750,
		"/var/spool/postfix/postkit":            fs.ModeDir | 0o750,
		"/etc/dkimkeys":                         fs.ModeDir | 0o750,
		"/etc/dkimkeys/exemple.fr/mail.private": 0o640,
		"/etc/postfix/tls/courriel.key":         0o600,
		"/etc/postfix/tls/courriel.pem":         0o644,
		"/etc/postkit/postkit.yaml":             0o640,
		"/etc/postfix/bdd/postfix.sqlite":       0o640,
	} {
		if got := mode(p); got != want {
			t.Errorf("%s: mode %v, want %v", p, got, want)
		}
	}
	if _, err := dkimkey.LoadPrivateKey(filepath.Join(root, "etc/dkimkeys/exemple.fr/mail.private")); err != nil {
		t.Errorf("the DKIM key: %v", err)
	}
	certPEM, _ := os.ReadFile(filepath.Join(root, "etc/postfix/tls/courriel.pem"))
	if b, _ := pem.Decode(certPEM); b == nil {
		t.Error("no certificate written")
	} else if c, err := x509.ParseCertificate(b.Bytes); err != nil || c.Subject.CommonName != "mail.exemple.fr" {
		t.Errorf("certificate: %v %v", err, c)
	}
	unit, _ := os.ReadFile(filepath.Join(root, "etc/systemd/system/postkit-milter.service"))
	if !strings.Contains(string(unit), "ExecStart=/usr/local/bin/postkit milter -c /etc/postkit/postkit.yaml\n") {
		t.Errorf("the milter unit does not run the live config:\n%s", unit)
	}
	if _, err := os.Stat(filepath.Join(root, "var/lib/postkit/manifest.json")); err != nil {
		t.Error(err)
	}

	after := tree(t, root)
	rep, err = runApply(t, root, cfgPath, false)
	if err != nil || rep.Changed {
		t.Fatalf("second apply: changed=%v, %v: %+v", rep.Changed, err, rep.Steps)
	}
	sameTree(t, "second apply", after, tree(t, root))
	if rep, err = runApply(t, root, cfgPath, true); err != nil || rep.Changed {
		t.Errorf("--check on an applied tree: changed=%v, %v", rep.Changed, err)
	}
}

// A value Postfix refuses makes apply fail validation: every file is as it
// was, the key and certificate apply would have made included.
func TestApplyRefusedLeavesEverything(t *testing.T) {
	testlib.NeedBinary(t, "postconf", "doveconf", "sievec")
	for _, applied := range []bool{false, true} {
		t.Run(fmt.Sprintf("applied=%v", applied), func(t *testing.T) {
			root := t.TempDir()
			cfgPath := writeConfig(t, root, "")
			if applied {
				if _, err := runApply(t, root, cfgPath, false); err != nil {
					t.Fatal(err)
				}
				// The next run also has a key to make.
				os.Remove(filepath.Join(root, "etc/dkimkeys/exemple.fr/mail.private"))
			}
			cfgPath = writeConfig(t, root, "")
			y, _ := os.ReadFile(cfgPath)
			y = []byte(strings.Replace(string(y), "\n  transport_maps: \"\"\n", "\n  transport_maps: \"mysql:/etc/postfix/no-such-postkit-map.cf\"\n", 1))
			os.WriteFile(cfgPath, y, 0o640)
			os.Chmod(cfgPath, 0o640) // as apply leaves it
			// Directories are made before the files are checked; what
			// must not change is every file.
			for _, d := range []string{"var/mail/utilisateurs", "var/lib/postkit", "var/spool/postfix/postkit", "etc/dkimkeys/exemple.fr"} {
				os.MkdirAll(filepath.Join(root, d), 0o755)
			}
			before := tree(t, root)
			_, err := runApply(t, root, cfgPath, false)
			if !ErrValidation(err) || !strings.Contains(err.Error(), "no-such-postkit-map.cf") {
				t.Fatalf("apply with a map postconf refuses: %v", err)
			}
			now := tree(t, root)
			for p, v := range before {
				if strings.HasPrefix(v, "-") && now[p] != v {
					t.Errorf("%s changed", p)
				}
			}
			for p, v := range now {
				if _, ok := before[p]; !ok && strings.HasPrefix(v, "-") {
					t.Errorf("%s appeared", p)
				}
			}
		})
	}
}
