package blacklist

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	"github.com/postkit/postkit/policyd"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// fakeBlacklist is an in-memory Store that records its lookups.
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

func TestCheck(t *testing.T) {
	tests := []struct {
		name         string
		cfg          Config
		sender, rcpt string
		storeErr     error
		want         policyd.Decision
	}{
		{"sender exact", Config{}, "Tata@TATA.fr", "u@example.com",
			nil, policyd.Decision{Action: "554 Parle à ma main, ma tête est malade.", Reason: "blacklist=sender"}},
		{"sender subdomain (parent matching)", Config{}, "x@mx.spam.example", "u@example.com",
			nil, policyd.Decision{Action: "550 5.7.1 domain refused", Reason: "blacklist=sender"}},
		{"sender subdomain, dot style needs .spam.example", Config{SubdomainsNeedDot: true}, "x@mx.spam.example", "u@example.com",
			nil, policyd.Decision{}},
		{"null sender", Config{}, "", "u@example.com",
			nil, policyd.Decision{Action: "550 no bounces here", Reason: "blacklist=sender"}},
		{"invalid code gives no opinion", Config{}, "bad@example.org", "root@mail.exemple.fr",
			nil, policyd.Decision{Reason: "blacklist=error"}},
		{"line break gives no opinion", Config{}, "nl@example.org", "u@example.com",
			nil, policyd.Decision{Reason: "blacklist=error"}},
		{"empty message gets a text", Config{}, "empty@example.org", "u@example.com",
			nil, policyd.Decision{Action: "554 Access denied", Reason: "blacklist=sender"}},
		{"recipient exact", Config{}, "a@example.com", "ROOT@mail.exemple.fr",
			nil, policyd.Decision{Action: "REJECT", Reason: "blacklist=recipient"}},
		{"recipient extension stripped", Config{RecipientDelimiter: "+"}, "a@example.com", "root+x@mail.exemple.fr",
			nil, policyd.Decision{Action: "REJECT", Reason: "blacklist=recipient"}},
		{"recipient extension kept without delimiter", Config{}, "a@example.com", "root+x@mail.exemple.fr",
			nil, policyd.Decision{}},
		{"recipient user@ key", Config{}, "a@example.com", "sales@anywhere.example",
			nil, policyd.Decision{Action: "550 go away", Reason: "blacklist=recipient"}},
		{"recipient domain", Config{}, "a@example.com", "x@deep.trap.example",
			nil, policyd.Decision{Action: "DISCARD", Reason: "blacklist=recipient"}},
		{"DUNNO stops the search", Config{}, "a@example.com", "ok@example.net",
			nil, policyd.Decision{Reason: "blacklist=dunno"}},
		{"domain rejects others", Config{}, "a@example.com", "other@example.net",
			nil, policyd.Decision{Action: "REJECT whole domain", Reason: "blacklist=recipient"}},
		{"restriction name refused", Config{}, "a@example.com", "restr@example.org",
			nil, policyd.Decision{Reason: "blacklist=error"}},
		{"prepend", Config{}, "a@example.com", "tag@example.org",
			nil, policyd.Decision{Prepend: []string{"X-Tagged: yes"}, Reason: "blacklist=recipient"}},
		{"sender skipped", Config{SkipSender: true}, "tata@tata.fr", "u@example.com",
			nil, policyd.Decision{}},
		{"recipient skipped", Config{SkipRecipient: true}, "a@example.com", "root@mail.exemple.fr",
			nil, policyd.Decision{}},
		{"store error gives no opinion", Config{}, "tata@tata.fr", "root@mail.exemple.fr",
			errors.New("disk on fire"), policyd.Decision{Reason: "blacklist=error"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := newFakeBlacklist()
			store.err = tt.storeErr
			tt.cfg.Logger = quietLogger()
			b, err := New(tt.cfg, store)
			if err != nil {
				t.Fatal(err)
			}
			r := &policyd.Request{Attrs: map[string]string{"protocol_state": "RCPT", "sender": tt.sender, "recipient": tt.rcpt}}
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

func TestNewErrors(t *testing.T) {
	if _, err := New(Config{}, nil); err == nil {
		t.Error("New(nil store) = nil error")
	}
	if _, err := New(Config{RecipientDelimiter: "@"}, newFakeBlacklist()); err == nil {
		t.Error("New(delimiter @) = nil error")
	}
}
