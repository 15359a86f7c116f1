// Package config is postkit's one YAML model (postkit.yaml): every generated
// file and every daemon is configured from it. Load decodes strictly (unknown
// keys and wrong types are errors with file:line:column), Validate checks
// values, and Defaults holds every default in one place. The command line
// changes keys, not daemon settings: --set and the daemons' flags
// (Shorthands) are Overrides applied to the YAML before the decode, so they
// are validated as the file is; LoadDaemon gives the daemons a built-in
// document to start from when they run without a file.
package config

import "time"

// Config is the whole postkit.yaml. Field docs are in the doc tags: they feed
// `postkit config schema` and examples/postkit.yaml.
type Config struct {
	Hostname         string        `yaml:"hostname" doc:"Fully qualified host name of this mail server (Postfix myhostname, HELO name, authserv-id)." required:"true" kind:"hostname"`
	Origin           string        `yaml:"origin" doc:"Domain appended to locally posted mail (Postfix myorigin). Default: the hostname." kind:"domain"`
	Domains          []string      `yaml:"domains" doc:"Mail domains served here. They are seeded into the database by 'postkit db init' and used for DKIM and DNS records; further domains can be added with 'postkit db domain add'." required:"true" kind:"domain"`
	Postmaster       string        `yaml:"postmaster" doc:"Postmaster address used by Dovecot LMTP for rejections. Default: postmaster@ the first domain." kind:"email"`
	TrustedNetworks  []CIDR        `yaml:"trusted_networks" doc:"Networks allowed to relay without authentication (Postfix mynetworks). Keep it to loopback and your own LAN: together, loopback aside, they may cover at most a /8 of IPv4 and a /16 of IPv6 (generate refuses more unless told --i-know-this-is-an-open-relay)." kind:"cidr"`
	SenderLogins     []SenderLogin `yaml:"sender_logins" doc:"Sender addresses SASL logins may use beyond what the database gives them. From the database, a user may use their own address and the virtual aliases that deliver to them (directly or through other aliases), each with any +extension; a catch-all alias (@domain) lets nobody send as the addresses it catches. The submission services refuse every other envelope sender at MAIL FROM (553 5.7.1, reject_authenticated_sender_login_mismatch over the sqlite-sender-login.cf map), and the milter applies the same rule to the From header (milter.dkim.unowned_from). Mail from trusted_networks without a login is not judged. Check an address with 'postkit lookup sender-login ADDRESS'." example:"{sender: billing@exemple.fr, logins: [test@exemple.fr, compta@exemple.fr]}|{sender: \"@lettre.exemple.fr\", logins: [newsletter@exemple.fr]}"`
	MessageSizeLimit int64         `yaml:"message_size_limit" doc:"Largest accepted message in bytes (Postfix message_size_limit). Postfix counts its own Received header and the envelope (about 1 KB) against it."`
	RecipientDelim   string        `yaml:"recipient_delimiter" doc:"Separator between user name and address extension (user+tag@domain)." kind:"delimiter"`
	InetProtocols    string        `yaml:"inet_protocols" doc:"IP versions Postfix uses: all, ipv4 or ipv6." enum:"all,ipv4,ipv6" kind:"enum"`
	SMTPUTF8         bool          `yaml:"smtputf8" doc:"Announce SMTPUTF8 (Postfix smtputf8_enable)."`
	TLS              TLS           `yaml:"tls" doc:"Certificate and TLS policy shared by Postfix and Dovecot."`
	Database         Database      `yaml:"database" doc:"Where users, domains, aliases and blacklists live."`
	Mailbox          Mailbox       `yaml:"mailbox" doc:"Mailbox storage."`
	Listeners        Listeners     `yaml:"listeners" doc:"Network services. Each is host:port or a bare port; an empty string disables the service."`
	Paths            Paths         `yaml:"paths" doc:"Where the stack lives. Defaults are Debian's; change them only to run a sandboxed stack."`
	Postfix          Postfix       `yaml:"postfix" doc:"Postfix settings that have no better home."`
	Milter           Milter        `yaml:"milter" doc:"The postkit milter daemon (header scrubbing, DKIM signing and verification, spam scoring)."`
	Policy           Policy        `yaml:"policy" doc:"The postkit policy daemon (SPF, blacklists, DNSBL, greylisting, rate limits)."`
	Sieve            Sieve         `yaml:"sieve" doc:"Server-side filtering with Dovecot's Sieve plugin."`
	DNS              DNS           `yaml:"dns" doc:"The resolver postkit's daemons use for SPF, DNSBL and DKIM lookups."`
	Dovecot          Dovecot       `yaml:"dovecot" doc:"Dovecot settings beyond what postkit generates."`
	State            State         `yaml:"state" doc:"Where the daemons keep what they learn (greylisting, rate limits, Bayes): this host's SQLite files, or one PostgreSQL database shared by several MX hosts."`
	Log              Log           `yaml:"log" doc:"How the postkit daemons (milter, policyd) log: one line per message or request, with the Postfix queue id as queue_id."`
}

// Log configures the daemons' logs.
type Log struct {
	Level          string `yaml:"level" doc:"Lowest level logged: debug, info (a line per message or request), warn or error." enum:"debug,info,warn,error" kind:"enum"`
	Format         string `yaml:"format" doc:"Line format: text (key=value, as logfmt) or json (one object per line)." enum:"text,json" kind:"enum"`
	Target         string `yaml:"target" doc:"Where lines go: stderr (journald reads it under systemd) or syslog, tagged postkit/milter and postkit/policyd like postfix/smtpd, so that they land in mail.log beside Postfix's. A syslog socket that is missing or stops answering never holds the daemon up: lines go to stderr until it answers again, said once." enum:"stderr,syslog" kind:"enum"`
	SyslogFacility string `yaml:"syslog_facility" doc:"Syslog facility with target syslog; Postfix logs under mail (Debian's rsyslog writes it to /var/log/mail.log)." enum:"mail,daemon,user,local0,local1,local2,local3,local4,local5,local6,local7" kind:"enum"`
	SyslogSocket   string `yaml:"syslog_socket" doc:"The local syslog socket (unix datagram) with target syslog." kind:"path"`
}

