package filter_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/postkit/postkit/milter/filter"
)

func TestStream(t *testing.T) {
	chunks := []string{"Subject: x\r\n\r\n", "line one\r\n", "line two\r\n"}
	t.Run("complete", func(t *testing.T) {
		var got []byte
		s := filter.NewStream(context.Background(), time.Minute, func(_ context.Context, r io.Reader) {
			got, _ = io.ReadAll(r)
		})
		for _, c := range chunks {
			s.Write([]byte(c))
		}
		if !s.Close() {
			t.Fatal("Close reports the message abandoned")
		}
		if string(got) != strings.Join(chunks, "") {
			t.Errorf("consumer read %q", got)
		}
	})
	t.Run("consumer returns early", func(t *testing.T) {
		s := filter.NewStream(context.Background(), time.Minute, func(_ context.Context, r io.Reader) {
			r.Read(make([]byte, 4)) // reads a little, then gives up
		})
		done := make(chan bool)
		go func() {
			big := bytes.Repeat([]byte("x"), 1<<20)
			for range 8 {
				s.Write(big) // must not block
			}
			done <- s.Close()
		}()
		select {
		case ok := <-done:
			if !ok {
				t.Error("Close reports the message abandoned")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("writes block on a consumer that returned")
		}
	})
	t.Run("abort", func(t *testing.T) {
		ctxEnded := make(chan bool, 1)
		s := filter.NewStream(context.Background(), time.Minute, func(ctx context.Context, r io.Reader) {
			_, err := io.ReadAll(r)
			if err != nil {
				t.Errorf("the consumer's reader failed (%v); want EOF", err)
			}
			ctxEnded <- ctx.Err() != nil
		})
		s.Write([]byte(chunks[0]))
		s.Abort()
		s.Abort() // a second call does nothing
		if n, err := s.Write([]byte(chunks[1])); n != len(chunks[1]) || err != nil {
			t.Errorf("Write after Abort = %d, %v; want the chunk dropped quietly", n, err)
		}
		if s.Close() {
			t.Error("Close after Abort reports a complete message")
		}
		if !<-ctxEnded {
			t.Error("the consumer's context did not end with Abort")
		}
	})
	t.Run("timeout", func(t *testing.T) {
		s := filter.NewStream(context.Background(), 50*time.Millisecond, func(ctx context.Context, r io.Reader) {
			io.ReadAll(r)
			<-ctx.Done()
		})
		s.Write([]byte(chunks[0]))
		time.Sleep(200 * time.Millisecond) // the end never came in time
		if s.Close() {
			t.Error("Close after the timeout reports a complete message")
		}
	})
}

// A body that counts the bytes of a message with a reader-based function.
type countBody struct {
	s *filter.Stream
	n int64
}

func (b *countBody) Write(chunk []byte) error { b.s.Write(chunk); return nil }
func (b *countBody) End(m *filter.Message, c *filter.Changes) error {
	if b.s.Close() {
		c.AddHeader("X-Body-Bytes", fmt.Sprint(b.n))
	}
	return nil
}
func (b *countBody) Abort() { b.s.Abort() }

func ExampleStream() {
	b := &countBody{}
	b.s = filter.NewStream(context.Background(), time.Minute, func(_ context.Context, r io.Reader) {
		b.n, _ = io.Copy(io.Discard, r)
	})
	m := &filter.Message{}
	c := filter.NewChanges(m)
	for _, chunk := range []string{"Hello,\r\n", "world.\r\n"} {
		b.Write([]byte(chunk))
	}
	b.End(m, c)
	fmt.Println(m.Headers)
	// Output: [{X-Body-Bytes 16}]
}

var _ filter.Aborter = (*countBody)(nil)
