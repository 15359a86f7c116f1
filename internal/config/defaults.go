package config

import "time"

// Defaults returns a Config with every default filled in. It is the one place
// defaults live: Load starts from it, the JSON Schema and examples/postkit.yaml
// print it.
func Defaults() *Config {
	return &Config{
		TrustedNetworks:  []CIDR{"127.0.0.0/8", "::1/128"},
		MessageSizeLimit: 31457280, // 30 MiB, as in the reference installation
		RecipientDelim:   "+",
		InetProtocols:    "all",
		SMTPUTF8:         false,
		TLS: TLS{
			Cert:          "/etc/postfix/tls/courriel.pem",
			Key:           "/etc/postfix/tls/courriel.key",
			InboundLevel:  "may",
			OutboundLevel: "may",
			MinProtocol:   "TLSv1.2",
		},
		Database: Database{Driver: "sqlite", Path: "/etc/postfix/bdd/postfix.sqlite",
			PasswordPolicy: PasswordPolicy{MinLength: 12, MaxLength: 1024, RefuseAddress: true}},
		State: State{Driver: "sqlite", OnError: "accept", CacheTTL: Duration(30 * time.Second)},
		Mailbox: Mailbox{
			BaseDir: "/var/mail/utilisateurs",
			UID:     3000,
			GID:     3000,
			User:    "vmail",
			Layout:  "%d/%n",
			// The reference installation sets no separator: Maildir++'s.
			Separator: ".",
			Quota: Quota{
				Enabled: true,
				Backend: "count",
				Default: "0",
				Grace:   "10%",
				Status:  "unix:/var/spool/postfix/private/quota-status",
			},
		},
		Listeners: Listeners{
			SMTP:        "25",
			Submission:  "587",
			Submissions: "465",
			IMAP:        "143",
			IMAPS:       "993",
			LMTP:        "/var/spool/postfix/private/dovecot-lmtp",
			Auth:        "/var/spool/postfix/private/auth",
		},
		Paths: Paths{
			PostfixConfig: "/etc/postfix",
			PostfixQueue:  "/var/spool/postfix",
			PostfixData:   "/var/lib/postfix",
			DovecotConfig: "/etc/dovecot",
			DovecotBase:   "/run/dovecot",
			DovecotState:  "/var/lib/dovecot",
			PostkitRun:    "/var/lib/postkit",
			Postkit:       "/usr/local/bin/postkit",
			SystemdUnits:  "/etc/systemd/system",
		},
		Postfix: Postfix{Chroot: true, MailOwner: "postfix", SetgidGroup: "postdrop", DNSChecks: true},
		Milter: Milter{
			Listen:        "unix:/var/spool/postfix/postkit/milter.sock",
			SocketOwner:   "",
			SocketGroup:   "postfix",
			SocketMode:    "0660",
			DefaultAction: "tempfail",
			OnError:       "tempfail",
			Drain:         Duration(30 * time.Second),
			Originating:   []string{"ORIGINATING"},
			OwnFrom:       "enforce",
			Scrub:         Scrub{Enabled: true},
			DKIM: DKIM{
				Sign:             true,
				Verify:           true,
				Canonicalization: "relaxed/simple",
				UnownedFrom:      "reject",
				BodyLength:       "pass",
				KeyDir:           "/etc/dkimkeys",
			},
			Spam: Spam{
				Enabled:          true,
				RequiredScore:    5.0,
				DomainAllowLists: true,
				Report:           "spam",
				MaxScanBytes:     500000, // SpamAssassin's rawbody_part_scan_size
				TimeBudget:       Duration(10 * time.Second),
				DNSBudget:        Duration(4 * time.Second),
				OnError:          "accept",
				Bayes: Bayes{
					Enabled:       true,
					Autolearn:     true,
					AutolearnSpam: 12.0, // SpamAssassin's defaults
					AutolearnHam:  0.1,
					MinTrained:    200,
					Expiry:        Duration(180 * 24 * time.Hour), // the engine's default
				},
				Learn: Learn{IMAPSieve: true, User: "postkit"},
			},
			DMARC: DMARC{
				Enabled: true,
				Action:  "reject",
				BadFrom: "permerror",
				Report:  DMARCReport{Enabled: true, MaxBytes: 10 << 20, Keep: Duration(7 * 24 * time.Hour)},
			},
		},
		Policy: Policy{
			Listen:      "unix:/var/spool/postfix/postkit/policy.sock",
			SocketOwner: "",
			SocketGroup: "postfix",
			SocketMode:  "0660",
			TimeBudget:  Duration(10 * time.Second),
			Checks:      []string{"blacklist", "spf"},
			SPF:         SPF{Mode: "enforce", HeloReject: "fail", MailFromReject: "fail", HeaderType: "spf", TempError: "defer", PermError: "accept", OwnDomains: "enforce"},
			Blacklist:   Blacklist{Owner: "postfix"},
			DNSBL:       DNSBL{Threshold: 3},
			Greylist: Greylist{
				Delay:       Duration(300 * time.Second),
				RetryWindow: Duration(48 * time.Hour),
				MaxAge:      Duration(35 * 24 * time.Hour),
				AutoAllow:   5,
				Text:        "Greylisted, please try again in %s seconds",
			},
		},
		Sieve: Sieve{Enabled: true, Dir: "/var/mail/sieve", SpamFolder: "Spam", ManageSieve: "4190",
			// The reference installation's sieve_dir and sieve.
			UserDir: "~/sieve", UserActive: "~/sieve/.dovecot.sieve"},
		DNS: DNS{Timeout: Duration(2 * time.Second)},
		Log: Log{Level: "info", Format: "text", Target: "stderr", SyslogFacility: "mail", SyslogSocket: "/dev/log"},
	}
}
