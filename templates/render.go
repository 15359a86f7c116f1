// Package templates renders every file of the mail stack from postkit.yaml:
// Postfix main.cf and master.cf (postconf(5), master(5)), the sqlite(5) lookup
// tables, Dovecot 2.3's dovecot.conf and conf.d, and the global Sieve script.
package templates

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"text/template"
	"time"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/sqlmaps"
)

//go:embed postfix dovecot sieve
var tmplFS embed.FS

// File is one generated file: its live absolute path, contents, mode and owner.
type File struct {
	Path  string
	Data  []byte
	Mode  uint32
	Owner string // user name; "" keeps the writer's
	Group string // group name; "" keeps the writer's
	// Template is the template the file was rendered from
	// ("postfix/main.cf.tmpl"); "" for the SQL map files, which package
	// sqlmaps writes.
	Template string
}

// view is what the templates see: the config plus derived values.
type view struct {
	C              *config.Config
	PostfixVersion string
	DovecotVersion string
	Chroot         string
	maps           map[string]string
}

type hostPort struct {
	Host string
	Port int
}

func listen(s string) hostPort {
	if s == "" {
		return hostPort{}
	}
	h, p, _ := config.SplitListen(s) // validated by config.Validate
	return hostPort{h, p}
}

// service is the master.cf service name for a listener: "smtp" for the
// standard port on every interface, otherwise host:port.
func service(s, std string, stdPort int) string {
	hp := listen(s)
	switch {
	case hp.Host == "" && hp.Port == stdPort:
		return std
	case hp.Host == "":
		return fmt.Sprint(hp.Port)
	}
	if strings.Contains(hp.Host, ":") {
		return fmt.Sprintf("[%s]:%d", hp.Host, hp.Port)
	}
	return fmt.Sprintf("%s:%d", hp.Host, hp.Port)
}

func (v *view) SMTPService() string { return service(v.C.Listeners.SMTP, "smtp", 25) }
func (v *view) SubmissionService() string {
	return service(v.C.Listeners.Submission, "submission", 587)
}
func (v *view) SubmissionsService() string {
	return service(v.C.Listeners.Submissions, "submissions", 465)
}
func (v *view) IMAP() hostPort        { return listen(v.C.Listeners.IMAP) }
func (v *view) IMAPS() hostPort       { return listen(v.C.Listeners.IMAPS) }
func (v *view) ManageSieve() hostPort { return listen(v.C.Sieve.ManageSieve) }

// DovecotListen is Dovecot's listen: the addresses of the IMAP listeners, or
// every interface.
func (v *view) DovecotListen() string {
	seen := map[string]bool{}
	var hosts []string
	for _, s := range []string{v.C.Listeners.IMAP, v.C.Listeners.IMAPS, v.C.Sieve.ManageSieve} {
		if s == "" || (s == v.C.Sieve.ManageSieve && !v.ManageSieveOn()) {
			continue
		}
		h := listen(s).Host
		if h == "" {
			return "*, ::"
		}
		if !seen[h] {
			seen[h] = true
			hosts = append(hosts, h)
		}
	}
	if len(hosts) == 0 {
		return "*, ::"
	}
	return strings.Join(hosts, ", ")
}

// Mynetworks renders trusted networks in Postfix syntax ([::1]/128 for IPv6).
func (v *view) Mynetworks() string {
	var out []string
	for _, n := range v.C.TrustedNetworks {
		p, err := config.ParseCIDR(string(n))
		if err != nil {
			continue
		}
		if p.Addr().Is6() {
			out = append(out, fmt.Sprintf("[%s]/%d", p.Addr(), p.Bits()))
		} else {
			out = append(out, p.String())
		}
	}
	return strings.Join(out, ", ")
}

// queueRelative turns a socket path under the queue directory into the
// relative form Postfix daemons resolve from their working directory, which
// is the queue directory both chrooted and not (the reference installation's
// absolute milter paths broke under chroot).
func (v *view) queueRelative(p string) string {
	q := strings.TrimSuffix(v.C.Paths.PostfixQueue, "/") + "/"
	if strings.HasPrefix(p, q) {
		return strings.TrimPrefix(p, q)
	}
	return p
}

func (v *view) LMTPPath() string { return v.queueRelative(v.C.Listeners.LMTP) }
func (v *view) AuthPath() string { return v.queueRelative(v.C.Listeners.Auth) }

func (v *view) endpoint(a string) string {
	if strings.HasPrefix(a, "unix:") {
		return "unix:" + v.queueRelative(strings.TrimPrefix(a, "unix:"))
	}
	return a
}

func (v *view) MilterAddr() string { return v.endpoint(v.C.Milter.Listen) }
func (v *view) PolicyAddr() string { return v.endpoint(v.C.Policy.Listen) }

// PolicyTimeout leaves Postfix waiting a little longer than the daemon's own budget.
func (v *view) PolicyTimeout() string {
	return fmt.Sprintf("%ds", int((v.C.Policy.TimeBudget.D()+10*time.Second)/time.Second))
}

// ScrubInMilter reports whether the postkit milter scrubs outbound headers.
func (v *view) ScrubInMilter() bool { return v.C.Milter.Enabled && v.C.Milter.Scrub.Enabled }

func (v *view) BlacklistInPostfix() bool {
	return v.C.Policy.Blacklist.Owner != "policy" || !v.C.Policy.Enabled
}

// Map is the Postfix lookup table of a map: sqlite:PATH or pgsql:PATH.
func (v *view) Map(name string) string {
	p, ok := v.maps[name]
	if !ok {
		panic("templates: no map named " + name)
	}
	return p
}

// LogPrefix lets Postfix write its log file where the config puts it.
func (v *view) LogPrefix() string {
	return "/var, /dev/stdout, /dev/stderr, " + path.Dir(v.C.Paths.PostfixLog)
}

