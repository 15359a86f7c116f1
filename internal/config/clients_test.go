package config

import (
	"strings"
	"testing"
)

// A daemon address other hosts can reach needs the list of clients allowed
// to connect: the error points at the listen key, with the key to set.
func TestAllowClients(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string // substrings of the error; nil = valid
	}{
		{"milter on loopback", "milter:\n  listen: inet:127.0.0.1:8891\n", nil},
		{"milter on unix", "milter:\n  listen: unix:/var/spool/postfix/postkit/m.sock\n", nil},
		{"milter on every interface", "milter:\n  listen: inet:0.0.0.0:8891\n",
			[]string{"x.yaml:4:11:", "milter.listen", `"inet:0.0.0.0:8891" can be reached from other hosts`, "milter.allow_clients"}},
		{"milter on ::", "milter:\n  listen: \"inet:[::]:8891\"\n", []string{"x.yaml:4:11:", "milter.allow_clients"}},
		{"milter on a LAN address", "milter:\n  listen: inet:192.168.1.10:8891\n", []string{"milter.listen", "no authentication"}},
		{"milter on a LAN address, allowed", "milter:\n  listen: inet:192.168.1.10:8891\n  allow_clients: [192.168.1.25/32]\n", nil},
		{"policy on every interface", "policy:\n  listen: inet:0.0.0.0:10040\n",
			[]string{"x.yaml:4:11:", "policy.listen", "policy.allow_clients"}},
		{"policy allowed", "policy:\n  listen: inet:0.0.0.0:10040\n  allow_clients: [10.0.0.0/24, \"2001:db8::25\"]\n", nil},
		{"bad client network", "policy:\n  listen: inet:0.0.0.0:10040\n  allow_clients: [10.0.0.1/24]\n",
			[]string{"x.yaml:5:19:", "policy.allow_clients[0]", "did you mean 10.0.0.0/24?"}},
		{"metrics on a bare port", "policy:\n  metrics: \"9187\"\n", nil},
		{"metrics on loopback", "policy:\n  metrics: 127.0.0.1:9187\n", nil},
		{"metrics on every interface", "policy:\n  metrics: 0.0.0.0:9187\n",
			[]string{"x.yaml:4:12:", "policy.metrics", "policy.metrics_allow_clients"}},
		{"metrics allowed", "policy:\n  metrics: 0.0.0.0:9187\n  metrics_allow_clients: [192.0.2.9]\n", nil},
		{"policy clients do not open the metrics", "policy:\n  metrics: 0.0.0.0:9187\n  allow_clients: [192.0.2.9]\n", []string{"policy.metrics_allow_clients"}},
		{"bad metrics client", "policy:\n  metrics_allow_clients: [nowhere]\n", []string{"policy.metrics_allow_clients[0]"}},
		{"milter metrics on loopback", "milter:\n  metrics: 127.0.0.1:9188\n", nil},
		{"milter metrics on every interface", "milter:\n  metrics: 0.0.0.0:9188\n",
			[]string{"x.yaml:4:12:", "milter.metrics", "milter.metrics_allow_clients"}},
		{"milter metrics allowed", "milter:\n  metrics: 0.0.0.0:9188\n  metrics_allow_clients: [192.0.2.9]\n", nil},
		{"milter clients do not open the metrics", "milter:\n  metrics: 0.0.0.0:9188\n  allow_clients: [192.0.2.9]\n", []string{"milter.metrics_allow_clients"}},
		{"bad milter client", "milter:\n  allow_clients: [\"10.0.0.0/40\"]\n", []string{"milter.allow_clients[0]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Parse("x.yaml", []byte(minimal+tt.yaml))
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Parse: %v; want no error", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse = nil error; want one containing %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Parse error %q; want it to contain %q", err, w)
				}
			}
		})
	}
}
