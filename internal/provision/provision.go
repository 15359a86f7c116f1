// Package provision turns a host (or a directory tree standing for one)
// into the configured mail stack: `postkit apply` is a thin command over
// Run. Each step is idempotent and says whether it changed anything:
//
//  1. accounts: the mailbox owner (mailbox.user, uid, gid) and the account
//     postkit's daemons run as (milter.spam.learn.user), created on the live
//     system, reported under another root;
//  2. directories with their owners and modes: mailbox.base_dir,
//     paths.postkit_run, the daemons' socket directories, milter.dkim.key_dir;
//  3. a self-signed TLS certificate when tls.cert does not exist (said
//     loudly), DKIM keys for milter.dkim.keys that do not exist yet, and
//     the modes of existing keys the daemons must read;
//  4. the database (`postkit db init`), before the files whose queries
//     need its schema;
//  5. the generated files and the systemd units (internal/generate: all or
//     nothing, checked by postconf and doveconf first, then by `postfix
//     check` on the live system; a file edited by hand is kept unless
//     Force); when this step fails, the key, certificate and database
//     files steps 3 and 4 created are removed again, so every file is as
//     it was; then postkit.yaml is made readable by the daemons;
//  6. reloads, in order, of what runs: Postfix, Dovecot, postkit's daemons
//     (systemctl reload under systemd, else SIGHUP) — never under another
//     root.
package provision

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/postkit/postkit/internal/apply"
	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/internal/generate"
	"github.com/postkit/postkit/internal/preflight"
	"github.com/postkit/postkit/sqlmaps"
	"github.com/postkit/postkit/templates"
)

// Options control Run.
type Options struct {
	Root  string // prefix of every live path; "/" for the live system
	Check bool   // report what would change; change nothing
	Force bool   // replace generated files edited by hand (kept as backups)
	// ConfigPath is postkit.yaml as given on the command line; the units
	// pass its live path (without Root) to the daemons.
	ConfigPath string
	// ConfigLive, when set, is the live path of postkit.yaml, when
	// ConfigPath reads another copy of it.
	ConfigLive string
	// Note receives what a reader must know (a self-signed certificate, a
	// step skipped); nil drops it.
	Note func(format string, args ...any)
}

// Step is the outcome of one step.
type Step struct {
	Name    string   `json:"name"`
	Changed bool     `json:"changed"`
	Detail  []string `json:"detail,omitempty"`
}

// Report is the outcome of Run.
type Report struct {
	Changed bool           `json:"changed"`
	Check   bool           `json:"check,omitempty"`
	Steps   []*Step        `json:"steps"`
	Files   []apply.Change `json:"files"`
}

func (r *Report) step(name string) *Step {
	s := &Step{Name: name}
	r.Steps = append(r.Steps, s)
	return s
}

func (s *Step) add(changed bool, format string, args ...any) {
	s.Changed = s.Changed || changed
	s.Detail = append(s.Detail, fmt.Sprintf(format, args...))
}

// run is what a step needs.
type run struct {
	cfg  *config.Config
	o    Options
	live bool // Root is /
	note func(string, ...any)
	// created lists the files step 3 created, removed again when a later
	// step fails.
	created []string
}

// Account is the account postkit's daemons run as.
func Account(cfg *config.Config) string { return cfg.Milter.Spam.Learn.User }

// Run provisions cfg under o.Root. The report is returned with the error
// too, with the steps done so far. The error of the files step is
// generate's (see generate.Explain).
func Run(ctx context.Context, cfg *config.Config, o Options) (*Report, error) {
	if o.Root == "" {
		o.Root = "/"
	}
	root, err := filepath.Abs(o.Root)
	if err != nil {
		return nil, fmt.Errorf("apply: --root %s: %w", o.Root, err)
	}
	o.Root = root
	r := &run{cfg: cfg, o: o, live: filepath.Clean(o.Root) == "/", note: o.Note}
	if r.note == nil {
		r.note = func(string, ...any) {}
	}
	rep := &Report{Check: o.Check}
	err = r.steps(ctx, rep)
	for _, s := range rep.Steps {
		rep.Changed = rep.Changed || s.Changed
	}
	return rep, err
}

func (r *run) steps(ctx context.Context, rep *Report) error {
	if err := r.accounts(rep.step("accounts")); err != nil {
		return err
	}
	if err := r.directories(rep.step("directories")); err != nil {
		return err
	}
	if err := r.tls(rep.step("tls")); err != nil {
		r.undo()
		return err
	}
	if err := r.dkim(rep.step("dkim")); err != nil {
		r.undo()
		return err
	}
	// Before the files: generate refuses files whose queries need a newer
	// schema than the database has.
	if err := r.database(ctx, rep.step("database")); err != nil {
		r.undo()
		return err
	}
	files := rep.step("files")
	changes, err := r.files()
	rep.Files = changes
	for _, c := range changes {
		if c.Action != apply.Unchanged {
			files.add(err == nil, "%s %s", c.Action, c.Path)
		}
	}
	if err != nil {
		r.undo()
		return err
	}
	if err := r.config(rep.step("config")); err != nil {
		return err
	}
	changed := false
	for _, s := range rep.Steps {
		changed = changed || s.Changed
	}
	return r.reload(rep.step("reload"), changed, changes)
}

