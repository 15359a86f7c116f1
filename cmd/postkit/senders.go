package main

import (
	"context"
	"errors"
	"fmt"
	"sync"

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

// milterStores opens each database once for the daemon's life, at its first
// question, so that reloads keep using it; a failed open is tried again at
// the next question (a database created after the daemon started is found).
// The store keeps no answers: every question runs the query on the rows as
// they are then.
type milterStores struct {
	mu   sync.Mutex
	open map[string]*sqlmaps.Store
}

func (ms *milterStores) get(path string) (*sqlmaps.Store, error) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if s, ok := ms.open[path]; ok {
		return s, nil
	}
	s, err := sqlmaps.OpenReadOnly(path)
	if err != nil {
		return nil, err
	}
	if ms.open == nil {
		ms.open = map[string]*sqlmaps.Store{}
	}
	ms.open[path] = s
	return s, nil
}

// Close closes every database opened.
func (ms *milterStores) Close() error {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	var errs []error
	for _, s := range ms.open {
		errs = append(errs, s.Close())
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

	mu  sync.Mutex
	chk *sqlmaps.Senders
}

// MayUse implements dkimsign.Senders.
func (sc *senderCheck) MayUse(ctx context.Context, login, addr string) (bool, error) {
	sc.mu.Lock()
	chk := sc.chk
	if chk == nil {
		s, err := sc.stores.get(sc.path)
		if err != nil {
			sc.mu.Unlock()
			return false, fmt.Errorf("milter: sender check: %w", err)
		}
		if chk, err = s.Senders(sc.rules, sc.fold); err != nil {
			sc.mu.Unlock()
			return false, err
		}
		sc.chk = chk
	}
	sc.mu.Unlock()
	return chk.MayUse(ctx, login, addr)
}
