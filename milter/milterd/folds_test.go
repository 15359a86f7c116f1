package milterd_test

import (
	"testing"
	"time"

	"github.com/emersion/go-milter"
	"github.com/postkit/postkit/milter/filter"
	"github.com/postkit/postkit/milter/milterd"
	"github.com/postkit/postkit/milter/miltertest"
)

// Folded header values cross the protocol with a bare LF (Postfix sends and
// expects "\n\t"); filters see and write them with CRLF (filter.Header).
func TestFoldedHeaderLineEnds(t *testing.T) {
	tests := []struct {
		name     string
		wire     string // value as the MTA sends it
		wantSeen string // value the filter sees
		insert   string // value the filter inserts
		wantSent string // value the MTA receives
	}{
		{"Postfix LF folds", "one\n\ttwo\n three", "one\r\n\ttwo\r\n three", "a\r\n\tb", "a\n\tb"},
		{"CRLF folds kept", "one\r\n\ttwo", "one\r\n\ttwo", "a\r\n\tb\r\n\tc", "a\n\tb\n\tc"},
		{"single line", "plain", "plain", "x", "x"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var seen string
			f := funcFilter{name: "fold", fn: func(m *filter.Message, c *filter.Changes) error {
				for _, h := range m.Headers {
					if h.Name == "X-Folded" {
						seen = h.Value
					}
				}
				c.InsertHeader(0, "X-Inserted", tc.insert)
				c.ChangeHeader("X-Folded", 1, tc.insert)
				return nil
			}}
			srv := miltertest.Start(t, "unix", milterd.Config{}, f)
			s, err := milter.NewClientWithOptions(srv.Network, srv.Address, milter.ClientOptions{
				ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second,
				ActionMask: miltertest.DefaultActions, ProtocolMask: miltertest.DefaultProtocol,
			}).Session()
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			s.Conn("localhost", milter.FamilyInet, 4000, "127.0.0.1")
			s.Mail("a@postkit.test", nil)
			s.Rcpt("b@example.org", nil)
			s.HeaderField("X-Folded", tc.wire)
			if _, err := s.HeaderEnd(); err != nil {
				t.Fatal(err)
			}
			mods, _, err := s.End()
			if err != nil {
				t.Fatal(err)
			}
			if seen != tc.wantSeen {
				t.Errorf("filter saw %q, want %q", seen, tc.wantSeen)
			}
			if len(mods) != 2 {
				t.Fatalf("%d modifications, want 2", len(mods))
			}
			for _, md := range mods {
				if md.HeaderValue != tc.wantSent {
					t.Errorf("%s sent as %q, want %q", md.HeaderName, md.HeaderValue, tc.wantSent)
				}
			}
		})
	}
}
