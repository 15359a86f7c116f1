package config

import (
	"fmt"
	"regexp"
	"strings"
)

// Extra settings an administrator adds to the generated Postfix and Dovecot
// files without editing them: main.cf parameters, master.cf services and
// options, Dovecot settings, and milters around postkit's. Each is checked
// like every other value (its kind; no control characters, so no value can
// add a line), and relay control stays postkit's: the parameters that decide
// who may relay (mynetworks, smtpd_relay_restrictions, …) cannot be set here,
// so the open-relay guard keeps judging all of it.

// PostfixParam is one main.cf parameter.
type PostfixParam struct {
	Name  string `yaml:"name" doc:"Parameter name as postconf(5) spells it; Postfix must know it (generate has postconf read the result)." required:"true" kind:"postconf"`
	Value string `yaml:"value" doc:"Its value, on one line ($name references are allowed)." kind:"postconfvalue"`
}

// MasterService is a master.cf service to add.
type MasterService struct {
	Service string   `yaml:"service" doc:"Service name (master(5)): a name such as clamav, a port, or host:port for inet services." required:"true" kind:"masterservice"`
	Type    string   `yaml:"type" doc:"Service type." required:"true" enum:"inet,unix,unix-dgram,fifo,pass" kind:"enum"`
	Command string   `yaml:"command" doc:"The program (master(5) command field), e.g. smtpd or pipe." required:"true" kind:"mastercommand"`
	Args    []string `yaml:"args" doc:"Arguments after the command, one word each (no spaces; -o options go in options)." kind:"masterarg"`
	Private string   `yaml:"private" doc:"master(5) private column; empty writes - (n for inet services, which cannot be private)." enum:"n,y,-" kind:"enum"`
	Unpriv  string   `yaml:"unpriv" doc:"master(5) unpriv column; empty writes -." enum:"n,y,-" kind:"enum"`
	Chroot  string   `yaml:"chroot" doc:"master(5) chroot column; empty writes -." enum:"n,y,-" kind:"enum"`
	Wakeup  string   `yaml:"wakeup" doc:"master(5) wakeup column (seconds, with ? for on-demand); empty writes -." kind:"masterwakeup"`
	Maxproc string   `yaml:"maxproc" doc:"master(5) maxproc column; empty writes -." kind:"maxproc"`
	Options []string `yaml:"options" doc:"-o options of the service, each name=value without spaces." kind:"masteroption"`
}

// MasterOverride adds -o options to a service postkit generates.
type MasterOverride struct {
	Service string   `yaml:"service" doc:"Name of a service postkit generates: smtp, submission, submissions (or host:port when the listener is not on the standard port), cleanup…" required:"true" kind:"masterservice"`
	Type    string   `yaml:"type" doc:"Its type." required:"true" enum:"inet,unix,unix-dgram,fifo,pass" kind:"enum"`
	Options []string `yaml:"options" doc:"-o options added after postkit's own (the last -o of a parameter wins), each name=value without spaces." required:"true" kind:"masteroption"`
}

// SplitOption splits a master.cf option name=value.
func SplitOption(s string) (name, value string) {
	name, value, _ = strings.Cut(s, "=")
	return name, value
}

// Dovecot holds settings added to Dovecot's configuration.
type Dovecot struct {
	Settings []DovecotSetting `yaml:"settings" doc:"Settings written to conf.d/99-postkit-extra.conf, read after every other file so they take precedence. doveconf must know each (generate has it read the result)." example:"{name: mail_max_userip_connections, value: \"20\"}"`
	Plugin   []DovecotSetting `yaml:"plugin" doc:"Plugin settings, written inside plugin { } in conf.d/99-postkit-extra.conf." example:"{name: quota_warning, value: \"storage=95% quota-warning 95 %u\"}"`
}

// DovecotSetting is one Dovecot setting.
type DovecotSetting struct {
	Name  string `yaml:"name" doc:"Setting name as doveconf spells it." required:"true" kind:"dovecotname"`
	Value string `yaml:"value" doc:"Its value, on one line, without { or }." kind:"dovecotvalue"`
}

var (
	postconfNameRE  = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	masterServiceRE = regexp.MustCompile(`^([a-z0-9][a-z0-9._-]*|[0-9]{1,5}|[0-9.]+:[0-9]{1,5}|\[[0-9a-fA-F:.]+\]:[0-9]{1,5}|[a-z0-9.-]+:[0-9]{1,5})$`)
	masterCommandRE = regexp.MustCompile(`^[a-z][a-z0-9._-]*$`)
	wakeupRE        = regexp.MustCompile(`^(-|[0-9]+\??)$`)
	maxprocRE       = regexp.MustCompile(`^(-|[0-9]+)$`)
	dovecotNameRE   = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
)

