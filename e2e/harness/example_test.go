package harness_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

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
			return s.AddUser(context.Background(), "alice@"+harness.Domain, "secret")
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
