package generate

import (
	"strings"
	"testing"

	"github.com/postkit/postkit/internal/config"
)

// A service account Dovecot would run as must exist on the live system:
// doveconf accepts any name, Dovecot then does not start.
func TestAccounts(t *testing.T) {
	parse := func(yaml string) *config.Config {
		c, _, err := config.Parse("x.yaml", []byte("hostname: mail.exemple.fr\ndomains: [exemple.fr]\n"+yaml))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	missing := parse("milter: {enabled: true, spam: {learn: {user: postkit-no-such-user}}}\n")
	err := accounts(missing, "/")
	if err == nil || !strings.Contains(err.Error(), `milter.spam.learn.user: account "postkit-no-such-user" does not exist here`) {
		t.Errorf("missing account on the live system: %v", err)
	}
	if err := accounts(missing, "/srv/other-host"); err != nil {
		t.Errorf("files for another host: %v, want no check", err)
	}
	if err := accounts(parse("milter: {enabled: true, spam: {learn: {user: root}}}\n"), "/"); err != nil {
		t.Errorf("root exists: %v", err)
	}
	if err := accounts(parse("milter: {enabled: true, spam: {learn: {user: postkit-no-such-user, imapsieve: false}}}\n"), "/"); err != nil {
		t.Errorf("no learning service: %v, want no check", err)
	}
}
