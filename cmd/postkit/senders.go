package main

import (
	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/sqlmaps"
)

// senderRules are the settings of c the sender-login map depends on (the
// map Postfix reads and the milter's From check): sender_logins and
// recipient_delimiter. A nil c means the defaults, for commands given only
// --db.
func senderRules(c *config.Config) sqlmaps.SenderRules {
	if c == nil {
		c = config.Defaults()
	}
	r := sqlmaps.SenderRules{Delimiter: c.RecipientDelim}
	for _, g := range c.SenderLogins {
		r.Grants = append(r.Grants, sqlmaps.SenderGrant{Sender: g.Sender, Logins: append([]string(nil), g.Logins...)})
	}
	return r
}
