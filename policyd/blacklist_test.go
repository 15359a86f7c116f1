package policyd

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"testing"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestAccessKeys(t *testing.T) {
	tests := []struct {
		addr   string
		delims string
		dot    bool
		want   []string
	}{
		{"user@example.com", "", false, []string{"user@example.com", "example.com", "com", "user@"}},
		{"User+Tag@Sub.Example.COM", "+", false, []string{
			"user+tag@sub.example.com", "user@sub.example.com", "sub.example.com", "example.com", "com", "user+tag@", "user@"}},
		{"user+tag@sub.example.com", "+", true, []string{
			"user+tag@sub.example.com", "user@sub.example.com", "sub.example.com", ".example.com", ".com", "user+tag@", "user@"}},
		{"user-tag@example.com", "+-", false, []string{"user-tag@example.com", "user@example.com", "example.com", "com", "user-tag@", "user@"}},
		// A delimiter in first position is not an extension.
		{"+tag@example.com", "+", false, []string{"+tag@example.com", "example.com", "com", "+tag@"}},
		{"user+tag@example.com", "", false, []string{"user+tag@example.com", "example.com", "com", "user+tag@"}},
		{"<a@example.com.>", "", false, []string{"a@example.com", "example.com", "com", "a@"}},
		{"root@[192.0.2.1]", "", false, []string{"root@[192.0.2.1]", "[192.0.2.1]", "root@"}},
		{"postmaster", "+", false, []string{"postmaster"}},
		{"a@b@example.org", "", false, []string{"a@b@example.org", "example.org", "org", "a@b@"}},
		{"", "+", false, nil},
	}
	for _, tt := range tests {
		got := AccessKeys(tt.addr, tt.delims, tt.dot)
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("AccessKeys(%q, %q, %v) = %q; want %q", tt.addr, tt.delims, tt.dot, got, tt.want)
		}
	}
}

func TestParseAccessAction(t *testing.T) {
	tests := []struct {
		in      string
		want    Decision
		wantErr bool
	}{
		{"REJECT", Decision{Action: "REJECT"}, false},
		{"reject go away", Decision{Action: "reject go away"}, false},
		{"  DISCARD ", Decision{Action: "DISCARD"}, false},
		{"OK", Decision{Action: "OK"}, false},
		{"550 go away", Decision{Action: "550 go away"}, false},
		{"450 4.7.1 later", Decision{Action: "450 4.7.1 later"}, false},
		{"12345", Decision{Action: "OK"}, false},
		{"550", Decision{Action: "OK"}, false}, // all-numerical, as in access(5)
		{"250 fine", Decision{}, true},
		{"DUNNO", Decision{Reason: "dunno"}, false},
		{"WARN look at this", Decision{Reason: "warn"}, false},
		{"PREPEND X-Blacklist: yes", Decision{Prepend: []string{"X-Blacklist: yes"}}, false},
		{"PREPEND nonsense", Decision{}, true},
		{"REDIRECT abuse@example.com", Decision{Action: "REDIRECT abuse@example.com"}, false},
		{"REDIRECT", Decision{}, true},
		{"FILTER smtp:[127.0.0.1]:10025", Decision{Action: "FILTER smtp:[127.0.0.1]:10025"}, false},
		{"permit_mynetworks", Decision{}, true},
		{"", Decision{}, true},
		{"REJECT a\nb", Decision{}, true},
		{"garbage", Decision{}, true},
	}
	for _, tt := range tests {
		got, err := ParseAccessAction(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParseAccessAction(%q) error = %v; want error %v", tt.in, err, tt.wantErr)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseAccessAction(%q) = %+v; want %+v", tt.in, got, tt.want)
		}
	}
}

// fakeBlacklist is an in-memory BlacklistStore that records its lookups.
type fakeBlacklist struct {
	senders map[string]struct {
		code int
		msg  string
	}
	recipients map[string]string
	err        error
	looked     []string
}

