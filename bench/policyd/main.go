// Command policyd-bench measures postkit's policy server on SPF requests
// (SMTPD_POLICY_README protocol over a unix socket) against a loopback DNS
// server serving a generated zone, and helps run the same requests through
// postfix-policyd-spf-python (see peer.sh).
//
//	go run ./bench/policyd -n 20000 -domains 20000 -c 8      # every request needs DNS
//	go run ./bench/policyd -n 20000 -domains 50 -c 8         # DNS answers cached
//	go run ./bench/policyd -mode dns -listen 127.0.0.1:53    # serve the zone only
//	go run ./bench/policyd -mode requests -n 500 > req.txt   # requests for the peer
//
// It is a program, not a test: `go test ./...` never runs it.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/postkit/postkit/internal/dnsclient"
	"github.com/postkit/postkit/internal/dnstest"
	"github.com/postkit/postkit/policyd"
	"github.com/postkit/postkit/policyd/spfcheck"
)

func main() {
	mode := flag.String("mode", "bench", "bench | dns | requests")
	n := flag.Int("n", 20000, "requests")
	domains := flag.Int("domains", 20000, "distinct sender domains (requests cycle over them)")
	conc := flag.Int("c", 8, "concurrent connections")
	listen := flag.String("listen", "127.0.0.1:53", "dns mode: UDP+TCP address to serve the zone on")
	resultCache := flag.Bool("result-cache", true, "keep the SPF check's per-(ip, helo, sender) cache")
	maxTime := flag.Duration("max-time", 2*time.Minute, "stop sending after this long")
	flag.Parse()

	switch *mode {
	case "requests":
		w := bufio.NewWriter(os.Stdout)
		for i := range *n {
			w.WriteString(request(i, *domains))
		}
		w.Flush()
	case "dns":
		serveDNS(*listen, *domains)
	case "bench":
		bench(*n, *domains, *conc, *resultCache, *maxTime)
	default:
		log.Fatalf("-mode %q: want bench, dns or requests", *mode)
	}
}

// zone holds, per domain i: a sender policy needing MX, A and include
// lookups, and a HELO policy needing an A lookup. Clients pass both.
func zone(domains int) *dnstest.Zone {
	z := dnstest.NewZone()
	add := func(s string) {
		if err := z.Add(s); err != nil {
			log.Fatal(err)
		}
	}
	add(`_spf.bench.example. 300 IN TXT "v=spf1 ip4:203.0.113.0/24 -all"`)
	for i := range domains {
		d := fmt.Sprintf("d%d.bench.example.", i)
		add(d + ` 300 IN TXT "v=spf1 mx ip4:192.0.2.0/24 include:_spf.bench.example ~all"`)
		add(d + " 300 IN MX 10 mx." + d)
		add(fmt.Sprintf("mx.%s 300 IN A 198.51.100.%d", d, i%250+1))
		h := fmt.Sprintf("h%d.client.example.", i)
		add(h + ` 300 IN TXT "v=spf1 a -all"`)
		add(fmt.Sprintf("%s 300 IN A 203.0.113.%d", h, i%250+1))
	}
	return z
}

func request(i, domains int) string {
	d := i % domains
	return fmt.Sprintf("request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"+
		"client_address=203.0.113.%d\nclient_name=h%d.client.example\nhelo_name=h%d.client.example\n"+
		"sender=user%d@d%d.bench.example\nrecipient=rcpt@receiver.example\ninstance=%x.%x\nqueue_id=\n\n",
		d%250+1, d, d, i, d, i, d)
}

func serveDNS(addr string, domains int) {
	z := zone(domains)
	srv, err := dnstest.Start()
	if err != nil {
		log.Fatal(err)
	}
	srv.Set(z)
	// dnstest listens on an ephemeral port; relay the asked address to it.
	relay := func(net string) *dns.Server {
		c := &dns.Client{Net: net}
		return &dns.Server{Addr: addr, Net: net, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
			resp, _, err := c.Exchange(r, srv.Addr())
			if err != nil {
				return
			}
			w.WriteMsg(resp)
		})}
	}
	for _, s := range []*dns.Server{relay("udp"), relay("tcp")} {
		go func() { log.Fatal(s.ListenAndServe()) }()
	}
	fmt.Fprintf(os.Stderr, "serving %d domains on %s\n", domains, addr)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	<-ch
}

func bench(n, domains, conc int, resultCache bool, maxTime time.Duration) {
	srv, err := dnstest.Start()
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	srv.Set(zone(domains))
	res, err := dnsclient.New(dnsclient.Config{Servers: []string{srv.Addr()}})
	if err != nil {
		log.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := spfcheck.Config{Mode: spfcheck.Enforce, Hostname: "receiver.example", Logger: quiet}
	if !resultCache {
		cfg.CacheSize = -1
	}
	chk, err := spfcheck.New(cfg, res)
	if err != nil {
		log.Fatal(err)
	}
	ps := &policyd.Server{Checks: []policyd.Check{chk}, Logger: quiet}
	dir, err := os.MkdirTemp("", "policyd-bench")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "policy.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		log.Fatal(err)
	}
	go ps.Serve(ln)
	defer ps.Shutdown(context.Background())

	lat := make([][]time.Duration, conc)
	actions := make([]map[string]int, conc)
	deadline := time.Now().Add(maxTime)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("unix", sock)
			if err != nil {
				log.Fatal(err)
			}
			defer c.Close()
			br := bufio.NewReader(c)
			actions[w] = map[string]int{}
			for i := w; i < n && time.Now().Before(deadline); i += conc {
				t0 := time.Now()
				io.WriteString(c, request(i, domains))
				line, err := br.ReadString('\n')
				if err != nil {
					log.Fatal(err)
				}
				br.ReadString('\n')
				lat[w] = append(lat[w], time.Since(t0))
				a := strings.TrimPrefix(strings.TrimSpace(line), "action=")
				if i := strings.Index(a, " ("); i > 0 {
					a = a[:i]
				}
				actions[w][a]++
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	var all []time.Duration
	total := map[string]int{}
	for w := range conc {
		all = append(all, lat[w]...)
		for k, v := range actions[w] {
			total[k] += v
		}
	}
	slices.Sort(all)
	pct := func(p float64) time.Duration { return all[min(len(all)-1, int(float64(len(all))*p))] }
	fmt.Printf("postkit policyd: %d requests, %d domains, %d connections, result cache %v\n", len(all), domains, conc, resultCache)
	fmt.Printf("  %.0f req/s   p50 %v   p99 %v   max %v   DNS queries %d\n",
		float64(len(all))/el.Seconds(), pct(0.50), pct(0.99), all[len(all)-1], srv.Queries())
	for k, v := range total {
		fmt.Printf("  %6d  %s\n", v, k)
	}
}
