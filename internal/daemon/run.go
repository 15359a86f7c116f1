package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Running a daemon. Both postkit daemons live the same life, and Run is the
// one implementation of it:
//
//	start    SIGHUP is caught first (a reload sent as soon as the socket
//	         answers must not kill the daemon); Load reads postkit.yaml and
//	         builds the chain; NewServer gets the Holder of the chain; every
//	         listener is opened (ListenClients: socket options, allowed
//	         clients) before any is served, so that a bad address stops the
//	         start with nothing half-served.
//	SIGHUP   Load again. A failure is logged and the running chain stays.
//	         Otherwise the new chain is swapped in (Holder.Swap): what starts
//	         from now on gets it, and the old one is closed when the last
//	         message or request using it is done. Listen addresses, socket
//	         settings, allowed clients and Plan.Restart are applied at start
//	         only: a change is logged as needing a restart.
//	SIGTERM, SIGINT (or ctx done)
//	         stop accepting and let work in flight finish within Plan.Drain
//	         (a second signal cuts it short), then close the chain and
//	         remove the unix sockets.
//
// A server's Serve returning before shutdown (an accept error that is not
// temporary) stops the daemon the same way, and Run returns its error.

// Server is a daemon's protocol server: it serves the connections it accepts
// on a listener until Shutdown, which stops accepting, lets work in flight
// finish until ctx ends and then cuts it (emersion go-smtp's shape; an
// *http.Server is one too).
type Server interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
}

// Listener is one address a daemon listens on, with what ListenClients needs.
type Listener struct {
	Addr   Addr
	Socket SocketOpts     // unix sockets only
	Allow  []netip.Prefix // inet only; required when Addr is exposed
	// AllowHint says where Allow is set, added to the error when Addr is
	// exposed without it, e.g. "milter.allow_clients in postkit.yaml,
	// --allow-client".
	AllowHint string
}

// same reports whether l and o open the same listener.
func (l Listener) same(o Listener) bool {
	return l.Addr == o.Addr && l.Socket == o.Socket && slices.Equal(l.Allow, o.Allow)
}

// Extra is a server a daemon runs beside its protocol server, on a listener
// of its own: the policy daemon's metrics endpoint. It lives as long as the
// daemon: a reload neither restarts nor replaces it.
type Extra struct {
	Name     string // for errors and logs, e.g. "metrics"
	Listener Listener
	Server   Server
	// Optional extras never stop the daemon: one whose address cannot be
	// opened at start (taken, say) is logged and left out, and one whose
	// server fails is logged; the protocol server, and mail, go on. A
	// metrics endpoint is optional.
	Optional bool
}

// Plan is what a daemon's Load builds from its configuration: the chain, and
// how it is served.
type Plan[C io.Closer] struct {
	// Chain is what the server runs for each message or request (the
	// milter's filters, the policy checks) with the resources it owns.
	Chain C
	// Listen are the protocol server's addresses; every one serves the
	// chain. At least one.
	Listen []Listener
	// Extras are the other servers, started with the daemon.
	Extras []Extra
	// Restart names the settings, besides the listeners, that the server
	// takes at start only, with their values (e.g. "policy.time_budget":
	// "10s"): a reload that changes one logs that a restart is needed.
	Restart map[string]string
	// Drain bounds how long shutdown waits for work in flight; 0 means 30s.
	// The last loaded plan's value is used.
	Drain time.Duration
	// Attrs describe the chain in the logs, e.g. "filters", "scrub,dkimsign".
	Attrs []any
}

// DefaultDrain is how long shutdown waits for work in flight when
// Plan.Drain is 0.
const DefaultDrain = 30 * time.Second

// Spec describes a daemon to Run.
type Spec[C io.Closer] struct {
	// Name prefixes errors and log lines: "milter", "policyd".
	Name string
	// Load reads the configuration and builds the chain. It is called at
	// start and on each SIGHUP; on error it must leave nothing open.
	Load func() (Plan[C], error)
	// NewServer builds the protocol server over the Holder of the chain:
	// each message or request takes the chain with Holder.Acquire.
	NewServer func(*Holder[C]) (Server, error)
	// Logger receives the daemon's own lines; nil is slog.Default().
	Logger *slog.Logger
	// Hangup and Stop deliver the reload and stop signals. Nil: Run
	// catches the process's SIGHUP, and SIGTERM and SIGINT. Tests inject
	// channels.
	Hangup <-chan os.Signal
	Stop   <-chan os.Signal
}

