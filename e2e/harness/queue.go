package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"time"
)

// Queued is a message in the Postfix queue (postqueue -j, showq(8)).
type Queued struct {
	ID         string   `json:"queue_id"`
	Queue      string   `json:"queue_name"` // incoming, active, deferred, hold
	Sender     string   `json:"sender"`
	Recipients []string `json:"-"`
	// MessageID is the Message-ID header field, read with postcat; "" when
	// the message left the queue in the meantime.
	MessageID string `json:"-"`
}

// Queue lists the messages in the stack's Postfix queue, each with its
// Message-ID.
func (s *Stack) Queue(ctx context.Context) ([]Queued, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "postqueue", "-c", s.Paths.PostfixConfig, "-j").Output()
	if err != nil {
		return nil, fmt.Errorf("harness: postqueue -j: %w", err)
	}
	var qs []Queued
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		var q Queued
		var rcpts struct {
			Recipients []struct {
				Address string `json:"address"`
			} `json:"recipients"`
		}
		if err := json.Unmarshal(sc.Bytes(), &q); err != nil {
			return nil, fmt.Errorf("harness: postqueue -j line %q: %w", sc.Text(), err)
		}
		json.Unmarshal(sc.Bytes(), &rcpts)
		for _, r := range rcpts.Recipients {
			q.Recipients = append(q.Recipients, r.Address)
		}
		// postcat fails when the message was delivered since postqueue ran.
		if hdr, err := exec.CommandContext(ctx, "postcat", "-c", s.Paths.PostfixConfig, "-h", "-q", q.ID).Output(); err == nil {
			q.MessageID = headerValue(hdr, "Message-ID")
		}
		qs = append(qs, q)
	}
	return qs, sc.Err()
}
