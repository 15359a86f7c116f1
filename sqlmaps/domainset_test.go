package sqlmaps

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

func TestDomainSet(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "postfix.sqlite")
	set := NewDomainSet(Source{Path: path}, []string{"Example.Test."})
	defer set.Close()

	// Before `postkit db init`: configured domains answer, others fail
	// (temporarily) rather than pass as foreign.
	if ok, err := set.Contains(ctx, "example.test"); !ok || err != nil {
		t.Fatalf("configured domain: %v %v, want true", ok, err)
	}
	if _, err := set.Contains(ctx, "stored.test"); err == nil {
		t.Fatal("missing database: no error")
	}

	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"stored.test", "disabled.test"} {
		if _, err := s.AddDomain(ctx, d, false); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.SetActive(ctx, Domains, "disabled.test", false); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		domain string
		want   bool
	}{
		{"example.test", true},
		{"EXAMPLE.test.", true},
		{"stored.test", true},
		{"Stored.Test", true},
		{"disabled.test", true}, // still ours
		{"sub.stored.test", false},
		{"outside.test", false},
		{"", false},
	}
	for _, tt := range tests {
		if got, err := set.Contains(ctx, tt.domain); got != tt.want || err != nil {
			t.Errorf("Contains(%q) = %v, %v; want %v", tt.domain, got, err, tt.want)
		}
	}
	// A domain added later is seen at once: nothing is cached.
	if _, err := s.AddDomain(ctx, "later.test", false); err != nil {
		t.Fatal(err)
	}
	if got, _ := set.Contains(ctx, "later.test"); !got {
		t.Error("a domain added after the first lookup is not seen")
	}
	s.Close()

	// A replaced file (a restored backup) is reopened.
	next := filepath.Join(dir, "next.sqlite")
	s2, err := Open(next)
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.AddDomain(ctx, "restored.test", false); err != nil {
		t.Fatal(err)
	}
	s2.Close()
	if err := os.Rename(next, path); err != nil {
		t.Fatal(err)
	}
	if got, err := set.Contains(ctx, "restored.test"); !got || err != nil {
		t.Errorf("after replacing the file: %v %v, want the new file's domain", got, err)
	}
	if got, _ := set.Contains(ctx, "stored.test"); got {
		t.Error("after replacing the file: the old file's domain is still seen")
	}
}
