package daemon_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/postkit/postkit/internal/daemon"
)

func ExampleParseAddr() {
	for _, s := range []string{"unix:/var/spool/postfix/postkit/milter.sock", "local:/run/opendkim.sock", "127.0.0.1:10040", "inet:[::1]:8891", "inet:0.0.0.0:8891"} {
		a, err := daemon.ParseAddr(s)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Println(a.Network, a.Address, a, "exposed:", a.Exposed())
	}
	// Output:
	// unix /var/spool/postfix/postkit/milter.sock unix:/var/spool/postfix/postkit/milter.sock exposed: false
	// unix /run/opendkim.sock unix:/run/opendkim.sock exposed: false
	// tcp 127.0.0.1:10040 inet:127.0.0.1:10040 exposed: false
	// tcp [::1]:8891 inet:[::1]:8891 exposed: false
	// tcp 0.0.0.0:8891 inet:0.0.0.0:8891 exposed: true
}

type chain string

func (c chain) Close() error { fmt.Println("closed", c); return nil }

// A reload swaps the chain while a message still uses the old one: the old
// chain is closed when that message is done.
func ExampleHolder() {
	h := daemon.NewHolder(chain("first"))
	c, release := h.Acquire() // a message starts
	fmt.Println("message on", c)
	done := h.Swap(chain("second")) // SIGHUP
	fmt.Println("new messages get", h.Current())
	release() // the message is done: "first" is closed now
	<-done
	<-h.Close() // shutdown
	// Output:
	// message on first
	// new messages get second
	// closed first
	// closed second
}

// greeter is a protocol server: it tells each client the chain it runs.
type greeter struct {
	h  *daemon.Holder[chain]
	ln net.Listener
}

func (g *greeter) Serve(ln net.Listener) error {
	g.ln = ln
	for {
		c, err := ln.Accept()
		if err != nil {
			return daemon.ErrServerClosed
		}
		ch, release := g.h.Acquire()
		fmt.Fprintln(c, "served by", ch)
		release()
		c.Close()
	}
}

func (g *greeter) Shutdown(context.Context) error { return g.ln.Close() }

// A daemon is a Load that builds a chain and says where to listen, and a
// server over the Holder of the chain; Run does the rest (signals, reload,
// drain, shutdown).
func ExampleRun() {
	dir, _ := os.MkdirTemp("", "postkit-example-")
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "greeter.sock")
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error)
	go func() {
		done <- daemon.Run(ctx, daemon.Spec[chain]{
			Name:   "greeter",
			Logger: slog.New(slog.DiscardHandler),
			Load: func() (daemon.Plan[chain], error) {
				// Read postkit.yaml and build the chain here.
				return daemon.Plan[chain]{
					Chain:  "v1",
					Listen: []daemon.Listener{{Addr: daemon.Addr{Network: "unix", Address: sock}, Socket: daemon.SocketOpts{Mode: 0o660}}},
				}, nil
			},
			NewServer: func(h *daemon.Holder[chain]) (daemon.Server, error) { return &greeter{h: h}, nil },
		})
	}()
	c, err := net.Dial("unix", sock)
	for i := 0; err != nil && i < 500; i++ { // until it listens, 5 s at most
		time.Sleep(10 * time.Millisecond)
		c, err = net.Dial("unix", sock)
	}
	if err != nil {
		fmt.Println(err)
		return
	}
	line, _ := bufio.NewReader(c).ReadString('\n')
	fmt.Print(line)
	stop() // as SIGTERM does
	fmt.Println("Run:", <-done)
	// Output:
	// served by v1
	// closed v1
	// Run: <nil>
}
