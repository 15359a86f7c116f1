package config

import (
	"reflect"
	"testing"

	"github.com/spf13/pflag"
)

// register is how a command registers a daemon's shorthands: no flag has a
// default of its own (the help names the key's), and only the flags given
// become overrides.
func register(fs *pflag.FlagSet, table []Shorthand) func(flag string) ([]string, bool) {
	for _, s := range table {
		switch s.Kind {
		case FlagBool:
			fs.Bool(s.Flag, false, s.Usage)
		case FlagList:
			fs.StringArray(s.Flag, nil, s.Usage)
		default:
			fs.String(s.Flag, "", s.Usage)
		}
	}
	return func(flag string) ([]string, bool) {
		f := fs.Lookup(flag)
		if f == nil || !f.Changed {
			return nil, false
		}
		if vs, err := fs.GetStringArray(flag); err == nil {
			return vs, true
		}
		return []string{f.Value.String()}, true
	}
}

// A command line parsed by pflag gives the overrides the table promises, in
// the table's order whatever the command line's.
func TestShorthandsWithPflag(t *testing.T) {
	fs := pflag.NewFlagSet("policyd", pflag.ContinueOnError)
	given := register(fs, Shorthands("policyd"))
	err := fs.Parse([]string{"--no-spf", "--set", "policy.greylist.delay=2m", "--checks", "spf,greylist", "--greylist-delay", "1m",
		"--spf-permerror-reject=false", "--ratelimit", "sasl:messages=5/1h", "--checks", "ratelimit"})
	if err != nil {
		t.Fatal(err)
	}
	ovs, err := FlagOverrides(Shorthands("policyd"), given)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range ovs {
		got = append(got, o.Source)
	}
	want := []string{"--checks spf,greylist", "--checks ratelimit", "--no-spf", "--spf-permerror-reject=false", "--greylist-delay 1m",
		"--ratelimit sasl:messages=5/1h", "--set policy.greylist.delay=2m"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("overrides %q;\nwant %q", got, want)
	}
	c, _, err := LoadDaemon("", "policyd", ovs...)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.Policy.Checks, []string{"greylist", "ratelimit"}) || c.Policy.Greylist.Delay.D().String() != "2m0s" || c.Policy.SPF.PermError != "accept" {
		t.Errorf("checks %v, delay %v, permerror %q; want [greylist ratelimit], 2m, accept", c.Policy.Checks, c.Policy.Greylist.Delay.D(), c.Policy.SPF.PermError)
	}
	if u := fs.Lookup("greylist-delay").Usage; u != "how long greylisting defers a new triplet (policy.greylist.delay, default 5m)" {
		t.Errorf("help %q", u)
	}
}
