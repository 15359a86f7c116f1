package assemble

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/postkit/postkit/sqlmaps"
)

// senders is the signer's dkimsign.Senders: the sender-login map with the
// rules of one configuration, over the database at path. It belongs to one
// chain and is closed with it: a reload opens the database anew, and the
// old chain's handle goes once its last message is done.
//
// The database is opened at the first question and again at the next one
// after a failure (a database created after the daemon started is found).
// Nothing is cached: every question runs the query on the rows as they are
// then. A file replaced under the same path (a restore from a backup, a
// copy moved in place) is seen at the next question: the path is checked
// with stat(2) each time, about a microsecond, and the new file opened; the
// old handle is closed a minute later, when questions in flight on it are
// long done, or when the chain is closed.
type senders struct {
	src   sqlmaps.Source
	rules sqlmaps.SenderRules
	fold  sqlmaps.Fold

	mu      sync.Mutex
	store   *sqlmaps.Store
	file    os.FileInfo
	chk     *sqlmaps.Senders
	retired map[*sqlmaps.Store]*time.Timer // replaced, closing after retireAfter
	closed  bool
}

// retireAfter is how long a replaced database stays open for the questions
// that started on it.
const retireAfter = time.Minute

func newSenders(src sqlmaps.Source, rules sqlmaps.SenderRules, fold sqlmaps.Fold) *senders {
	return &senders{src: src, rules: rules, fold: fold, retired: map[*sqlmaps.Store]*time.Timer{}}
}

// MayUse implements dkimsign.Senders.
func (s *senders) MayUse(ctx context.Context, login, addr string) (bool, error) {
	chk, err := s.check()
	if err != nil {
		return false, fmt.Errorf("milter: sender check: %w", err)
	}
	return chk.MayUse(ctx, login, addr)
}

// check returns the sender-login check over the database file now at path.
func (s *senders) check() (*sqlmaps.Senders, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("the daemon's chain was closed")
	}
	if s.src.IsPostgres() {
		// One pool for the chain's life; it reconnects by itself.
		if s.store == nil {
			st, err := s.src.OpenForDaemon()
			if err != nil {
				return nil, err
			}
			chk, err := st.Senders(s.rules, s.fold)
			if err != nil {
				st.Close()
				return nil, err
			}
			s.store, s.chk = st, chk
		}
		return s.chk, nil
	}
	fi, err := os.Stat(s.src.Path)
	if err != nil {
		return nil, fmt.Errorf("milter: database %s: %w", s.src.Path, err)
	}
	if s.store != nil {
		if os.SameFile(s.file, fi) {
			return s.chk, nil
		}
		old := s.store
		s.retired[old] = time.AfterFunc(retireAfter, func() { s.retire(old) })
		s.store, s.file, s.chk = nil, nil, nil
	}
	st, err := sqlmaps.OpenReadOnly(s.src.Path)
	if err != nil {
		return nil, err
	}
	chk, err := st.Senders(s.rules, s.fold)
	if err != nil {
		st.Close()
		return nil, err
	}
	s.store, s.file, s.chk = st, fi, chk
	return chk, nil
}

// retire closes a replaced database once its time is up.
func (s *senders) retire(old *sqlmaps.Store) {
	s.mu.Lock()
	_, ok := s.retired[old]
	delete(s.retired, old)
	s.mu.Unlock()
	if ok {
		old.Close()
	}
}

// Close closes the database and those replaced not yet closed.
func (s *senders) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	var errs []error
	for old, t := range s.retired {
		t.Stop()
		errs = append(errs, old.Close())
	}
	clear(s.retired)
	if s.store != nil {
		errs = append(errs, s.store.Close())
		s.store, s.file, s.chk = nil, nil, nil
	}
	return errors.Join(errs...)
}
