package sqlmaps

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
)

// The per-domain allow lists: rows added and removed with the store, read
// by the milter for every message (nothing cached), each recipient domain
// deciding for its own users.
func TestSpamAllowLists(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "postfix.sqlite")
	lists := NewSpamAllowLists(Source{Path: path})
	defer lists.Close()
	if _, err := lists.Allowed(ctx, []string{"u@exemple.fr"}, "partner.fr"); err == nil {
		t.Fatal("no database yet: no error")
	}
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// A database of schema version 1 has no allow list: nothing passes,
	// nothing fails.
	if _, err := s.db.Exec("CREATE TABLE postfix_domaines (id INTEGER PRIMARY KEY, domaine TEXT, defaut BOOLEAN, active INTEGER)"); err != nil {
		t.Fatal(err)
	}
	if ok, err := lists.Allowed(ctx, []string{"u@exemple.fr"}, "partner.fr"); ok || err != nil {
		t.Errorf("version 1 database: %v %v, want false and no error", ok, err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	for _, r := range [][2]string{{"exemple.fr", "partner.fr"}, {"Exemple.FR.", "*@bank.example.org"}, {"toto.fr", "@partner.fr"}} {
		res, err := s.AddSpamAllow(ctx, r[0], r[1])
		if err != nil || res.Change != Created {
			t.Fatalf("AddSpamAllow(%q, %q) = %v, %v", r[0], r[1], res, err)
		}
	}
	if res, err := s.AddSpamAllow(ctx, "exemple.fr", "PARTNER.fr."); err != nil || res.Change != Unchanged {
		t.Errorf("adding a row twice: %v, %v; want unchanged", res, err)
	}
	for _, bad := range [][2]string{{"exemple.fr", "boss@partner.fr"}, {"exemple.fr", "*.partner.fr"}, {"exemple.fr", "partner"}, {"not a domain", "partner.fr"}} {
		if _, err := s.AddSpamAllow(ctx, bad[0], bad[1]); !errors.Is(err, ErrInvalid) {
			t.Errorf("AddSpamAllow(%q, %q) = %v, want ErrInvalid", bad[0], bad[1], err)
		}
	}
	tests := []struct {
		rcpts  []string
		sender string
		want   bool
	}{
		{[]string{"u@exemple.fr"}, "partner.fr", true},
		{[]string{"u@EXEMPLE.FR"}, "Partner.FR.", true},
		{[]string{"u@exemple.fr"}, "mail.partner.fr", true}, // a sub-domain
		{[]string{"u@exemple.fr"}, "notpartner.fr", false},
		{[]string{"u@exemple.fr"}, "bank.example.org", true}, // the domain's second row
		{[]string{"u@exemple.fr"}, "example.org", false},     // a parent is not covered by its child
		{[]string{"u@exemple.fr", "v@toto.fr"}, "partner.fr", true},
		{[]string{"u@exemple.fr", "v@toto.fr"}, "bank.example.org", false}, // toto.fr does not allow it
		{[]string{"u@exemple.fr", "w@third.fr"}, "partner.fr", false},
		{[]string{"u@exemple.fr"}, "", false},
		{nil, "partner.fr", false},
	}
	for _, tt := range tests {
		if got, err := lists.Allowed(ctx, tt.rcpts, tt.sender); got != tt.want || err != nil {
			t.Errorf("Allowed(%v, %q) = %v, %v; want %v", tt.rcpts, tt.sender, got, err, tt.want)
		}
	}
	rows, err := s.ListSpamAllow(ctx)
	if err != nil || len(rows) != 3 || rows[0].Domain != "exemple.fr" || rows[0].Sender != "bank.example.org" || !rows[0].Active {
		t.Errorf("ListSpamAllow = %+v, %v", rows, err)
	}
	if _, err := s.db.Exec("UPDATE postkit_liste_blanche_spam SET active = 0 WHERE domaine_expediteur = 'partner.fr' AND domaine = 'exemple.fr'"); err != nil {
		t.Fatal(err)
	}
	if got, _ := lists.Allowed(ctx, []string{"u@exemple.fr"}, "partner.fr"); got {
		t.Error("a disabled row still allows")
	}
	if res, err := s.DeleteSpamAllow(ctx, "exemple.fr", "bank.example.org"); err != nil || res.Change != Deleted {
		t.Errorf("DeleteSpamAllow = %v, %v", res, err)
	}
	if got, _ := lists.Allowed(ctx, []string{"u@exemple.fr"}, "bank.example.org"); got {
		t.Error("a deleted row still allows: something cached it")
	}
	if r, err := s.DeleteSpamAllow(ctx, "exemple.fr", "bank.example.org"); err != nil || r.Change != Absent || r.Changed() {
		t.Errorf("deleting a missing row: %v, %v; want absent", r, err)
	}
}