// SenderLogin lets logins use a sender address, or every address of a domain.
type SenderLogin struct {
	Sender string   `yaml:"sender" doc:"An address, or @domain for every address of that domain." required:"true" kind:"sender"`
	Logins []string `yaml:"logins" doc:"The SASL logins (user addresses) that may use it." required:"true" kind:"address"`
}

// TLS is the certificate and the TLS policy.
type TLS struct {
	Cert string `yaml:"cert" doc:"PEM certificate chain (Postfix smtpd_tls_cert_file, Dovecot ssl_cert)." kind:"path"`
	Key  string `yaml:"key" doc:"PEM private key of the certificate." kind:"path"`
	// InboundLevel is smtpd_tls_security_level on port 25.
	InboundLevel string `yaml:"inbound_level" doc:"TLS on port 25: 'may' offers STARTTLS (RFC 3207 forbids requiring it on a public MX); 'encrypt' refuses every sender without TLS." enum:"may,encrypt" kind:"enum"`
	// OutboundLevel is smtp_tls_security_level.
	OutboundLevel string `yaml:"outbound_level" doc:"TLS when relaying out: 'may' (opportunistic), 'encrypt' (refuses to deliver to servers without STARTTLS), 'dane' (needs a DNSSEC-validating resolver)." enum:"may,encrypt,dane" kind:"enum"`
	MinProtocol   string `yaml:"min_protocol" doc:"Oldest TLS version accepted by Postfix and Dovecot." enum:"TLSv1.2,TLSv1.3" kind:"enum"`
}

// Database is the SQL store.
type Database struct {
	Driver string `yaml:"driver" doc:"Database driver: sqlite (one host, a file) or postgresql (several MX hosts sharing one database; Postfix needs postfix-pgsql and Dovecot dovecot-pgsql)." enum:"sqlite,postgresql" kind:"enum"`
	Path   string `yaml:"path" doc:"SQLite file (driver sqlite). Postfix (user postfix) and Dovecot's auth process must be able to read it." kind:"path"`
	// DSN and PasswordFile: see database.go.
	DSN          string `yaml:"dsn" doc:"PostgreSQL database (driver postgresql): postgres://USER@HOST:PORT/DBNAME, with ?sslmode=… or ?host=/socket/dir if needed. Never a password here: see password_file." kind:"pgdsn"`
	PasswordFile string `yaml:"password_file" doc:"File whose first line is the PostgreSQL password (mode 0600, root). postkit reads it; the generated Postfix and Dovecot files carry it (mode 0640, their group only). Empty: postkit follows libpq (PGPASSWORD, ~/.pgpass) and the generated files hold no password (trust or peer authentication)." kind:"path"`
	// PasswordPolicy is checked by 'postkit db user add|passwd|import'.
	PasswordPolicy PasswordPolicy `yaml:"password_policy" doc:"What 'postkit db' accepts as a new password (add, passwd, import of plaintext). Length over composition rules, as NIST SP 800-63B advises; hashes imported as they are cannot be checked."`
}

// PasswordPolicy is what a new mailbox password must satisfy.
type PasswordPolicy struct {
	MinLength     int  `yaml:"min_length" doc:"Fewest characters (Unicode code points) a new password may have."`
	MaxLength     int  `yaml:"max_length" doc:"Most bytes a new password may have (BLF-CRYPT reads at most 72 whatever this says)."`
	RefuseAddress bool `yaml:"refuse_address" doc:"Refuse a password that is the user's address, its local part or its domain, in any case, alone or followed only by digits and punctuation (test2024!)."`
}

// Mailbox is where mail is stored.
type Mailbox struct {
	BaseDir string `yaml:"base_dir" doc:"Root of every Maildir (Postfix virtual_mailbox_base)." kind:"path"`
	UID     int    `yaml:"uid" doc:"Owner uid of the mailboxes (the vmail user)."`
	GID     int    `yaml:"gid" doc:"Owner gid of the mailboxes."`
	User    string `yaml:"user" doc:"Name of the mailbox owner account; created by the demo and the Ansible role." kind:"user"`
	Layout  string `yaml:"layout" doc:"Maildir path under base_dir, with Dovecot variables (%d domain, %n user)." kind:"layout"`
	// Separator and Quota: see mailbox.go.
	Separator string `yaml:"separator" doc:"Hierarchy separator IMAP clients see between folder levels (Projets.Clients). The reference installation sets none, so Dovecot uses Maildir++'s '.'; '/' shows the same folders as Projets/Clients (folders on disk are unchanged, but clients re-read the whole tree and some lose their settings)." enum:".,/" kind:"enum"`
	Quota     Quota  `yaml:"quota" doc:"Storage quotas: Dovecot's quota plugin, with limits per user and per domain from the database ('postkit db quota'), and Dovecot's quota-status service as a Postfix policy so that mail to a full mailbox is refused at RCPT (552 5.2.2) instead of bounced later."`
}

