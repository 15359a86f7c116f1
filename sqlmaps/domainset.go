package sqlmaps

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
)

// DomainSet answers whether a domain is one of ours: listed in postkit.yaml
// (domains) or in the database's postfix_domaines table, active or not (a
// disabled domain is still ours: nobody outside may send as it). The daemons
// use it to refuse outsiders claiming our domains.
//
// Nothing is cached: the table is asked on every lookup (one indexed query),
// so `postkit db domain add` applies to the next message. The database is
// opened on first use and again when the file is replaced (a restored
// backup), so that a daemon started before `postkit db init` works once the
// file exists.
type DomainSet struct {
	listed map[string]bool
	src    Source
	live   liveStore
}

// NewDomainSet returns the set of the listed domains plus those of the
// database src (a Source with no path for none).
func NewDomainSet(src Source, listed []string) *DomainSet {
	d := &DomainSet{listed: map[string]bool{}, src: src, live: liveStore{src: src}}
	for _, n := range listed {
		d.listed[normDomain(n)] = true
	}
	return d
}

// Contains reports whether domain is ours. An error means the database
// could not be read: callers answer with a temporary failure.
func (d *DomainSet) Contains(ctx context.Context, domain string) (bool, error) {
	domain = normDomain(domain)
	if domain == "" {
		return false, nil
	}
	if d.listed[domain] {
		return true, nil
	}
	if !d.src.Configured() {
		return false, nil
	}
	st, err := d.live.open()
	if err != nil {
		return false, err
	}
	var one int
	err = st.db.QueryRowContext(ctx, "SELECT 1 FROM postfix_domaines WHERE "+st.db.d.nocaseEq("domaine")+" LIMIT 1", domain).Scan(&one)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("sqlmaps: look up domain %s in %s: %w", domain, d.src, err)
	}
	return true, nil
}

// Close closes the database if it was opened.
func (d *DomainSet) Close() error { return d.live.Close() }

// liveStore is a database opened read-only on first use and again when
// its file is replaced (a restored backup), for daemons that ask it on
// every message and start before `postkit db init` may have run.
type liveStore struct {
	src Source

	mu    sync.Mutex
	store *Store
	ino   uint64
}

// open returns the store, (re)opening it when the file is new or replaced.
func (l *liveStore) open() (*Store, error) {
	if l.src.IsPostgres() {
		// One pool for the daemon's life: database/sql reconnects by
		// itself after an outage.
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.store == nil {
			st, err := l.src.OpenForDaemon()
			if err != nil {
				return nil, err
			}
			l.store = st
		}
		return l.store, nil
	}
	var ino uint64
	if fi, err := os.Stat(l.src.Path); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			ino = uint64(st.Ino)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.store != nil && ino == l.ino {
		return l.store, nil
	}
	st, err := OpenReadOnly(l.src.Path)
	if err != nil {
		return nil, err
	}
	if l.store != nil {
		l.store.Close()
	}
	l.store, l.ino = st, ino
	return st, nil
}

// Close closes the database if it was opened.
func (l *liveStore) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.store == nil {
		return nil
	}
	err := l.store.Close()
	l.store = nil
	return err
}

// String lists the configured domains and the database, for logs.
func (d *DomainSet) String() string {
	var names []string
	for n := range d.listed {
		names = append(names, n)
	}
	return fmt.Sprintf("domains %s and database %s", strings.Join(names, ","), d.src)
}
