package harness_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/postkit/postkit/e2e/harness"
)

// A test package shares one stack between its tests. A postkit daemon is
// wired in with two YAML keys and one DaemonSpec; Start starts it before
// Postfix and waits until its socket answers.
func ExampleMain() {
	var m *testing.M // the argument of TestMain
	os.Exit(harness.Main(m, harness.Options{
		Set: map[string]any{
			"milter.enabled": true,
			"milter.listen":  "unix:{root}/run/postkit/milter.sock",
		},
		Daemons: []harness.DaemonSpec{{
			Name:  "milter",
			Args:  []string{"milter", "-c", "{config}"},
			Ready: "unix:{root}/run/postkit/milter.sock",
		}},
		Seed: func(s *harness.Stack) error {
			return s.AddUser(context.Background(), "alice@"+harness.Domain, "Alice-pw-4711")
		},
	}))
}

// A scenario: a foreign client (127.0.0.2) sends to a user, and the message is
// looked for in the user's Maildir.
func ExampleStack_WaitMail() {
	var t *testing.T // the test's
	s := harness.Need(t)
	c, err := s.SMTP(harness.OutsideIP)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tok := harness.Token()
	from, to := "someone@"+harness.OutsideDomain, "alice@"+harness.Domain
	if err := harness.Send(c, from, []string{to}, harness.Message(from, to, tok)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := s.WaitMail(ctx, to, "INBOX", tok)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println(m.Header("Delivered-To"))
}

// Options.Set writes dotted keys into the sandbox's postkit.yaml with
// SetKey; intermediate sections are created.
func ExampleSetKey() {
	doc := map[string]any{"policy": map[string]any{"enabled": true}}
	for k, v := range map[string]any{"policy.greylist.delay": "1s", "milter.enabled": true} {
		if err := harness.SetKey(doc, k, v); err != nil {
			fmt.Println(err)
		}
	}
	fmt.Println(doc)
	fmt.Println(harness.SetKey(doc, "policy.enabled.x", 1))
	// Output:
	// map[milter:map[enabled:true] policy:map[enabled:true greylist:map[delay:1s]]]
	// harness: key "policy.enabled.x": policy.enabled is a value, not a section
}

// The sink is the outside world: what Postfix relays out lands there.
func ExampleStartSink() {
	sink, err := harness.StartSink("127.0.0.1:0", "")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer sink.Close()
	c, err := smtp.Dial(sink.Addr())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	from, to := "alice@"+harness.Domain, "someone@"+harness.OutsideDomain
	if err := harness.Send(c, from, []string{to}, harness.Message(from, to, "t0k3n")); err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := sink.Wait(ctx, func(m harness.SinkMessage) bool { return m.Header("Subject") == "postkit e2e t0k3n" })
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(m.From, m.To, m.Header("Message-ID"))
	// Output: alice@example.test [someone@outside.test] <t0k3n@outside.test>
}

// A test that needs a stack of its own (other keys than its package's)
// starts it with StartT; it is stopped when the test ends.
func ExampleStartT() {
	var t *testing.T // the test's
	s := harness.StartT(t, harness.Options{
		Set:     map[string]any{"policy.enabled": true, "policy.checks": []any{"greylist"}, "policy.listen": "unix:{root}/spool/postfix/postkit/policy.sock"},
		Daemons: []harness.DaemonSpec{{Name: "policyd", Args: []string{"policyd", "-c", "{config}"}, Ready: "unix:{root}/spool/postfix/postkit/policy.sock"}},
	})
	c, err := s.SMTP(harness.OutsideIP)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
}
