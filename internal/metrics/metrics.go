// Package metrics serves the postkit daemons' Prometheus metrics in the
// text exposition format
// (https://prometheus.io/docs/instrumenting/exposition_formats/): a registry
// with the process_* and go_* families and postkit_build_info beside each
// daemon's own families.
//
// Both daemons use github.com/prometheus/client_golang rather than an
// exposition writer of our own: its process collector reads /proc (CPU
// seconds, resident memory, open and maximum file descriptors, start
// time) and its Go collector follows runtime/metrics as Go releases change
// it, the two parts a small writer would have to keep up with; its
// histograms and label escaping are what promtool and Prometheus's parser
// are tested against.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/postkit/postkit/internal/version"
)

// DurationBuckets are the histogram upper bounds, in seconds, of the
// daemons' duration families: from a cached lookup (microseconds) to a DNS
// timeout or a long spam scan (seconds).
var DurationBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

// NewRegistry returns a registry holding the process_* and go_* families
// and postkit_build_info{version,revision,goversion} (always 1), ready for
// a daemon's own collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewGoCollector(),
		BuildInfo(),
	)
	return reg
}

// BuildInfo is the postkit_build_info gauge of version.Get.
func BuildInfo() prometheus.Collector {
	v := version.Get()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "postkit_build_info",
		Help:        "The postkit build: release version, VCS revision and Go version; always 1.",
		ConstLabels: prometheus.Labels{"version": v.Version, "revision": v.Revision, "goversion": v.GoVersion},
	})
	g.Set(1)
	return g
}

// Handler serves reg's families on GET and HEAD; every other method gets
// 405. A family that fails to collect is left out and the rest are served:
// a scrape never fails the daemon, and never touches mail.
func Handler(reg *prometheus.Registry) http.Handler {
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, MaxRequestsInFlight: 4})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "metrics: use GET", http.StatusMethodNotAllowed)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// NewServer is the HTTP server of a daemon's metrics endpoint: /metrics
// only, with timeouts so that a slow scraper holds nothing for long.
func NewServer(reg *prometheus.Registry) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("/metrics", Handler(reg))
	return &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
}
