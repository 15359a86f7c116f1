// Package apply runs the delivery scenario on a stack provisioned by
// `postkit apply` (harness.Options.Apply): mail in from outside, a
// submission signed with the DKIM key apply made, IMAP read; a second apply
// changes nothing; a value Postfix refuses fails validation and leaves every
// file as it was.
package apply

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/postkit/postkit/e2e/harness"
	"github.com/postkit/postkit/internal/dkimkey"
	"github.com/postkit/postkit/internal/testlib"
)

const (
	user       = "alice@" + harness.Domain
	password   = "Alice-pw-4711"
	selector   = "apply"
	milterSock = "{root}/spool/postfix/postkit/milter.sock"
)

func TestMain(m *testing.M) {
	os.Exit(harness.Main(m, harness.Options{
		Apply: true,
		Set: map[string]any{
			"milter.enabled":      true,
			"milter.listen":       "unix:" + milterSock,
			"milter.dkim.key_dir": "{root}/dkimkeys",
			"milter.dkim.keys":    []any{map[string]any{"domain": harness.Domain, "selector": selector}},
		},
		Daemons: []harness.DaemonSpec{{Name: "milter", Args: []string{"milter", "-c", "{config}"}, Ready: "unix:" + milterSock}},
		Seed: func(s *harness.Stack) error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			return s.AddUser(ctx, user, password)
		},
	}))
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

type report struct {
	Changed bool `json:"changed"`
	Steps   []struct {
		Name    string   `json:"name"`
		Changed bool     `json:"changed"`
		Detail  []string `json:"detail"`
	} `json:"steps"`
}

// parse reads apply's JSON report out of its combined output.
func parse(t *testing.T, out string) report {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "{") {
			var r report
			if err := json.Unmarshal([]byte(l), &r); err != nil {
				t.Fatalf("apply's report: %v\n%s", err, out)
			}
			return r
		}
	}
	t.Fatalf("no JSON report in apply's output:\n%s", out)
	return report{}
}

// The scenarios share the stack and run in order.
func TestAppliedStack(t *testing.T) {
	s := harness.Need(t)
	testlib.NeedPython(t, "dkim")
	harness.NeedProgram(t, "curl")

	first := parse(t, s.Applied)
	changed := map[string]bool{}
	for _, st := range first.Steps {
		changed[st.Name] = st.Changed
	}
	if !first.Changed || !changed["files"] || !changed["dkim"] || !changed["database"] {
		t.Fatalf("the first apply did not make the files, the key and the database: %+v", first)
	}
	keyFile := filepath.Join(s.Root, "dkimkeys", harness.Domain, selector+".private")
	key, err := dkimkey.LoadPrivateKey(keyFile)
	if err != nil {
		t.Fatalf("the DKIM key apply made: %v", err)
	}
	if st, _ := os.Stat(keyFile); st.Mode().Perm() != 0o640 {
		t.Errorf("%s: mode %v, want 0640", keyFile, st.Mode().Perm())
	}
	record, err := dkimkey.Record(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(s.Paths.Units, "postkit-milter.service")); err != nil {
		t.Errorf("the milter unit: %v", err)
	}

	t.Run("mail in from outside", func(t *testing.T) {
		tok := harness.Token()
		c, err := s.SMTP(harness.OutsideIP)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		from := "someone@" + harness.OutsideDomain
		if err := harness.Send(c, from, []string{user}, harness.Message(from, user, tok)); err != nil {
			t.Fatal(err)
		}
		m, err := s.WaitMail(ctx(t), user, "", tok)
		if err != nil {
			t.Fatal(err)
		}
		if m.Header("Authentication-Results") == "" {
			t.Errorf("inbound mail did not pass the milter (no Authentication-Results):\n%s", m.Data)
		}
	})

	t.Run("submission signed with the key apply made", func(t *testing.T) {
		tok := harness.Token()
		to := "friend@" + harness.OutsideDomain
		c, err := s.Submission(harness.OutsideIP, true)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Auth(harness.Plain(user, password)); err != nil {
			t.Fatal(err)
		}
		if err := harness.Send(c, user, []string{to}, harness.Message(user, to, tok)); err != nil {
			t.Fatal(err)
		}
		m, err := s.Sink.Wait(ctx(t), func(m harness.SinkMessage) bool { return bytes.Contains(m.Data, []byte(tok)) })
		if err != nil {
			t.Fatal(err)
		}
		if got := dkimpy(t, m.Data, selector+"._domainkey."+harness.Domain, record); got != "True" {
			t.Errorf("dkimpy verification: %s\n%s", got, m.Data)
		}
	})

	t.Run("IMAP read", func(t *testing.T) {
		tok := harness.Token()
		c, err := s.SMTP(harness.OutsideIP)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		from := "someone@" + harness.OutsideDomain
		if err := harness.Send(c, from, []string{user}, harness.Message(from, user, tok)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.WaitMail(ctx(t), user, "", tok); err != nil {
			t.Fatal(err)
		}
		r, err := s.IMAP(ctx(t), true, user, password, "INBOX", `SEARCH SUBJECT "`+tok+`"`)
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`\* SEARCH ([0-9 ]+)`).FindStringSubmatch(r.Stdout)
		if r.Exit != 0 || m == nil {
			t.Fatalf("SEARCH: exit %d, %q %q", r.Exit, r.Stdout, r.Stderr)
		}
		seq := strings.Fields(m[1])[0]
		r, err = s.IMAP(ctx(t), true, user, password, "INBOX;MAILINDEX="+seq, "")
		if err != nil || r.Exit != 0 || !strings.Contains(r.Stdout, tok) {
			t.Fatalf("FETCH: %v exit %d, %q", err, r.Exit, r.Stderr)
		}
	})

	t.Run("second apply changes nothing", func(t *testing.T) {
		before := files(t, s.Root)
		out, err := s.Apply(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		if r := parse(t, out); r.Changed {
			t.Errorf("second apply changed something: %+v", r)
		}
		sameFiles(t, before, files(t, s.Root))
	})

	t.Run("a change is applied and what runs reloaded", func(t *testing.T) {
		orig, err := os.ReadFile(s.Paths.Config)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			os.WriteFile(s.Paths.Config, orig, 0o640)
			s.Apply(context.Background())
		})
		var doc map[string]any
		if err := yaml.Unmarshal(orig, &doc); err != nil {
			t.Fatal(err)
		}
		harness.SetKey(doc, "message_size_limit", s.SizeLimit+1)
		changed, _ := yaml.Marshal(doc)
		if err := os.WriteFile(s.Paths.Config, changed, 0o640); err != nil {
			t.Fatal(err)
		}
		out, err := s.Apply(ctx(t))
		if err != nil {
			t.Fatal(err)
		}
		r := parse(t, out)
		var reload []string
		for _, st := range r.Steps {
			if st.Name == "reload" {
				reload = st.Detail
			}
		}
		got := strings.Join(reload, "\n")
		for _, want := range []string{"postfix reload", "doveadm reload", "postkit milter (pid "} {
			if !strings.Contains(got, want) {
				t.Errorf("reload step lacks %q:\n%s", want, got)
			}
		}
		if strings.Index(got, "postfix reload") > strings.Index(got, "doveadm reload") || strings.Index(got, "doveadm reload") > strings.Index(got, "postkit milter") {
			t.Errorf("reloads out of order:\n%s", got)
		}
		// Still delivering.
		tok := harness.Token()
		c, err := s.SMTP(harness.OutsideIP)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		from := "someone@" + harness.OutsideDomain
		if err := harness.Send(c, from, []string{user}, harness.Message(from, user, tok)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.WaitMail(ctx(t), user, "", tok); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a value Postfix refuses leaves every file", func(t *testing.T) {
		orig, err := os.ReadFile(s.Paths.Config)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.WriteFile(s.Paths.Config, orig, 0o640) })
		var doc map[string]any
		if err := yaml.Unmarshal(orig, &doc); err != nil {
			t.Fatal(err)
		}
		harness.SetKey(doc, "postfix.transport_maps", "mysql:"+s.Root+"/etc/postfix/no-such-map.cf")
		harness.SetKey(doc, "hostname", "other."+harness.Domain) // most files change
		broken, _ := yaml.Marshal(doc)
		if err := os.WriteFile(s.Paths.Config, broken, 0o640); err != nil {
			t.Fatal(err)
		}
		before := files(t, s.Root)
		out, err := s.Apply(ctx(t))
		var ee *exec.ExitError
		if err == nil || !strings.Contains(out, "no-such-map.cf") {
			t.Fatalf("apply with a map Postfix cannot open: %v\n%s", err, out)
		}
		if errors.As(err, &ee) && ee.ExitCode() != 3 {
			t.Errorf("exit %d, want 3 (refused, nothing written)", ee.ExitCode())
		}
		sameFiles(t, before, files(t, s.Root))
	})
}

