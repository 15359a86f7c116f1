package config

// DMARC configures the milter's DMARC filter (milter/dmarc) and its
// aggregate reports (postkit dmarc report).
type DMARC struct {
	Enabled           bool        `yaml:"enabled" doc:"Evaluate DMARC for inbound mail (clients that neither authenticated nor are in trusted_networks) after DKIM verification, and add spf= and dmarc= to this server's Authentication-Results field."`
	Action            string      `yaml:"action" doc:"What a message that fails DMARC gets: reject honours the domain's policy (p=reject refused with 550 5.7.1 at end of data, p=quarantine gets the X-Postkit-DMARC field that the generated Sieve rule files into sieve.spam_folder and the spam filter scores); quarantine gives both policies the field; none only records (monitoring). DNS trouble (temperror) never refuses." enum:"reject,quarantine,none" kind:"enum"`
	BadFrom           string      `yaml:"bad_from" doc:"A message without a From domain to evaluate (no From address, or none with a usable domain): permerror records dmarc=permerror and delivers it; reject refuses it with 550 5.7.1, and also refuses a From with addresses in several domains, which are otherwise each evaluated, the strictest failing policy applying (RFC 7489 section 6.6.1)." enum:"permerror,reject" kind:"enum"`
	TrustedForwarders []CIDR      `yaml:"trusted_forwarders" doc:"Clients (forwarders, list servers) whose mail is never refused or quarantined by DMARC; still evaluated and reported as trusted_forwarder." kind:"cidr"`
	ExemptRecipients  []string    `yaml:"exempt_recipients" doc:"Envelope recipients whose mail is never refused or quarantined by DMARC (an address, or @domain for all of a domain's); reported as local_policy." kind:"sender"`
	ExemptListIDs     []string    `yaml:"exempt_list_ids" doc:"Mailing lists (the id of List-Id, RFC 2919, e.g. talk.lists.example.org) whose mail is never refused or quarantined by DMARC; reported as mailing_list." kind:"domain"`
	Report            DMARCReport `yaml:"report" doc:"Aggregate reports (RFC 7489 section 7.2) to the rua= addresses of the domains evaluated."`
}

// DMARCReport configures aggregate reporting.
type DMARCReport struct {
	Enabled  bool     `yaml:"enabled" doc:"Record every evaluation of a domain that asks for reports (rua=), for the daily 'postkit dmarc report --send' (examples/systemd/postkit-dmarc-report.timer, or its cron line)."`
	Path     string   `yaml:"path" doc:"SQLite file of the recorded evaluations, written by the milter and read by 'postkit dmarc report'; unused with state.driver postgresql, which keeps them in the shared database (each day's report then sent by one host). Default: paths.postkit_run/dmarc.sqlite." kind:"path"`
	OrgName  string   `yaml:"org_name" doc:"Organisation named in reports (org_name). Default: the hostname." kind:"text"`
	From     string   `yaml:"from" doc:"Sender of the reports (From and envelope). Default: postmaster@ the first of domains." kind:"email"`
	MaxBytes int64    `yaml:"max_bytes" doc:"Largest report mail sent (after gzip and base64); a rua= size limit smaller than it wins, and a report over the limit is not sent (RFC 7489 section 7.2.1.1), which is logged."`
	Keep     Duration `yaml:"keep" doc:"How long recorded evaluations are kept after their report day, for --print and a report sent again."`
}
