package pgtest

import "testing"

func TestStartServesSQL(t *testing.T) {
	s := Start(t)
	s.CreateDatabase("probe")
	s.Psql("probe", "CREATE TABLE t (n int); INSERT INTO t VALUES (41), (1)")
	if got := s.Psql("probe", "SELECT sum(n) FROM t"); got != "42" {
		t.Fatalf("sum = %q, want 42", got)
	}
	s.Stop()
	s.Restart()
	if got := s.Psql("probe", "SELECT count(*) FROM t"); got != "2" {
		t.Fatalf("after restart count = %q, want 2", got)
	}
}
