package spfcheck

import (
	"context"
	"net"
	"strings"
	"testing"
)

// TestRejectLevels: postfix-policyd-spf-python's HELO_reject and
// Mail_From_reject levels, and Reject_Not_Pass_Domains, in enforce mode.
func TestRejectLevels(t *testing.T) {
	const client = "198.51.100.7"
	cases := []struct {
		name         string
		cfg          Config
		helo, sender string
		action       string // prefix; "" = accepted
		reason       string
		headerPrefix string // prefix of the prepended field when accepted
	}{
		// HELO levels.
		{"helo fail: fail rejects", Config{}, "helofail.example", "a@pass.example", "550 5.7.23 helo helofail.example refused", "spf-helo=fail", ""},
		{"helo softfail: fail level accepts", Config{}, "helosoft.example", "a@soft.example", "", "spf=softfail", "Received-SPF: softfail"},
		{"helo softfail: softfail level rejects", Config{HeloReject: RejectSoftfail}, "helosoft.example", "a@pass.example", "550 5.7.23 SPF softfail for HELO helosoft.example from 198.51.100.7", "spf-helo=softfail", ""},
		{"helo neutral: softfail level accepts", Config{HeloReject: RejectSoftfail}, "heloneutral.example", "a@soft.example", "", "spf=softfail", "Received-SPF: softfail"},
		{"helo neutral: spf_not_pass rejects", Config{HeloReject: RejectNotPass}, "heloneutral.example", "a@pass.example", "550 5.7.23 SPF neutral for HELO", "spf-helo=neutral", ""},
		{"helo permerror: refused with X.7.24 when permerror rejects", Config{HeloReject: RejectNotPass, PermErrorReject: true}, "perm.example", "a@pass.example", "550 5.7.24 SPF permerror for HELO perm.example from 198.51.100.7", "spf-helo=permerror", ""},
		{"helo permerror: spf_not_pass alone accepts (as the peer)", Config{HeloReject: RejectNotPass}, "perm.example", "a@soft.example", "", "spf=softfail", "Received-SPF: softfail"},
		{"helo permerror: false level overrides permerror reject", Config{HeloReject: RejectNever, PermErrorReject: true}, "perm.example", "", "", "spf-helo=permerror", "Received-SPF: permerror"},
		{"helo none: spf_not_pass accepts", Config{HeloReject: RejectNotPass}, "nospf.example", "a@soft.example", "", "spf=softfail", "Received-SPF: softfail"},
		{"helo fail: null level, sender given, mailfrom decides", Config{HeloReject: RejectNull}, "helofail.example", "a@soft.example", "", "spf=softfail", "Received-SPF: softfail"},
		{"helo fail: null level, null sender rejects", Config{HeloReject: RejectNull}, "helofail.example", "", "550 5.7.23 helo helofail.example refused", "spf-helo=fail", ""},
		{"helo fail: false level, mailfrom decides", Config{HeloReject: RejectNever}, "helofail.example", "a@neutral.example", "", "spf=neutral", "Received-SPF: neutral"},
		{"helo no_check: helo never looked at", Config{HeloReject: NoCheck}, "helofail.example", "a@neutral.example", "", "spf=neutral", "Received-SPF: neutral"},
		// MAIL FROM levels.
		{"mailfrom softfail: fail level accepts", Config{}, "client.example", "a@soft.example", "", "spf=softfail", "Received-SPF: softfail"},
		{"mailfrom softfail: softfail level rejects", Config{MailFromReject: RejectSoftfail}, "client.example", "a@soft.example", "550 5.7.23 SPF softfail for a@soft.example from 198.51.100.7", "spf=softfail", ""},
		{"mailfrom neutral: spf_not_pass rejects", Config{MailFromReject: RejectNotPass}, "client.example", "a@neutral.example", "550 5.7.23 SPF neutral for a@neutral.example", "spf=neutral", ""},
		{"mailfrom none: spf_not_pass accepts", Config{MailFromReject: RejectNotPass}, "client.example", "a@nospf.example", "", "spf=none", "Received-SPF: none"},
		{"mailfrom fail: false level accepts with header", Config{MailFromReject: RejectNever}, "client.example", "a@plain.example", "", "spf=fail", "Received-SPF: fail"},
		{"mailfrom no_check: helo result only", Config{MailFromReject: NoCheck}, "helosoft.example", "a@plain.example", "", "spf-helo=softfail", "Received-SPF: softfail"},
		{"mailfrom and helo no_check: nothing", Config{MailFromReject: NoCheck, HeloReject: NoCheck}, "helopass.example", "a@plain.example", "", "spf=skip(no-check)", ""},
		// Reject_Not_Pass_Domains.
		{"not-pass domain: softfail rejected", Config{RejectNotPassDomains: []string{"Soft.Example"}}, "client.example", "a@soft.example", "550 5.7.23 SPF softfail for a@soft.example", "reject-not-pass-domain", ""},
		{"not-pass domain: neutral rejected", Config{RejectNotPassDomains: []string{"neutral.example"}}, "client.example", "a@neutral.example", "550 5.7.23 SPF neutral", "reject-not-pass-domain", ""},
		{"not-pass domain: none accepted", Config{RejectNotPassDomains: []string{"nospf.example"}}, "client.example", "a@nospf.example", "", "spf=none", "Received-SPF: none"},
		{"not-pass domain: other domain accepted", Config{RejectNotPassDomains: []string{"neutral.example"}}, "client.example", "a@soft.example", "", "spf=softfail", "Received-SPF: softfail"},
		{"not-pass domain: false level never rejects", Config{MailFromReject: RejectNever, RejectNotPassDomains: []string{"soft.example"}}, "client.example", "a@soft.example", "", "spf=softfail", "Received-SPF: softfail"},
		// Header mode refuses nothing, whatever the levels.
		{"header mode", Config{Mode: Header, HeloReject: RejectNotPass, MailFromReject: RejectNotPass}, "heloneutral.example", "a@soft.example", "", "spf=softfail", "Received-SPF: softfail"},
		// Header_Type.
		{"AR header", Config{HeaderType: AuthResults, AuthservID: "mx.example"}, "client.example", "a@soft.example", "", "spf=softfail",
			"Authentication-Results: mx.example; spf=softfail (mx.receiver.example: domain of transitioning a@soft.example does not designate 198.51.100.7 as permitted sender) smtp.mailfrom=a@soft.example"},
		{"AR header, helo identity", Config{HeaderType: AuthResults, MailFromReject: NoCheck}, "helosoft.example", "a@soft.example", "", "spf-helo=softfail",
			"Authentication-Results: mx.receiver.example; spf=softfail (mx.receiver.example: domain of transitioning postmaster@helosoft.example does not designate 198.51.100.7 as permitted sender) smtp.helo=helosoft.example"},
		{"no header", Config{HeaderType: NoHeader}, "client.example", "a@soft.example", "", "spf=softfail", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := newTestCheck(t, tc.cfg)
			d, err := c.Check(context.Background(), request(client, tc.helo, tc.sender))
			if err != nil {
				t.Fatal(err)
			}
			if tc.action == "" && d.Action != "" || !strings.HasPrefix(d.Action, tc.action) {
				t.Errorf("action %q; want %q…", d.Action, tc.action)
			}
			if !strings.Contains(d.Reason, tc.reason) {
				t.Errorf("reason %q; want …%s…", d.Reason, tc.reason)
			}
			switch {
			case tc.headerPrefix == "" && len(d.Prepend) != 0:
				t.Errorf("prepend %q; want none", d.Prepend)
			case tc.headerPrefix != "" && (len(d.Prepend) != 1 || !strings.HasPrefix(d.Prepend[0], tc.headerPrefix)):
				t.Errorf("prepend %q; want %q…", d.Prepend, tc.headerPrefix)
			}
		})
	}
	for _, bad := range []string{"sometimes", "pass"} {
		if _, err := New(Config{HeloReject: Level(bad)}, net.DefaultResolver); err == nil {
			t.Errorf("HeloReject %q accepted", bad)
		}
	}
	if _, err := New(Config{MailFromReject: RejectNull}, net.DefaultResolver); err == nil {
		t.Error("MailFromReject null accepted (HELO only)")
	}
	if _, err := New(Config{HeaderType: "both"}, net.DefaultResolver); err == nil {
		t.Error("HeaderType both accepted")
	}
}
