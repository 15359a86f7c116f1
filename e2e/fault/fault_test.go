// Package fault kills postkit's daemons under load. A steady flow of mail
// goes through the real stack (Postfix, Dovecot, `postkit milter` and
// `postkit policyd`, both wired into Postfix by `postkit generate`) while
// each daemon, then both at once, is killed with SIGKILL and restarted. The
// clients behave as an MTA does: a temporary refusal is retried. The test
// proves that a daemon's crash costs delay, never mail: every accepted
// message is delivered or still queued, once; nothing is lost, nothing
// duplicated; and clients saw only 4xx replies, never 5xx.
package fault

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/postkit/postkit/e2e/harness"
)

const (
	sock    = "unix:{root}/run/postkit/"
	milterS = sock + "milter.sock"
	policyS = sock + "policy.sock"

	password = "Alice-pw-4711"
	selector = "fault"

	// Bounds of the run: a new message every pace per client, at most
	// maxMessages in all; an outage of outage per kill; a message is
	// retried every retryDelay for at most retryFor.
	pace        = 80 * time.Millisecond
	maxMessages = 600
	outage      = 2 * time.Second
	retryDelay  = 200 * time.Millisecond
	retryFor    = 30 * time.Second
	settle      = 2 * time.Second // load between faults
)

var (
	alice = "alice@" + harness.Domain // receives the inbound mail, submits the outbound
	bob   = "bob@" + harness.Domain   // receives alice's submissions
)

func TestMain(m *testing.M) {
	os.Exit(harness.Main(m, harness.Options{
		Set: map[string]any{
			"milter.enabled":          true,
			"milter.listen":           milterS,
			"milter.default_action":   "tempfail",
			"milter.dkim.key_dir":     "{root}/dkimkeys",
			"milter.dkim.keys":        []any{map[string]any{"domain": harness.Domain, "selector": selector}},
			"policy.enabled":          true,
			"policy.listen":           policyS,
			"policy.checks":           []any{"blacklist", "spf", "ratelimit"},
			"policy.blacklist.owner":  "policy",
			"policy.ratelimit.limits": []any{map[string]any{"key": "client_ip", "count": "messages", "max": 1000000, "window": "1h"}},
		},
		Zone: []string{harness.OutsideDomain + `. 300 IN TXT "v=spf1 ip4:127.0.0.2 -all"`},
		Seed: func(s *harness.Stack) error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			for _, u := range []string{alice, bob} {
				if err := s.AddUser(ctx, u, password); err != nil {
					return err
				}
			}
			_, err := s.Postkit(ctx, "", "dkim", "keygen", "--domain", harness.Domain, "--selector", selector,
				"--algo", "ed25519", "--dir", filepath.Join(s.Root, "dkimkeys", harness.Domain))
			return err
		},
		Daemons: []harness.DaemonSpec{
			{Name: "milter", Args: []string{"milter", "-c", "{config}"}, Ready: milterS},
			{Name: "policyd", Args: []string{"policyd", "-c", "{config}"}, Ready: policyS},
		},
	}))
}

// message is one message of the load, sent until Postfix accepts it.
type message struct {
	id       string // token: the Message-ID is <id@outside.test>
	inbound  bool   // from the outside on port 25 to alice; else alice's submission to bob
	attempts int
	accepted bool
	last     string // last refusal or error
}

// outcome of one attempt.
type outcome int

const (
	accepted outcome = iota
	temporary
	permanent
	broken // no SMTP reply: the connection failed
)

// tally counts what the clients saw.
type tally struct {
	mu                   sync.Mutex
	msgs                 []*message
	attempts             int
	temp, milterTemp     int // every 4xx; 4.7.1 from milter_default_action = tempfail
	policyTemp, tempIn   int // 4.3.5 from smtpd_policy_service_default_action; 4xx while a daemon was down
	perm, broken         []string
	replies              map[string]int // each 4xx text, counted
	outages              []window
	sawMilter, sawPolicy bool // a 4xx of that kind while that daemon was down
}

// window is a time a daemon was down, from SIGKILL to ready again (plus a
// second for Postfix to notice).
type window struct {
	daemon     string
	start, end time.Time
}

func (w *tally) record(m *message, o outcome, reply string, at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.attempts++
	m.attempts++
	switch o {
	case accepted:
		m.accepted = true
		return
	case temporary:
		w.temp++
		if w.replies == nil {
			w.replies = map[string]int{}
		}
		w.replies[reply]++
		milter, policy := strings.Contains(reply, "4.7.1"), strings.Contains(reply, "4.3.5")
		if milter {
			w.milterTemp++
		}
		if policy {
			w.policyTemp++
		}
		for _, o := range w.outages {
			if !at.Before(o.start) && (o.end.IsZero() || at.Before(o.end)) {
				w.tempIn++
				w.sawMilter = w.sawMilter || (milter && o.daemon == "milter")
				w.sawPolicy = w.sawPolicy || (policy && o.daemon == "policyd")
				break
			}
		}
	case permanent:
		w.perm = append(w.perm, m.id+": "+reply)
	case broken:
		w.broken = append(w.broken, m.id+": "+reply)
	}
	m.last = reply
}

