package provision

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/postkit/postkit/internal/dkimkey"
)

// dir is a directory apply keeps with its owner and mode.
type dir struct {
	path         string // live path
	mode         fs.FileMode
	owner, group string // names or numbers; "" keeps
}

func (r *run) wantedDirs() []dir {
	c := r.cfg
	acct := Account(c)
	ds := []dir{
		{c.Mailbox.BaseDir, 0o770, strconv.Itoa(c.Mailbox.UID), strconv.Itoa(c.Mailbox.GID)},
		{c.Paths.PostkitRun, 0o750, acct, acct},
	}
	socketDir := func(listen string) {
		if p, ok := strings.CutPrefix(listen, "unix:"); ok {
			ds = append(ds, dir{path.Dir(p), 0o750, acct, c.Postfix.MailOwner})
		}
	}
	if c.Milter.Enabled {
		socketDir(c.Milter.Listen)
		for _, l := range c.Milter.ExtraListen {
			socketDir(l)
		}
		if len(c.Milter.DKIM.Keys) > 0 {
			ds = append(ds, dir{c.Milter.DKIM.KeyDir, 0o750, "", acct})
		}
	}
	if c.Policy.Enabled {
		socketDir(c.Policy.Listen)
	}
	seen := map[string]bool{}
	var out []dir
	for _, d := range ds {
		if !seen[d.path] {
			seen[d.path] = true
			out = append(out, d)
		}
	}
	return out
}

func (r *run) directories(s *Step) error {
	for _, d := range r.wantedDirs() {
		if err := r.ensureDir(s, d); err != nil {
			return err
		}
	}
	return nil
}

func (r *run) ensureDir(s *Step, d dir) error {
	p := r.path(d.path)
	st, err := os.Stat(p)
	switch {
	case errors.Is(err, fs.ErrNotExist) && r.o.Check:
		s.add(true, "would create %s (%04o %s:%s)", d.path, d.mode, show(d.owner), show(d.group))
		return nil
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("apply: %w", err)
		}
		if err := os.Mkdir(p, d.mode); err != nil {
			return fmt.Errorf("apply: %w", err)
		}
		if err := os.Chmod(p, d.mode); err != nil { // past the umask
			return fmt.Errorf("apply: %w", err)
		}
		s.add(true, "created %s (%04o)", d.path, d.mode)
	case err != nil:
		return fmt.Errorf("apply: %w", err)
	case !st.IsDir():
		return fmt.Errorf("apply: %s exists and is not a directory: move it away", p)
	}
	return r.ensureMode(s, p, d.mode, d.owner, d.group)
}

func show(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// ensureMode gives an existing path its mode, owner and group. Owners are
// set when running as root and the accounts exist here; otherwise they are
// reported.
func (r *run) ensureMode(s *Step, p string, mode fs.FileMode, owner, group string) error {
	rel := p
	if x, err := filepath.Rel(r.o.Root, p); !r.live && err == nil && !strings.HasPrefix(x, "..") {
		rel = "/" + x
	}
	st, err := os.Stat(p)
	if err != nil {
		if r.o.Check && errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("apply: %w", err)
	}
	if st.Mode().Perm() != mode {
		if r.o.Check {
			s.add(true, "would set %s to mode %04o (now %04o)", rel, mode, st.Mode().Perm())
		} else {
			if err := os.Chmod(p, mode); err != nil {
				return fmt.Errorf("apply: %w", err)
			}
			s.add(true, "%s: mode %04o (was %04o)", rel, mode, st.Mode().Perm())
		}
	}
	uid, gid := resolve(owner, lookupUser), resolve(group, lookupGroup)
	if (owner != "" && uid < 0) || (group != "" && gid < 0) || os.Geteuid() != 0 {
		if owner != "" || group != "" {
			s.add(false, "%s: owner %s:%s not applied (not root, or no such account on this host)", rel, show(owner), show(group))
		}
		return nil
	}
	sys, _ := st.Sys().(*syscall.Stat_t)
	if sys == nil || (uid < 0 || int(sys.Uid) == uid) && (gid < 0 || int(sys.Gid) == gid) {
		return nil
	}
	if r.o.Check {
		s.add(true, "would give %s to %s:%s", rel, show(owner), show(group))
		return nil
	}
	if err := os.Chown(p, uid, gid); err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	s.add(true, "%s: owner %s:%s", rel, show(owner), show(group))
	return nil
}

// resolve turns a name or a number into an id; -1 for "" or unknown.
func resolve(name string, lookup func(string) int) int {
	if name == "" {
		return -1
	}
	if n, err := strconv.Atoi(name); err == nil {
		return n
	}
	return lookup(name)
}

// create writes a new file (O_EXCL) and records it for undo.
func (r *run) create(p string, data []byte, mode fs.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	r.created = append(r.created, p)
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(p, mode)
	}
	if err != nil {
		return fmt.Errorf("apply: writing %s: %w", p, err)
	}
	return nil
}

