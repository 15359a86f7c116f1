package harness

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/postkit/postkit/internal/dnstest"
)

// DefaultZone is what the test DNS server answers before Options.Zone: the
// host, an MX for every served domain, and the outside domain, all on loopback.
func DefaultZone(host string, domains []string) []string {
	rrs := []string{
		host + ". 300 IN A 127.0.0.1",
		OutsideDomain + ". 300 IN MX 10 mx." + OutsideDomain + ".",
		"mx." + OutsideDomain + ". 300 IN A 127.0.0.1",
		OutsideDomain + ". 300 IN A 127.0.0.1",
	}
	for _, d := range domains {
		rrs = append(rrs, d+". 300 IN MX 10 "+host+".", d+". 300 IN A 127.0.0.1")
	}
	return rrs
}

// startDNS starts the test DNS server and, unless disabled, the relay on
// 127.x.y.z:53 that Postfix's resolver uses.
func (s *Stack) startDNS() error {
	srv, err := dnstest.Start()
	if err != nil {
		return fmt.Errorf("harness: dns: %w", err)
	}
	s.DNS = srv
	if err := srv.SetZone(append(DefaultZone(s.Hostname, s.Domains), s.Opts.Zone...)...); err != nil {
		return fmt.Errorf("harness: dns zone: %w", err)
	}
	s.log.Info("dns server", "addr", srv.Addr())
	if s.Opts.NoPostfixResolver {
		return nil
	}
	// resolv.conf cannot name a port: the relay listens on port 53 of a
	// random 127/8 address (all of 127/8 is on lo), so that concurrent stacks
	// do not collide.
	var lastErr error
	for range 5 {
		var b [3]byte
		rand.Read(b[:])
		ip := net.IPv4(127, b[0]|1, b[1], b[2]|1)
		r, err := startRelay(ip.String()+":53", srv.Addr())
		if err != nil {
			lastErr = err
			continue
		}
		s.relay = r
		s.ResolverAddr = ip.String()
		content := fmt.Sprintf("# written by the postkit harness: Postfix resolves the test zones here\nnameserver %s\noptions timeout:2 attempts:2\n", ip)
		return os.WriteFile(s.Paths.Resolv, []byte(content), 0o644)
	}
	return fmt.Errorf("harness: dns relay on port 53: %w", lastErr)
}

// dnsRelay forwards DNS over UDP and TCP from one address to another, so a
// server on a random port can be reached at port 53.
type dnsRelay struct {
	pc       net.PacketConn
	ln       net.Listener
	upstream string
	wg       sync.WaitGroup
}

func startRelay(listen, upstream string) (*dnsRelay, error) {
	pc, err := net.ListenPacket("udp", listen)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		pc.Close()
		return nil, err
	}
	r := &dnsRelay{pc: pc, ln: ln, upstream: upstream}
	r.wg.Add(2)
	go r.serveUDP()
	go r.serveTCP()
	return r, nil
}

func (r *dnsRelay) serveUDP() {
	defer r.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, from, err := r.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		q := append([]byte(nil), buf[:n]...)
		go func() {
			c, err := net.Dial("udp", r.upstream)
			if err != nil {
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write(q); err != nil {
				return
			}
			resp := make([]byte, 65535)
			m, err := c.Read(resp)
			if err != nil {
				return // the client times out, as with a silent server
			}
			r.pc.WriteTo(resp[:m], from)
		}()
	}
}

func (r *dnsRelay) serveTCP() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			u, err := net.DialTimeout("tcp", r.upstream, 5*time.Second)
			if err != nil {
				return
			}
			defer u.Close()
			deadline := time.Now().Add(30 * time.Second)
			c.SetDeadline(deadline)
			u.SetDeadline(deadline)
			done := make(chan struct{})
			go func() { io.Copy(u, c); close(done) }()
			io.Copy(c, u)
			<-done
		}()
	}
}

func (r *dnsRelay) Close() error {
	err := errors.Join(r.pc.Close(), r.ln.Close())
	r.wg.Wait()
	return err
}
