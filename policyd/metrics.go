package policyd

// Metrics counts policy decisions for Prometheus (internal/metrics serves
// them with the process, Go and build families): decisions per check and
// result, check durations, requests per final action and their durations.

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/postkit/postkit/internal/metrics"
)

// maxSeries bounds the label sets of each family: results beyond it are
// counted under result="other" so that a caller passing free text cannot
// grow the registry without limit.
const maxSeries = 1000

// Metrics counts decisions per check and result, check durations, and final
// actions per request. It is a prometheus.Collector, safe for concurrent
// use; the zero value is not usable, call NewMetrics.
type Metrics struct {
	decisions *prometheus.CounterVec   // check, result
	durations *prometheus.HistogramVec // check
	requests  *prometheus.CounterVec   // action class
	reqDur    prometheus.Histogram

	mu     sync.Mutex
	seen   map[[2]string]bool // decision series
	checks map[string]bool    // duration series
}

// NewMetrics returns an empty set of counters.
func NewMetrics() *Metrics {
	return &Metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postkit_policy_decisions_total", Help: "Policy check decisions by check and result.",
		}, []string{"check", "result"}),
		durations: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "postkit_policy_check_duration_seconds", Help: "Time spent in each policy check.", Buckets: metrics.DurationBuckets,
		}, []string{"check"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postkit_policy_requests_total", Help: "Policy requests by final action.",
		}, []string{"action"}),
		reqDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "postkit_policy_request_duration_seconds", Help: "Time to answer one policy request.", Buckets: metrics.DurationBuckets,
		}),
		seen:   map[[2]string]bool{},
		checks: map[string]bool{},
	}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	m.decisions.Describe(ch)
	m.durations.Describe(ch)
	m.requests.Describe(ch)
	m.reqDur.Describe(ch)
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	m.decisions.Collect(ch)
	m.durations.Collect(ch)
	m.requests.Collect(ch)
	m.reqDur.Collect(ch)
}

// Observe counts one decision of check with result (see ResultOf) that took dur.
func (m *Metrics) Observe(check, result string, dur time.Duration) {
	k := [2]string{check, result}
	m.mu.Lock()
	if !m.seen[k] {
		if len(m.seen) >= maxSeries {
			k[1] = "other"
		}
		m.seen[k] = true
	}
	timed := m.checks[check] || len(m.checks) < maxSeries
	m.checks[check] = m.checks[check] || timed
	m.mu.Unlock()
	m.decisions.WithLabelValues(k[0], k[1]).Inc()
	if timed {
		m.durations.WithLabelValues(check).Observe(dur.Seconds())
	}
}

// ObserveDecision is Observe(check, ResultOf(d, err), dur).
func (m *Metrics) ObserveDecision(check string, d Decision, err error, dur time.Duration) {
	m.Observe(check, ResultOf(d, err), dur)
}

// ObserveRequest counts one request answered with the final action sent to
// Postfix, which took dur in all.
func (m *Metrics) ObserveRequest(action string, dur time.Duration) {
	m.requests.WithLabelValues(ActionClass(action)).Inc()
	m.reqDur.Observe(dur.Seconds())
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

// Handler serves these families alone (no process or Go families) for a
// Prometheus scrape; the daemon serves them with the rest through
// internal/metrics.
func (m *Metrics) Handler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	return metrics.Handler(reg)
}

// WriteTo writes these families in the text exposition format.
func (m *Metrics) WriteTo(w io.Writer) (int64, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	fams, err := reg.Gather()
	if err != nil {
		return 0, err
	}
	cw := &countWriter{w: w}
	for _, f := range fams {
		if _, err := expfmt.MetricFamilyToText(cw, f); err != nil {
			return cw.n, err
		}
	}
	return cw.n, nil
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