func (f *fakeBlacklist) LookupSenderBlacklist(_ context.Context, key string) (int, string, bool, error) {
	f.looked = append(f.looked, "s:"+key)
	if f.err != nil {
		return 0, "", false, f.err
	}
	r, ok := f.senders[key]
	return r.code, r.msg, ok, nil
}

func (f *fakeBlacklist) LookupRecipientBlacklist(_ context.Context, key string) (string, bool, error) {
	f.looked = append(f.looked, "r:"+key)
	if f.err != nil {
		return "", false, f.err
	}
	a, ok := f.recipients[key]
	return a, ok, nil
}

func newFakeBlacklist() *fakeBlacklist {
	return &fakeBlacklist{
		senders: map[string]struct {
			code int
			msg  string
		}{
			"tata@tata.fr":      {554, "Parle à ma main, ma tête est malade."},
			"spam.example":      {550, "5.7.1 domain refused"},
			"<>":                {550, "no bounces here"},
			"bad@example.org":   {250, "not a refusal code"},
			"nl@example.org":    {554, "two\nlines"},
			"empty@example.org": {554, ""},
		},
		recipients: map[string]string{
			"root@mail.exemple.fr": "REJECT",
			"sales@":               "550 go away",
			"trap.example":         "DISCARD",
			"ok@example.net":       "DUNNO",
			"example.net":          "REJECT whole domain",
			"restr@example.org":    "reject_unauth_destination",
			"tag@example.org":      "PREPEND X-Tagged: yes",
		},
	}
}

