package sqlmaps

import (
	"context"
	"errors"
	"testing"
)

func quotaStore(t *testing.T, db *testDB) *Store {
	t.Helper()
	ctx := context.Background()
	s := db.New(t)
	for _, d := range []string{"exemple.fr", "toto.fr"} {
		if _, err := s.AddDomain(ctx, d, false); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range []string{"test@exemple.fr", "big@exemple.fr", "x@toto.fr"} {
		if _, err := s.AddUser(ctx, NewUser{Address: u, PasswordHash: "{PLAIN}x", UID: 3000, GID: 3000}); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// Limits per user and per domain: set, changed, shown, cleared; the user's
// own limit wins over the domain's, which wins over the default.
func TestQuota(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := quotaStore(t, db)
		const def = 5 << 30
		steps := []struct {
			target string
			bytes  int64
			want   Change
		}{
			{"@exemple.fr", 1 << 30, Created},
			{"Exemple.FR", 1 << 30, Unchanged}, // the same domain, written without @
			{"big@exemple.fr", 10 << 30, Created},
			{"BIG@exemple.fr", 20 << 30, Updated},
			{"test@exemple.fr", 0, Created}, // no limit, whatever the domain's
		}
		for _, st := range steps {
			r, err := s.SetQuota(ctx, st.target, st.bytes)
			if err != nil || r.Change != st.want {
				t.Fatalf("SetQuota(%q, %d) = %v, %v; want %s", st.target, st.bytes, r, err, st.want)
			}
		}
		for user, want := range map[string]Effective{
			"big@exemple.fr":  {User: "big@exemple.fr", Bytes: 20 << 30, Size: "20G", Source: "user"},
			"test@exemple.fr": {User: "test@exemple.fr", Bytes: 0, Size: "0", Source: "user"},
			"x@toto.fr":       {User: "x@toto.fr", Bytes: def, Size: "5G", Source: "default"},
		} {
			if got, err := s.EffectiveQuota(ctx, user, def); err != nil || got != want {
				t.Errorf("EffectiveQuota(%s) = %+v, %v; want %+v", user, got, err, want)
			}
		}
		if r, err := s.ClearQuota(ctx, "big@exemple.fr"); err != nil || r.Change != Deleted {
			t.Fatalf("ClearQuota = %v, %v", r, err)
		}
		if r, err := s.ClearQuota(ctx, "big@exemple.fr"); err != nil || r.Change != Unchanged {
			t.Errorf("ClearQuota again = %v, %v; want unchanged, no error", r, err)
		}
		if got, err := s.EffectiveQuota(ctx, "big@exemple.fr", def); err != nil || got.Source != "domain" || got.Bytes != 1<<30 {
			t.Errorf("after clear: %+v, %v; want the domain's 1G", got, err)
		}
		qs, err := s.ListQuotas(ctx)
		if err != nil || len(qs) != 2 || qs[0].Target != "@exemple.fr" || qs[0].Size != "1G" || !qs[0].Domain() || qs[1].Target != "test@exemple.fr" {
			t.Errorf("ListQuotas = %+v, %v", qs, err)
		}
		if q, err := s.GetQuota(ctx, "@exemple.fr"); err != nil || q.Bytes != 1<<30 {
			t.Errorf("GetQuota = %+v, %v", q, err)
		}
		if _, err := s.GetQuota(ctx, "x@toto.fr"); !errors.Is(err, ErrNotFound) {
			t.Errorf("GetQuota of a user without a row: %v; want ErrNotFound", err)
		}

		for _, bad := range []struct {
			target string
			bytes  int64
			err    error
		}{
			{"nobody@exemple.fr", 1, ErrNotFound},
			{"@nowhere.fr", 1, ErrNotFound},
			{"not a target", 1, ErrInvalid},
			{"a@b@c.fr", 1, ErrInvalid},
			{"test@exemple.fr", -1, ErrInvalid},
		} {
			if _, err := s.SetQuota(ctx, bad.target, bad.bytes); !errors.Is(err, bad.err) {
				t.Errorf("SetQuota(%q, %d) = %v; want %v", bad.target, bad.bytes, err, bad.err)
			}
		}
		if _, err := s.EffectiveQuota(ctx, "nobody@exemple.fr", def); !errors.Is(err, ErrNotFound) {
			t.Errorf("EffectiveQuota of a missing user: %v; want ErrNotFound", err)
		}
	})
}

// A schema version 2 database (postkit before quotas) is upgraded to 3 by
// Migrate: the quota table appears, every row stays; its reference tables
// are not touched.
func TestMigrateToQuotas(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := quotaStore(t, db)
		var before string
		before = schemaText(t, s)
		// Back to version 2 as an older postkit left it.
		for _, q := range []string{"DROP TABLE postkit_quotas", "DELETE FROM postkit_schema_version", "INSERT INTO postkit_schema_version VALUES (2, '2026-01-01T00:00:00Z')"} {
			if _, err := s.db.Exec(q); err != nil {
				t.Fatal(err)
			}
		}
		if v, _ := s.Version(ctx); v != 2 {
			t.Fatalf("version %d; want 2", v)
		}
		if _, err := s.SetQuota(ctx, "test@exemple.fr", 1); !errors.Is(err, ErrSchema) {
			t.Errorf("SetQuota on a version 2 database: %v; want ErrSchema telling to run postkit db init", err)
		}
		if err := s.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		if v, _ := s.Version(ctx); v != 3 {
			t.Errorf("version %d after Migrate; want 3", v)
		}
		if us, err := s.ListUsers(ctx, ""); err != nil || len(us) != 3 {
			t.Errorf("users after Migrate: %d, %v; want the 3 users kept", len(us), err)
		}
		if _, err := s.SetQuota(ctx, "test@exemple.fr", 1<<20); err != nil {
			t.Errorf("SetQuota after Migrate: %v", err)
		}
		var after string
		after = schemaText(t, s)
		if before == "" || before != after {
			t.Errorf("the reference tables changed:\n%s\n%s", before, after)
		}
		// A version 3 database is refused by a postkit that knows only 2.
		if _, err := s.db.Exec("INSERT INTO postkit_schema_version VALUES (4, '2027-01-01T00:00:00Z')"); err != nil {
			t.Fatal(err)
		}
		if err := s.Migrate(ctx); !errors.Is(err, ErrSchema) {
			t.Errorf("Migrate of a newer schema: %v; want ErrSchema", err)
		}
	})
}
