package milterd_test

import (
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/postkit/postkit/milter/filter"
	"github.com/postkit/postkit/milter/milterd"
	"github.com/postkit/postkit/milter/miltertest"
)

// stage is a filter for outcome tests: it adds a header, refuses, fails or
// does nothing at end of message.
type stage struct {
	name string
	do   string // "add", "reject", "fail", ""
}

func (s stage) Name() string { return s.name }

func (s stage) Headers(*filter.Message, *filter.Changes) (filter.Body, error) { return s, nil }

func (s stage) Write([]byte) error { return nil }

func (s stage) End(_ *filter.Message, c *filter.Changes) error {
	switch s.do {
	case "add":
		c.AddHeader("X-Stage", s.name)
	case "reject":
		c.Refuse(filter.Reject, "550", "5.7.1", "no")
	case "fail":
		return errors.New("broken")
	}
	return nil
}

// Each filter's outcome, each message's verdict and the faults are
// counted as the chain ran them.
func TestMetricsOutcomes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		chain    []filter.Filter
		verdict  string
		outcomes map[string]string // filter → outcome
		errors   float64
	}{
		{"modified then pass", []filter.Filter{stage{"a", "add"}, stage{"b", ""}}, "accept",
			map[string]string{"a": "modified", "b": "pass"}, 0},
		{"a refusal skips the rest", []filter.Filter{stage{"a", "reject"}, stage{"b", "add"}}, "reject",
			map[string]string{"a": "reject", "b": "skipped"}, 0},
		{"a fault tempfails", []filter.Filter{stage{"a", "add"}, stage{"b", "fail"}, stage{"c", ""}}, "tempfail",
			map[string]string{"a": "modified", "b": "error", "c": "skipped"}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := milterd.NewMetrics()
			srv := miltertest.Start(t, "unix", milterd.Config{Observer: m}, tc.chain...)
			if _, err := srv.Send(&miltertest.Message{From: "a@example.test", Rcpts: []string{"b@example.test"}, Raw: []byte("Subject: x\r\n\r\nbody\r\n")}); err != nil {
				t.Fatal(err)
			}
			// Local 127.0.0.1 is trusted by default: outbound.
			if got := testutil.ToFloat64(m.Messages(tc.verdict, "outbound")); got != 1 {
				t.Errorf("messages{verdict=%s,direction=outbound} = %v; want 1", tc.verdict, got)
			}
			for f, o := range tc.outcomes {
				if got := testutil.ToFloat64(m.Outcomes(f, o)); got != 1 {
					t.Errorf("outcomes{filter=%s,outcome=%s} = %v; want 1", f, o, got)
				}
			}
			if got := testutil.ToFloat64(m.Errors("filter")); got != tc.errors {
				t.Errorf("errors{kind=filter} = %v; want %v", got, tc.errors)
			}
		})
	}
}

// Filters' events are counted under known values only: anything else is
// "other", so no input grows a family.
func TestMetricsCount(t *testing.T) {
	m := milterd.NewMetrics()
	m.Count(filter.EventDKIMVerified, "pass")
	m.Count(filter.EventDKIMVerified, "made-up")
	m.Count(filter.EventSpamVerdict, "spam")
	m.Count(filter.EventDKIMSigned, "example.test")
	m.Count("unknown", "x")
	if n := testutil.CollectAndCount(m, "postkit_milter_dkim_verifications_total"); n != 8 {
		t.Errorf("%d verification series; want the 7 results and other", n)
	}
	problems, err := testutil.CollectAndLint(m)
	if err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", problems, err)
	}
}
