package scrub_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/postkit/postkit/milter/filter"
	"github.com/postkit/postkit/milter/milterd"
	"github.com/postkit/postkit/milter/miltertest"
	"github.com/postkit/postkit/milter/scrub"
)

func TestRedactReceived(t *testing.T) {
	tests := []struct {
		in     string
		want   string
		wantOK bool
	}{
		{"from laptop (host.isp.example [192.0.2.7])\r\n\tby mx.postkit.test (Postfix) with ESMTPSA id 4AB;\r\n\tMon, 1 Jan 2024 00:00:00 +0000",
			"by mx.postkit.test (Postfix) with ESMTPSA id 4AB;\r\n\tMon, 1 Jan 2024 00:00:00 +0000", true},
		{"from [192.0.2.7] (unknown [192.0.2.7]) by webmail.postkit.test with ESMTPSA; date",
			"by webmail.postkit.test with ESMTPSA; date", true},
		{"from x (comment with by inside [192.0.2.7]) by mx with ESMTPA", "by mx with ESMTPA", true},
		{"from x (nested (by) \\) by) by mx", "by mx", true},
		{"by mx.postkit.test (Postfix, from userid 1000) id 1", "by mx.postkit.test (Postfix, from userid 1000) id 1", true},
		{"from laptop [192.0.2.7] with ESMTPSA", "from laptop [192.0.2.7] with ESMTPSA", false},
		{"FROM x BY y", "BY y", true},
		{"fromage by y", "fromage by y", true},
	}
	for _, tc := range tests {
		got, ok := scrub.RedactReceived(tc.in)
		if got != tc.want || ok != tc.wantOK {
			t.Errorf("RedactReceived(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.wantOK)
		}
	}
}

func TestNewValidates(t *testing.T) {
	tests := []struct {
		rule    scrub.Rule
		wantErr string
	}{
		{scrub.Rule{Header: "X-Mailer"}, ""},
		{scrub.Rule{Header: "Received", Match: "with ESMTPSA", Action: "redact-received"}, ""},
		{scrub.Rule{Header: "X-Foo", Action: "replace", Replace: "hidden"}, ""},
		{scrub.Rule{Header: ""}, "header name is empty"},
		{scrub.Rule{Header: "X Foo"}, "printable ASCII"},
		{scrub.Rule{Header: "X-Foo:"}, "printable ASCII"},
		{scrub.Rule{Header: "X-Foo", Match: "(unclosed"}, "not a valid regular expression"},
		{scrub.Rule{Header: "X-Foo", Action: "replace"}, "needs a replacement"},
		{scrub.Rule{Header: "X-Foo", Action: "replace", Replace: "a\r\nb"}, "one line"},
		{scrub.Rule{Header: "X-Foo", Action: "IGNORE"}, "want delete, replace or redact-received"},
	}
	for _, tc := range tests {
		_, err := scrub.New(scrub.Config{Rules: []scrub.Rule{tc.rule}})
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%+v: unexpected error %v", tc.rule, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "scrub: rule 1")):
			t.Errorf("%+v: error %v, want one containing %q", tc.rule, err, tc.wantErr)
		}
	}
}

const submission = "Received: from laptop (host.isp.example [192.0.2.7])\r\n" +
	"\tby webmail.postkit.test (Postfix) with ESMTPSA id 4AB\r\n\tfor <bob@example.org>; Mon, 1 Jan 2024 00:00:00 +0000\r\n" +
	"Received: from relay.example (relay.example [198.51.100.1]) by mx.example with ESMTP id 9; Mon, 1 Jan 2024 00:00:00 +0000\r\n" +
	"X-Mailer: Thunderbird 115\r\nX-Originating-IP: [192.0.2.7]\r\nUser-Agent: Mutt\r\nx-mailer: second\r\n" +
	"From: <alice@postkit.test>\r\nSubject: hi\r\n\r\nbody\r\n"

func headers(raw []byte) string {
	var out []string
	for _, h := range miltertest.Headers(raw) {
		out = append(out, h.Name+": "+h.Value)
	}
	return strings.Join(out, "\n")
}

