package policyd

// Metrics renders policy counters in the Prometheus text exposition format
// (https://prometheus.io/docs/instrumenting/exposition_formats/, version
// 0.0.4), without a client library: two counter families and one histogram.

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// durationBuckets are the histogram upper bounds, in seconds: policy checks
// take from microseconds (a cached lookup) to seconds (a DNS timeout).
var durationBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// maxSeries bounds the label sets of each family: results beyond it are
// counted under result="other" so that a caller passing free text cannot
// grow the registry without limit.
const maxSeries = 1000

// Metrics counts decisions per check and result, check durations, and final
// actions per request. It is safe for concurrent use; the zero value is not
// usable, call NewMetrics.
type Metrics struct {
	mu        sync.Mutex
	decisions map[[2]string]uint64 // {check, result}
	durations map[string]*histogram
	requests  map[string]uint64 // final action class
	reqDur    *histogram
}

type histogram struct {
	counts []uint64 // per bucket, not cumulative
	sum    float64
	count  uint64
}

func newHistogram() *histogram { return &histogram{counts: make([]uint64, len(durationBuckets))} }

func (h *histogram) observe(d time.Duration) {
	s := d.Seconds()
	h.sum += s
	h.count++
	if i := sort.SearchFloat64s(durationBuckets, s); i < len(h.counts) {
		h.counts[i]++
	}
}

// NewMetrics returns an empty registry.
func NewMetrics() *Metrics {
	return &Metrics{
		decisions: map[[2]string]uint64{},
		durations: map[string]*histogram{},
		requests:  map[string]uint64{},
		reqDur:    newHistogram(),
	}
}

// Observe counts one decision of check with result (see ResultOf) that took dur.
func (m *Metrics) Observe(check, result string, dur time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := [2]string{check, result}
	if _, ok := m.decisions[k]; !ok && len(m.decisions) >= maxSeries {
		k[1] = "other"
	}
	m.decisions[k]++
	h := m.durations[check]
	if h == nil {
		if len(m.durations) >= maxSeries {
			return
		}
		h = newHistogram()
		m.durations[check] = h
	}
	h.observe(dur)
}

// ObserveDecision is Observe(check, ResultOf(d, err), dur).
func (m *Metrics) ObserveDecision(check string, d Decision, err error, dur time.Duration) {
	m.Observe(check, ResultOf(d, err), dur)
}

// ObserveRequest counts one request answered with the final action sent to
// Postfix, which took dur in all.
func (m *Metrics) ObserveRequest(action string, dur time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requests[ActionClass(action)]++
	m.reqDur.observe(dur)
}

// ResultOf classifies a check's outcome for the result label: "error" when
// the check failed or its Reason ends in "=error", the ActionClass of a final
// action, "prepend" for a header only, else "dunno".
func ResultOf(d Decision, err error) string {
	switch {
	case err != nil:
		return "error"
	case d.Final():
		return ActionClass(d.Action)
	case len(d.Prepend) > 0:
		return "prepend"
	case strings.HasSuffix(d.Reason, "=error"):
		return "error"
	}
	return "dunno"
}

// ActionClass reduces an access(5) action to a small fixed set: ok, dunno,
// reject (REJECT, 5xx), defer (DEFER*, 4xx), discard, hold, prepend,
// redirect, filter, bcc, warn, other.
func ActionClass(action string) string {
	word, _, _ := strings.Cut(strings.TrimSpace(action), " ")
	w := strings.ToUpper(word)
	switch {
	case w == "" || w == "DUNNO":
		return "dunno"
	case w == "OK" || isAllDigits(w) && len(w) != 3:
		return "ok"
	case w == "REJECT" || len(w) == 3 && w[0] == '5' && isAllDigits(w):
		return "reject"
	case strings.HasPrefix(w, "DEFER") || len(w) == 3 && w[0] == '4' && isAllDigits(w):
		return "defer"
	}
	switch w {
	case "DISCARD", "HOLD", "PREPEND", "REDIRECT", "FILTER", "BCC", "WARN":
		return strings.ToLower(w)
	}
	return "other"
}

// Handler serves the metrics for a Prometheus scrape (GET or HEAD).
func (m *Metrics) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "policyd: metrics: use GET", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		if r.Method == http.MethodHead {
			return
		}
		m.WriteTo(w)
	})
}

// WriteTo writes every family in the text exposition format, series sorted.
func (m *Metrics) WriteTo(w io.Writer) (int64, error) {
	cw := &countWriter{w: w}
	bw := bufio.NewWriter(cw)
	m.mu.Lock()
	defer m.mu.Unlock()

	fmt.Fprintf(bw, "# HELP postkit_policy_decisions_total Policy check decisions by check and result.\n")
	fmt.Fprintf(bw, "# TYPE postkit_policy_decisions_total counter\n")
	keys := make([][2]string, 0, len(m.decisions))
	for k := range m.decisions {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i][0] != keys[j][0] {
			return keys[i][0] < keys[j][0]
		}
		return keys[i][1] < keys[j][1]
	})
	for _, k := range keys {
		fmt.Fprintf(bw, "postkit_policy_decisions_total{check=%s,result=%s} %d\n", quoteLabel(k[0]), quoteLabel(k[1]), m.decisions[k])
	}

	fmt.Fprintf(bw, "# HELP postkit_policy_check_duration_seconds Time spent in each policy check.\n")
	fmt.Fprintf(bw, "# TYPE postkit_policy_check_duration_seconds histogram\n")
	checks := make([]string, 0, len(m.durations))
	for c := range m.durations {
		checks = append(checks, c)
	}
	sort.Strings(checks)
	for _, c := range checks {
		writeHistogram(bw, "postkit_policy_check_duration_seconds", "check="+quoteLabel(c)+",", m.durations[c])
	}

	fmt.Fprintf(bw, "# HELP postkit_policy_requests_total Policy requests by final action.\n")
	fmt.Fprintf(bw, "# TYPE postkit_policy_requests_total counter\n")
	actions := make([]string, 0, len(m.requests))
	for a := range m.requests {
		actions = append(actions, a)
	}
	sort.Strings(actions)
	for _, a := range actions {
		fmt.Fprintf(bw, "postkit_policy_requests_total{action=%s} %d\n", quoteLabel(a), m.requests[a])
	}
	fmt.Fprintf(bw, "# HELP postkit_policy_request_duration_seconds Time to answer one policy request.\n")
	fmt.Fprintf(bw, "# TYPE postkit_policy_request_duration_seconds histogram\n")
	writeHistogram(bw, "postkit_policy_request_duration_seconds", "", m.reqDur)

	err := bw.Flush()
	return cw.n, err
}

// writeHistogram writes the cumulative _bucket series, _sum and _count.
// labels is "" or a label list ending with a comma.
func writeHistogram(w io.Writer, name, labels string, h *histogram) {
	var cum uint64
	for i, b := range durationBuckets {
		cum += h.counts[i]
		fmt.Fprintf(w, "%s_bucket{%sle=\"%s\"} %d\n", name, labels, formatFloat(b), cum)
	}
	fmt.Fprintf(w, "%s_bucket{%sle=\"+Inf\"} %d\n", name, labels, h.count)
	l := strings.TrimSuffix(labels, ",")
	if l != "" {
		l = "{" + l + "}"
	}
	fmt.Fprintf(w, "%s_sum%s %s\n", name, l, formatFloat(h.sum))
	fmt.Fprintf(w, "%s_count%s %d\n", name, l, h.count)
}

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// quoteLabel quotes a label value: backslash, double quote and line feed are
// escaped as the exposition format requires.
func quoteLabel(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s) + `"`
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func isAllDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
