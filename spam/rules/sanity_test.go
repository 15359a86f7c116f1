package rules

import (
	"context"
	"testing"
	"time"

	"github.com/postkit/postkit/spam/content"
)

const sanityRules = `
eval DF date_future(3)
eval DP date_past(96)
eval WD date_weekday_wrong()
eval FF forged_freemail()
eval HN helo_numeric()
eval SD subject_rcpt_domain()
`

func evalAt(t *testing.T, s *Set, raw string, now time.Time, helo string, facts map[string]bool) map[string]bool {
	t.Helper()
	m := content.Parse(context.Background(), []byte(raw), content.Limits{})
	hits, err := s.Eval(context.Background(), &Context{Msg: m, Raw: []byte(raw), Bayes: -1, Facts: facts, Now: now, Helo: helo})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, h := range hits {
		out[h.Name] = true
	}
	return out
}

func TestDateSkew(t *testing.T) {
	s := compile(t, sanityRules)
	arrival := time.Date(2002, 9, 4, 18, 0, 0, 0, time.UTC)
	cases := []struct {
		name, date string
		now        time.Time
		received   string
		future     bool
		past       bool
	}{
		{name: "on time", date: "Wed, 4 Sep 2002 19:30:00 +0200", now: arrival},
		{name: "four hours ahead", date: "Wed, 4 Sep 2002 22:00:01 +0000", now: arrival, future: true},
		{name: "ahead by the zone only", date: "Wed, 4 Sep 2002 22:00:00 +0400", now: arrival},
		{name: "five days old", date: "Fri, 30 Aug 2002 17:00:00 +0000", now: arrival, past: true},
		{name: "unparsable", date: "sometime soon", now: arrival},
		// Without an arrival time the newest Received field's date stands for it.
		{name: "stored, ahead of its Received", date: "Thu, 5 Sep 2002 09:00:00 +0000",
			received: "from a.example by mx.example with ESMTP id 1; Wed, 4 Sep 2002 18:00:00 +0000", future: true},
		{name: "stored, in step", date: "Wed, 4 Sep 2002 17:59:00 +0000",
			received: "from a.example by mx.example with ESMTP id 1; Wed, 4 Sep 2002 18:00:00 +0000"},
	}
	for _, c := range cases {
		raw := ""
		if c.received != "" {
			raw = "Received: " + c.received + "\r\n"
		}
		raw += "From: a@b.example\r\nDate: " + c.date + "\r\nSubject: x\r\n\r\nbody\r\n"
		got := evalAt(t, s, raw, c.now, "", nil)
		if got["DF"] != c.future || got["DP"] != c.past {
			t.Errorf("%s: date_future %v date_past %v, want %v %v", c.name, got["DF"], got["DP"], c.future, c.past)
		}
	}
}

func TestDateWeekday(t *testing.T) {
	s := compile(t, sanityRules)
	for date, want := range map[string]bool{
		"Wed, 4 Sep 2002 18:00:00 +0000": false,
		"Mon, 4 Sep 2002 18:00:00 +0000": true,
		"4 Sep 2002 18:00:00 +0000":      false, // no day named
	} {
		got := evalAt(t, s, "From: a@b.example\r\nDate: "+date+"\r\n\r\nx\r\n", time.Now(), "", nil)
		if got["WD"] != want {
			t.Errorf("%q: date_weekday_wrong %v, want %v", date, got["WD"], want)
		}
	}
}

func TestForgedFreemail(t *testing.T) {
	s := compile(t, sanityRules)
	const viaYahoo = "Received: from sonic301-2.consmr.mail.ne1.yahoo.com (sonic301-2.consmr.mail.ne1.yahoo.com [66.163.184.201]) by mx.example\r\n"
	const viaOther = "Received: from dsl-10-1.isp.example (unknown [198.51.100.7]) by mx.example\r\n"
	cases := []struct {
		name, head string
		facts      map[string]bool
		want       bool
	}{
		{"yahoo through yahoo", viaYahoo + "From: x@yahoo.com\r\n", nil, false},
		{"yahoo through a DSL line", viaOther + "From: x@yahoo.com\r\n", nil, true},
		{"aol through yahoo's servers", viaYahoo + "From: x@aol.com\r\n", nil, false},
		{"signed by its domain", viaOther + "From: x@gmail.com\r\n", map[string]bool{"dkim_valid_from": true}, false},
		{"not free mail", viaOther + "From: x@shop.example\r\n", nil, false},
		{"no Received field to judge by", "From: x@hotmail.com\r\n", nil, false},
	}
	for _, c := range cases {
		got := evalAt(t, s, c.head+"Subject: x\r\n\r\nbody\r\n", time.Now(), "", c.facts)
		if got["FF"] != c.want {
			t.Errorf("%s: forged_freemail %v, want %v", c.name, got["FF"], c.want)
		}
	}
}

