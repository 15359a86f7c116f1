package miltertest_test

import (
	"strings"
	"testing"

	"github.com/postkit/postkit/milter/filter"
	"github.com/postkit/postkit/milter/miltertest"
)

// stepFilter records what the driver calls, in a log shared by a chain.
type stepFilter struct {
	name   string
	log    *[]string
	refuse bool // at end of message
}

func (f stepFilter) Name() string { return f.name }
func (f stepFilter) Headers(m *filter.Message, c *filter.Changes) (filter.Body, error) {
	*f.log = append(*f.log, f.name+" headers "+m.Headers[len(m.Headers)-1].Name)
	c.AddHeader("X-"+f.name, "seen")
	return &stepBody{f}, nil
}

type stepBody struct{ f stepFilter }

func (b *stepBody) Write(p []byte) error {
	*b.f.log = append(*b.f.log, b.f.name+" write "+string(p))
	return nil
}
func (b *stepBody) End(m *filter.Message, c *filter.Changes) error {
	*b.f.log = append(*b.f.log, b.f.name+" end")
	if b.f.refuse {
		c.Refuse(filter.Reject, "550", "5.7.1", "no")
	}
	return nil
}
func (b *stepBody) Abort() { *b.f.log = append(*b.f.log, b.f.name+" abort") }

// Run drives a chain as the daemon does: headers in order with the earlier
// changes visible, each chunk to every body, ends in order, and a refusal
// aborts the bodies that did not end.
func TestRun(t *testing.T) {
	var log []string
	m := &filter.Message{Headers: []filter.Header{{Name: "From", Value: "a@example.org"}}}
	c := miltertest.Run(t, m, "abcde", 2,
		stepFilter{name: "a", log: &log, refuse: true},
		stepFilter{name: "b", log: &log})
	want := "a headers From|b headers X-a|a write ab|b write ab|a write cd|b write cd|a write e|b write e|a end|b abort"
	if got := strings.Join(log, "|"); got != want {
		t.Errorf("calls\n got %s\nwant %s", got, want)
	}
	if c.Verdict != filter.Reject || len(c.Ops) != 2 {
		t.Errorf("changes %+v; want the refusal and both headers", c)
	}
}
