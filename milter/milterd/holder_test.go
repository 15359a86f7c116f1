package milterd_test

import (
	"sync"
	"testing"
	"time"

	"github.com/postkit/postkit/internal/daemon"
	"github.com/postkit/postkit/milter/filter"
	"github.com/postkit/postkit/milter/milterd"
	"github.com/postkit/postkit/milter/miltertest"
)

// closeRecorder is a chain's resources: Close reports the chain's name.
type closeRecorder struct {
	name   string
	closed chan<- string
}

func (c closeRecorder) Close() error {
	c.closed <- c.name
	return nil
}

// tagFilter adds X-Chain: v at end of message, after waiting for hold (if
// set) and saying so on entered.
func tagFilter(v string, entered chan<- struct{}, hold <-chan struct{}) filter.Filter {
	return funcFilter{name: "tag", end: func(m *filter.Message, c *filter.Changes, _ []byte) error {
		if entered != nil {
			entered <- struct{}{}
		}
		if hold != nil {
			<-hold
		}
		c.AddHeader("X-Chain", v)
		return nil
	}}
}

func chainTag(t *testing.T, res *miltertest.Result, err error) string {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range res.Mods {
		if m.HeaderName == "X-Chain" {
			return m.HeaderValue
		}
	}
	t.Fatalf("no X-Chain added: %+v", res)
	return ""
}

// The server runs the chain of a daemon.Holder: a swap gives new messages
// the new chain while a message in flight finishes with the old one, and
// the old chain's resources are closed only once that message is done.
func TestHolderSwapClosesOldChainAfterItsLastMessage(t *testing.T) {
	closed := make(chan string, 4)
	entered, hold := make(chan struct{}, 1), make(chan struct{})
	old, err := milterd.NewChain(milterd.Config{
		Chains: map[string][]filter.Filter{milterd.DefaultChain: {tagFilter("old", entered, hold)}},
		Closer: closeRecorder{"old", closed}, Logger: miltertest.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	h := daemon.NewHolder(old)
	srv := miltertest.Serve(t, "unix", milterd.NewServer(h))
	var once sync.Once
	unhold := func() { once.Do(func() { close(hold) }) }
	t.Cleanup(unhold) // before the server's shutdown, which waits for the message

	inFlight := make(chan string, 1)
	go func() {
		res, err := srv.Send(msg(sample))
		if err != nil {
			t.Error(err)
			inFlight <- ""
			return
		}
		inFlight <- chainTag(t, res, nil)
	}()
	select {
	case <-entered: // the message is at its end, holding the old chain
	case <-time.After(5 * time.Second):
		t.Fatal("the message never reached the filter")
	}

	next, err := milterd.NewChain(milterd.Config{
		Chains: map[string][]filter.Filter{milterd.DefaultChain: {tagFilter("new", nil, nil)}},
		Closer: closeRecorder{"new", closed}, Logger: miltertest.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	done := h.Swap(next)
	res, err := srv.Send(msg(sample))
	if got := chainTag(t, res, err); got != "new" {
		t.Errorf("a message after the swap ran chain %q; want new", got)
	}
	select {
	case name := <-closed:
		t.Fatalf("chain %s closed while a message still used the old one", name)
	case <-time.After(200 * time.Millisecond):
	}

	unhold()
	if got := <-inFlight; got != "old" {
		t.Errorf("the message in flight ran chain %q; want old, the one it started with", got)
	}
	select {
	case name := <-closed:
		if name != "old" {
			t.Errorf("closed %s; want old", name)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the old chain was not closed after its last message")
	}
	if err := <-done; err != nil {
		t.Errorf("Swap's Close error %v", err)
	}

	// The holder's owner closes the current chain at shutdown.
	srv.Close()
	<-h.Close()
	if name := <-closed; name != "new" {
		t.Errorf("closed %s at shutdown; want new", name)
	}
}

// Reload (a server with its own holder) closes the old chain the same way,
// and Shutdown closes the current one.
func TestReloadClosesOldChain(t *testing.T) {
	closed := make(chan string, 4)
	log := miltertest.Logger(t)
	srv := miltertest.Start(t, "unix", milterd.Config{Closer: closeRecorder{"old", closed}}, tagFilter("old", nil, nil))
	res, err := srv.Send(msg(sample)) // the listener is being served
	if got := chainTag(t, res, err); got != "old" {
		t.Fatalf("chain %q; want old", got)
	}
	if err := srv.Reload(milterd.Config{Chains: map[string][]filter.Filter{"other": {tagFilter("x", nil, nil)}}, Closer: closeRecorder{"refused", closed}, Logger: log}); err == nil {
		t.Fatal("Reload without the served chain succeeded")
	}
	if err := srv.Reload(milterd.Config{Chains: map[string][]filter.Filter{milterd.DefaultChain: {tagFilter("new", nil, nil)}}, Closer: closeRecorder{"new", closed}, Logger: log}); err != nil {
		t.Fatal(err)
	}
	if name := <-closed; name != "old" {
		t.Errorf("closed %s after Reload; want old (nothing held it)", name)
	}
	res, err = srv.Send(msg(sample))
	if got := chainTag(t, res, err); got != "new" {
		t.Errorf("chain %q after Reload; want new", got)
	}
	srv.Close()
	select {
	case name := <-closed:
		if name != "new" {
			t.Errorf("closed %s at Shutdown; want new", name)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not close the chain")
	}
	select {
	case name := <-closed:
		t.Errorf("%s closed too: a refused Reload leaves its Closer to the caller, and each chain closes once", name)
	default:
	}
}