// Run runs the daemon described by s until ctx ends, a stop signal arrives
// or a server fails, and returns once it is shut down: nil after a stop, the
// error of a failed start or of a failed server otherwise.
func Run[C io.Closer](ctx context.Context, s Spec[C]) error {
	log := s.Logger
	if log == nil {
		log = slog.Default()
	}
	hup, stop := s.Hangup, s.Stop
	if hup == nil {
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGHUP)
		defer signal.Stop(c)
		hup = c
	}
	if stop == nil {
		c := make(chan os.Signal, 2)
		signal.Notify(c, syscall.SIGTERM, syscall.SIGINT)
		defer signal.Stop(c)
		stop = c
	}
	plan, err := s.Load()
	if err != nil {
		return err
	}
	if len(plan.Listen) == 0 {
		plan.Chain.Close()
		return fmt.Errorf("%s: no listen address: give one", s.Name)
	}
	holder := NewHolder(plan.Chain)
	srv, err := s.NewServer(holder)
	if err != nil {
		<-holder.Close()
		return err
	}
	d := &running[C]{name: s.Name, log: log, holder: holder}
	if err := d.listen(plan); err != nil {
		<-holder.Close()
		return err
	}
	errc := make(chan error, len(d.lns)+len(d.extraLns))
	var wg sync.WaitGroup
	for _, ln := range d.lns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- srv.Serve(ln)
		}()
	}
	for i, ln := range d.extraLns {
		x := d.extras[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := x.Server.Serve(ln); err != nil && !closed(err) {
				if x.Optional {
					log.Error(s.Name+": "+x.Name+" stopped; the daemon goes on without it", "err", err)
					return
				}
				errc <- fmt.Errorf("%s: %s: %w", s.Name, x.Name, err)
				return
			}
			if !x.Optional {
				errc <- nil
			}
		}()
	}
	for _, l := range plan.Listen {
		log.Info(s.Name+" listening", append([]any{"addr", l.Addr.String()}, plan.Attrs...)...)
	}
	for _, x := range d.extras {
		log.Info(s.Name+" "+x.Name+" listening", "addr", x.Listener.Addr.String())
	}

	running, drain := plan, plan.Drain
	var serveErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-stop:
			break loop
		case serveErr = <-errc:
			if closed(serveErr) {
				serveErr = nil
			}
			break loop
		case <-hup:
			next, err := s.Load()
			if err != nil {
				log.Error(s.Name+" reload failed; the running chain stays", "err", err)
				continue
			}
			if changed := restartNeeded(running, next); len(changed) > 0 {
				log.Warn(s.Name + ": " + strings.Join(changed, ", ") + " changed: restart the daemon to apply them; the running ones stay")
			}
			drain = next.Drain
			d.retire(holder.Swap(next.Chain))
			log.Info(s.Name+" reloaded", next.Attrs...)
		}
	}

	if drain <= 0 {
		drain = DefaultDrain
	}
	log.Info(s.Name+" shutting down; finishing work in flight", "max_wait", drain)
	sctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	go func() { // a second signal cuts the wait short
		select {
		case <-stop:
			log.Warn(s.Name + ": second stop signal: cutting work in flight")
			cancel()
		case <-sctx.Done():
		}
	}()
	var wgx sync.WaitGroup
	for _, x := range d.extras {
		wgx.Add(1)
		go func() {
			defer wgx.Done()
			x.Server.Shutdown(sctx)
		}()
	}
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn(s.Name+": shutdown cut work in flight", "err", err)
	}
	wgx.Wait()
	d.closeListeners()
	served := make(chan struct{})
	go func() { wg.Wait(); close(served) }()
	select {
	case <-served:
	case <-time.After(5 * time.Second):
		log.Warn(s.Name + ": a server did not return from Serve after Shutdown")
	}
	d.retire(holder.Close())
	d.wait(sctx)
	return serveErr
}

