package assemble_test

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/milter/assemble"
	"github.com/postkit/postkit/milter/filter"
)

// audit is a filter of one's own: it looks at every message and changes
// nothing.
type audit struct{}

func (audit) Name() string { return "audit" }
func (audit) Headers(m *filter.Message, c *filter.Changes) (filter.Body, error) {
	return nil, nil
}

// A filter joins the chain with one entry in the table; postkit.yaml turns
// the built-in ones on and off.
func ExampleTable_Build() {
	c := config.Defaults()
	c.DNS.Servers = []string{"127.0.0.1:53"} // nothing is looked up while building
	c.Milter.Scrub.Enabled = false
	c.Milter.Spam.Bayes.Enabled = false   // no Bayes store in an example
	c.Milter.DMARC.Report.Enabled = false // nor a DMARC report store
	table := append(assemble.Filters(), assemble.Entry{
		Name: "audit",
		New:  func(b *assemble.Builder) (filter.Filter, error) { return audit{}, nil },
	})
	ch, err := table.Build(c, assemble.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ch.Close()
	// No key in milter.dkim.keys: nothing to sign with.
	fmt.Println(strings.Join(assemble.Names(ch), " → "))
	// Output: dkimverify → forged → dmarc → ownfrom → spam → audit
}