func init() {
	kinds["postconf"] = kind{check: func(s string) string {
		if !postconfNameRE.MatchString(s) {
			return fmt.Sprintf("%q is not a Postfix parameter name (lower-case letters, digits, _)", s)
		}
		return ""
	}, hint: "a name from 'postconf -d', e.g. smtpd_tls_loglevel"}
	kinds["postconfvalue"] = kind{check: func(string) string { return "" }, hint: "one line"}
	kinds["masteroption"] = kind{check: func(s string) string {
		name, value, ok := strings.Cut(s, "=")
		switch {
		case !ok || !postconfNameRE.MatchString(name):
			return fmt.Sprintf("%q is not name=value with a Postfix parameter name", s)
		case strings.ContainsAny(value, " \u00a0"):
			return fmt.Sprintf("%q holds a space: master.cf would split the option there", s)
		case strings.ContainsAny(value, "{}"):
			return fmt.Sprintf("%q holds { or }: master.cf's grouping is not supported here", s)
		}
		return ""
	}, hint: "e.g. smtpd_client_connection_rate_limit=10; separate list items with commas"}
	kinds["masterservice"] = kind{check: func(s string) string {
		if !masterServiceRE.MatchString(s) {
			return fmt.Sprintf("%q is not a master.cf service name", s)
		}
		return ""
	}, hint: "a name (clamav), a port (10025) or host:port (127.0.0.1:10025)"}
	kinds["mastercommand"] = kind{check: func(s string) string {
		if !masterCommandRE.MatchString(s) {
			return fmt.Sprintf("%q is not a Postfix daemon name", s)
		}
		return ""
	}, hint: "a program of daemon_directory, e.g. smtpd, pipe, spawn"}
	kinds["masterarg"] = kind{check: func(s string) string {
		switch {
		case strings.ContainsAny(s, " \u00a0{}"):
			return fmt.Sprintf("%q: one word per argument, without spaces or braces", s)
		case strings.HasPrefix(s, "-o"):
			return fmt.Sprintf("%q: -o options go in options, where they are checked", s)
		}
		return ""
	}, hint: "e.g. flags=DRhu, user=vmail, argv=/usr/bin/program"}
	kinds["masterwakeup"] = kind{check: func(s string) string {
		if !wakeupRE.MatchString(s) {
			return fmt.Sprintf("%q is not a wakeup time", s)
		}
		return ""
	}, hint: "-, seconds, or seconds followed by ?"}
	kinds["maxproc"] = kind{check: func(s string) string {
		if !maxprocRE.MatchString(s) {
			return fmt.Sprintf("%q is not a process limit", s)
		}
		return ""
	}, hint: "- or a number (0: no limit)"}
	kinds["dovecotname"] = kind{check: func(s string) string {
		if !dovecotNameRE.MatchString(s) {
			return fmt.Sprintf("%q is not a Dovecot setting name (lower-case letters, digits, _)", s)
		}
		return ""
	}, hint: "a name from 'doveconf -a', e.g. mail_max_userip_connections"}
	kinds["dovecotvalue"] = kind{check: func(s string) string {
		if strings.ContainsAny(s, "{}") {
			return fmt.Sprintf("%q holds { or }: Dovecot would read a section", s)
		}
		return ""
	}, hint: "one line, without { or }"}
}

// guardedParams are the Postfix parameters postkit.yaml may not set through
// postfix.main_cf or master.cf options, with what to do instead. The first
// group decides who may relay: leaving them to postkit keeps the open-relay
// guard (OpenRelay) judging everything that permits relaying.
var guardedParams = map[string]string{
	"mynetworks":                   "set trusted_networks, which the open-relay guard checks",
	"mynetworks_style":             "set trusted_networks, which the open-relay guard checks",
	"smtpd_relay_restrictions":     "relay control stays postkit's so that no setting makes an open relay",
	"smtpd_recipient_restrictions": "relay control stays postkit's so that no setting makes an open relay; add checks with policy.checks",
	"relay_domains":                "relay control stays postkit's so that no setting makes an open relay",
	"permit_mx_backup_networks":    "relay control stays postkit's so that no setting makes an open relay",
	"smtpd_milters":                "add milters with postfix.milters_before or postfix.milters_after",
	"non_smtpd_milters":            "add milters with postfix.milters_before or postfix.milters_after",
	"smtpd_sender_login_maps":      "grant senders with sender_logins",
}

// guardedOptions are refused as master.cf -o options on top of
// guardedParams: they make the submission services check who may send as
// whom.
var guardedOptions = map[string]string{
	"smtpd_sender_restrictions": "the submission services' sender check stays postkit's; grant senders with sender_logins",
}

