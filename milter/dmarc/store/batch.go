package store

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/postkit/postkit/milter/dmarc"
)

// Batching of Record.
const (
	FlushEvery = time.Second
	FlushRows  = 512
	MaxQueued  = 100000
)

// batch is the writer both stores share: Record appends to a queue, and a
// goroutine hands what is queued to write in one call every FlushEvery (or
// as soon as FlushRows are waiting) until close.
type batch struct {
	write func(ctx context.Context, rows []dmarc.Row) error
	// retry, when set, says which failed writes keep their rows queued
	// for the next one (within MaxQueued): a server that comes back.
	retry func(error) bool

	mu      sync.Mutex
	queue   []dmarc.Row
	kick    chan struct{}
	done    chan struct{}
	stopped chan struct{}
	lastErr error
}

func newBatch(write func(context.Context, []dmarc.Row) error, retry func(error) bool) *batch {
	b := &batch{write: write, retry: retry, kick: make(chan struct{}, 1), done: make(chan struct{}), stopped: make(chan struct{})}
	go b.run()
	return b
}

// run writes the queued rows until stop.
func (b *batch) run() {
	defer close(b.stopped)
	tick := time.NewTicker(FlushEvery)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-b.kick:
		case <-b.done:
			b.flush()
			return
		}
		b.flush()
	}
}

// flush writes the queued rows in one call.
func (b *batch) flush() {
	b.mu.Lock()
	rows := b.queue
	b.queue = nil
	b.mu.Unlock()
	if len(rows) == 0 {
		return
	}
	err := b.write(context.Background(), rows)
	b.mu.Lock()
	b.lastErr = err
	if err != nil && b.retry != nil && b.retry(err) {
		// Oldest first, newest dropped past MaxQueued.
		b.queue = append(rows, b.queue...)
		if len(b.queue) > MaxQueued {
			b.queue = b.queue[:MaxQueued]
		}
	}
	b.mu.Unlock()
}

// Flush writes what Record queued, now.
func (b *batch) Flush() error {
	b.flush()
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lastErr
}

// Record implements dmarc.Recorder: it queues r for the writer. It fails
// when the queue is full, or with the writer's last error.
func (b *batch) Record(_ context.Context, r dmarc.Row) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.queue) >= MaxQueued {
		return fmt.Errorf("dmarc store: %d rows waiting to be written (last error: %v); row dropped", len(b.queue), b.lastErr)
	}
	b.queue = append(b.queue, r)
	if len(b.queue) >= FlushRows {
		select {
		case b.kick <- struct{}{}:
		default:
		}
	}
	return b.lastErr
}

// stop writes what is left and returns the last write's error.
func (b *batch) stop() error {
	close(b.done)
	<-b.stopped
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.lastErr != nil && len(b.queue) > 0 {
		return fmt.Errorf("%w; %d rows not written", b.lastErr, len(b.queue))
	}
	return b.lastErr
}
