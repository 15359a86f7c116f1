package mailbox

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func write(t *testing.T, p, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func collect(t *testing.T, path string) (names []string, bodies []string, errs []error) {
	t.Helper()
	err := Walk(path, func(name string, raw []byte, err error) error {
		if err != nil {
			errs = append(errs, err)
			return nil
		}
		names = append(names, name)
		bodies = append(bodies, string(raw))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return
}

func TestMaildir(t *testing.T) {
	d := t.TempDir()
	write(t, d+"/cur/1.m:2,S", "Subject: one\n\nbody 1\n")
	write(t, d+"/new/2.m", "Subject: two\n\nbody 2\n")
	write(t, d+"/tmp/3.m", "Subject: half delivered\n\n")
	write(t, d+"/.Spam/cur/4.m:2,", "Subject: four\n\nbody 4\n")
	write(t, d+"/.Spam/maildirfolder", "")
	write(t, d+"/dovecot-uidlist", "3 V1 N5\n")
	write(t, d+"/dovecot.index.cache", "x")
	names, bodies, errs := collect(t, d)
	if len(errs) > 0 || len(names) != 3 {
		t.Fatalf("names %v errs %v; want 3 messages (tmp/ and index files skipped)", names, errs)
	}
	if !strings.Contains(strings.Join(bodies, "|"), "body 4") {
		t.Error("the Maildir++ subfolder was not read")
	}
}

func TestMbox(t *testing.T) {
	d := t.TempDir()
	write(t, d+"/box", "From a@b Mon Jan  1 00:00:00 2002\nSubject: one\n\nline\n>From the start\n\nFrom c@d Tue Jan  2 00:00:00 2002\nSubject: two\n\n>>From kept once\n")
	names, bodies, _ := collect(t, d+"/box")
	if len(names) != 2 || names[0] != d+"/box#1" {
		t.Fatalf("names %v", names)
	}
	if bodies[0] != "Subject: one\n\nline\nFrom the start\n" {
		t.Errorf("first = %q", bodies[0])
	}
	if bodies[1] != "Subject: two\n\n>From kept once\n" {
		t.Errorf("second = %q", bodies[1])
	}
	// A single message file.
	write(t, d+"/one.eml", "Subject: x\n\ny\n")
	if names, _, _ := collect(t, d+"/one.eml"); len(names) != 1 {
		t.Errorf("single file: %v", names)
	}
	if err := Walk(d+"/missing", func(string, []byte, error) error { return nil }); err == nil {
		t.Error("Walk of a missing path succeeded")
	}
}

func TestTooLarge(t *testing.T) {
	d := t.TempDir()
	big := strings.Repeat("x", MaxMessage+10)
	write(t, d+"/big.eml", "Subject: big\n\n"+big)
	write(t, d+"/box", "From a\nSubject: big\n\n"+big+"\nFrom b\nSubject: small\n\nok\n")
	_, _, errs := collect(t, d+"/big.eml")
	if len(errs) != 1 || !errors.Is(errs[0], ErrTooLarge) {
		t.Errorf("errs %v; want ErrTooLarge", errs)
	}
	names, _, errs := collect(t, d+"/box")
	if len(errs) != 1 || len(names) != 1 {
		t.Errorf("mbox: names %v errs %v; want the small one read, the big one reported", names, errs)
	}
}