// Listeners are the network services.
type Listeners struct {
	SMTP        string `yaml:"smtp" doc:"Inbound SMTP (MX), STARTTLS offered." kind:"listen"`
	Submission  string `yaml:"submission" doc:"Submission with STARTTLS and SASL (RFC 6409)." kind:"listen"`
	Submissions string `yaml:"submissions" doc:"Submission over implicit TLS (RFC 8314)." kind:"listen"`
	IMAP        string `yaml:"imap" doc:"IMAP with STARTTLS." kind:"listen"`
	IMAPS       string `yaml:"imaps" doc:"IMAP over implicit TLS." kind:"listen"`
	LMTP        string `yaml:"lmtp" doc:"Dovecot LMTP socket Postfix delivers to. With a chrooted Postfix it must be under the queue directory." kind:"path"`
	Auth        string `yaml:"auth" doc:"Dovecot SASL socket for Postfix. With a chrooted Postfix it must be under the queue directory." kind:"path"`
}

// Paths is where the stack lives.
type Paths struct {
	PostfixConfig string `yaml:"postfix_config" doc:"Postfix config_directory." kind:"path"`
	PostfixQueue  string `yaml:"postfix_queue" doc:"Postfix queue_directory (also the chroot jail)." kind:"path"`
	PostfixData   string `yaml:"postfix_data" doc:"Postfix data_directory." kind:"path"`
	DovecotConfig string `yaml:"dovecot_config" doc:"Dovecot configuration directory." kind:"path"`
	DovecotBase   string `yaml:"dovecot_base" doc:"Dovecot base_dir (runtime sockets)." kind:"path"`
	DovecotState  string `yaml:"dovecot_state" doc:"Dovecot state_dir." kind:"path"`
	PostfixLog    string `yaml:"postfix_log" doc:"Postfix maillog_file; empty logs to syslog." kind:"path"`
	DovecotLog    string `yaml:"dovecot_log" doc:"Dovecot log_path; empty logs to syslog." kind:"path"`
	PostkitRun    string `yaml:"postkit_run" doc:"Directory for postkit's state files (greylisting, rate limits, the spam filter's Bayes store)." kind:"path"`
	Postkit       string `yaml:"postkit" doc:"The postkit binary, as the services generated for Dovecot run it (learning from the spam folder, milter.spam.learn)." kind:"path"`
	SystemdUnits  string `yaml:"systemd_units" doc:"Directory where 'postkit apply' installs the systemd units of postkit's daemons; empty installs none." kind:"path"`
}

// Postfix holds the remaining Postfix knobs.
type Postfix struct {
	Chroot             bool   `yaml:"chroot" doc:"Run smtpd, cleanup and friends chrooted in the queue directory, as Debian does."`
	MailOwner          string `yaml:"mail_owner" doc:"Postfix mail_owner account." kind:"user"`
	SetgidGroup        string `yaml:"setgid_group" doc:"Postfix setgid_group." kind:"group"`
	RelayHost          string `yaml:"relayhost" doc:"Smart host for outbound mail, e.g. [smtp.example.net]:587; empty delivers directly." kind:"relayhost"`
	TransportMaps      string `yaml:"transport_maps" doc:"Extra transport_maps lookup table (e.g. to route test domains to a sink); empty for none." kind:"maps"`
	DisableDNS         bool   `yaml:"disable_dns_lookups" doc:"Do not look up MX/A records when relaying (smtp_dns_support_level = disabled); for sandboxes with a relay host."`
	AllowPlaintextAuth bool   `yaml:"allow_plaintext_auth" doc:"Allow SASL AUTH before STARTTLS. Never in production."`
	DNSChecks          bool   `yaml:"dns_checks" doc:"Refuse senders and recipients whose domain has no DNS records (reject_unknown_sender_domain, reject_unknown_recipient_domain). Turn off only in sandboxes without DNS."`
	// MainCF, MasterCF, MiltersBefore and MiltersAfter: see extra.go.
	MainCF          []PostfixParam   `yaml:"main_cf" doc:"Extra main.cf parameters, written at the end of main.cf in place of postkit's own setting of the same name. The parameters that decide who may relay (mynetworks, smtpd_relay_restrictions, smtpd_recipient_restrictions, relay_domains, …) and the milter lists cannot be set here." example:"{name: smtpd_tls_loglevel, value: \"1\"}|{name: header_size_limit, value: \"204800\"}"`
	MasterCF        []MasterService  `yaml:"master_cf" doc:"Extra master.cf services, written after postkit's. A service postkit generates cannot be redefined: add options to it with master_cf_options." example:"{service: dovecot, type: unix, command: pipe, unpriv: n, chroot: n, args: [flags=DRhu, user=vmail, argv=/usr/lib/dovecot/deliver]}"`
	MasterCFOptions []MasterOverride `yaml:"master_cf_options" doc:"-o options added to services postkit generates. Relay and sender-check parameters cannot be set." example:"{service: submission, type: inet, options: [smtpd_client_connection_rate_limit=10]}"`
	MiltersBefore   []string         `yaml:"milters_before" doc:"Milters Postfix calls before postkit's (smtpd_milters and non_smtpd_milters), e.g. clamav-milter's socket." kind:"addr" example:"unix:/var/spool/postfix/clamav/clamav-milter.ctl"`
	MiltersAfter    []string         `yaml:"milters_after" doc:"Milters Postfix calls after postkit's, e.g. rspamd's proxy. They see postkit's changes, DKIM signature included, and may break it if they edit the message." kind:"addr" example:"inet:127.0.0.1:11332"`
}

