package config

import (
	"strings"
	"testing"
)

func init() {
	for k, v := range map[string]string{
		"postconf":      "smtpd_tls_loglevel",
		"postconfvalue": "$myhostname ESMTP",
		"masteroption":  "smtpd_client_connection_rate_limit=10",
		"masterservice": "127.0.0.1:10025",
		"mastercommand": "smtpd",
		"masterarg":     "flags=DRhu",
		"masterwakeup":  "60?",
		"maxproc":       "10",
		"dovecotname":   "mail_max_userip_connections",
		"dovecotvalue":  "20",
	} {
		goodValue[k] = v
	}
}

// Extra parameters are checked like every value; the ones that decide who
// may relay cannot be set, so that no extra setting makes an open relay.
func TestExtraParameters(t *testing.T) {
	base := "hostname: mail.exemple.fr\ndomains: [exemple.fr]\n"
	good := base + `postfix:
  main_cf:
    - {name: smtpd_tls_loglevel, value: "1"}
    - {name: smtpd_banner, value: "$myhostname ESMTP ready"}
  master_cf:
    - {service: "127.0.0.1:10026", type: inet, command: smtpd, options: [content_filter=, "smtpd_client_restrictions=permit_mynetworks,reject"]}
  master_cf_options:
    - {service: submission, type: inet, options: [smtpd_client_connection_rate_limit=10]}
  milters_before: ["unix:/var/spool/postfix/clamav/clamav-milter.ctl"]
  milters_after: ["inet:127.0.0.1:11332"]
dovecot:
  settings: [{name: mail_max_userip_connections, value: "20"}]
  plugin: [{name: quota_warning, value: "storage=95% quota-warning 95 %u"}]
`
	c, _, err := Parse("x.yaml", []byte(good))
	if err != nil {
		t.Fatalf("good extras refused: %v", err)
	}
	if len(c.Postfix.MainCF) != 2 || c.Postfix.MasterCF[0].Command != "smtpd" || c.Dovecot.Plugin[0].Name != "quota_warning" {
		t.Errorf("decoded %+v %+v", c.Postfix, c.Dovecot)
	}
	for _, tt := range []struct{ doc, want string }{
		{"postfix:\n  main_cf: [{name: mynetworks, value: 0.0.0.0/0}]\n", "x.yaml:4:20: postfix.main_cf[0].name: mynetworks cannot be set here (set trusted_networks"},
		{"postfix:\n  main_cf: [{name: smtpd_relay_restrictions, value: permit}]\n", "smtpd_relay_restrictions cannot be set here"},
		{"postfix:\n  main_cf: [{name: smtpd_recipient_restrictions, value: permit}]\n", "smtpd_recipient_restrictions cannot be set here"},
		{"postfix:\n  main_cf: [{name: relay_domains, value: \"static:ALL\"}]\n", "relay_domains cannot be set here"},
		{"postfix:\n  main_cf: [{name: mynetworks_style, value: host}]\n", "mynetworks_style cannot be set here"},
		{"postfix:\n  main_cf: [{name: smtpd_milters, value: \"inet:127.0.0.1:1\"}]\n", "add milters with postfix.milters_before"},
		{"postfix:\n  main_cf: [{name: smtpd_banner, value: \"x\\nmynetworks = 0.0.0.0/0\"}]\n", "postfix.main_cf[0].value: \"x\\nmynetworks = 0.0.0.0/0\" holds a line break"},
		{"postfix:\n  main_cf: [{name: \"smtpd banner\", value: x}]\n", "is not a Postfix parameter name"},
		{"postfix:\n  main_cf: [{name: a, value: x}, {name: a, value: y}]\n", "a is already set by postfix.main_cf[0]"},
		{"postfix:\n  master_cf_options: [{service: smtp, type: inet, options: [smtpd_relay_restrictions=permit]}]\n", "postfix.master_cf_options[0].options[0]: smtpd_relay_restrictions cannot be set here"},
		{"postfix:\n  master_cf_options: [{service: smtp, type: inet, options: [mynetworks=0.0.0.0/0]}]\n", "mynetworks cannot be set here"},
		{"postfix:\n  master_cf_options: [{service: submission, type: inet, options: [smtpd_sender_restrictions=permit]}]\n", "smtpd_sender_restrictions cannot be set here"},
		{"postfix:\n  master_cf_options: [{service: submission, type: inet, options: [\"smtpd_banner=a b\"]}]\n", "holds a space"},
		{"postfix:\n  master_cf: [{service: x, type: unix, command: pipe, args: [\"-o\", \"mynetworks=0/0\"]}]\n", "-o options go in options"},
		{"postfix:\n  master_cf: [{service: x, type: unix, command: pipe, args: [\"argv=/bin/sh -c\"]}]\n", "one word per argument"},
		{"postfix:\n  master_cf: [{service: \"127.0.0.1:25\", type: inet, private: y, command: smtpd}]\n", "inet services cannot be private"},
		{"postfix:\n  master_cf: [{service: x, type: unix, command: \"/bin/sh\"}]\n", "is not a Postfix daemon name"},
		{"postfix:\n  master_cf: [{service: x, type: unix, command: pipe, wakeup: soon}]\n", "is not a wakeup time"},
		{"postfix:\n  milters_before: [\"unix:/var/spool/postfix/postkit/milter.sock\"]\n", "is postkit's milter"},
		{"postfix:\n  milters_after: [\"tcp:1.2.3.4:5\"]\n", "must start with unix: or inet:"},
		{"dovecot:\n  settings: [{name: mail_plugins, value: \"x }\"}]\n", "holds { or }"},
		{"dovecot:\n  settings: [{name: Mail-Plugins, value: x}]\n", "is not a Dovecot setting name"},
		{"dovecot:\n  settings: [{name: first_valid_uid, value: \"0\"}]\n", "dovecot.settings[0].name: first_valid_uid cannot be set here (set mailbox.uid"},
		{"dovecot:\n  plugin: [{name: sieve, value: \"a\\rb\"}]\n", "a line break (U+000D)"},
	} {
		_, _, err := Parse("x.yaml", []byte(base+tt.doc))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: %v; want %q", tt.doc, err, tt.want)
		}
	}
}

