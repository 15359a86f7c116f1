package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStateStore(t *testing.T) {
	base := "hostname: mail.exemple.fr\ndomains: [exemple.fr]\n"
	c, _, err := Parse("x.yaml", []byte(base))
	if err != nil {
		t.Fatal(err)
	}
	if d, dsn, pw, err := c.StateStore(); d != "sqlite" || dsn != "" || pw != "" || err != nil {
		t.Errorf("default StateStore = %q %q %q %v; want sqlite", d, dsn, pw, err)
	}
	if a := c.StateErrorAction(); a != "" {
		t.Errorf("default state.on_error answer %q; want none (fail open)", a)
	}
	pwFile := filepath.Join(t.TempDir(), "pg.pass")
	os.WriteFile(pwFile, []byte("s3cret\nignored\n"), 0o600)
	c, _, err = Parse("x.yaml", []byte(base+"state: {driver: postgresql, dsn: \"postgres://postkit@db.exemple.fr/postkit\", password_file: "+pwFile+", on_error: defer}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if d, dsn, pw, err := c.StateStore(); d != "postgresql" || dsn != "postgres://postkit@db.exemple.fr/postkit" || pw != "s3cret" || err != nil {
		t.Errorf("StateStore = %q %q %q %v; want postgresql, the DSN, the file's first line", d, dsn, pw, err)
	}
	if a := c.StateErrorAction(); !strings.HasPrefix(a, "DEFER_IF_PERMIT 4.") {
		t.Errorf("state.on_error defer answers %q; want DEFER_IF_PERMIT 4.x.x", a)
	}
	c.State.PasswordFile = filepath.Join(t.TempDir(), "missing")
	if _, _, _, err := c.StateStore(); err == nil || !strings.Contains(err.Error(), "state.password_file") {
		t.Errorf("missing password file: %v; want an error naming state.password_file", err)
	}
	for _, bad := range []string{
		"state: {driver: postgresql}",
		"state: {driver: postgresql, dsn: \"host=db user=x\"}",
		"state: {driver: mysql}",
	} {
		if _, _, err := Parse("x.yaml", []byte(base+bad+"\n")); err == nil || !strings.Contains(err.Error(), "state.") {
			t.Errorf("%s: %v; want an error at a state key", bad, err)
		}
	}
}
