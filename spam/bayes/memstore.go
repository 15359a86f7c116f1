package bayes

import (
	"context"
	"sync"
	"time"
)

// MemStore is a Store in memory, for tests and one-off runs.
type MemStore struct {
	mu         sync.Mutex
	spam, ham  int64
	counts     map[Token]Count
	atime      map[Token]time.Time
	records    map[string]Record
	lastExpire time.Time
	expired    int64
}

// NewMemStore returns an empty store.
func NewMemStore() *MemStore {
	return &MemStore{counts: map[Token]Count{}, atime: map[Token]time.Time{}, records: map[string]Record{}}
}

// Totals implements Store.
func (s *MemStore) Totals(context.Context) (int64, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.spam, s.ham, nil
}

// Counts implements Store.
func (s *MemStore) Counts(_ context.Context, toks []Token) (map[Token]Count, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[Token]Count, len(toks))
	for _, t := range toks {
		if c, ok := s.counts[t]; ok {
			out[t] = c
		}
	}
	return out, nil
}

// Record implements Store.
func (s *MemStore) Record(_ context.Context, id string) (Record, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.records[id]
	return r, ok, nil
}

// Learn implements Store.
func (s *MemStore) Learn(_ context.Context, r Record, now time.Time) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.records[r.ID]; ok {
		if old.Spam == r.Spam {
			return false, nil
		}
		s.unlearn(old)
	}
	for _, t := range r.Tokens {
		c := s.counts[t]
		if r.Spam {
			c.Spam++
		} else {
			c.Ham++
		}
		s.counts[t] = c
		s.atime[t] = now
	}
	if r.Spam {
		s.spam++
	} else {
		s.ham++
	}
	r.Tokens = append([]Token(nil), r.Tokens...)
	s.records[r.ID] = r
	return true, nil
}

// Forget implements Store.
func (s *MemStore) Forget(_ context.Context, id string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.records[id]
	if !ok {
		return false, nil
	}
	s.unlearn(old)
	return true, nil
}

// unlearn takes back r's counts and deletes its record; s.mu is held.
func (s *MemStore) unlearn(r Record) {
	for _, t := range r.Tokens {
		c, ok := s.counts[t]
		if !ok {
			continue
		}
		if r.Spam && c.Spam > 0 {
			c.Spam--
		} else if !r.Spam && c.Ham > 0 {
			c.Ham--
		}
		if c.Spam == 0 && c.Ham == 0 {
			delete(s.counts, t)
			delete(s.atime, t)
		} else {
			s.counts[t] = c
		}
	}
	if r.Spam && s.spam > 0 {
		s.spam--
	} else if !r.Spam && s.ham > 0 {
		s.ham--
	}
	delete(s.records, r.ID)
}

// Expire implements Store.
func (s *MemStore) Expire(_ context.Context, before time.Time) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for t, at := range s.atime {
		if at.Before(before) {
			delete(s.atime, t)
			delete(s.counts, t)
			n++
		}
	}
	s.expired += n
	s.lastExpire = before
	return n, nil
}

// Stats implements Store.
func (s *MemStore) Stats(context.Context) (Stats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{Spam: s.spam, Ham: s.ham, Tokens: int64(len(s.counts)), Records: int64(len(s.records)), LastExpire: s.lastExpire, ExpiredTotal: s.expired}
	for _, at := range s.atime {
		if st.OldestAtime.IsZero() || at.Before(st.OldestAtime) {
			st.OldestAtime = at
		}
		if at.After(st.NewestAtime) {
			st.NewestAtime = at
		}
	}
	return st, nil
}

// Close implements Store.
func (s *MemStore) Close() error { return nil }
