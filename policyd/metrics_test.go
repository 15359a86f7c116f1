package policyd

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestActionClass(t *testing.T) {
	tests := map[string]string{
		"":                     "dunno",
		"DUNNO":                "dunno",
		"OK":                   "ok",
		"12345":                "ok",
		"REJECT spam":          "reject",
		"554 5.7.1 go away":    "reject",
		"450 4.7.1 later":      "defer",
		"DEFER_IF_PERMIT grey": "defer",
		"defer_if_reject x":    "defer",
		"DISCARD":              "discard",
		"HOLD":                 "hold",
		"PREPEND X-A: b":       "prepend",
		"REDIRECT a@b":         "redirect",
		"FILTER smtp:host":     "filter",
		"permit_mynetworks":    "other",
		"250 ok":               "other",
	}
	for in, want := range tests {
		if got := ActionClass(in); got != want {
			t.Errorf("ActionClass(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestResultOf(t *testing.T) {
	tests := []struct {
		d    Decision
		err  error
		want string
	}{
		{Decision{}, nil, "dunno"},
		{Decision{}, errors.New("x"), "error"},
		{Decision{Reason: "greylist=error"}, nil, "error"},
		{Decision{Action: "DEFER_IF_PERMIT grey", Reason: "greylist=defer"}, nil, "defer"},
		{Decision{Prepend: []string{"X-A: b"}}, nil, "prepend"},
		{Decision{Action: "554 5.7.1 blocked"}, nil, "reject"},
	}
	for _, tt := range tests {
		if got := ResultOf(tt.d, tt.err); got != tt.want {
			t.Errorf("ResultOf(%+v, %v) = %q; want %q", tt.d, tt.err, got, tt.want)
		}
	}
}

func TestMetricsExposition(t *testing.T) {
	m := NewMetrics()
	m.Observe("dnsbl", "reject", 3*time.Millisecond)
	m.Observe("dnsbl", "reject", 20*time.Second) // beyond the last bucket: only +Inf
	m.Observe("dnsbl", "dunno", 400*time.Microsecond)
	m.ObserveDecision("greylist", Decision{Action: "DEFER_IF_PERMIT x"}, nil, time.Millisecond)
	m.Observe(`we"ird\check`+"\n", "dunno", 0)
	m.ObserveRequest("DEFER_IF_PERMIT x", 2*time.Millisecond)
	m.ObserveRequest("DUNNO", 100*time.Microsecond)

	var b strings.Builder
	n, err := m.WriteTo(&b)
	if err != nil || n != int64(b.Len()) {
		t.Fatalf("WriteTo = %d, %v; wrote %d", n, err, b.Len())
	}
	out := b.String()
	for _, want := range []string{
		"# TYPE postkit_policy_decisions_total counter\n",
		`postkit_policy_decisions_total{check="dnsbl",result="dunno"} 1` + "\n",
		`postkit_policy_decisions_total{check="dnsbl",result="reject"} 2` + "\n",
		`postkit_policy_decisions_total{check="greylist",result="defer"} 1` + "\n",
		`postkit_policy_decisions_total{check="we\"ird\\check\n",result="dunno"} 1` + "\n",
		"# TYPE postkit_policy_check_duration_seconds histogram\n",
		`postkit_policy_check_duration_seconds_bucket{check="dnsbl",le="0.0005"} 1` + "\n",
		`postkit_policy_check_duration_seconds_bucket{check="dnsbl",le="0.005"} 2` + "\n",
		`postkit_policy_check_duration_seconds_bucket{check="dnsbl",le="10"} 2` + "\n",
		`postkit_policy_check_duration_seconds_bucket{check="dnsbl",le="+Inf"} 3` + "\n",
		`postkit_policy_check_duration_seconds_sum{check="dnsbl"} 20.0034` + "\n",
		`postkit_policy_check_duration_seconds_count{check="dnsbl"} 3` + "\n",
		`postkit_policy_requests_total{action="defer"} 1` + "\n",
		`postkit_policy_requests_total{action="dunno"} 1` + "\n",
		`postkit_policy_request_duration_seconds_bucket{le="0.0025"} 2` + "\n",
		"postkit_policy_request_duration_seconds_count 2\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("exposition lacks %q\n%s", want, out)
		}
	}
	// Every sample line is "name{labels} value" or "name value".
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(line, "# ") {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i < 0 || !strings.HasPrefix(line, "postkit_policy_") {
			t.Errorf("malformed sample line %q", line)
		}
	}
}

func TestMetricsBoundedSeries(t *testing.T) {
	m := NewMetrics()
	for i := 0; i < maxSeries+50; i++ {
		m.Observe("c", fmt.Sprint("r", i), 0)
	}
	var b strings.Builder
	m.WriteTo(&b)
	if got := strings.Count(b.String(), "postkit_policy_decisions_total{"); got > maxSeries+1 {
		t.Errorf("%d decision series; want at most %d", got, maxSeries+1)
	}
	if !strings.Contains(b.String(), `{check="c",result="other"} 50`) {
		t.Errorf("overflow not counted under result=other")
	}
}

func TestMetricsHandler(t *testing.T) {
	m := NewMetrics()
	m.Observe("spf", "dunno", time.Millisecond)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	tests := []struct {
		method     string
		wantStatus int
		wantBody   string
	}{
		{http.MethodGet, 200, `postkit_policy_decisions_total{check="spf",result="dunno"} 1`},
		{http.MethodHead, 200, ""},
		{http.MethodPost, 405, "use GET"},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(tt.method, srv.URL+"/metrics", nil)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		_, _ = io.Copy(&b, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.wantStatus || !strings.Contains(b.String(), tt.wantBody) {
			t.Errorf("%s: status %d body %q; want %d containing %q", tt.method, resp.StatusCode, b.String(), tt.wantStatus, tt.wantBody)
		}
		if tt.wantStatus == 200 && !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
			t.Errorf("%s: Content-Type %q", tt.method, resp.Header.Get("Content-Type"))
		}
	}
}

func TestMetricsConcurrent(t *testing.T) {
	m := NewMetrics()
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				m.Observe("c", "dunno", time.Microsecond)
				m.ObserveRequest("DUNNO", time.Microsecond)
				if i%100 == 0 {
					m.WriteTo(discard{})
				}
			}
		}()
	}
	wg.Wait()
	var b strings.Builder
	m.WriteTo(&b)
	if !strings.Contains(b.String(), `postkit_policy_decisions_total{check="c",result="dunno"} 2000`) {
		t.Errorf("lost updates:\n%s", b.String())
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// ExampleMetrics shows the calls a policy server makes per decision and the
// handler an optional listener serves.
func ExampleMetrics() {
	m := NewMetrics()
	m.ObserveDecision("greylist", Decision{Action: "DEFER_IF_PERMIT 4.7.1 Greylisted"}, nil, time.Millisecond)
	m.ObserveRequest("DEFER_IF_PERMIT 4.7.1 Greylisted", 2*time.Millisecond)
	var b strings.Builder
	m.WriteTo(&b)
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(l, "postkit_policy_decisions_total") || strings.HasPrefix(l, "postkit_policy_requests_total") {
			fmt.Fprintln(os.Stdout, l)
		}
	}
	// Output:
	// postkit_policy_decisions_total{check="greylist",result="defer"} 1
	// postkit_policy_requests_total{action="defer"} 1
}

func BenchmarkMetricsObserve(b *testing.B) {
	m := NewMetrics()
	for i := 0; i < b.N; i++ {
		m.Observe("greylist", "defer", time.Millisecond)
	}
}
