package generate

import (
	"bufio"
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/postkit/postkit/internal/config"
)

// pristine reports whether a live file's contents are what Debian's
// packages installed there, untouched since: a configuration file of
// dpkg's (its MD5 in ROOT/var/lib/dpkg/status), or the copy the package
// made of its shipped version (dovecot-core copies /usr/share/dovecot into
// /etc/dovecot, postfix /usr/share/postfix/master.cf.dist to master.cf). A
// pristine file holds no change of the admin's: postkit replaces it as if
// it had written it (the packages keep their own copy).
type pristine struct {
	root      string
	cfg       *config.Config
	conffiles map[string]string // live path → MD5, read once
}

func (p *pristine) is(live string, data []byte) bool {
	for _, dist := range p.shipped(live) {
		if b, err := os.ReadFile(filepath.Join(p.root, dist)); err == nil && bytes.Equal(b, data) {
			return true
		}
	}
	if p.conffiles == nil {
		p.conffiles = readConffiles(filepath.Join(p.root, "var/lib/dpkg/status"))
	}
	sum := md5.Sum(data)
	return p.conffiles[live] == hex.EncodeToString(sum[:])
}

// shipped names the packages' own copies of a live file.
func (p *pristine) shipped(live string) []string {
	if rel, ok := strings.CutPrefix(live, p.cfg.Paths.DovecotConfig+"/"); ok {
		return []string{path.Join("/usr/share/dovecot", rel)}
	}
	switch strings.TrimPrefix(live, p.cfg.Paths.PostfixConfig+"/") {
	case "master.cf":
		return []string{"/usr/share/postfix/master.cf.dist"}
	case "main.cf":
		return []string{"/usr/share/postfix/main.cf.dist", "/usr/share/postfix/main.cf.debian"}
	}
	return nil
}

// readConffiles reads the Conffiles fields of dpkg's status file: " PATH
// MD5" lines (with "obsolete" or "remove-on-upgrade" after some).
func readConffiles(status string) map[string]string {
	out := map[string]string{}
	f, err := os.Open(status)
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	in := false
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "Conffiles:"):
			in = true
		case in && strings.HasPrefix(line, " "):
			if fields := strings.Fields(line); len(fields) >= 2 && len(fields[1]) == 32 {
				out[fields[0]] = fields[1]
			}
		default:
			in = false
		}
	}
	return out
}
