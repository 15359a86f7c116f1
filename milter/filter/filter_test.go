package filter

import (
	"reflect"
	"testing"
)

func headers(hs ...string) []Header {
	var out []Header
	for i := 0; i+1 < len(hs); i += 2 {
		out = append(out, Header{hs[i], hs[i+1]})
	}
	return out
}

// Changes keep the view in step with the recorded operations, and occurrence
// indexes always refer to the current view.
func TestChanges(t *testing.T) {
	m := &Message{Headers: headers("Received", "a", "X-Mailer", "m", "Received", "b", "Received", "c", "Subject", "s")}
	c := NewChanges(m)
	if !c.DeleteHeader("received", 1) || !c.DeleteHeader("Received", 1) {
		t.Fatal("DeleteHeader of existing headers failed")
	}
	if c.DeleteHeader("Received", 2) {
		t.Error("DeleteHeader of a missing occurrence succeeded")
	}
	c.ChangeHeader("X-Mailer", 1, "")
	c.InsertHeader(0, "DKIM-Signature", "v=1")
	c.AddHeader("X-Spam-Flag", "NO")
	c.ChangeHeader("Subject", 1, "t")
	want := headers("DKIM-Signature", "v=1", "Received", "c", "Subject", "t", "X-Spam-Flag", "NO")
	if !reflect.DeepEqual(m.Headers, want) {
		t.Errorf("view = %v; want %v", m.Headers, want)
	}
	wantOps := []Op{
		{Kind: OpChangeHeader, Name: "received", Index: 1},
		{Kind: OpChangeHeader, Name: "Received", Index: 1},
		{Kind: OpChangeHeader, Name: "X-Mailer", Index: 1},
		{Kind: OpInsertHeader, Name: "DKIM-Signature", Value: "v=1", Index: 0},
		{Kind: OpAddHeader, Name: "X-Spam-Flag", Value: "NO"},
		{Kind: OpChangeHeader, Name: "Subject", Value: "t", Index: 1},
	}
	if !reflect.DeepEqual(c.Ops, wantOps) {
		t.Errorf("ops = %+v\nwant %+v", c.Ops, wantOps)
	}
}

func TestInsertHeaderClamps(t *testing.T) {
	m := &Message{Headers: headers("A", "1")}
	c := NewChanges(m)
	c.InsertHeader(-3, "B", "2")
	c.InsertHeader(99, "C", "3")
	if want := headers("B", "2", "A", "1", "C", "3"); !reflect.DeepEqual(m.Headers, want) {
		t.Errorf("view = %v; want %v", m.Headers, want)
	}
	if c.Ops[1].Index != 2 {
		t.Errorf("clamped index = %d; want 2", c.Ops[1].Index)
	}
}

func TestMacro(t *testing.T) {
	m := &Message{Macros: map[string]string{"{auth_authen}": "u", "i": "Q1"}, Conn: &Conn{Macros: map[string]string{"{daemon_name}": "ORIGINATING"}}}
	for name, want := range map[string]string{"auth_authen": "u", "{auth_authen}": "u", "i": "Q1", "daemon_name": "ORIGINATING", "x": ""} {
		if got := m.Macro(name); got != want {
			t.Errorf("Macro(%q) = %q; want %q", name, got, want)
		}
	}
}

type namedFilter string

func (f namedFilter) Name() string { return string(f) }
func (f namedFilter) Headers(m *Message, c *Changes) (Body, error) {
	c.AddHeader("X-Seen-By", string(f))
	return nil, nil
}

// Declare adds a declaration and keeps the filter's behaviour; an
// undeclared filter reports none.
func TestDeclare(t *testing.T) {
	want := Needs{Rcpts: true, Macros: []string{"{client_addr}"}}
	tests := []struct {
		name     string
		f        Filter
		declared bool
		needs    Needs
	}{
		{"undeclared", namedFilter("a"), false, Needs{}},
		{"declared", Declare(namedFilter("b"), want), true, want},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n, ok := NeedsOf(tc.f)
			if ok != tc.declared || !reflect.DeepEqual(n, tc.needs) {
				t.Errorf("NeedsOf = %+v, %v; want %+v, %v", n, ok, tc.needs, tc.declared)
			}
			m := &Message{}
			if _, err := tc.f.Headers(m, NewChanges(m)); err != nil {
				t.Fatal(err)
			}
			if len(m.Headers) != 1 || m.Headers[0].Value != tc.f.Name() {
				t.Errorf("Headers through the declaration: %+v, want one X-Seen-By: %s", m.Headers, tc.f.Name())
			}
		})
	}
}