// The rate-limit key has one name in the file and on the command line:
// sasl_user (and client_ip), with the policy protocol's names accepted in
// both places.
func TestRateLimitKeyNames(t *testing.T) {
	for _, tt := range []struct{ in, want string }{{"sasl_user", "sasl_user"}, {"sasl_username", "sasl_user"}, {"client_address", "client_ip"}, {"client_ip", "client_ip"}, {"sender", "sender"}} {
		doc := "hostname: mail.exemple.fr\ndomains: [exemple.fr]\npolicy:\n  ratelimit:\n    limits: [{key: " + tt.in + ", count: messages, max: 5, window: 1h}]\n"
		c, _, err := Parse("x.yaml", []byte(doc))
		if err != nil || c.Policy.RateLimit.Limits[0].Key != tt.want {
			t.Errorf("key %s: %v, %v; want %s", tt.in, err, c, tt.want)
		}
		o, err := FlagOverrides(Shorthands("policyd"), func(f string) ([]string, bool) {
			if f == "ratelimit" {
				return []string{tt.in + ":messages=5/1h"}, true
			}
			return nil, false
		})
		if err != nil {
			t.Fatal(err)
		}
		c, _, err = LoadDaemon("", "policyd", o...)
		if err != nil || c.Policy.RateLimit.Limits[0].Key != tt.want {
			t.Errorf("--ratelimit %s: %v; want %s", tt.in, err, tt.want)
		}
	}
	if _, _, err := Parse("x.yaml", []byte("hostname: mail.exemple.fr\ndomains: [exemple.fr]\npolicy:\n  ratelimit:\n    limits: [{key: sasl, count: messages, max: 5, window: 1h}]\n")); err == nil {
		t.Error("key sasl accepted in the file")
	}
}
