package milterd

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/postkit/postkit/internal/metrics"
	"github.com/postkit/postkit/milter/filter"
)

// Metrics counts the milter's messages, filter outcomes, DKIM signatures
// and spam verdicts for Prometheus. It is the chain's Observer and the
// filters' filter.Meter, and a prometheus.Collector that internal/metrics
// serves beside the process, Go and build families. It lives as long as
// the daemon: a reload builds new chains over the same Metrics.
type Metrics struct {
	messages   *prometheus.CounterVec   // verdict, direction
	msgDur     *prometheus.HistogramVec // direction
	outcomes   *prometheus.CounterVec   // filter, outcome
	filterDur  *prometheus.HistogramVec // filter
	errors     *prometheus.CounterVec   // kind
	dkimSigned *prometheus.CounterVec   // domain
	dkimVerify *prometheus.CounterVec   // result
	spam       *prometheus.CounterVec   // verdict

	mu      sync.Mutex
	domains map[string]bool
}

// maxDomains bounds the domain label of signatures: the keys an
// administrator configured, well below it; beyond, domain="other".
const maxDomains = 1000

// Known label values: anything else a filter reports is counted as other,
// so that no input grows a family.
var (
	dkimResults  = set("pass", "fail", "neutral", "policy", "temperror", "permerror", "none")
	spamVerdicts = set("ham", "spam", "reject", "error")
	verdicts     = set("accept", "reject", "tempfail", "discard")
	outcomeSet   = set(Outcomes...)
)

func set(vs ...string) map[string]bool {
	m := map[string]bool{}
	for _, v := range vs {
		m[v] = true
	}
	return m
}

func known(s map[string]bool, v string) string {
	if s[v] {
		return v
	}
	return "other"
}

// NewMetrics returns the milter's counters, at zero.
func NewMetrics() *Metrics {
	m := &Metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postkit_milter_messages_total", Help: "Messages answered at end of data, by verdict and direction (inbound, outbound).",
		}, []string{"verdict", "direction"}),
		msgDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "postkit_milter_message_duration_seconds", Help: "Time from MAIL FROM to the milter's answer at end of data.", Buckets: metrics.DurationBuckets,
		}, []string{"direction"}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postkit_milter_filter_outcomes_total", Help: "What each filter did to a message: pass, modified, reject, tempfail, discard, error, skipped.",
		}, []string{"filter", "outcome"}),
		filterDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "postkit_milter_filter_duration_seconds", Help: "Time spent in each filter for one message.", Buckets: metrics.DurationBuckets,
		}, []string{"filter"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postkit_milter_errors_total", Help: "Faults: a filter failing on a message (filter), a connection dropped on an error (connection).",
		}, []string{"kind"}),
		dkimSigned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postkit_milter_dkim_signatures_total", Help: "DKIM signatures made, by signing domain (d=).",
		}, []string{"domain"}),
		dkimVerify: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postkit_milter_dkim_verifications_total", Help: "DKIM signatures of inbound mail verified, by result (RFC 8601); none counts messages without one.",
		}, []string{"result"}),
		spam: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postkit_milter_spam_verdicts_total", Help: "Spam scoring verdicts: ham, spam (marked), reject, error (no full verdict).",
		}, []string{"verdict"}),
		domains: map[string]bool{},
	}
	// The fixed label values start at zero, so that rates exist before the
	// first event.
	for v := range spamVerdicts {
		m.spam.WithLabelValues(v)
	}
	for v := range dkimResults {
		m.dkimVerify.WithLabelValues(v)
	}
	for _, k := range []string{"filter", "connection"} {
		m.errors.WithLabelValues(k)
	}
	return m
}

func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.messages, m.msgDur, m.outcomes, m.filterDur, m.errors, m.dkimSigned, m.dkimVerify, m.spam}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.collectors() {
		c.Collect(ch)
	}
}

func direction(outbound bool) string {
	if outbound {
		return "outbound"
	}
	return "inbound"
}

// ObserveMessage implements Observer.
func (m *Metrics) ObserveMessage(verdict string, outbound bool, elapsed time.Duration) {
	d := direction(outbound)
	m.messages.WithLabelValues(known(verdicts, verdict), d).Inc()
	m.msgDur.WithLabelValues(d).Observe(elapsed.Seconds())
}

// ObserveFilter implements Observer. Filter names come from the chain's
// table, a fixed set.
func (m *Metrics) ObserveFilter(name, outcome string, elapsed time.Duration) {
	outcome = known(outcomeSet, outcome)
	m.outcomes.WithLabelValues(name, outcome).Inc()
	if outcome == "error" {
		m.errors.WithLabelValues("filter").Inc()
	}
	if outcome != "skipped" {
		m.filterDur.WithLabelValues(name).Observe(elapsed.Seconds())
	}
}

// ObserveError implements Observer.
func (m *Metrics) ObserveError(kind string) {
	m.errors.WithLabelValues(known(set("connection", "filter"), kind)).Inc()
}

// Count implements filter.Meter.
func (m *Metrics) Count(event, value string) {
	switch event {
	case filter.EventDKIMSigned:
		m.mu.Lock()
		if !m.domains[value] {
			if len(m.domains) >= maxDomains {
				value = "other"
			}
			m.domains[value] = true
		}
		m.mu.Unlock()
		m.dkimSigned.WithLabelValues(value).Inc()
	case filter.EventDKIMVerified:
		m.dkimVerify.WithLabelValues(known(dkimResults, value)).Inc()
	case filter.EventSpamVerdict:
		m.spam.WithLabelValues(known(spamVerdicts, value)).Inc()
	}
}

// Messages, Outcomes and Errors return one series each, for tests.
func (m *Metrics) Messages(verdict, direction string) prometheus.Counter {
	return m.messages.WithLabelValues(verdict, direction)
}

// Outcomes returns the series of one filter's outcome.
func (m *Metrics) Outcomes(filter, outcome string) prometheus.Counter {
	return m.outcomes.WithLabelValues(filter, outcome)
}

// Errors returns the series of one kind of fault.
func (m *Metrics) Errors(kind string) prometheus.Counter {
	return m.errors.WithLabelValues(kind)
}
