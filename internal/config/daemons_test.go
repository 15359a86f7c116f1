package config

import (
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
)

// Without a file each daemon starts from its own document: what the
// daemons always did without -c, with every other default from Defaults.
func TestLoadDaemon(t *testing.T) {
	host, _ := os.Hostname()
	m, f, err := LoadDaemon("", "milter")
	if err != nil {
		t.Fatal(err)
	}
	if !f.Builtin() || f.Name != "postkit milter (no -c)" {
		t.Errorf("File = %q builtin %v; want the milter's built-in document", f.Name, f.Builtin())
	}
	want := Defaults()
	want.Hostname, want.Origin, want.Milter.DKIM.AuthservID = strings.ToLower(host), strings.ToLower(host), strings.ToLower(host)
	want.Database.Path, want.Milter.SocketGroup, want.Milter.OwnFrom, want.Milter.DKIM.Verify = "", "", "off", false
	want.Milter.Spam.Enabled, want.Milter.DMARC.Enabled = false, false
	want.Policy.StateFile = "/var/lib/postkit/policyd.sqlite"
	want.Milter.Spam.Bayes.Path = "/var/lib/postkit/bayes.sqlite"
	want.Milter.DMARC.Report.Path = "/var/lib/postkit/dmarc.sqlite"
	if !reflect.DeepEqual(m, want) {
		t.Errorf("milter without -c:\n%+v\nwant\n%+v", m, want)
	}
	p, _, err := LoadDaemon("", "policyd")
	if err != nil {
		t.Fatal(err)
	}
	want = Defaults()
	want.Hostname, want.Origin, want.Milter.DKIM.AuthservID = strings.ToLower(host), strings.ToLower(host), strings.ToLower(host)
	want.Policy.SocketGroup, want.Policy.Checks, want.Policy.Blacklist.Owner, want.Policy.SPF.OwnDomains = "", []string{"spf"}, "policy", "off"
	want.Policy.StateFile = "/var/lib/postkit/policyd.sqlite"
	want.Milter.Spam.Bayes.Path = "/var/lib/postkit/bayes.sqlite"
	want.Milter.DMARC.Report.Path = "/var/lib/postkit/dmarc.sqlite"
	if !reflect.DeepEqual(p, want) {
		t.Errorf("policyd without -c:\n%+v\nwant\n%+v", p, want)
	}
	// A given host name is validated; the file, when given, is the source.
	if _, _, err := LoadDaemon("", "policyd", sets(t, "hostname=receiver")...); err == nil ||
		err.Error() != `--set hostname=receiver: hostname: "receiver" is not a valid host name (a fully qualified name such as mail.example.org)` {
		t.Errorf("LoadDaemon with a bad host name = %v", err)
	}
	path := writeFile(t, minimal+"policy:\n  checks: [greylist]\n")
	c, f, err := LoadDaemon(path, "policyd", sets(t, "policy.checks+=spf")...)
	if err != nil || f.Builtin() || !reflect.DeepEqual(c.Policy.Checks, []string{"greylist", "spf"}) || c.Policy.SocketGroup != "postfix" {
		t.Errorf("LoadDaemon(file) = checks %v group %q builtin %v, %v; want the file's [greylist spf], postfix", c.Policy.Checks, c.Policy.SocketGroup, f.Builtin(), err)
	}
	if _, _, err := LoadDaemon("", "spamd"); err == nil || err.Error() != `config: no daemon named "spamd": want milter or policyd` {
		t.Errorf("LoadDaemon(spamd) = %v", err)
	}
}

