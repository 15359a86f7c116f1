package milterd_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-milter"
	"github.com/postkit/postkit/milter/filter"
	"github.com/postkit/postkit/milter/milterd"
	"github.com/postkit/postkit/milter/miltertest"
)

// abortFilter wants the body and records whether End or Abort ended it.
type abortFilter struct {
	name    string
	headers func(c *filter.Changes) error // optional, at end of headers
	end     func(c *filter.Changes) error // optional, at end of message
	ev      chan string                   // "end NAME" / "abort NAME"
}

func (f abortFilter) Name() string { return f.name }

func (f abortFilter) Headers(m *filter.Message, c *filter.Changes) (filter.Body, error) {
	if f.headers != nil {
		if err := f.headers(c); err != nil {
			return nil, err
		}
	}
	return &abortBody{f: f}, nil
}

type abortBody struct {
	f    abortFilter
	once sync.Once
	n    int
}

func (b *abortBody) Write([]byte) error { return nil }

func (b *abortBody) End(m *filter.Message, c *filter.Changes) error {
	b.f.ev <- "end " + b.f.name
	if b.f.end != nil {
		return b.f.end(c)
	}
	return nil
}

func (b *abortBody) Abort() {
	b.n++
	if b.n > 1 {
		b.f.ev <- "second abort " + b.f.name
		return
	}
	b.f.ev <- "abort " + b.f.name
}

// TestAbortReleasesBodies: every Body with an Abort method gets exactly one
// End or one Abort, whatever way the message ends.
func TestAbortReleasesBodies(t *testing.T) {
	refuse := func(c *filter.Changes) error {
		c.Refuse(filter.Reject, "550", "5.7.1", "no")
		return nil
	}
	fail := func(*filter.Changes) error { return errors.New("boom") }
	tests := []struct {
		name string
		// a and b are the two filters' hooks.
		aHeaders, aEnd, bHeaders, bEnd func(c *filter.Changes) error
		// how the client ends the message: "eom", "abort", "close", "newmail"
		how  string
		want []string // events, in order
	}{
		{name: "complete message", how: "eom", want: []string{"end a", "end b"}},
		{name: "MTA abort mid-body", how: "abort", want: []string{"abort a", "abort b"}},
		{name: "connection dropped mid-body", how: "close", want: []string{"abort a", "abort b"}},
		{name: "first filter refuses at end", how: "eom", aEnd: refuse, want: []string{"end a", "abort b"}},
		{name: "first filter fails at end", how: "eom", aEnd: fail, want: []string{"end a", "abort b"}},
		{name: "second filter fails at headers", how: "eoh", bHeaders: fail, want: []string{"abort a"}},
		{name: "second filter refuses at headers", how: "eoh", bHeaders: refuse, want: []string{"abort a", "abort b"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev := make(chan string, 16)
			a := abortFilter{name: "a", headers: tc.aHeaders, end: tc.aEnd, ev: ev}
			b := abortFilter{name: "b", headers: tc.bHeaders, end: tc.bEnd, ev: ev}
			srv := miltertest.Start(t, "unix", milterd.Config{}, a, b)
			s, err := milter.NewClientWithOptions(srv.Network, srv.Address, milter.ClientOptions{
				ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
				ActionMask: miltertest.DefaultActions, ProtocolMask: miltertest.DefaultProtocol,
			}).Session()
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if _, err := s.Conn("localhost", milter.FamilyInet, 4000, "127.0.0.1"); err != nil {
				t.Fatal(err)
			}
			s.Mail("a@postkit.test", nil)
			s.Rcpt("b@example.org", nil)
			s.HeaderField("From", "<a@postkit.test>")
			act, err := s.HeaderEnd()
			if err != nil {
				t.Fatal(err)
			}
			if tc.how == "eoh" {
				// SMFIP_NR_EOH: the verdict reached on the headers comes
				// at end of message, the body is not passed to anyone.
				if act.Code != milter.ActContinue {
					t.Fatalf("end of headers answered %v under SMFIP_NR_EOH", act)
				}
				if _, err := s.BodyChunk([]byte("line\r\n")); err != nil {
					t.Fatal(err)
				}
				_, act, err := s.End()
				if err != nil {
					t.Fatal(err)
				}
				if act.Code == milter.ActContinue || act.Code == milter.ActAccept {
					t.Fatalf("end of message answered %v, want the refusal", act)
				}
			} else {
				if _, err := s.BodyChunk([]byte("line\r\n")); err != nil {
					t.Fatal(err)
				}
				switch tc.how {
				case "eom":
					if _, _, err := s.End(); err != nil {
						t.Fatal(err)
					}
				case "abort":
					if err := s.Abort(); err != nil {
						t.Fatal(err)
					}
				case "close":
					s.Close()
				}
			}
			var got []string
			timeout := time.After(5 * time.Second)
			for len(got) < len(tc.want) {
				select {
				case e := <-ev:
					got = append(got, e)
				case <-timeout:
					t.Fatalf("events %q, want %q", got, tc.want)
				}
			}
			// Nothing more may come: no second Abort, no Abort after End.
			s.Close()
			select {
			case e := <-ev:
				got = append(got, e)
			case <-time.After(100 * time.Millisecond):
			}
			if len(got) != len(tc.want) {
				t.Fatalf("events %q, want %q", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("events %q, want %q", got, tc.want)
				}
			}
		})
	}
}