// Milter configures the postkit milter daemon and its Postfix hook.
type Milter struct {
	Enabled       bool     `yaml:"enabled" doc:"Run the postkit milter and wire it into Postfix (smtpd_milters, non_smtpd_milters)."`
	Listen        string   `yaml:"listen" doc:"Where the milter listens: unix:/path (under the queue directory when Postfix is chrooted; a missing directory is created mode 0750 with the socket's owner and group, an existing one must be writable by no one but root and the daemon's user) or inet:127.0.0.1:PORT." kind:"addr"`
	ExtraListen   []string `yaml:"extra_listen" doc:"More addresses the milter serves its filters on, beside listen, e.g. an inet: address for another MTA. Postfix is wired to listen only. Each address follows the rules of listen, and allow_clients applies to it." kind:"addr"`
	AllowClients  []CIDR   `yaml:"allow_clients" doc:"Networks of the MTAs that may connect to an inet: listen address, e.g. [192.0.2.25/32]; the milter closes and logs every other connection. Required when listen can be reached from other hosts (any address but loopback): the milter protocol has no authentication, and any client could have mail signed for your domains. Not used with unix: sockets, where socket_mode and socket_group decide; an inet: address on loopback is open to every local user." kind:"cidr"`
	SocketOwner   string   `yaml:"socket_owner" doc:"Owner of the unix socket; empty keeps the daemon's user." kind:"user"`
	SocketGroup   string   `yaml:"socket_group" doc:"Group of the unix socket." kind:"group"`
	SocketMode    string   `yaml:"socket_mode" doc:"Octal mode of the unix socket." pattern:"^0?[0-7]{3}$" kind:"mode"`
	DefaultAction string   `yaml:"default_action" doc:"What Postfix does when the milter cannot be reached (milter_default_action). tempfail keeps mail queued; accept lets it pass unsigned." enum:"tempfail,accept,reject" kind:"enum"`
	OnError       string   `yaml:"on_error" doc:"What the milter answers when a filter fails on a message." enum:"tempfail,accept,reject" kind:"enum"`
	Drain         Duration `yaml:"drain" doc:"How long the milter, told to stop (SIGTERM), lets the messages in flight finish; Postfix applies default_action to those still unfinished then."`
	Originating   []string `yaml:"originating" doc:"Postfix service names ({daemon_name}, set with milter_macro_daemon_name) whose mail is outbound." kind:"name"`
	OwnFrom       string   `yaml:"own_from" doc:"Inbound mail (not authenticated, not from trusted_networks or policy.spf.allow_ips) whose header From is in one of our domains (domains and the database): enforce refuses it (550 at end of data; 451 on DNS trouble) unless SPF passes for that domain from the client, or this milter verified a DKIM signature of that domain or a parent of it (dkim.verify): forwarders and mailing lists that keep the message intact keep our signature. off accepts it." enum:"enforce,off" kind:"enum"`
	Scrub         Scrub    `yaml:"scrub" doc:"Privacy scrubbing of outbound headers."`
	DKIM          DKIM     `yaml:"dkim" doc:"DKIM signing (outbound) and verification (inbound)."`
	Spam          Spam     `yaml:"spam" doc:"Spam scoring of inbound mail, with SpamAssassin's X-Spam-* header fields and a Bayes classifier that learns from what users file as spam."`
	DMARC         DMARC    `yaml:"dmarc" doc:"DMARC (RFC 7489) for inbound mail: SPF and the DKIM results of this pass aligned with the From domain, the domain's policy applied, dmarc= in Authentication-Results, evaluations recorded for aggregate reports ('postkit dmarc report')."`

	Metrics             string `yaml:"metrics" doc:"Optional host:port serving Prometheus metrics on /metrics (messages, filter outcomes, DKIM signatures, spam verdicts, durations; a bare port listens on 127.0.0.1); empty disables. A scrape never touches mail." kind:"listen"`
	MetricsAllowClients []CIDR `yaml:"metrics_allow_clients" doc:"Networks that may fetch the milter's metrics, e.g. the Prometheus server's [192.0.2.9/32]; every other connection is closed and logged. Required when metrics can be reached from other hosts (any address but loopback)." kind:"cidr"`
}

