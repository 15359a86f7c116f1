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
	path   string

	mu    sync.Mutex
	store *Store
	ino   uint64
}

// NewDomainSet returns the set of the listed domains plus those of the
// database at path ("" for none).
func NewDomainSet(path string, listed []string) *DomainSet {
	d := &DomainSet{listed: map[string]bool{}, path: path}
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
	if d.path == "" {
		return false, nil
	}
	st, err := d.open()
	if err != nil {
		return false, err
	}
	var one int
	err = st.db.QueryRowContext(ctx, "SELECT 1 FROM postfix_domaines WHERE domaine = ? COLLATE NOCASE LIMIT 1", domain).Scan(&one)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("sqlmaps: look up domain %s in %s: %w", domain, d.path, err)
	}
	return true, nil
}

// open returns the store, (re)opening it when the file is new or replaced.
func (d *DomainSet) open() (*Store, error) {
	var ino uint64
	if fi, err := os.Stat(d.path); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			ino = uint64(st.Ino)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.store != nil && ino == d.ino {
		return d.store, nil
	}
	st, err := OpenReadOnly(d.path)
	if err != nil {
		return nil, err
	}
	if d.store != nil {
		d.store.Close()
	}
	d.store, d.ino = st, ino
	return st, nil
}

// Close closes the database if it was opened.
func (d *DomainSet) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.store == nil {
		return nil
	}
	err := d.store.Close()
	d.store = nil
	return err
}

// String lists the configured domains and the database, for logs.
func (d *DomainSet) String() string {
	var names []string
	for n := range d.listed {
		names = append(names, n)
	}
	return fmt.Sprintf("domains %s and database %s", strings.Join(names, ","), d.path)
}
