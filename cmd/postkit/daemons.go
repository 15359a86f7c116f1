package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/internal/daemon"
)

// daemonFlags are the command line of a daemon: -c and the shorthands of config.Shorthands, each a key of postkit.yaml (--set reaches
// every other key). The shorthands have no defaults of their own: a flag
// not given leaves its key to the file, or to the daemon's built-in
// document without -c.
type daemonFlags struct {
	name    string // "milter" or "policyd"
	cfgPath string
	table   []config.Shorthand
	fs      *pflag.FlagSet
}

func addDaemonFlags(cmd *cobra.Command, name string) *daemonFlags {
	f := &daemonFlags{name: name, table: config.Shorthands(name), fs: cmd.Flags()}
	f.fs.StringVarP(&f.cfgPath, "config", "c", "", "postkit.yaml to read; without it the daemon starts from its built-in defaults and the flags")
	for _, s := range f.table {
		switch s.Kind {
		case config.FlagBool:
			f.fs.Bool(s.Flag, false, s.Usage)
		case config.FlagList:
			f.fs.StringArray(s.Flag, nil, s.Usage)
		default:
			f.fs.String(s.Flag, "", s.Usage)
		}
	}
	return f
}

// given returns the values of a flag given on the command line.
func (f *daemonFlags) given(flag string) ([]string, bool) {
	fl := f.fs.Lookup(flag)
	if fl == nil || !fl.Changed {
		return nil, false
	}
	if vs, err := f.fs.GetStringArray(flag); err == nil {
		return vs, true
	}
	return []string{fl.Value.String()}, true
}

// load reads postkit.yaml (or the built-in document) with the flags applied
// as overrides, validated whole: at start and on every SIGHUP.
func (f *daemonFlags) load() (*config.Config, *config.File, error) {
	ovs, err := config.FlagOverrides(f.table, f.given)
	if err != nil {
		return nil, nil, err
	}
	return config.LoadDaemon(f.cfgPath, f.name, ovs...)
}

// start sets up what both daemons share around daemon.Run: the batched
// logger the log section asks for (read here once; a reload keeps it) and the
// profiles POSTKIT_CPUPROFILE and POSTKIT_MEMPROFILE ask for. Lines go to
// stderr (w), or to syslog with w as the fallback. stop flushes the log and
// writes the profiles.
func (f *daemonFlags) start(w io.Writer) (log *slog.Logger, stop func(), err error) {
	c, _, err := f.load()
	if err != nil {
		return nil, nil, err
	}
	o, err := c.LogOptions(f.name)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", f.name, err)
	}
	log, flush := daemon.OpenLogger(w, o)
	stopProfiles, err := daemon.StartProfiles(os.Getenv("POSTKIT_CPUPROFILE"), os.Getenv("POSTKIT_MEMPROFILE"))
	if err != nil {
		flush()
		return nil, nil, err
	}
	return log, func() { stopProfiles(); flush() }, nil
}
