package templates

import (
	"bytes"
	"embed"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strings"
	"text/template"

	"github.com/postkit/postkit/internal/config"
)

//go:embed systemd
var unitFS embed.FS

// unitView is what the unit templates see.
type unitView struct {
	C           *config.Config
	Config      string // live path of postkit.yaml
	User, Group string // the daemons' account
	MilterRW    []string
	PolicyRW    []string
	MilterDirs  []unitDir // what ExecStartPre makes
	PolicyDirs  []unitDir
	BayesDir    string
	DMARCDir    string
	Maildirs    string // shell glob of every Maildir under mailbox.base_dir
	SpamMaildir string // the spam folder's directory in a Maildir
}

// unitDir is a directory a unit makes before its daemon starts, with the
// owner and mode postkit apply gives it.
type unitDir struct {
	Path, Owner, Group, Mode string
}

// safeArg is what a path on a unit's command line may hold: no space,
// quote, specifier (%) or variable ($) that systemd would read as syntax.
var safeArg = regexp.MustCompile(`^/[A-Za-z0-9/._+@~-]*$`)

// Units renders the systemd units of postkit's daemons, with the paths of
// cfg, for installation under paths.systemd_units: postkit-milter.service
// when the milter is enabled, postkit-policyd.service when the policy
// daemon is, postkit-spam-learn.service and .timer (nightly learning)
// when the milter scores spam with Bayes, and postkit-dmarc-report.service
// and .timer (daily aggregate reports) when the milter records DMARC
// evaluations for them. configPath is postkit.yaml's live
// path, as the units pass it to -c. The daemons run as account (user and
// group of the same name), with Postfix's group (postfix.mail_owner) as a
// supplementary one. Units is pure; an empty paths.systemd_units renders none.
func Units(cfg *config.Config, configPath, account string) ([]File, error) {
	dir := cfg.Paths.SystemdUnits
	if dir == "" {
		return nil, nil
	}
	if !safeArg.MatchString(configPath) {
		return nil, fmt.Errorf("templates: %q cannot be written in a systemd unit: give postkit.yaml an absolute path of letters, digits and / . _ + @ ~ -", configPath)
	}
	v := &unitView{C: cfg, Config: configPath, User: account, Group: account}
	v.MilterRW = rwDirs(cfg, append([]string{cfg.Milter.Listen}, cfg.Milter.ExtraListen...), cfg.Milter.Spam.Bayes.Path, cfg.Milter.DMARC.Report.Path)
	v.PolicyRW = rwDirs(cfg, []string{cfg.Policy.Listen}, cfg.Policy.StateFile)
	v.MilterDirs = makeDirs(cfg, account, append([]string{cfg.Milter.Listen}, cfg.Milter.ExtraListen...))
	v.PolicyDirs = makeDirs(cfg, account, []string{cfg.Policy.Listen})
	v.BayesDir = path.Dir(cfg.Milter.Spam.Bayes.Path)
	v.DMARCDir = path.Dir(cfg.Milter.DMARC.Report.Path)
	v.Maildirs = path.Join(cfg.Mailbox.BaseDir, layoutGlob(cfg.Mailbox.Layout))
	// Maildir++ names a folder .A.B on disk.
	v.SpamMaildir = "." + strings.ReplaceAll(cfg.Sieve.SpamFolder, "/", ".")
	type unit struct {
		tmpl string
		on   bool
	}
	var files []File
	for _, u := range []unit{
		{"postkit-milter.service", cfg.Milter.Enabled},
		{"postkit-policyd.service", cfg.Policy.Enabled},
		{"postkit-spam-learn.service", cfg.Milter.Enabled && cfg.Milter.Spam.Enabled && cfg.Milter.Spam.Bayes.Enabled},
		{"postkit-spam-learn.timer", cfg.Milter.Enabled && cfg.Milter.Spam.Enabled && cfg.Milter.Spam.Bayes.Enabled},
		{"postkit-dmarc-report.service", cfg.Milter.Enabled && cfg.Milter.DMARC.Enabled && cfg.Milter.DMARC.Report.Enabled},
		{"postkit-dmarc-report.timer", cfg.Milter.Enabled && cfg.Milter.DMARC.Enabled && cfg.Milter.DMARC.Report.Enabled},
	} {
		if !u.on {
			continue
		}
		name := "systemd/" + u.tmpl + ".tmpl"
		t, err := template.New(path.Base(name)).Funcs(template.FuncMap{"join": strings.Join}).Option("missingkey=error").ParseFS(unitFS, name, "systemd/hardening.tmpl")
		if err != nil {
			return nil, fmt.Errorf("templates: %s: %w", name, err)
		}
		var b bytes.Buffer
		if err := t.Execute(&b, v); err != nil {
			return nil, fmt.Errorf("templates: %s: %w", name, err)
		}
		files = append(files, File{Path: path.Join(dir, u.tmpl), Data: b.Bytes(), Mode: 0o644, Template: name})
	}
	return files, nil
}

// rwDirs are the directories a daemon writes: those of its unix sockets and
// of its state files, sorted, without duplicates.
func rwDirs(cfg *config.Config, listen []string, states ...string) []string {
	seen := map[string]bool{cfg.Paths.PostkitRun: true}
	for _, l := range listen {
		if p, ok := strings.CutPrefix(l, "unix:"); ok {
			seen[path.Dir(p)] = true
		}
	}
	for _, state := range states {
		if state != "" {
			seen[path.Dir(state)] = true
		}
	}
	var out []string
	for d := range seen {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

// makeDirs are paths.postkit_run (ACCOUNT:ACCOUNT) and the directories of
// the unix sockets (ACCOUNT:postfix), mode 0750, as postkit apply makes them.
func makeDirs(cfg *config.Config, account string, listen []string) []unitDir {
	ds := []unitDir{{cfg.Paths.PostkitRun, account, account, "0750"}}
	seen := map[string]bool{cfg.Paths.PostkitRun: true}
	for _, l := range listen {
		if p, ok := strings.CutPrefix(l, "unix:"); ok && !seen[path.Dir(p)] {
			seen[path.Dir(p)] = true
			ds = append(ds, unitDir{path.Dir(p), account, cfg.Postfix.MailOwner, "0750"})
		}
	}
	return ds
}

// layoutGlob turns mailbox.layout (%d/%n, %{domain}/%{user}...) into a
// shell glob matching every Maildir.
var dovecotVar = regexp.MustCompile(`%(\{[^}]*\}|[A-Za-z])`)

func layoutGlob(layout string) string {
	return dovecotVar.ReplaceAllString(layout, "*")
}