func TestHeloNumeric(t *testing.T) {
	s := compile(t, sanityRules)
	cases := []struct {
		name, helo, received string
		want                 bool
	}{
		{"HELO given, a name", "mail.example.org", "", false},
		{"HELO given, an address literal", "[192.0.2.1]", "", true},
		{"HELO given, a bare address", "192.0.2.1", "", true},
		{"from the Received field", "", "from 192.0.2.1 (unknown [192.0.2.1]) by mx.example", true},
		{"Received field with a name", "", "from mail.example.org (mail.example.org [192.0.2.1]) by mx.example", false},
	}
	for _, c := range cases {
		raw := ""
		if c.received != "" {
			raw = "Received: " + c.received + "\r\n"
		}
		raw += "From: a@b.example\r\n\r\nx\r\n"
		if got := evalAt(t, s, raw, time.Now(), c.helo, nil); got["HN"] != c.want {
			t.Errorf("%s: helo_numeric %v, want %v", c.name, got["HN"], c.want)
		}
	}
}

func TestSanityArgs(t *testing.T) {
	for _, r := range []string{"eval X date_future()", "eval X date_past(-1)", "eval X forged_freemail(1)", "eval X helo_numeric(x)", "eval X date_weekday_wrong(2)"} {
		s := NewSet()
		if err := s.Parse("x.rules", []byte(r)); err == nil {
			if err := s.Compile(); err == nil {
				t.Errorf("%q: accepted", r)
			}
		}
	}
}

// TestDefaultHeaderRules checks the shipped header rules on the messages
// they are meant for and on ordinary mail.
func TestDefaultHeaderRules(t *testing.T) {
	s, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	const plain = "Received: from mail.example.org (mail.example.org [192.0.2.1]) by mx.example with ESMTP id 1; Wed, 4 Sep 2002 18:00:00 +0000\r\n" +
		"From: Ann <ann@example.org>\r\nTo: Bob <bob@example.net>, carol@example.net\r\nDate: Wed, 4 Sep 2002 17:59:00 +0000\r\n" +
		"Message-ID: <1@example.org>\r\nSubject: Minutes of the release meeting\r\nX-Mailer: Mutt 1.4\r\n\r\nSee you.\r\n"
	bulk := "Received: from 198.51.100.7 (unknown [198.51.100.7]) by mx.example with SMTP id 2; Wed, 4 Sep 2002 18:00:00 +0000\r\n" +
		"From: deals@hotmail.com\r\nTo: a1@x.example, a2@x.example, a3@x.example, a4@x.example, a5@x.example, a6@x.example\r\n" +
		"Date: Mon, 5 Sep 2002 03:00:00 +0000\r\nMessage-ID: <ABCDEF@x.example>\r\nSubject: Your offer          ab12cd\r\n" +
		"X-Mailer: Microsoft Outlook Express 6.00.2600.0000\r\nX-MSMail-Priority: Normal\r\n" +
		"Content-Type: text/html\r\n\r\n<p>hello</p>\r\n"
	check := func(raw string, want map[string]bool) {
		t.Helper()
		got := evalAt(t, s, raw, time.Time{}, "", nil)
		for name, w := range want {
			if got[name] != w {
				t.Errorf("%s: hit %v, want %v", name, got[name], w)
			}
		}
	}
	none := map[string]bool{}
	for _, n := range []string{"HDR_DATE_FUTURE", "HDR_DATE_NO_ZONE", "HDR_DATE_WEEKDAY", "HDR_TO_SEVERAL", "HDR_FORGED_FREEMAIL",
		"HDR_MIMEOLE_MISSING", "HDR_FORGED_OE", "RCVD_HELO_NUMERIC", "HTML_NO_MAILER", "SUBJ_TRAILING_ID"} {
		none[n] = false
	}
	check(plain, none)
	all := map[string]bool{}
	for n := range none {
		all[n] = true
	}
	// 5 September 2002 was a Thursday, 9 hours after the arrival.
	delete(all, "HDR_DATE_NO_ZONE")
	delete(all, "HTML_NO_MAILER")
	check(bulk, all)
	check("From: a@x.example\r\nDate: Thu, 5 Sep 2002 03:00:00\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n",
		map[string]bool{"HDR_DATE_NO_ZONE": true, "HTML_NO_MAILER": true, "HDR_DATE_FUTURE": false})
}

func TestSubjectRcptDomain(t *testing.T) {
	s := compile(t, sanityRules)
	for _, c := range []struct {
		to, subj string
		want     bool
	}{
		{"webmaster@example.org", "example.org", true},
		{"Web Master <webmaster@www.example.org>", "www.example.org", true},
		{"list-admin@lists.example.org", "example.org", true},
		{"a@example.org", "lists.example.org", true},
		{"a@example.org", "example.com", false},
		{"a@example.org", "About example.org", false},
		{"a@example.org", "org", false},
		{"a@notexample.org", "example.org", false},
	} {
		got := evalAt(t, s, "From: a@b.example\r\nTo: "+c.to+"\r\nSubject: "+c.subj+"\r\n\r\nx\r\n", time.Now(), "", nil)
		if got["SD"] != c.want {
			t.Errorf("To %q Subject %q: subject_rcpt_domain %v, want %v", c.to, c.subj, got["SD"], c.want)
		}
	}
}