func writeFile(t *testing.T, data string) string {
	t.Helper()
	p := t.TempDir() + "/postkit.yaml"
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDaemonListeners(t *testing.T) {
	c, _, err := Parse("x.yaml", []byte(minimal+"milter:\n  listen: inet:0.0.0.0:8891\n  extra_listen: [unix:/run/pk/m.sock]\n  allow_clients: [192.0.2.25]\n  socket_mode: \"0600\"\npolicy:\n  metrics: \"9187\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	ls, err := c.DaemonListeners("milter")
	if err != nil || len(ls) != 2 {
		t.Fatalf("DaemonListeners(milter) = %+v, %v", ls, err)
	}
	if ls[0].Addr.String() != "inet:0.0.0.0:8891" || ls[1].Addr.String() != "unix:/run/pk/m.sock" || ls[1].Socket.Mode != 0o600 ||
		ls[1].Socket.Group != "postfix" || len(ls[0].Allow) != 1 || ls[0].Allow[0].String() != "192.0.2.25/32" ||
		ls[0].AllowHint != "milter.allow_clients in postkit.yaml, --allow-client" {
		t.Errorf("DaemonListeners(milter) = %+v", ls)
	}
	ls, err = c.DaemonListeners("policyd")
	if err != nil || len(ls) != 1 || ls[0].Addr.String() != "unix:/var/spool/postfix/postkit/policy.sock" || ls[0].Socket.Mode != 0o660 {
		t.Errorf("DaemonListeners(policyd) = %+v, %v", ls, err)
	}
	m, ok, err := c.MetricsListener()
	if err != nil || !ok || m.Addr.String() != "inet:127.0.0.1:9187" || m.AllowHint != "policy.metrics_allow_clients in postkit.yaml, --metrics-allow-client" {
		t.Errorf("MetricsListener = %+v, %v, %v", m, ok, err)
	}
	c.Policy.Metrics = ""
	if _, ok, err := c.MetricsListener(); ok || err != nil {
		t.Errorf("MetricsListener without metrics = %v, %v", ok, err)
	}
	c.Policy.Listen = ""
	if _, err := c.DaemonListeners("policyd"); err == nil || err.Error() != "config: policy.listen is empty: set unix:/path or inet:127.0.0.1:PORT" {
		t.Errorf("DaemonListeners(policyd) without an address = %v", err)
	}
	if _, err := c.DaemonListeners("spamd"); err == nil {
		t.Error("DaemonListeners(spamd) = nil error")
	}
}

// The log section becomes the daemon's logger options: stderr text at info
// by default; syslog with the facility's code and the daemon's tag; a value
// outside its enum is refused at load.
func TestLogOptions(t *testing.T) {
	c, _, err := LoadDaemon("", "policyd")
	if err != nil {
		t.Fatal(err)
	}
	o, err := c.LogOptions("policyd")
	if err != nil || o.Syslog || o.Format != "text" || o.Level.String() != "INFO" {
		t.Errorf("default LogOptions = %+v, %v; want text on stderr at info", o, err)
	}
	c, _, err = LoadDaemon("", "milter", Override{Key: "log.target", Value: "syslog"}, Override{Key: "log.syslog_facility", Value: "local3"},
		Override{Key: "log.format", Value: "json"}, Override{Key: "log.level", Value: "debug"})
	if err != nil {
		t.Fatal(err)
	}
	o, err = c.LogOptions("milter")
	want := "{Level:DEBUG Format:json Syslog:true Socket:/dev/log Facility:19 Tag:postkit/milter}"
	if got := strings.TrimPrefix(fmt.Sprintf("%+v", o), "daemon.LogOptions"); err != nil || got != want {
		t.Errorf("LogOptions = %s, %v; want %s", got, err, want)
	}
	if got := c.LogRestart(); got["log.target"] != "syslog" || len(got) != 5 {
		t.Errorf("LogRestart = %v", got)
	}
	for _, kv := range [][2]string{{"log.format", "xml"}, {"log.target", "file"}, {"log.syslog_facility", "kern"}, {"log.level", "loud"}, {"log.syslog_socket", "dev/log"}} {
		if _, _, err := LoadDaemon("", "milter", Override{Key: kv[0], Value: kv[1]}); err == nil || !strings.Contains(err.Error(), kv[0]) {
			t.Errorf("%s=%s: %v; want an error naming the key", kv[0], kv[1], err)
		}
	}
}
