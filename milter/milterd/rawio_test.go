package milterd

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// socketPair returns both ends of a loopback connection of the network.
func socketPair(t *testing.T, network string) (ours, peer net.Conn) {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(t.TempDir(), "s")
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- nil
			return
		}
		done <- c
	}()
	peer, err = net.Dial(network, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	ours = <-done
	if ours == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { ours.Close(); peer.Close() })
	return ours, peer
}

// The socket reader and writer behave like the connection's own: data in
// order (writes larger than the socket buffer wait for the peer), EOF when
// the peer closes, the net package's errors for deadlines and Close, and
// EPIPE rather than a signal when the peer is gone.
func TestSocketIO(t *testing.T) {
	for _, network := range []string{"unix", "tcp"} {
		t.Run(network+"/round trip", func(t *testing.T) {
			ours, peer := socketPair(t, network)
			r, w := newSocketIO(ours)
			big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB: several socket buffers
			got := make(chan []byte, 1)
			go func() {
				b, _ := io.ReadAll(io.LimitReader(peer, int64(len(big))))
				got <- b
			}()
			if n, err := w.Write(big); n != len(big) || err != nil {
				t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(big))
			}
			if b := <-got; !bytes.Equal(b, big) {
				t.Fatalf("peer read %d bytes, not what was written", len(b))
			}
			go func() { peer.Write([]byte("ping")); peer.Close() }()
			b, err := io.ReadAll(r)
			if err != nil || string(b) != "ping" {
				t.Fatalf("ReadAll = %q, %v; want \"ping\", nil (EOF)", b, err)
			}
		})
		t.Run(network+"/deadline", func(t *testing.T) {
			ours, _ := socketPair(t, network)
			r, _ := newSocketIO(ours)
			ours.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			if _, err := r.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("Read after the deadline: %v, want os.ErrDeadlineExceeded", err)
			}
		})
		t.Run(network+"/closed", func(t *testing.T) {
			ours, _ := socketPair(t, network)
			r, _ := newSocketIO(ours)
			go func() { time.Sleep(20 * time.Millisecond); ours.Close() }()
			if _, err := r.Read(make([]byte, 8)); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("Read on a closed connection: %v, want net.ErrClosed", err)
			}
		})
		t.Run(network+"/peer gone", func(t *testing.T) {
			ours, peer := socketPair(t, network)
			_, w := newSocketIO(ours)
			peer.Close()
			var err error
			for i := 0; i < 100 && err == nil; i++ { // TCP reports the reset on a later write
				_, err = w.Write([]byte("reply"))
				time.Sleep(time.Millisecond)
			}
			if err == nil {
				t.Fatal("writes to a closed peer kept succeeding")
			}
		})
	}
}
