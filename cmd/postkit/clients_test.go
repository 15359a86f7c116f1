package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/postkit/postkit/internal/testlib"
	"github.com/postkit/postkit/milter/assemble"
	"github.com/postkit/postkit/milter/milterd"
)

// allow_clients reaches both daemons from postkit.yaml, and --allow-client
// replaces it.
func TestAllowClientsOptions(t *testing.T) {
	want := []netip.Prefix{netip.MustParsePrefix("192.0.2.25/32"), netip.MustParsePrefix("2001:db8::/32")}
	mc := loadYAML(t, milterYAMLBase+"milter:\n  listen: inet:0.0.0.0:8891\n  allow_clients: [192.0.2.25, \"2001:db8::/32\"]\n")
	ms, err := milterServingFromConfig(mc)
	if err != nil || fmt.Sprint(ms.AllowClients) != fmt.Sprint(want) {
		t.Errorf("milter allow clients %v, %v; want %v", ms.AllowClients, err, want)
	}
	mf := milterFlags{allowClients: []string{"192.0.2.25/32"}}
	if err := mf.apply(mc, &ms, func(n string) bool { return n == "allow-client" }); err != nil || fmt.Sprint(ms.AllowClients) != fmt.Sprint(want[:1]) {
		t.Errorf("after --allow-client: %v, %v; want %v", ms.AllowClients, err, want[:1])
	}

	po := policyOptions{Config: policyParse(t, policyYAMLBase+"policy:\n  listen: inet:0.0.0.0:10040\n  allow_clients: [192.0.2.25]\n  metrics: 0.0.0.0:9187\n  metrics_allow_clients: [\"2001:db8::/32\"]\n")}
	sv, err := policyServingFromConfig(po.Config)
	if err != nil || fmt.Sprint(sv.AllowClients) != fmt.Sprint(want[:1]) || fmt.Sprint(sv.MetricsAllowClients) != fmt.Sprint(want[1:]) {
		t.Errorf("policy allow clients %v, metrics %v, %v", sv.AllowClients, sv.MetricsAllowClients, err)
	}
	f := policyFlags{allowClients: []string{"198.51.100.0/24"}}
	if err := f.apply(&po, func(n string) bool { return n == "allow-client" }); err != nil {
		t.Fatal(err)
	}
	if sv, err = policyServingFromConfig(po.Config); err != nil || fmt.Sprint(sv.AllowClients) != "[198.51.100.0/24]" || fmt.Sprint(sv.MetricsAllowClients) != fmt.Sprint(want[1:]) {
		t.Errorf("after --allow-client: %v, metrics %v, %v", sv.AllowClients, sv.MetricsAllowClients, err)
	}
	bad := policyFlags{metricsAllowClients: []string{"10.0.0.1/8"}}
	if err := bad.apply(&po, func(n string) bool { return n == "metrics-allow-client" }); err == nil || !strings.Contains(err.Error(), "--metrics-allow-client") {
		t.Errorf("bad --metrics-allow-client: %v", err)
	}
}

// Started on an address other hosts can reach without allowed clients,
// each daemon (and the metrics endpoint) refuses to start and names the key.
func TestDaemonsRefuseExposedListen(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	port := testlib.FreePort(t)
	wide := fmt.Sprintf("inet:0.0.0.0:%d", port)
	err := runMilter(context.Background(), milterServing{Listen: []string{wide}}, 0, quiet, func() (*milterd.Chain, error) {
		return assemble.New(defaultMilterConfig(), assemble.Options{Logger: quiet, NoSeal: true})
	})
	if err == nil || !strings.Contains(err.Error(), "milter.allow_clients") {
		t.Errorf("milter on %s without allowed clients: %v; want a refusal naming milter.allow_clients", wide, err)
	}
	po := defaultPolicyOptions()
	po.Config.Policy.Listen, po.Assemble.Logger = wide, quiet
	load := func() (policyOptions, error) { return po, nil }
	if err := runPolicyd(context.Background(), po, load, nil); err == nil || !strings.Contains(err.Error(), "policy.allow_clients") {
		t.Errorf("policyd on %s without allowed clients: %v; want a refusal naming policy.allow_clients", wide, err)
	}
	po.Config.Policy.Listen = fmt.Sprintf("inet:127.0.0.1:%d", port)
	po.Config.Policy.Metrics = fmt.Sprintf("0.0.0.0:%d", testlib.FreePort(t))
	if err := runPolicyd(context.Background(), po, load, nil); err == nil || !strings.Contains(err.Error(), "policy.metrics_allow_clients") {
		t.Errorf("policyd metrics on %s without allowed clients: %v; want a refusal naming policy.metrics_allow_clients", po.Config.Policy.Metrics, err)
	}
}