func TestScrubThroughDaemon(t *testing.T) {
	tests := []struct {
		name  string
		rules []scrub.Rule
		auth  bool // SASL-authenticated (outbound)
		addr  string
		want  string
	}{
		{
			name: "outbound with default rules",
			auth: true, addr: "192.0.2.7",
			want: "Received: by webmail.postkit.test (Postfix) with ESMTPSA id 4AB\r\n\tfor <bob@example.org>; Mon, 1 Jan 2024 00:00:00 +0000\n" +
				"Received: from relay.example (relay.example [198.51.100.1]) by mx.example with ESMTP id 9; Mon, 1 Jan 2024 00:00:00 +0000\n" +
				"From: <alice@postkit.test>\nSubject: hi",
		},
		{
			name: "inbound is never scrubbed",
			addr: "192.0.2.7",
			want: headers([]byte(submission)),
		},
		{
			name:  "custom rules: replace, delete by value",
			rules: []scrub.Rule{{Header: "User-Agent", Action: "replace", Replace: "postkit"}, {Header: "X-Mailer", Match: "^second$"}},
			auth:  true, addr: "192.0.2.7",
			want: strings.Replace(strings.Replace(headers([]byte(submission)), "User-Agent: Mutt", "User-Agent: postkit", 1), "\nx-mailer: second", "", 1),
		},
		{
			name: "trusted network is outbound",
			addr: "127.0.0.1",
			want: "Received: by webmail.postkit.test (Postfix) with ESMTPSA id 4AB\r\n\tfor <bob@example.org>; Mon, 1 Jan 2024 00:00:00 +0000\n" +
				"Received: from relay.example (relay.example [198.51.100.1]) by mx.example with ESMTP id 9; Mon, 1 Jan 2024 00:00:00 +0000\n" +
				"From: <alice@postkit.test>\nSubject: hi",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := scrub.New(scrub.Config{Rules: tc.rules})
			if err != nil {
				t.Fatal(err)
			}
			srv := miltertest.Start(t, "unix", milterd.Config{}, f)
			c, err := srv.Dial(miltertest.ConnInfo{Hostname: "laptop", Addr: tc.addr, Helo: "laptop"})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			m := &miltertest.Message{From: "alice@postkit.test", Rcpts: []string{"bob@example.org"}, Raw: []byte(submission)}
			if tc.auth {
				m.Macros = map[byte][]string{'M': {"{auth_authen}", "alice", "{auth_type}", "PLAIN"}}
			}
			res, err := c.Send(m)
			if err != nil {
				t.Fatal(err)
			}
			if res.Final == nil {
				// Accepted at end of headers without changes.
				res.Final = []byte(submission)
			}
			if got := headers(res.Final); got != tc.want {
				t.Errorf("headers\n got:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

func TestHeadersDirect(t *testing.T) {
	f, err := scrub.New(scrub.Config{})
	if err != nil {
		t.Fatal(err)
	}
	hs, _, _ := miltertest.SplitMessage([]byte(submission))
	m := &filter.Message{Outbound: true, Headers: hs, Conn: &filter.Conn{}}
	c := filter.NewChanges(m)
	if b, err := f.Headers(m, c); err != nil || b != nil {
		t.Fatalf("Headers = %v, %v; want nil, nil (no body needed)", b, err)
	}
	var ops []string
	for _, op := range c.Ops {
		ops = append(ops, fmt.Sprintf("%s#%d=%q", op.Name, op.Index, op.Value))
	}
	// Deletions refer to the view at the time: x-mailer is the first X-Mailer
	// left once the first one is gone.
	want := `Received#1="by webmail.postkit.test (Postfix) with ESMTPSA id 4AB\r\n\tfor <bob@example.org>; Mon, 1 Jan 2024 00:00:00 +0000" X-Mailer#1="" X-Originating-IP#1="" User-Agent#1="" x-mailer#1=""`
	if got := strings.Join(ops, " "); got != want {
		t.Errorf("ops\n got %s\nwant %s", got, want)
	}
}

func ExampleNew() {
	f, err := scrub.New(scrub.Config{Rules: []scrub.Rule{
		{Header: "X-Mailer", Action: scrub.ActionDelete},
		{Header: "Received", Match: `with ESMTPSA`, Action: scrub.ActionRedactReceived},
	}})
	if err != nil {
		fmt.Println(err)
		return
	}
	m := &filter.Message{Outbound: true, Headers: []filter.Header{
		{Name: "Received", Value: "from pc ([192.0.2.1]) by mx with ESMTPSA id 1"},
		{Name: "X-Mailer", Value: "Foo 1.0"},
	}}
	f.Headers(m, filter.NewChanges(m))
	for _, h := range m.Headers {
		fmt.Printf("%s: %s\n", h.Name, h.Value)
	}
	// Output: Received: by mx with ESMTPSA id 1
}

func FuzzRedactReceived(f *testing.F) {
	f.Add("from laptop (host [192.0.2.7])\r\n\tby mx (Postfix) with ESMTPSA id 1")
	f.Add("from x (a (b) \\) by) by y")
	f.Add("by mx id 1")
	f.Fuzz(func(t *testing.T, v string) {
		got, ok := scrub.RedactReceived(v)
		if !strings.HasSuffix(v, got) {
			t.Fatalf("RedactReceived(%q) = %q: not a suffix of the input", v, got)
		}
		if ok && got != v && !strings.HasPrefix(strings.ToLower(got), "by") {
			t.Fatalf("RedactReceived(%q) = %q: a redacted value starts with the by clause", v, got)
		}
	})
}