// undo removes the files (and then empty directories) this run created
// before the files step.
func (r *run) undo() {
	for i := len(r.created) - 1; i >= 0; i-- {
		os.Remove(r.created[i])
	}
	r.created = nil
}

// path is a live path under the root.
func (r *run) path(p string) string { return filepath.Join(r.o.Root, p) }

// files renders and writes the generated files and the units.
func (r *run) files() ([]apply.Change, error) {
	cfgLive := r.configLive()
	units, err := templates.Units(r.cfg, cfgLive, Account(r.cfg))
	if err != nil {
		return nil, err
	}
	var extra []apply.File
	for _, u := range units {
		extra = append(extra, apply.File{Path: u.Path, Data: u.Data, Mode: os.FileMode(u.Mode)})
	}
	var finish func([]apply.Change) error
	if r.live {
		finish = func(changes []apply.Change) error { return r.postfixCheck(changes) }
	} else {
		r.note("postfix check not run under --root %s (it creates the queue directories of the live system); postconf and doveconf read the files", r.o.Root)
	}
	return generate.Run(r.cfg, generate.Options{
		Root:  r.o.Root,
		Check: r.o.Check,
		Force: r.o.Force,
		Extra: extra,
		// The accounts step made them (or, with --check, would).
		AccountsMade: true,
		Note:         preflight.Note(r.note),
		Finish:       finish,
	})
}

// configLive is the live path of postkit.yaml: the path given, without
// the root when it lies under it.
func (r *run) configLive() string {
	if r.o.ConfigLive != "" {
		return r.o.ConfigLive
	}
	p, err := filepath.Abs(r.o.ConfigPath)
	if err != nil || r.o.ConfigPath == "" {
		return "/etc/postkit/postkit.yaml"
	}
	if r.live {
		return p
	}
	root, _ := filepath.Abs(r.o.Root)
	if rel, err := filepath.Rel(root, p); err == nil && !strings.HasPrefix(rel, "..") {
		return "/" + rel
	}
	return p
}

// config makes postkit.yaml readable by the daemons' account (0640
// root:ACCOUNT) when it lies under the root.
func (r *run) config(s *Step) error {
	p, _ := filepath.Abs(r.o.ConfigPath)
	root, _ := filepath.Abs(r.o.Root)
	if rel, err := filepath.Rel(root, p); err != nil || strings.HasPrefix(rel, "..") {
		s.add(false, "%s is outside %s: left as it is", p, root)
		return nil
	}
	return r.ensureMode(s, p, 0o640, "", Account(r.cfg))
}

// database creates or upgrades the database (postkit db init).
func (r *run) database(ctx context.Context, s *Step) error {
	if src := r.cfg.Database.Source(); src.IsPostgres() {
		// A shared database: its tables, never a file here.
		if r.o.Check {
			s.add(false, "the %s: its schema and domains are checked when applied", src)
			return nil
		}
		res, _, err := sqlmaps.InitSource(ctx, src, sqlmaps.InitOptions{Domains: r.cfg.Domains})
		if err != nil {
			return fmt.Errorf("apply: %w", err)
		}
		for _, x := range res {
			if x.Changed() {
				s.add(true, "%s", x.String())
			}
		}
		return nil
	}
	p := r.path(r.cfg.Database.Path)
	if r.o.Check {
		if _, err := os.Stat(p); err != nil {
			s.add(true, "would create %s", r.cfg.Database.Path)
		} else {
			s.add(false, "%s exists; its schema and domains are checked when applied", r.cfg.Database.Path)
		}
		return nil
	}
	group := ""
	if os.Geteuid() == 0 && lookupGroup(r.cfg.Postfix.MailOwner) >= 0 {
		group = r.cfg.Postfix.MailOwner
	}
	if ok, _ := exists(p); !ok {
		// A database made for files that are then refused goes with them.
		for d := filepath.Dir(p); ; d = filepath.Dir(d) {
			if ok, _ := exists(d); ok {
				break
			}
			r.created = append([]string{d}, r.created...) // removed last
		}
		for _, suffix := range []string{"", "-journal", "-wal", "-shm"} {
			r.created = append(r.created, p+suffix)
		}
	}
	res, warn, err := sqlmaps.Init(ctx, p, sqlmaps.InitOptions{Group: group, Domains: r.cfg.Domains})
	if err != nil {
		return fmt.Errorf("apply: database %s: %w", p, err)
	}
	if warn != "" {
		r.note("%s", warn)
	}
	for _, x := range res {
		if x.Changed() {
			s.add(true, "%s", x.String())
		}
	}
	return nil
}

// ErrValidation reports whether err is a validation failure of the files
// step: nothing was written, or everything was put back.
func ErrValidation(err error) bool {
	return errors.Is(err, apply.ErrRefused) || errors.Is(err, apply.ErrRestored)
}
