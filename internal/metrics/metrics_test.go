package metrics_test

import (
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/postkit/postkit/internal/metrics"
	"github.com/postkit/postkit/internal/metrics/metricstest"
	"github.com/postkit/postkit/internal/version"
)

// The registry serves the process, Go and build families, lint-clean, with
// a daemon's own beside them; only GET and HEAD are answered.
func TestRegistry(t *testing.T) {
	reg := metrics.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "postkit_test_things_total", Help: "Things."})
	reg.MustRegister(c)
	c.Add(3)
	srv := httptest.NewServer(metrics.NewServer(reg).Handler)
	defer srv.Close()

	runtime.GC()
	s := metricstest.Get(t, srv.URL+"/metrics")
	v := version.Get()
	if got, ok := s.Value("postkit_build_info", "version", v.Version, "goversion", runtime.Version()); !ok || got != 1 {
		t.Errorf("postkit_build_info{version=%q,goversion=%q} = %v, %v; want 1", v.Version, runtime.Version(), got, ok)
	}
	if got, _ := s.Value("postkit_test_things_total"); got != 3 {
		t.Errorf("postkit_test_things_total = %v; want 3", got)
	}
	for _, name := range []string{"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
		"process_start_time_seconds", "go_goroutines", "go_memstats_heap_alloc_bytes", "go_gc_duration_seconds"} {
		if got, ok := s.Value(name); !ok || got <= 0 && name != "process_cpu_seconds_total" {
			t.Errorf("%s = %v, %v; want a positive value", name, got, ok)
		}
	}

	for method, want := range map[string]int{http.MethodHead: 200, http.MethodPost: 405, http.MethodPut: 405} {
		req, _ := http.NewRequest(method, srv.URL+"/metrics", nil)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s /metrics: %d; want %d", method, resp.StatusCode, want)
		}
	}
	resp, err := srv.Client().Get(srv.URL + "/other")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("GET /other: %d; want 404", resp.StatusCode)
	}
}