// Spam configures the milter's spam filter and its engine.
type Spam struct {
	Enabled            bool          `yaml:"enabled" doc:"Score inbound mail (clients that neither authenticated nor are in trusted_networks) and add SpamAssassin's fields: X-Spam-Flag: YES on spam (the generated Sieve rule files it into sieve.spam_folder), X-Spam-Status, X-Spam-Level, X-Spam-Checker-Version. X-Spam-* fields that come with a message are removed first."`
	RequiredScore      float64       `yaml:"required_score" doc:"Score from which a message is spam (SpamAssassin's required_score)."`
	RejectScore        float64       `yaml:"reject_score" doc:"Score from which a message is refused at end of data with 550 5.7.1 (spamass-milter -r), above required_score; 0 refuses none."`
	RulesDir           string        `yaml:"rules_dir" doc:"Directory whose *.rules files are read after the rules shipped in postkit, to add rules and change scores (see 'postkit spam check'); empty for none." kind:"path"`
	WhitelistFrom      []string      `yaml:"whitelist_from" doc:"Senders whose mail is never spam, with * and ? as wildcards (SpamAssassin's whitelist_from), e.g. *@exemple.fr. The From address can be forged: list only senders whose mail you could not lose." kind:"addrglob"`
	BlacklistFrom      []string      `yaml:"blacklist_from" doc:"Senders whose mail is always spam, with * and ? as wildcards (SpamAssassin's blacklist_from)." kind:"addrglob"`
	DomainAllowLists   bool          `yaml:"domain_allow_lists" doc:"Read per-domain allow lists from the database (table postkit_liste_blanche_spam, 'postkit db spam-allow add DOMAIN SENDER-DOMAIN'): mail whose From domain is listed by the recipients' domain (a message for several domains: by each of them), and which SPF or a DKIM signature of that domain authenticates (a forged From gains nothing), is never spam. Asked for such messages only."`
	CheckAuthenticated bool          `yaml:"check_authenticated" doc:"Score mail from authenticated users too (submission); mail from trusted_networks is never scored."`
	RewriteSubject     string        `yaml:"rewrite_subject" doc:"Text put in front of the Subject of spam (SpamAssassin's rewrite_header Subject; the reference installation uses *****SPAM*****). Empty leaves the Subject alone, which keeps DKIM signatures that cover it valid." kind:"text"`
	Report             string        `yaml:"report" doc:"Which messages get an X-Spam-Report field listing each test that hit: none, spam, or all (the reference installation's add_header all Report)." enum:"none,spam,all" kind:"enum"`
	MaxScanBytes       int64         `yaml:"max_scan_bytes" doc:"How much of a message's body is scanned, and at most held in memory; the rest passes unread (SpamAssassin scans 500000 bytes of each part)."`
	TimeBudget         Duration      `yaml:"time_budget" doc:"Longest the scoring of one message may take, from end of data; a message without a verdict by then is handled as on_error says. Keep it well below Postfix's milter_content_timeout (300s)."`
	DNSBudget          Duration      `yaml:"dns_budget" doc:"Longest the DNS list lookups of one message may take (dnsbl, uribl, through the dns resolver); lists that have not answered by then count as not listing the message."`
	DNSBL              []SpamDNSList `yaml:"dnsbl" doc:"DNS block lists of client addresses (RFC 5782), each a test of its own with a score, looked up through the dns resolver within dns_budget. None by default, as the reference installation (skip_rbl_checks 1): public lists see every client that writes to you." example:"{name: RCVD_IN_ZEN, zone: \"zen.spamhaus.org=127.0.0.[2..11]\", score: 3.0, description: Client listed in Spamhaus ZEN}"`
	URIBL              []SpamDNSList `yaml:"uribl" doc:"DNS block lists of domains, looked up for the hosts of the links in a message (RFC 5782 section 2.2), each a test with a score. None by default." example:"{name: URIBL_DBL, zone: \"dbl.spamhaus.org=127.0.1.[2..99]\", score: 2.5, description: Link to a domain listed in Spamhaus DBL}"`
	OnError            string        `yaml:"on_error" doc:"A message the engine could not score in time_budget, or at all: accept delivers it with X-Spam-Status: No, tests=POSTKIT_TIMEOUT (or POSTKIT_ERROR), as spamass-milter passes mail when spamd fails; tempfail refuses it with 451 4.7.1 so that the client retries." enum:"accept,tempfail" kind:"enum"`
	Bayes              Bayes         `yaml:"bayes" doc:"The Bayes classifier: its store, autolearn and training thresholds."`
	Learn              Learn         `yaml:"learn" doc:"Learning from what users do: a message moved into sieve.spam_folder over IMAP is learned as spam, one moved out of it (but to Trash) as ham (Dovecot's IMAPSieve, as generated)."`
}

// SpamDNSList is one DNS list of the spam filter.
type SpamDNSList struct {
	Name        string  `yaml:"name" doc:"The test's name in X-Spam-Status, e.g. RCVD_IN_ZEN." required:"true" kind:"testname"`
	Zone        string  `yaml:"zone" doc:"The list's zone, with an optional filter of the answers that count in postscreen_dnsbl_sites syntax (zen.spamhaus.org=127.0.0.[2..11]); without one, any answer in 127.0.0.0/8 counts." required:"true" kind:"dnszone"`
	Score       float64 `yaml:"score" doc:"Points added when the list answers; 0 turns the list off, as a rule's score 0 does."`
	Description string  `yaml:"description" doc:"One line for X-Spam-Report." kind:"text"`
}

// Bayes configures the Bayes classifier.
type Bayes struct {
	Enabled       bool     `yaml:"enabled" doc:"Use the Bayes classifier (BAYES_* tests) once it has learned min_trained spam and min_trained ham."`
	Path          string   `yaml:"path" doc:"SQLite file of the token store, written by the milter (autolearn) and by 'postkit spam learn'. Default: paths.postkit_run/bayes.sqlite." kind:"path"`
	Autolearn     bool     `yaml:"autolearn" doc:"Learn mail that scores clearly: as spam from autolearn_spam points (without the Bayes tests), as ham up to autolearn_ham."`
	AutolearnSpam float64  `yaml:"autolearn_spam" doc:"Score (the Bayes tests left out) from which a message is learned as spam (SpamAssassin's bayes_auto_learn_threshold_spam)."`
	AutolearnHam  float64  `yaml:"autolearn_ham" doc:"Score up to which a message is learned as ham (SpamAssassin's bayes_auto_learn_threshold_nonspam)."`
	MinTrained    int      `yaml:"min_trained" doc:"How many spam and how many ham messages the classifier must have learned before it votes (SpamAssassin's bayes_min_spam_num and bayes_min_ham_num)."`
	Expiry        Duration `yaml:"expiry" doc:"Tokens no learning touched for this long are forgotten (checked at most once a day, after a learning), so that the store follows what mail looks like now; 0 keeps them forever. 'postkit spam learn' reads it with -c postkit.yaml (else --expiry, default 180 days); Dovecot's learn service is generated with it."`
}

// Learn configures learning from users' moves.
type Learn struct {
	IMAPSieve bool   `yaml:"imapsieve" doc:"Generate Dovecot's IMAPSieve rules (Pigeonhole's imapsieve and extprograms plugins) that run 'postkit spam learn' when a user moves a message into or out of the spam folder. Needs milter.enabled, milter.spam.enabled, bayes.enabled and sieve.enabled."`
	User      string `yaml:"user" doc:"Account Dovecot runs 'postkit spam learn' as: it must be able to write bayes.path, so it is the account postkit's daemons run as: 'postkit apply' creates it (with a group of the same name) and its systemd units run the milter and the policy daemon as it. It must exist before Dovecot starts; generate checks it when writing the live system." kind:"user"`
}

