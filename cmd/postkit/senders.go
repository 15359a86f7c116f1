package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/sqlmaps"
)

// senderRules are the settings of c the sender-login map depends on (the
// map Postfix reads and the milter's From check): sender_logins and
// recipient_delimiter. A nil c means the defaults, for commands given only
// --db.
func senderRules(c *config.Config) sqlmaps.SenderRules {
	if c == nil {
		c = config.Defaults()
	}
	r := sqlmaps.SenderRules{Delimiter: c.RecipientDelim}
	for _, g := range c.SenderLogins {
		r.Grants = append(r.Grants, sqlmaps.SenderGrant{Sender: g.Sender, Logins: append([]string(nil), g.Logins...)})
	}
	return r
}

// milterStores keeps each database open for the daemon's life, so that
// reloads keep using it; it opens it at the first question and tries again
// at the next one after a failure (a database created after the daemon
// started is found). The store keeps no answers: every question runs the
// query on the rows as they are then. A file replaced under the same path
// (a restore from a backup, a copy moved in place) is seen at the next
// question: the path is checked with stat(2) each time, about a microsecond,
// and the new file opened; the old handle is closed a minute later, when
// questions in flight on it are long done.
type milterStores struct {
	mu   sync.Mutex
	open map[string]*openStore
}

type openStore struct {
	store *sqlmaps.Store
	file  os.FileInfo
}

// retireAfter is how long a replaced database stays open for the questions
// that started on it.
const retireAfter = time.Minute

func (ms *milterStores) get(path string) (*sqlmaps.Store, error) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("milter: database %s: %w", path, err)
	}
	if o, ok := ms.open[path]; ok {
		if os.SameFile(o.file, fi) {
			return o.store, nil
		}
		old := o.store
		time.AfterFunc(retireAfter, func() { old.Close() })
		delete(ms.open, path)
	}
	s, err := sqlmaps.OpenReadOnly(path)
	if err != nil {
		return nil, err
	}
	if ms.open == nil {
		ms.open = map[string]*openStore{}
	}
	ms.open[path] = &openStore{store: s, file: fi}
	return s, nil
}

// Close closes every database opened.
func (ms *milterStores) Close() error {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	var errs []error
	for _, o := range ms.open {
		errs = append(errs, o.store.Close())
	}
	ms.open = nil
	return errors.Join(errs...)
}

// senderCheck is the signer's dkimsign.Senders: the sender-login map, with
// the rules of one configuration, over the database of milterStores.
type senderCheck struct {
	stores *milterStores
	path   string
	rules  sqlmaps.SenderRules
	fold   sqlmaps.Fold

	mu    sync.Mutex
	store *sqlmaps.Store // the store chk was made for
	chk   *sqlmaps.Senders
}

// MayUse implements dkimsign.Senders.
func (sc *senderCheck) MayUse(ctx context.Context, login, addr string) (bool, error) {
	s, err := sc.stores.get(sc.path)
	if err != nil {
		return false, fmt.Errorf("milter: sender check: %w", err)
	}
	sc.mu.Lock()
	if sc.store != s {
		chk, err := s.Senders(sc.rules, sc.fold)
		if err != nil {
			sc.mu.Unlock()
			return false, err
		}
		sc.store, sc.chk = s, chk
	}
	chk := sc.chk
	sc.mu.Unlock()
	return chk.MayUse(ctx, login, addr)
}