func (w *tally) down(daemon string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.outages = append(w.outages, window{daemon: daemon, start: time.Now()})
	return len(w.outages) - 1
}

func (w *tally) up(i int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.outages[i].end = time.Now().Add(time.Second)
}

func TestKillDaemonsUnderLoad(t *testing.T) {
	s := harness.Need(t)
	milter, policyd := s.Daemon("milter"), s.Daemon("policyd")
	if milter == nil || policyd == nil || !milter.Running() || !policyd.Running() {
		t.Fatal("the milter and policy daemons are not running")
	}
	run := harness.Token()
	w := &tally{}
	stop := make(chan struct{})
	var stopOnce sync.Once
	stopLoad := func() { stopOnce.Do(func() { close(stop) }) }
	defer stopLoad()
	var next struct {
		sync.Mutex
		n int
	}
	newMessage := func(inbound bool) *message {
		next.Lock()
		defer next.Unlock()
		if next.n >= maxMessages {
			return nil
		}
		next.n++
		m := &message{id: fmt.Sprintf("fault%s%04d", run, next.n), inbound: inbound}
		w.mu.Lock()
		w.msgs = append(w.msgs, m)
		w.mu.Unlock()
		return m
	}

	// The clients: one MTA from the outside on port 25, one user
	// submitting on 587. Each sends a new message every pace and retries
	// a refused one every retryDelay, as an MTA's queue does.
	var clients sync.WaitGroup
	for _, inbound := range []bool{true, false} {
		clients.Add(1)
		go func() {
			defer clients.Done()
			tick := time.NewTicker(pace)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				m := newMessage(inbound)
				if m == nil {
					return
				}
				deadline := time.Now().Add(retryFor)
				for {
					o, reply := send(s, m)
					w.record(m, o, reply, time.Now())
					if o != temporary || time.Now().After(deadline) {
						break
					}
					time.Sleep(retryDelay)
				}
			}
		}()
	}

	// The faults: SIGKILL, an outage, a restart; the milter, the policy
	// daemon, then both at once.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	kill := func(ds ...**harness.Daemon) {
		var idx []int
		for _, d := range ds {
			idx = append(idx, w.down((*d).Name))
			if err := s.KillDaemon(*d); err != nil {
				t.Error(err)
			}
		}
		time.Sleep(outage)
		for i, d := range ds {
			nd, err := s.RestartDaemon(ctx, *d)
			if err != nil {
				t.Fatalf("restart after SIGKILL: %v", err)
			}
			*d = nd
			w.up(idx[i])
		}
		time.Sleep(settle)
	}
	start := time.Now()
	time.Sleep(settle)
	kill(&milter)
	kill(&policyd)
	kill(&milter, &policyd)
	stopLoad()
	clients.Wait()
	loadTime := time.Since(start)

	// Every message the clients sent was accepted in the end: the daemons
	// came back and the retries got through.
	var sent, acceptedN, inbound int
	acceptedIDs := map[string]bool{}
	var gaveUp []string
	for _, m := range w.msgs {
		sent++
		if m.inbound {
			inbound++
		}
		if m.accepted {
			acceptedN++
			acceptedIDs[messageID(m.id)] = true
		} else {
			gaveUp = append(gaveUp, fmt.Sprintf("%s after %d attempts: %s", m.id, m.attempts, m.last))
		}
	}

	// Wait for the accepted mail to be delivered (or stay queued), then
	// count each message where it is: the Maildirs and the queue.
	var found map[string]int
	var delivered, queued int
	for wait := time.Now().Add(60 * time.Second); ; {
		var err error
		found, delivered, queued, err = locate(ctx, s, "fault"+run)
		if err != nil {
			t.Fatal(err)
		}
		if (delivered+queued >= acceptedN && queued == 0) || time.Now().After(wait) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	var lost, dup, unexpected []string
	for id := range acceptedIDs {
		switch n := found[id]; {
		case n == 0:
			lost = append(lost, id)
		case n > 1:
			dup = append(dup, fmt.Sprintf("%s %d times", id, n))
		}
	}
	for id := range found {
		if !acceptedIDs[id] {
			unexpected = append(unexpected, id)
		}
	}
	sort.Strings(lost)
	sort.Strings(dup)
	sort.Strings(unexpected)

	summary := fmt.Sprintf("fault: %d messages (%d inbound on 25, %d submitted on 587) in %d attempts over %v, 3 SIGKILLs (milter, policyd, both) of %v each; "+
		"accepted %d = delivered %d + queued %d; lost %d, duplicated %d, delivered unaccepted %d, never accepted %d; "+
		"4xx %d (milter 4.7.1: %d, policy 4.3.5: %d; %d while a daemon was down), 5xx %d, broken connections %d",
		sent, inbound, sent-inbound, w.attempts, loadTime.Round(100*time.Millisecond), outage,
		acceptedN, delivered, queued, len(lost), len(dup), len(unexpected), len(gaveUp),
		w.temp, w.milterTemp, w.policyTemp, w.tempIn, len(w.perm), len(w.broken))
	t.Log(summary)
	var kinds []string
	for r, n := range w.replies {
		kinds = append(kinds, fmt.Sprintf("%4d× %s", n, r))
	}
	sort.Strings(kinds)
	t.Logf("fault: the 4xx replies:\n%s", strings.Join(kinds, "\n"))

	if len(w.perm) > 0 {
		t.Errorf("clients got %d permanent (5xx) refusals, want none: %s", len(w.perm), head(w.perm))
	}
	if len(w.broken) > 0 {
		t.Errorf("%d attempts ended without an SMTP reply: %s", len(w.broken), head(w.broken))
	}
	if len(gaveUp) > 0 {
		t.Errorf("%d messages never accepted once the daemons were back: %s", len(gaveUp), head(gaveUp))
	}
	if len(lost) > 0 {
		t.Errorf("%d accepted messages lost (neither delivered nor queued): %s", len(lost), head(lost))
	}
	if len(dup) > 0 {
		t.Errorf("%d messages duplicated: %s", len(dup), head(dup))
	}
	if len(unexpected) > 0 {
		t.Errorf("%d messages delivered although the client never saw them accepted: %s", len(unexpected), head(unexpected))
	}
	if acceptedN != delivered+queued {
		t.Errorf("accepted %d != delivered %d + queued %d", acceptedN, delivered, queued)
	}
	if acceptedN < 50 {
		t.Errorf("only %d messages accepted: too little load to judge", acceptedN)
	}
	if !w.sawMilter || !w.sawPolicy {
		t.Errorf("no 4xx from the killed milter (%v) or policy daemon (%v) while it was down: the faults were not exercised", w.sawMilter, w.sawPolicy)
	}
	for _, d := range []*harness.Daemon{milter, policyd} {
		if !d.Running() {
			t.Errorf("daemon %s is not running after its restart", d.Name)
		}
	}
}