// Scrub is the header scrubbing filter.
type Scrub struct {
	Enabled bool        `yaml:"enabled" doc:"Scrub private headers from outbound mail before signing."`
	Rules   []ScrubRule `yaml:"rules" doc:"Rules applied in order. Empty means the built-in defaults (Received with ESMTPSA rewritten, X-Originating-IP, X-Mailer, User-Agent deleted)." example:"{header: X-Mailer, action: delete}|{header: Received, match: \"^from .* with ESMTPSA\", action: replace, with: \"from [127.0.0.1] by mail.exemple.fr with ESMTPSA\"}"`
}

// ScrubRule is one scrubbing rule.
type ScrubRule struct {
	Header string `yaml:"header" doc:"Header name, case-insensitive." required:"true" kind:"header"`
	Match  string `yaml:"match" doc:"Optional RE2 regular expression the value must match." kind:"regexp"`
	Action string `yaml:"action" doc:"delete; replace (the value becomes 'with'); or redact-received (a Received field loses its 'from' clause, keeping 'by … with … id …; date')." enum:"delete,replace,redact-received" kind:"enum"`
	With   string `yaml:"with" doc:"Replacement value for action replace (literal text, one line)." kind:"text"`
}

// DKIM configures signing and verification.
type DKIM struct {
	Sign             bool      `yaml:"sign" doc:"Sign outbound mail."`
	Verify           bool      `yaml:"verify" doc:"Verify inbound signatures and add Authentication-Results."`
	Canonicalization string    `yaml:"canonicalization" doc:"header/body canonicalization." enum:"relaxed/simple,relaxed/relaxed,simple/simple,simple/relaxed" kind:"enum"`
	Subdomains       bool      `yaml:"subdomains" doc:"Sign mail from sub.example.org with the key of example.org when the sub-domain has none."`
	AuthservID       string    `yaml:"authserv_id" doc:"authserv-id in Authentication-Results. Default: the hostname." kind:"name"`
	UnownedFrom      string    `yaml:"unowned_from" doc:"Mail from an authenticated user whose From header is not an address that login may use (the rule of sender_logins, read from the database for each message): reject refuses it with 550 5.7.1; unsigned lets it pass without a DKIM signature and logs why. Mail from trusted_networks and local submission (sendmail) carries no login and is signed as before: those are your own hosts. A database fault defers the message (451 4.3.0) whatever on_error says: it never passes unchecked." enum:"reject,unsigned" kind:"enum"`
	BodyLength       string    `yaml:"body_length" doc:"What a signature with a body length count (l=) is worth, whose signed part verifies: pass (as OpenDKIM and dkimpy: text appended after the signed part, by a mailing list or anyone else, does not matter); complete (pass only when nothing follows the signed part, else dkim=policy); policy (every l= signature is dkim=policy)." enum:"pass,complete,policy" kind:"enum"`
	KeyDir           string    `yaml:"key_dir" doc:"Directory of keys made by 'postkit dkim keygen' (DOMAIN/SELECTOR.private)." kind:"path"`
	Keys             []DKIMKey `yaml:"keys" doc:"Signing keys. Two keys for one domain (e.g. RSA and Ed25519) give two signatures." example:"{domain: exemple.fr, selector: mail, key_file: /etc/dkimkeys/exemple.fr/mail.private}|{domain: exemple.fr, selector: ed1, key_file: /etc/dkimkeys/exemple.fr/ed1.private}|{domain: exemple.fr, selector: mail, key_file: /etc/dkimkeys/exemple.fr/mail.private, from: [\"*@exemple.fr\", \"*@toto.fr\"]}"`
}

// DKIMKey is one signing key.
type DKIMKey struct {
	Domain   string   `yaml:"domain" doc:"Signing domain (d=)." required:"true" kind:"domain"`
	Selector string   `yaml:"selector" doc:"Selector (s=)." required:"true" kind:"selector"`
	KeyFile  string   `yaml:"key_file" doc:"PEM private key. Default: key_dir/DOMAIN/SELECTOR.private." kind:"path"`
	Disabled bool     `yaml:"disabled" doc:"Keep the key published but stop signing with it (rotation)."`
	From     []string `yaml:"from" doc:"From addresses this key signs, as an OpenDKIM SigningTable names them: user@example.org (one address), *@example.org (the domain), *@*.example.org (its sub-domains). Empty: every address of domain. The most specific rule wins (address, then domain, then the closest parent's sub-domains) and all its keys sign; a key may sign for other domains than its d= (one key for several domains)." kind:"signfrom"`
}