// running is the state Run keeps besides the loop's variables.
type running[C io.Closer] struct {
	name     string
	log      *slog.Logger
	holder   *Holder[C]
	lns      []net.Listener
	extraLns []net.Listener
	extras   []Extra  // served, with extraLns
	unix     []string // socket paths to remove at exit

	mu      sync.Mutex
	closing []chan struct{} // closed when a retired chain is closed and its error logged
}

// listen opens every listener of p, the extras' too; on error it closes
// those it opened.
func (d *running[C]) listen(p Plan[C]) error {
	open := func(l Listener, what string) (net.Listener, error) {
		ln, err := ListenClients(l.Addr, l.Socket, l.Allow, d.log)
		if err != nil {
			if errors.Is(err, ErrExposed) && l.AllowHint != "" {
				err = fmt.Errorf("%w (%s)", err, l.AllowHint)
			}
			return nil, fmt.Errorf("%s: %s: %w", d.name, what, err)
		}
		if l.Addr.Network == "unix" {
			d.unix = append(d.unix, l.Addr.Address)
		}
		return ln, nil
	}
	for _, l := range p.Listen {
		ln, err := open(l, "listen "+l.Addr.String())
		if err != nil {
			d.closeListeners()
			return err
		}
		d.lns = append(d.lns, ln)
	}
	for _, x := range p.Extras {
		ln, err := open(x.Listener, x.Name)
		if err != nil && x.Optional && !errors.Is(err, ErrExposed) {
			d.log.Error(d.name+": "+x.Name+" not served; the daemon runs without it", "err", err)
			continue
		}
		if err != nil {
			d.closeListeners()
			return err
		}
		d.extraLns = append(d.extraLns, ln)
		d.extras = append(d.extras, x)
	}
	return nil
}

// closeListeners closes every listener (servers close theirs at Shutdown;
// closing again does nothing) and removes the unix sockets left.
func (d *running[C]) closeListeners() {
	for _, ln := range append(d.lns, d.extraLns...) {
		ln.Close()
	}
	for _, p := range d.unix {
		if st, err := os.Lstat(p); err == nil && st.Mode()&os.ModeSocket != 0 {
			os.Remove(p)
		}
	}
}

// retire notes a retired chain: its Close error, when it comes, is logged.
func (d *running[C]) retire(done <-chan error) {
	logged := make(chan struct{})
	d.mu.Lock()
	d.closing = append(d.closing, logged)
	d.mu.Unlock()
	go func() {
		defer close(logged)
		if err := <-done; err != nil {
			d.log.Warn(d.name+": closing a chain failed", "err", err)
		}
	}()
}

// wait waits for every retired chain to be closed, or for ctx.
func (d *running[C]) wait(ctx context.Context) {
	d.mu.Lock()
	cs := d.closing
	d.mu.Unlock()
	for _, c := range cs {
		select {
		case <-c:
		case <-ctx.Done():
			// Work cut at the drain bound still holds the chain: its
			// resources go with the process.
			d.log.Warn(d.name + ": a chain still in use at exit was not closed")
			return
		}
	}
}

// restartNeeded names what differs between the running plan and the next
// one that only a restart applies.
func restartNeeded[C io.Closer](cur, next Plan[C]) []string {
	var out []string
	if !slices.EqualFunc(cur.Listen, next.Listen, Listener.same) {
		out = append(out, "listen addresses, socket settings or allowed clients")
	}
	if !slices.EqualFunc(cur.Extras, next.Extras, func(a, b Extra) bool { return a.Name == b.Name && a.Listener.same(b.Listener) }) {
		var names []string
		for _, x := range append(slices.Clone(cur.Extras), next.Extras...) {
			if !slices.Contains(names, x.Name) {
				names = append(names, x.Name)
			}
		}
		out = append(out, strings.Join(names, ", ")+" address or allowed clients")
	}
	var keys []string
	for k, v := range cur.Restart {
		if nv, ok := next.Restart[k]; !ok || nv != v {
			keys = append(keys, k)
		}
	}
	for k := range next.Restart {
		if _, ok := cur.Restart[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return append(out, keys...)
}

// closed reports whether err is a server's normal end after Shutdown.
func closed(err error) bool {
	return err == nil || errors.Is(err, ErrServerClosed) || errors.Is(err, http.ErrServerClosed)
}