// send makes one attempt at m, as a new SMTP session.
func send(s *harness.Stack, m *message) (outcome, string) {
	from, to := "someone@"+harness.OutsideDomain, alice
	var c *smtp.Client
	var err error
	if m.inbound {
		c, err = s.SMTP(harness.OutsideIP)
	} else {
		from, to = alice, bob
		if c, err = s.Submission(harness.OutsideIP, true); err == nil {
			if err = c.Auth(harness.Plain(alice, password)); err != nil {
				c.Close()
			}
		}
	}
	if err == nil {
		err = harness.Send(c, from, []string{to}, harness.Message(from, to, m.id))
		if err == nil {
			c.Quit()
		}
		c.Close()
	}
	var se *smtp.SMTPError
	switch {
	case err == nil:
		return accepted, ""
	case !errors.As(err, &se):
		return broken, err.Error()
	case se.Code >= 400 && se.Code < 500:
		return temporary, fmt.Sprintf("%d %d.%d.%d %s", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message)
	default:
		return permanent, fmt.Sprintf("%d %d.%d.%d %s", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message)
	}
}

// messageID is the Message-ID harness.Message gives a token.
func messageID(token string) string { return "<" + token + "@" + harness.OutsideDomain + ">" }

// locate counts each Message-ID holding marker in alice's and bob's
// Maildirs and in the Postfix queue.
func locate(ctx context.Context, s *harness.Stack, marker string) (found map[string]int, delivered, queued int, err error) {
	found = map[string]int{}
	for _, u := range []string{alice, bob} {
		for _, d := range s.FindMail(u, "", marker) {
			found[d.Header("Message-ID")]++
			delivered++
		}
	}
	q, err := s.Queue(ctx)
	if err != nil {
		return nil, 0, 0, err
	}
	for _, m := range q {
		if strings.Contains(m.MessageID, marker) {
			found[m.MessageID]++
			queued++
		}
	}
	return found, delivered, queued, nil
}

// head shows the first few entries of a list.
func head(l []string) string {
	if len(l) > 5 {
		return strings.Join(l[:5], "; ") + fmt.Sprintf("; … (%d more)", len(l)-5)
	}
	return strings.Join(l, "; ")
}