// Policy configures the policy daemon and its Postfix hook.
type Policy struct {
	Enabled     bool      `yaml:"enabled" doc:"Run the postkit policy daemon and add check_policy_service to Postfix."`
	Listen      string    `yaml:"listen" doc:"Where the policy daemon listens: unix:/path (under the queue directory when Postfix is chrooted; a missing directory is created mode 0750 with the socket's owner and group, an existing one must be writable by no one but root and the daemon's user) or inet:127.0.0.1:PORT." kind:"addr"`
	SocketOwner string    `yaml:"socket_owner" doc:"Owner of the unix socket; empty keeps the daemon's user." kind:"user"`
	SocketGroup string    `yaml:"socket_group" doc:"Group of the unix socket." kind:"group"`
	SocketMode  string    `yaml:"socket_mode" doc:"Octal mode of the unix socket." pattern:"^0?[0-7]{3}$" kind:"mode"`
	TimeBudget  Duration  `yaml:"time_budget" doc:"Longest a request may take; Postfix's smtpd_policy_service_timeout is set above it."`
	Checks      []string  `yaml:"checks" doc:"Checks in the order they run; the first decisive answer wins." enum:"blacklist,spf,dnsbl,greylist,ratelimit" kind:"enum"`
	SPF         SPF       `yaml:"spf" doc:"SPF (RFC 7208)."`
	Blacklist   Blacklist `yaml:"blacklist" doc:"SQL sender and recipient blacklists (postfix_liste_noire_*)."`
	DNSBL       DNSBL     `yaml:"dnsbl" doc:"DNS block and allow lists, weighted like postscreen_dnsbl_sites."`
	Greylist    Greylist  `yaml:"greylist" doc:"Greylisting (postgrey semantics)."`
	RateLimit   RateLimit `yaml:"ratelimit" doc:"Rate limits on authenticated users, senders and clients."`
	StateFile   string    `yaml:"state_file" doc:"SQLite file of the greylisting and rate-limit state. Default: paths.postkit_run/policyd.sqlite." kind:"path"`
	Metrics     string    `yaml:"metrics" doc:"Optional host:port serving Prometheus metrics (a bare port listens on 127.0.0.1); empty disables." kind:"listen"`

	// Neither the policy protocol nor the metrics endpoint authenticates:
	// inet listeners other hosts can reach serve only the networks named.
	AllowClients        []CIDR `yaml:"allow_clients" doc:"Networks of the MTAs that may connect to an inet: listen address, e.g. [192.0.2.25/32]; the daemon closes and logs every other connection. Required when listen can be reached from other hosts (any address but loopback): the policy protocol has no authentication. Not used with unix: sockets, where socket_mode and socket_group decide." kind:"cidr"`
	MetricsAllowClients []CIDR `yaml:"metrics_allow_clients" doc:"Networks that may fetch the metrics, e.g. the Prometheus server's [192.0.2.9/32]; every other connection is closed and logged. Required when metrics can be reached from other hosts (any address but loopback). A list of its own: a scraper need not be allowed to ask the policy daemon." kind:"cidr"`
}

// SPF configures the SPF check.
type SPF struct {
	Mode                 string   `yaml:"mode" doc:"enforce rejects SPF fail with 550 5.7.23; header only adds Received-SPF (a safe roll-out)." enum:"enforce,header" kind:"enum"`
	HeloReject           BoolWord `yaml:"helo_reject" doc:"When the HELO identity's result refuses the message (enforce mode), as postfix-policyd-spf-python's HELO_reject: fail; softfail (softfail or fail); spf_not_pass (fail, softfail or neutral; permerror follows permerror); null (fail, for the null sender only); false (never, the result is recorded); no_check (HELO not evaluated, nor a null sender, whose only identity it is). permerror (below) applies to both identities. true, from older files, is fail." enum:"fail,softfail,spf_not_pass,null,false,no_check,true" kind:"enum"`
	MailFromReject       BoolWord `yaml:"mail_from_reject" doc:"When the MAIL FROM identity's result refuses the message (enforce mode), as the peer's Mail_From_reject: fail; softfail (softfail or fail; RFC 7208 advises against it); spf_not_pass (fail, softfail or neutral; permerror follows permerror); false (never, the result is recorded); no_check (not evaluated; a sender in one of our domains still is, for own_domains)." enum:"fail,softfail,spf_not_pass,false,no_check" kind:"enum"`
	RejectNotPassDomains []string `yaml:"reject_not_pass_domains" doc:"Sender domains whose softfail or neutral result is refused like a fail (the peer's Reject_Not_Pass_Domains), for commonly forged domains that publish ~all. Not with mail_from_reject false." kind:"domain"`
	HeloWhitelist        []string `yaml:"helo_whitelist" doc:"HELO names never checked (the peer's HELO_Whitelist): trusted relays, a secondary MX. A name counts only when it has an A or AAAA record holding the client's address, so a forged HELO skips nothing." kind:"domain"`
	HeaderType           string   `yaml:"header_type" doc:"The field recording the result (the peer's Header_Type): spf prepends Received-SPF; ar prepends Authentication-Results with milter.dkim.authserv_id (the milter keeps it, sealed like Received-SPF, and its spam filter reads the spf= result from it); none prepends nothing (the spam filter then has no SPF result)." enum:"spf,ar,none" kind:"enum"`
	TempError            string   `yaml:"temperror" doc:"On a DNS temporary error: defer (DEFER_IF_PERMIT) or accept." enum:"defer,accept" kind:"enum"`
	PermError            string   `yaml:"permerror" doc:"On a broken SPF record: accept (with a header) or reject." enum:"accept,reject" kind:"enum"`
	AllowIPs             []CIDR   `yaml:"allow_ips" doc:"Clients never checked (the peer's skip_addresses and Whitelist; also exempt from own_domains and milter.own_from)." kind:"cidr"`
	AllowDomains         []string `yaml:"allow_domains" doc:"Sender domains never checked (except by own_domains: the client chooses the sender)." kind:"domain"`
	OwnDomains           string   `yaml:"own_domains" doc:"Mail from a client that neither authenticated nor is in trusted_networks or allow_ips, whose envelope sender is in one of our domains (domains and the database): enforce refuses it at RCPT unless SPF passes (550; a DNS error defers with 4xx), whatever the mode; off leaves it to the rules above. Every other host that sends as your domains (a second server, a newsletter service) must be in their SPF record; a forwarder that keeps our senders must rewrite them (SRS) or be in allow_ips." enum:"enforce,off" kind:"enum"`
}

// Blacklist configures the SQL blacklists.
type Blacklist struct {
	Owner         string `yaml:"owner" doc:"Who checks the SQL blacklists: postfix (check_*_access sqlite: maps in main.cf) or policy (the policy daemon, with parent-domain and extension matching; it judges inbound mail at RCPT, and mail from trusted networks and authenticated users only at end of data, for single-recipient messages)." enum:"postfix,policy" kind:"enum"`
	ParentDomains bool   `yaml:"parent_domains" doc:"A row for example.org also matches sub.example.org (policy owner only)."`
}

