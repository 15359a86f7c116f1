package milterd

import (
	"bufio"
	"encoding/binary"
	"reflect"
	"testing"

	"github.com/postkit/postkit/milter/filter"
)

type nopFilter struct{}

func (nopFilter) Name() string { return "nop" }
func (nopFilter) Headers(*filter.Message, *filter.Changes) (filter.Body, error) {
	return nil, nil
}

// newChainProto: what a chain's filters declare decides the events skipped
// and the macros requested per stage; one undeclared filter needs everything.
func TestNewChainProto(t *testing.T) {
	decl := func(n filter.Needs) filter.Filter { return filter.Declare(nopFilter{}, n) }
	str := func(s string) *string { return &s }
	// own is what the daemon asks for itself; with(stage, list) changes one stage.
	own := map[int]string{stageConnect: "{daemon_name}", stageHelo: noMacro, stageMail: "{auth_type} {auth_authen}",
		stageRcpt: noMacro, stageData: "i", stageEOH: "i", stageEOM: "i"}
	with := func(kv ...any) map[int]string {
		m := map[int]string{}
		for k, v := range own {
			m[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i].(int)] = kv[i+1].(string)
		}
		return m
	}
	tests := []struct {
		name     string
		fs       []filter.Filter
		override map[int]*string
		wantSkip uint32
		want     map[int]string // stage → list
		defaults bool           // want DefaultMacros at every stage
	}{
		{name: "undeclared filter needs everything", fs: []filter.Filter{nopFilter{}}, defaults: true},
		{name: "one undeclared among declared", fs: []filter.Filter{decl(filter.Needs{}), nopFilter{}}, defaults: true},
		{name: "declared nothing: the daemon's own macros", fs: []filter.Filter{decl(filter.Needs{}), decl(filter.Needs{})},
			wantSkip: optNoHelo | optNoRcpt, want: own},
		{name: "HELO and recipients read", fs: []filter.Filter{decl(filter.Needs{Helo: true}), decl(filter.Needs{Rcpts: true})},
			want: own},
		{name: "declared macros go to their stage, once", fs: []filter.Filter{
			decl(filter.Needs{Macros: []string{"client_addr", "{auth_type}", "x_custom"}}),
			decl(filter.Needs{Macros: []string{"{client_addr}", "j"}})},
			wantSkip: optNoHelo | optNoRcpt,
			want:     with(stageConnect, "{daemon_name} {client_addr} j", stageEOM, "i {x_custom}")},
		{name: "a HELO macro takes the HELO event", fs: []filter.Filter{decl(filter.Needs{Macros: []string{"tls_version"}})},
			wantSkip: optNoRcpt, want: with(stageHelo, "{tls_version}")},
		{name: "a configured RCPT list takes the RCPT event", fs: []filter.Filter{decl(filter.Needs{})},
			override: map[int]*string{stageRcpt: str("{rcpt_addr}"), stageEOM: str("i {msg_id}")},
			wantSkip: optNoHelo, want: with(stageRcpt, "{rcpt_addr}", stageEOM, "i {msg_id}")},
		{name: "empty chain", fs: nil, wantSkip: optNoHelo | optNoRcpt, want: own},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var override [numStages]*string
			for i, v := range tc.override {
				override[i] = v
			}
			cp := newChainProto(tc.fs, override)
			if cp.skip != tc.wantSkip {
				t.Errorf("skip = %#x, want %#x", cp.skip, tc.wantSkip)
			}
			for i := range numStages {
				want := tc.want[i]
				if tc.defaults {
					want = DefaultMacros[stageNames[i]]
				}
				if cp.macros[i] != want {
					t.Errorf("stage %s: macros %q, want %q", stageNames[i], cp.macros[i], want)
				}
			}
		})
	}
}

// The option negotiation reply carries the skipped events, the replies the
// daemon will not send and the macro lists under libmilter's stage numbers
// (SMFIM_DATA 4, SMFIM_EOM 5, SMFIM_EOH 6).
func TestNegotiateReply(t *testing.T) {
	tests := []struct {
		name      string
		chain     []filter.Filter
		replies   bool
		wantProto uint32
		wantLists map[uint32]string
	}{
		{name: "declared chain", chain: []filter.Filter{filter.Declare(nopFilter{}, filter.Needs{})},
			wantProto: optNoHelo | optNoRcpt | optNoUnknown | optNoData | optNRConn | optNRHelo | optNRMail | optNRRcpt | optNRHdr | optNRBody | optNREOH,
			wantLists: map[uint32]string{0: "{daemon_name}", 1: noMacro, 2: "{auth_type} {auth_authen}", 3: noMacro, 4: "i", 5: "i", 6: "i"}},
		{name: "undeclared chain with replies", chain: []filter.Filter{nopFilter{}}, replies: true,
			wantProto: optNoUnknown | optNoData,
			wantLists: map[uint32]string{0: DefaultMacros["connect"], 1: DefaultMacros["helo"], 2: DefaultMacros["mail"],
				3: DefaultMacros["rcpt"], 4: DefaultMacros["data"], 5: DefaultMacros["eom"], 6: DefaultMacros["eoh"]}},
		{name: "empty chain answers end of headers", chain: nil,
			wantProto: optNoHelo | optNoRcpt | optNoUnknown | optNoData | optNRConn | optNRHelo | optNRMail | optNRRcpt | optNRHdr | optNRBody,
			wantLists: map[uint32]string{0: "{daemon_name}", 1: noMacro, 2: "{auth_type} {auth_authen}", 3: noMacro, 4: "i", 5: "i", 6: "i"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := New(Config{Chains: map[string][]filter.Filter{DefaultChain: tc.chain}, WithReplies: tc.replies})
			if err != nil {
				t.Fatal(err)
			}
			ours, peer := socketPair(t, "unix")
			go newSession(srv, ours, DefaultChain).serve()
			req := []byte{0, 0, 0, 13, cmdOptNeg}
			req = binary.BigEndian.AppendUint32(req, 6)
			req = binary.BigEndian.AppendUint32(req, 0x1ff)
			req = binary.BigEndian.AppendUint32(req, 0x1fffff) // everything Postfix 3.7 offers
			if _, err := peer.Write(req); err != nil {
				t.Fatal(err)
			}
			rd := packetReader{r: bufio.NewReader(peer), max: 1 << 16}
			cmd, data, err := rd.next()
			if err != nil || cmd != cmdOptNeg || len(data) < 12 {
				t.Fatalf("reply %q %q %v, want an option negotiation", cmd, data, err)
			}
			if got := binary.BigEndian.Uint32(data[8:]); got != tc.wantProto {
				t.Errorf("protocol %#x, want %#x", got, tc.wantProto)
			}
			lists := map[uint32]string{}
			for rest := data[12:]; len(rest) > 4; {
				stage := binary.BigEndian.Uint32(rest)
				list, r, ok := cstring(rest[4:])
				if !ok {
					t.Fatalf("macro list of stage %d not NUL-terminated", stage)
				}
				lists[stage], rest = list, r
			}
			if !reflect.DeepEqual(lists, tc.wantLists) {
				t.Errorf("macro lists %v, want %v", lists, tc.wantLists)
			}
		})
	}
}