func (v *view) TLSProtocols() string {
	if v.C.TLS.MinProtocol == "TLSv1.3" {
		return ">=TLSv1.3"
	}
	return ">=TLSv1.2"
}

var funcs = template.FuncMap{
	"yesno": func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	},
}

// Render renders every file for cfg. It is pure: nothing is read or written.
// cfg must have passed config.Validate: values are written as they are, and
// only their validation keeps a value from adding a line of its own.
func Render(cfg *config.Config) ([]File, error) {
	v := &view{C: cfg, PostfixVersion: "3.7", DovecotVersion: "2.3", Chroot: "n", maps: map[string]string{}}
	if cfg.Postfix.Chroot {
		v.Chroot = "y"
	}
	pf := cfg.Paths.PostfixConfig
	dc := cfg.Paths.DovecotConfig
	var files []File
	rules := senderRules(cfg)
	// With driver postgresql the maps are pgsql_table(5) files and Dovecot
	// uses its pgsql driver; the password comes from database.password_file.
	var pg *sqlmaps.PGParams
	if cfg.Database.PostgreSQL() {
		p, err := cfg.Database.Source().Params()
		if err == nil {
			err = p.PostfixSSLMode()
		}
		if err != nil {
			return nil, fmt.Errorf("templates: %w", err)
		}
		pg = &p
	}
	for _, m := range sqlmaps.Maps() {
		m, err := m.With(rules)
		if err != nil {
			return nil, fmt.Errorf("templates: %s: %w", m.File, err)
		}
		if pg != nil {
			p := path.Join(pf, m.PGFile())
			v.maps[m.Name] = "pgsql:" + p
			files = append(files, File{Path: p, Data: m.PGCF(*pg), Mode: 0o640, Group: cfg.Postfix.MailOwner})
			continue
		}
		p := path.Join(pf, m.File)
		v.maps[m.Name] = "sqlite:" + p
		files = append(files, File{Path: p, Data: m.CF(cfg.Database.Path), Mode: 0o640, Group: cfg.Postfix.MailOwner})
	}
	dovecotSQL := sqlmaps.DovecotSQL(cfg.Database.Path, cfg.Mailbox.BaseDir, cfg.Mailbox.Layout, cfg.Mailbox.Quota.Enabled)
	if pg != nil {
		dovecotSQL = sqlmaps.DovecotPGSQL(*pg, cfg.Mailbox.BaseDir, cfg.Mailbox.Layout, cfg.Mailbox.Quota.Enabled)
	}
	files = append(files, File{
		Path: path.Join(dc, "dovecot-sql.conf.ext"), Mode: 0o640, Group: "dovecot",
		Data: dovecotSQL,
	})
	out := func(tmpl, dst string, mode uint32, group string) error {
		data, err := execute(tmpl, v)
		if err != nil {
			return err
		}
		switch tmpl {
		case "postfix/main.cf.tmpl":
			data = overrideMainCF(data, cfg)
		case "postfix/master.cf.tmpl":
			if data, err = overrideMasterCF(data, cfg); err != nil {
				return err
			}
		}
		files = append(files, File{Path: dst, Data: data, Mode: mode, Group: group, Template: tmpl})
		return nil
	}
	type item struct {
		tmpl, dst string
		mode      uint32
		group     string
	}
	items := []item{
		{"postfix/main.cf.tmpl", path.Join(pf, "main.cf"), 0o644, ""},
		{"postfix/master.cf.tmpl", path.Join(pf, "master.cf"), 0o644, ""},
		{"postfix/submission_header_checks.tmpl", path.Join(pf, "submission_header_checks"), 0o644, ""},
		{"dovecot/dovecot.conf.tmpl", path.Join(dc, "dovecot.conf"), 0o644, ""},
	}
	confd, err := fs.Glob(tmplFS, "dovecot/conf.d/*.tmpl")
	if err != nil {
		return nil, err
	}
	for _, t := range confd {
		items = append(items, item{t, path.Join(dc, "conf.d", strings.TrimSuffix(path.Base(t), ".tmpl")), 0o644, ""})
	}
	if cfg.Sieve.Enabled {
		items = append(items, item{"sieve/spam.sieve.tmpl", path.Join(cfg.Sieve.Dir, "before", "spam.sieve"), 0o644, ""})
	}
	if cfg.LearnFromMoves() {
		items = append(items,
			item{"sieve/learn-spam.sieve.tmpl", path.Join(cfg.Sieve.Dir, "imapsieve", "learn-spam.sieve"), 0o644, ""},
			item{"sieve/learn-ham.sieve.tmpl", path.Join(cfg.Sieve.Dir, "imapsieve", "learn-ham.sieve"), 0o644, ""})
	}
	for _, it := range items {
		if err := out(it.tmpl, it.dst, it.mode, it.group); err != nil {
			return nil, err
		}
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	return files, nil
}

// senderRules are the settings of cfg the sender-login map depends on.
func senderRules(cfg *config.Config) sqlmaps.SenderRules {
	rules := sqlmaps.SenderRules{Delimiter: cfg.RecipientDelim}
	for _, g := range cfg.SenderLogins {
		rules.Grants = append(rules.Grants, sqlmaps.SenderGrant{Sender: g.Sender, Logins: g.Logins})
	}
	return rules
}

func execute(name string, v *view) ([]byte, error) {
	t, err := template.New(path.Base(name)).Funcs(funcs).Option("missingkey=error").ParseFS(tmplFS, name)
	if err != nil {
		return nil, fmt.Errorf("templates: %s: %w", name, err)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, v); err != nil {
		return nil, fmt.Errorf("templates: %s: %w", name, err)
	}
	return b.Bytes(), nil
}