// DNSBL configures block and allow lists.
type DNSBL struct {
	Sites        []string `yaml:"sites" doc:"Sites with optional answer filter and weight, e.g. zen.spamhaus.org=127.0.0.[2..11]*3 or list.dnswl.org=127.0.[0..255].[1..3]*-2." kind:"dnsbl"`
	Threshold    int      `yaml:"threshold" doc:"Reject when the summed weight reaches this."`
	CheckPrivate bool     `yaml:"check_private" doc:"Also query loopback and private (RFC 1918, RFC 4193) clients, which public lists never list; for test lists and internal relays."`
}

// Greylist configures greylisting.
type Greylist struct {
	Delay          Duration `yaml:"delay" doc:"How long a new triplet is deferred."`
	RetryWindow    Duration `yaml:"retry_window" doc:"How long a deferred triplet waits for its retry."`
	MaxAge         Duration `yaml:"max_age" doc:"How long a passed triplet is remembered."`
	AutoAllow      int      `yaml:"auto_allow" doc:"Allow a client outright after this many passed triplets; 0 never."`
	AllowIPs       []CIDR   `yaml:"allow_ips" doc:"Clients never greylisted." kind:"cidr"`
	Clients        []string `yaml:"clients" doc:"Clients never greylisted, written as lines of postgrey's whitelist_clients: a host name (Postfix's verified client name, or any name under it), /regexp/ over that name (RE2, case-insensitive), an address, its first octets (192.0.2), or a network." kind:"hostglob"`
	ClientFiles    []string `yaml:"client_files" doc:"Files in postgrey's whitelist_clients format, read as they are (comments with #), e.g. Debian's /etc/postgrey/whitelist_clients and whitelist_clients.local; read again on SIGHUP. A missing file or a bad line stops the daemon with file:line." kind:"path"`
	Recipients     []string `yaml:"recipients" doc:"Recipients never greylisted, written as lines of postgrey's whitelist_recipients: user@ (that local part in every domain), user@example.org, example.org (and its sub-domains) or /regexp/ over the address. A recipient with an extension (user+tag@) also matches without it." kind:"rcptglob"`
	RecipientFiles []string `yaml:"recipient_files" doc:"Files in postgrey's whitelist_recipients format, e.g. /etc/postgrey/whitelist_recipients." kind:"path"`
	Text           string   `yaml:"text" doc:"Text of the deferral (postgrey --greylist-text), sent as DEFER_IF_PERMIT 4.7.1 TEXT: %s is replaced by the seconds left, %r by the recipient domain, %% by %." kind:"text"`
	Privacy        bool     `yaml:"privacy" doc:"Store a SHA-256 digest of each (client network, sender, recipient) triplet instead of the addresses (postgrey --privacy); the state file then holds no address. Switching it starts every triplet over."`
}

// RateLimit configures rate limits.
type RateLimit struct {
	Limits []Limit `yaml:"limits" doc:"Each limit counts messages or recipients per key over a sliding window." example:"{key: sasl_user, count: recipients, max: 500, window: 1h}|{key: client_ip, count: messages, max: 100, window: 1m}"`
}

// Limit is one rate limit.
type Limit struct {
	Key    string   `yaml:"key" doc:"What is counted per: sasl_user, sender or client_ip. The policy protocol's names sasl_username and client_address are accepted too, as --ratelimit accepts both." enum:"sasl_user,sender,client_ip" required:"true" kind:"enum"`
	Count  string   `yaml:"count" doc:"messages or recipients." enum:"messages,recipients" kind:"enum"`
	Max    int      `yaml:"max" doc:"Allowed within the window." required:"true"`
	Window Duration `yaml:"window" doc:"Sliding window, e.g. 1m, 1h, 24h." required:"true"`
}

// Sieve configures Dovecot's Sieve.
type Sieve struct {
	Enabled     bool   `yaml:"enabled" doc:"Enable Sieve in LMTP and install the global spam rule."`
	Dir         string `yaml:"dir" doc:"Directory of global Sieve scripts." kind:"path"`
	SpamFolder  string `yaml:"spam_folder" doc:"Folder that receives mail flagged X-Spam-Flag: YES." kind:"folder"`
	ManageSieve string `yaml:"managesieve" doc:"ManageSieve listener (RFC 5804) where users manage their own scripts; Debian's dovecot-managesieved listens on 4190. Empty disables." kind:"listen"`
	// UserDir and UserActive: see mailbox.go.
	UserDir    string `yaml:"user_dir" doc:"Where each user's own scripts live (~ is the user's home, the Maildir). The reference installation's sieve_dir." kind:"homepath"`
	UserActive string `yaml:"user_active" doc:"The user's active script (a symbolic link into user_dir that ManageSieve maintains, or a plain file). The default is the reference installation's location, so existing scripts keep running." kind:"homepath"`
}

// DNS configures postkit's resolver.
type DNS struct {
	Servers       []string `yaml:"servers" doc:"DNS servers as host:port. Empty uses /etc/resolv.conf." kind:"hostport"`
	Timeout       Duration `yaml:"timeout" doc:"Per-query timeout."`
	HostAddresses []string `yaml:"host_addresses" doc:"Public IPv4 and IPv6 addresses of this host (hostname): the A/AAAA records 'postkit dns records' prints and 'postkit dns check' checks, with their reverse DNS (PTR)." kind:"ip"`
}

// Duration is a time.Duration written as "300s", "5m", "24h".
type Duration time.Duration

// D returns the duration as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// CIDR is a network in CIDR notation; a bare address means a single host.
type CIDR string