// guardedDovecot are Dovecot settings postkit.yaml has keys for: the uid
// range is the one 'postkit db' checks users against.
var guardedDovecot = map[string]string{
	"mail_uid":           "set mailbox.uid",
	"mail_gid":           "set mailbox.gid",
	"first_valid_uid":    "set mailbox.uid: Dovecot accepts that uid only, which 'postkit db' checks users against",
	"last_valid_uid":     "set mailbox.uid: Dovecot accepts that uid only, which 'postkit db' checks users against",
	"first_valid_gid":    "set mailbox.gid: Dovecot accepts that gid only, which 'postkit db' checks users against",
	"last_valid_gid":     "set mailbox.gid: Dovecot accepts that gid only, which 'postkit db' checks users against",
	"mail_location":      "set mailbox.base_dir and mailbox.layout",
	"postmaster_address": "set postmaster",
}

func checkOptions(f *File, key string, opts []string, bad map[string]bool) Errors {
	var errs Errors
	for j, o := range opts {
		okey := fmt.Sprintf("%s[%d]", key, j)
		if bad[okey] {
			continue
		}
		name, _ := SplitOption(o)
		if hint, ok := guarded(name, true); ok {
			errs = append(errs, f.Errorf(okey, hint, "%s cannot be set here", name))
		}
	}
	return errs
}

func guarded(name string, option bool) (string, bool) {
	if h, ok := guardedParams[name]; ok {
		return h, true
	}
	if option {
		h, ok := guardedOptions[name]
		return h, ok
	}
	return "", false
}

// validateExtra checks what kinds cannot: guarded names, duplicates,
// combinations of master.cf columns.
func (c *Config) validateExtra(f *File, bad map[string]bool) Errors {
	var errs Errors
	seen := map[string]int{}
	for i, p := range c.Postfix.MainCF {
		key := fmt.Sprintf("postfix.main_cf[%d].name", i)
		if bad[key] {
			continue
		}
		if hint, ok := guarded(p.Name, false); ok {
			errs = append(errs, f.Errorf(key, hint, "%s cannot be set here", p.Name))
		}
		if j, dup := seen[p.Name]; dup {
			errs = append(errs, f.Errorf(key, "keep one of them", "%s is already set by postfix.main_cf[%d]", p.Name, j))
		}
		seen[p.Name] = i
	}
	services := map[string]int{}
	for i, sv := range c.Postfix.MasterCF {
		key := fmt.Sprintf("postfix.master_cf[%d]", i)
		id := sv.Service + "/" + sv.Type
		if j, dup := services[id]; dup && !bad[key+".service"] {
			errs = append(errs, f.Errorf(key+".service", "merge them into one entry", "%s is already listed at postfix.master_cf[%d]", id, j))
		}
		services[id] = i
		if sv.Type == "inet" && sv.Private == "y" {
			errs = append(errs, f.Errorf(key+".private", "write n (or leave it out)", "inet services cannot be private"))
		}
		errs = append(errs, checkOptions(f, key+".options", sv.Options, bad)...)
	}
	for i, o := range c.Postfix.MasterCFOptions {
		errs = append(errs, checkOptions(f, fmt.Sprintf("postfix.master_cf_options[%d].options", i), o.Options, bad)...)
	}
	for _, list := range []struct {
		key string
		s   []DovecotSetting
	}{{"dovecot.settings", c.Dovecot.Settings}, {"dovecot.plugin", c.Dovecot.Plugin}} {
		seen := map[string]int{}
		for i, d := range list.s {
			key := fmt.Sprintf("%s[%d].name", list.key, i)
			if j, dup := seen[d.Name]; dup && !bad[key] {
				errs = append(errs, f.Errorf(key, "keep one of them", "%s is already set by %s[%d]", d.Name, list.key, j))
			}
			if hint, ok := guardedDovecot[d.Name]; ok && list.key == "dovecot.settings" && !bad[key] {
				errs = append(errs, f.Errorf(key, hint, "%s cannot be set here", d.Name))
			}
			seen[d.Name] = i
		}
	}
	seenMilter := map[string]string{}
	for _, m := range []struct {
		key  string
		list []string
	}{{"postfix.milters_before", c.Postfix.MiltersBefore}, {"postfix.milters_after", c.Postfix.MiltersAfter}} {
		for i, a := range m.list {
			key := fmt.Sprintf("%s[%d]", m.key, i)
			if bad[key] {
				continue
			}
			if a == c.Milter.Listen {
				errs = append(errs, f.Errorf(key, "list only the other milters: postkit's own sits between milters_before and milters_after", "%s is postkit's milter (milter.listen)", a))
			}
			if prev, dup := seenMilter[a]; dup {
				errs = append(errs, f.Errorf(key, "list each milter once", "%s is already listed at %s", a, prev))
			}
			seenMilter[a] = key
		}
	}
	return errs
}
