package config

import (
	"fmt"
	"net"
	"strconv"

	"github.com/postkit/postkit/internal/daemon"
)

// validateClients checks the allow_clients lists and refuses a daemon
// address other hosts can reach without one: neither the milter protocol,
// nor the policy protocol, nor the metrics endpoint authenticates its
// clients (daemon.ListenClients enforces the same rule at start).
func (c *Config) validateClients(f *File) []*Error {
	var errs []*Error
	// Each network is checked by its kind:"cidr" tag.
	type listen struct {
		key, allowKey, addr, what string
		allow                     []CIDR
	}
	milter := "the milter protocol has no authentication: any client could have mail signed for your domains"
	ls := []listen{
		{"milter.listen", "milter.allow_clients", c.Milter.Listen, milter, c.Milter.AllowClients},
		{"policy.listen", "policy.allow_clients", c.Policy.Listen, "the policy protocol has no authentication", c.Policy.AllowClients},
	}
	for i, a := range c.Milter.ExtraListen {
		ls = append(ls, listen{fmt.Sprintf("milter.extra_listen[%d]", i), "milter.allow_clients", a, milter, c.Milter.AllowClients})
	}
	for _, d := range ls {
		a, err := daemon.ParseAddr(d.addr)
		if d.addr == "" || err != nil || !a.Exposed() || len(d.allow) > 0 {
			continue // a bad address is reported by the kind:"addr" check
		}
		errs = append(errs, f.Errorf(d.key, "list the MTAs that may connect in "+d.allowKey+", e.g. [192.0.2.25/32], or listen on inet:127.0.0.1:PORT or a unix: socket",
			"%q can be reached from other hosts and %s", d.addr, d.what))
	}
	for _, m := range []struct {
		key, allowKey, addr string
		allow               []CIDR
	}{
		{"policy.metrics", "policy.metrics_allow_clients", c.Policy.Metrics, c.Policy.MetricsAllowClients},
		{"milter.metrics", "milter.metrics_allow_clients", c.Milter.Metrics, c.Milter.MetricsAllowClients},
	} {
		host, port, err := SplitListen(m.addr)
		if m.addr == "" || err != nil || host == "" || len(m.allow) > 0 {
			continue // a bare port listens on 127.0.0.1 (DaemonMetrics)
		}
		a := daemon.Addr{Network: "tcp", Address: net.JoinHostPort(host, strconv.Itoa(port))}
		if a.Exposed() {
			errs = append(errs, f.Errorf(m.key, "list the scrapers that may connect in "+m.allowKey+", e.g. [192.0.2.9/32], or listen on 127.0.0.1:PORT",
				"%q can be reached from other hosts and the metrics endpoint has no authentication", m.addr))
		}
	}
	return errs
}