func TestBlacklistCheck(t *testing.T) {
	tests := []struct {
		name         string
		cfg          BlacklistConfig
		sender, rcpt string
		storeErr     error
		want         Decision
	}{
		{"sender exact", BlacklistConfig{}, "Tata@TATA.fr", "u@example.com",
			nil, Decision{Action: "554 Parle à ma main, ma tête est malade.", Reason: "blacklist=sender"}},
		{"sender subdomain (parent matching)", BlacklistConfig{}, "x@mx.spam.example", "u@example.com",
			nil, Decision{Action: "550 5.7.1 domain refused", Reason: "blacklist=sender"}},
		{"sender subdomain, dot style needs .spam.example", BlacklistConfig{SubdomainsNeedDot: true}, "x@mx.spam.example", "u@example.com",
			nil, Decision{}},
		{"null sender", BlacklistConfig{}, "", "u@example.com",
			nil, Decision{Action: "550 no bounces here", Reason: "blacklist=sender"}},
		{"invalid code gives no opinion", BlacklistConfig{}, "bad@example.org", "root@mail.exemple.fr",
			nil, Decision{Reason: "blacklist=error"}},
		{"line break gives no opinion", BlacklistConfig{}, "nl@example.org", "u@example.com",
			nil, Decision{Reason: "blacklist=error"}},
		{"empty message gets a text", BlacklistConfig{}, "empty@example.org", "u@example.com",
			nil, Decision{Action: "554 Access denied", Reason: "blacklist=sender"}},
		{"recipient exact", BlacklistConfig{}, "a@example.com", "ROOT@mail.exemple.fr",
			nil, Decision{Action: "REJECT", Reason: "blacklist=recipient"}},
		{"recipient extension stripped", BlacklistConfig{RecipientDelimiter: "+"}, "a@example.com", "root+x@mail.exemple.fr",
			nil, Decision{Action: "REJECT", Reason: "blacklist=recipient"}},
		{"recipient extension kept without delimiter", BlacklistConfig{}, "a@example.com", "root+x@mail.exemple.fr",
			nil, Decision{}},
		{"recipient user@ key", BlacklistConfig{}, "a@example.com", "sales@anywhere.example",
			nil, Decision{Action: "550 go away", Reason: "blacklist=recipient"}},
		{"recipient domain", BlacklistConfig{}, "a@example.com", "x@deep.trap.example",
			nil, Decision{Action: "DISCARD", Reason: "blacklist=recipient"}},
		{"DUNNO stops the search", BlacklistConfig{}, "a@example.com", "ok@example.net",
			nil, Decision{Reason: "blacklist=dunno"}},
		{"domain rejects others", BlacklistConfig{}, "a@example.com", "other@example.net",
			nil, Decision{Action: "REJECT whole domain", Reason: "blacklist=recipient"}},
		{"restriction name refused", BlacklistConfig{}, "a@example.com", "restr@example.org",
			nil, Decision{Reason: "blacklist=error"}},
		{"prepend", BlacklistConfig{}, "a@example.com", "tag@example.org",
			nil, Decision{Prepend: []string{"X-Tagged: yes"}, Reason: "blacklist=recipient"}},
		{"sender skipped", BlacklistConfig{SkipSender: true}, "tata@tata.fr", "u@example.com",
			nil, Decision{}},
		{"recipient skipped", BlacklistConfig{SkipRecipient: true}, "a@example.com", "root@mail.exemple.fr",
			nil, Decision{}},
		{"store error gives no opinion", BlacklistConfig{}, "tata@tata.fr", "root@mail.exemple.fr",
			errors.New("disk on fire"), Decision{Reason: "blacklist=error"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := newFakeBlacklist()
			store.err = tt.storeErr
			tt.cfg.Logger = quietLogger()
			b, err := NewBlacklist(tt.cfg, store)
			if err != nil {
				t.Fatal(err)
			}
			r := &Request{Attrs: map[string]string{"protocol_state": "RCPT", "sender": tt.sender, "recipient": tt.rcpt}}
			got, err := b.Check(context.Background(), r)
			if err != nil {
				t.Fatalf("Check error = %v; want nil (faults give no opinion)", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Check(sender=%q rcpt=%q) = %+v; want %+v (lookups %q)", tt.sender, tt.rcpt, got, tt.want, store.looked)
			}
			if strings.HasPrefix(got.Action, "5") && tt.storeErr != nil {
				t.Errorf("store error produced a 5xx answer %q", got.Action)
			}
		})
	}
}

func TestNewBlacklistErrors(t *testing.T) {
	if _, err := NewBlacklist(BlacklistConfig{}, nil); err == nil {
		t.Error("NewBlacklist(nil store) = nil error")
	}
	if _, err := NewBlacklist(BlacklistConfig{RecipientDelimiter: "@"}, newFakeBlacklist()); err == nil {
		t.Error("NewBlacklist(delimiter @) = nil error")
	}
}

func FuzzParseAccessAction(f *testing.F) {
	for _, s := range []string{"REJECT", "550 x", "PREPEND A: b", "123", "REDIRECT a@b", "DUNNO", "\n", "FILTER x:y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseAccessAction(s)
		if err != nil {
			if d.Final() {
				t.Fatalf("ParseAccessAction(%q) = %+v with error %v", s, d, err)
			}
			return
		}
		if strings.ContainsAny(d.Action, "\r\n") {
			t.Fatalf("ParseAccessAction(%q) action %q contains a line break", s, d.Action)
		}
		if c := d.Action; len(c) >= 3 && isAllDigits(c[:3]) && c != "OK" && c[0] != '4' && c[0] != '5' {
			t.Fatalf("ParseAccessAction(%q) passes code %q", s, c)
		}
	})
}

func FuzzAccessKeys(f *testing.F) {
	for _, s := range []string{"a+b@c.d", "@", "a@", "@b", "<>", "a@[1.2.3.4]", "x@.", "a@b..c"} {
		f.Add(s, "+")
	}
	f.Fuzz(func(t *testing.T, addr, delims string) {
		keys := AccessKeys(addr, delims, false)
		for _, k := range keys {
			if k == "" {
				t.Fatalf("AccessKeys(%q, %q) has an empty key: %q", addr, delims, keys)
			}
		}
		if len(keys) > 0 && keys[0] != strings.TrimSuffix(strings.ToLower(strings.TrimSpace(addr)), ".") && !strings.ContainsAny(addr, "<>@.") {
			t.Fatalf("AccessKeys(%q) first key %q is not the address", addr, keys[0])
		}
	})
}