func exists(p string) (bool, error) {
	_, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// tls writes a self-signed certificate when tls.cert does not exist.
func (r *run) tls(s *Step) error {
	c := r.cfg.TLS
	cert, key := r.path(c.Cert), r.path(c.Key)
	hasCert, err := exists(cert)
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	hasKey, err := exists(key)
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	switch {
	case hasCert && hasKey:
		s.add(false, "%s and %s exist", c.Cert, c.Key)
		return nil
	case hasCert:
		return fmt.Errorf("apply: tls.cert %s exists but tls.key %s does not: put the certificate's key there, or move the certificate away to have a self-signed one made", c.Cert, c.Key)
	case hasKey:
		return fmt.Errorf("apply: tls.key %s exists but tls.cert %s does not: put the key's certificate there, or move the key away to have a self-signed pair made", c.Key, c.Cert)
	}
	if r.o.Check {
		s.add(true, "would write a SELF-SIGNED certificate for %s at %s (tls.cert does not exist)", r.cfg.Hostname, c.Cert)
		r.note("WARNING: tls.cert %s does not exist: apply would write a SELF-SIGNED certificate for %s", c.Cert, r.cfg.Hostname)
		return nil
	}
	certPEM, keyPEM, err := selfSigned(r.cfg.Hostname, time.Now())
	if err != nil {
		return err
	}
	// Postfix and Dovecot read the key as root before dropping privileges.
	if err := r.create(key, keyPEM, 0o600); err != nil {
		return err
	}
	if err := r.create(cert, certPEM, 0o644); err != nil {
		return err
	}
	s.add(true, "wrote a SELF-SIGNED certificate for %s to %s (key %s): replace it with a real one (e.g. from Let's Encrypt) at the same paths", r.cfg.Hostname, c.Cert, c.Key)
	r.note("WARNING: tls.cert %s did not exist: wrote a SELF-SIGNED certificate for %s, which mail clients and other servers will not trust; install a real certificate at %s (key %s) and run apply again", c.Cert, r.cfg.Hostname, c.Cert, c.Key)
	return nil
}

// selfSigned makes an ECDSA P-256 certificate for host, valid for a year.
func selfSigned(host string, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("apply: tls key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, nil, fmt.Errorf("apply: tls serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: host, Organization: []string{"postkit self-signed"}},
		DNSNames:              []string{host},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("apply: tls certificate: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("apply: tls key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

// dkim makes the keys of milter.dkim.keys that do not exist (RSA,
// DOMAIN/SELECTOR.private 0640 root:ACCOUNT, the TXT record beside it)
// and lets the daemons' account read the existing ones (group ACCOUNT,
// 0640; the owner is kept, so OpenDKIM still reads its own keys).
func (r *run) dkim(s *Step) error {
	if !r.cfg.Milter.Enabled {
		return nil
	}
	acct := Account(r.cfg)
	for _, k := range r.cfg.Milter.DKIM.Keys {
		k.Domain = strings.ToLower(strings.TrimSuffix(k.Domain, "."))
		if k.KeyFile == "" {
			// As the milter reads it (milter/assemble).
			k.KeyFile = path.Join(r.cfg.Milter.DKIM.KeyDir, k.Domain, k.Selector+".private")
		}
		p := r.path(k.KeyFile)
		ok, err := exists(p)
		if err != nil {
			return fmt.Errorf("apply: %w", err)
		}
		if ok {
			if err := r.ensureDir(s, dir{path.Dir(k.KeyFile), 0o750, "", acct}); err != nil {
				return err
			}
			if err := r.ensureMode(s, p, 0o640, "", acct); err != nil {
				return err
			}
			continue
		}
		if r.o.Check {
			s.add(true, "would make DKIM key %s (selector %s, domain %s)", k.KeyFile, k.Selector, k.Domain)
			continue
		}
		if err := r.ensureDir(s, dir{path.Dir(k.KeyFile), 0o750, "", acct}); err != nil {
			return err
		}
		key, err := dkimkey.Generate(dkimkey.RSA, dkimkey.DefaultRSABits, nil)
		if err != nil {
			return fmt.Errorf("apply: DKIM key %s: %w", k.KeyFile, err)
		}
		pemData, err := dkimkey.MarshalPrivateKey(key)
		if err != nil {
			return fmt.Errorf("apply: DKIM key %s: %w", k.KeyFile, err)
		}
		zone, err := dkimkey.KeyZoneTXT(k.Selector, k.Domain, key.Public())
		if err != nil {
			return fmt.Errorf("apply: DKIM key %s: %w", k.KeyFile, err)
		}
		if err := r.create(p, pemData, 0o640); err != nil {
			return err
		}
		if err := r.ensureMode(s, p, 0o640, "", acct); err != nil {
			return err
		}
		txt := strings.TrimSuffix(p, ".private") + ".txt"
		if ok, _ := exists(txt); !ok && txt != p {
			if err := r.create(txt, []byte(zone), 0o644); err != nil {
				return err
			}
		}
		s.add(true, "made DKIM key %s; publish in the zone of %s: %s", k.KeyFile, k.Domain, strings.TrimSpace(zone))
		r.note("new DKIM key %s: publish the record beside it (%s.txt) in the zone of %s", k.KeyFile, strings.TrimSuffix(k.KeyFile, ".private"), k.Domain)
	}
	return nil
}