// files maps every regular file of the sandbox that postkit writes (not
// the queue, logs, mailboxes or runtime state) to its mode and contents.
func files(t *testing.T, root string) map[string]string {
	t.Helper()
	m := map[string]string{}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		top := strings.SplitN(rel, string(filepath.Separator), 2)[0]
		switch top {
		case "spool", "log", "mail", "run", "bin", "stack.json":
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if rel == "lib/postfix" || rel == "lib/dovecot" || strings.HasPrefix(rel, "db") {
			if d.IsDir() {
				return fs.SkipDir
			}
		}
		if !d.Type().IsRegular() {
			return nil
		}
		st, _ := d.Info()
		b, _ := os.ReadFile(p)
		m[rel] = st.Mode().String() + " " + string(b)
		return nil
	})
	if len(m) < 20 {
		t.Fatalf("only %d files in the sandbox: %v", len(m), m)
	}
	return m
}

func sameFiles(t *testing.T, before, after map[string]string) {
	t.Helper()
	for p, v := range before {
		if after[p] != v {
			t.Errorf("%s changed", p)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s appeared", p)
		}
	}
}

// dkimpy verifies the first DKIM-Signature of msg with Debian's python3-dkim,
// name's TXT record being record; it returns True, False or an error.
func dkimpy(t *testing.T, msg []byte, name, record string) string {
	t.Helper()
	const script = `
import sys, dkim
name, rec = sys.argv[1], sys.argv[2]
def dnsfunc(n, timeout=5):
    n = n.decode() if isinstance(n, bytes) else n
    return rec.encode() if n.rstrip('.').lower() == name else b''
try:
    print(dkim.verify(sys.stdin.buffer.read(), dnsfunc=dnsfunc))
except Exception as e:
    print('error: %s' % e)
`
	cmd := exec.Command("/usr/bin/python3", "-c", script, name, record)
	cmd.Stdin = bytes.NewReader(msg)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("dkimpy: %v", err)
	}
	return strings.TrimSpace(string(out))
}
