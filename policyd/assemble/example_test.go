package assemble_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/policyd"
	"github.com/postkit/postkit/policyd/assemble"
)

// heloCheck refuses a client that greets with a bare IP address.
type heloCheck struct{}

func (heloCheck) Name() string { return "helo" }
func (heloCheck) Check(_ context.Context, r *policyd.Request) (policyd.Decision, error) {
	if r.Helo() == r.Get("client_address") {
		return policyd.Decision{Action: "REJECT 5.7.1 say who you are", Reason: "helo=ip"}, nil
	}
	return policyd.Decision{}, nil
}

// A check joins the chain through one entry of the table; policy.checks
// names it where it runs.
func ExampleTable_Build() {
	table := assemble.Checks()
	table["helo"] = func(b *assemble.Builder) (policyd.Check, error) { return heloCheck{}, nil }

	c := config.Defaults()
	c.Hostname = "mx.example.org"
	c.Policy.Checks = []string{"blacklist", "helo"}
	chain, err := table.Build(c, assemble.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		log.Fatal(err)
	}
	defer chain.Close()
	// The blacklists are Postfix's by default (policy.blacklist.owner).
	fmt.Println(chain.Names())
	r := &policyd.Request{Attrs: map[string]string{"client_address": "192.0.2.7", "helo_name": "192.0.2.7"}}
	d, _ := chain.Checks()[0].Check(context.Background(), r)
	fmt.Println(d.Action)
	// Output:
	// [helo]
	// REJECT 5.7.1 say who you are
}
