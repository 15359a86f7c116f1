package sqlmaps

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestPasswordPolicy(t *testing.T) {
	p := PasswordPolicy{MinLength: 12, MaxLength: 64, RefuseAddress: true}
	for _, tt := range []struct {
		pw, want string // want: "" accepted, else a substring of the error
	}{
		{"correct horse battery", ""},
		{"été-été-été!", ""}, // 12 code points, more bytes
		{"été-été-ét", "has 10 characters"},
		{"short", "at least 12"},
		{strings.Repeat("x", 65), "at most 64"},
		{"Jean.Dupont@Exemple.fr", "own address"},
		{"jean.dupont2024!!", "own address"},
		{"JEAN.DUPONT-1234", "own address"},
		{"exemple.fr123456", "own address"},
		{"exemple123456789", "own address"},
		{"jean.dupont is my name", ""}, // more than the local part: allowed
		{"line\nbreak-password", "line break"},
	} {
		err := p.Check("jean.dupont@exemple.fr", tt.pw)
		if (tt.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("Check(%q) = %v; want %q", tt.pw, err, tt.want)
		}
		if err != nil && strings.Contains(err.Error(), tt.pw) {
			t.Errorf("Check(%q): the error shows the password: %v", tt.pw, err)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("Check(%q) = %v; want ErrInvalid", tt.pw, err)
		}
	}
	if err := (PasswordPolicy{MinLength: 1}).Check("a@b.fr", "a"); err != nil {
		t.Errorf("the address check is off when RefuseAddress is false: %v", err)
	}
}

func TestDeleteUserAliases(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.New(t)
		fixture(t, s) // ycharbi@exemple.fr → test@exemple.fr; toto → test (local name)
		if _, err := s.AddVirtualAlias(ctx, "equipe@exemple.fr", "Test@exemple.fr, autre@toto.fr"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AddAlias(ctx, "postmaster", "test@exemple.fr"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AddVirtualAlias(ctx, "other@exemple.fr", "pretest@exemple.fr"); err != nil {
			t.Fatal(err)
		}
		refs, err := s.AliasesOf(ctx, "TEST@exemple.fr")
		if err != nil || len(refs) != 3 {
			t.Fatalf("AliasesOf = %v, %v; want ycharbi, equipe, postmaster (not other: pretest@ is another user)", refs, err)
		}
		before := dump(t, s)
		if _, err := s.DeleteUser(ctx, "test@exemple.fr", AliasesRefuse); !errors.Is(err, ErrInUse) {
			t.Errorf("refuse: %v; want ErrInUse", err)
		}
		if dump(t, s) != before {
			t.Error("a refused delete changed the database")
		}
		r, err := s.DeleteUser(ctx, "test@exemple.fr", AliasesCascade)
		if err != nil || r.Change != Deleted || len(r.Cascaded) != 3 {
			t.Fatalf("cascade = %+v, %v", r, err)
		}
		got := map[string]Change{}
		for _, c := range r.Cascaded {
			got[c.Key] = c.Change
		}
		if got["ycharbi@exemple.fr"] != Deleted || got["equipe@exemple.fr"] != Updated || got["postmaster"] != Deleted {
			t.Errorf("cascaded = %v", got)
		}
		as, _ := s.ListAliases(ctx, VirtualAliases)
		dests := map[string]string{}
		for _, a := range as {
			dests[a.Source] = a.Destination
		}
		if dests["equipe@exemple.fr"] != "autre@toto.fr" || dests["other@exemple.fr"] != "pretest@exemple.fr" {
			t.Errorf("virtual aliases after cascade: %v", dests)
		}
		if _, err := s.GetUser(ctx, "test@exemple.fr"); !errors.Is(err, ErrNotFound) {
			t.Errorf("user still there: %v", err)
		}
		if r, err := s.DeleteUser(ctx, "test@exemple.fr", AliasesRefuse); err != nil || r.Change != Absent {
			t.Errorf("second delete = %v, %v; want absent", r, err)
		}
	})
}

func TestSetUser(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.New(t)
		fixture(t, s)
		str := func(v string) *string { return &v }
		num := func(v int) *int { return &v }
		off := false
		r, err := s.SetUser(ctx, "Test@Exemple.fr", UserChange{Name: str("Nouveau Nom"), Privilege: str("user"), UID: num(3001), Active: &off})
		if err != nil || r.Change != Updated || !strings.Contains(r.Detail, `name "Test Dupont" → "Nouveau Nom"`) || !strings.Contains(r.Detail, "privilege administrateur → utilisateur") || !strings.Contains(r.Detail, "uid 3000 → 3001") || !strings.Contains(r.Detail, "disabled") {
			t.Fatalf("SetUser = %+v, %v", r, err)
		}
		u, _ := s.GetUser(ctx, "test@exemple.fr")
		if u.Name != "Nouveau Nom" || u.Privilege != PrivilegeUser || u.UID != 3001 || u.GID != 3000 || u.Active || u.PasswordHash != testHash {
			t.Errorf("after SetUser: %+v", u)
		}
		if r, err := s.SetUser(ctx, "test@exemple.fr", UserChange{Name: str("Nouveau Nom"), UID: num(3001)}); err != nil || r.Change != Unchanged {
			t.Errorf("same values = %+v, %v; want unchanged", r, err)
		}
		before := dump(t, s)
		for _, c := range []UserChange{{Privilege: str("root")}, {Name: str("a\nb")}, {UID: num(0)}} {
			if _, err := s.SetUser(ctx, "test@exemple.fr", c); !errors.Is(err, ErrInvalid) {
				t.Errorf("SetUser(%+v) = %v; want ErrInvalid", c, err)
			}
		}
		if _, err := s.SetUser(ctx, "nobody@exemple.fr", UserChange{Name: str("x")}); !errors.Is(err, ErrNotFound) {
			t.Errorf("unknown user: %v", err)
		}
		if dump(t, s) != before {
			t.Error("refused SetUser changed the database")
		}
	})
}

// Import is one transaction: a bad row anywhere leaves nothing of the
// good ones; every bad row is named at its line.
func TestImportAllOrNothing(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.New(t)
		fixture(t, s)
		before := dump(t, s)
		rows, err := ParseImport("f.csv", []byte("domain,neuf.fr\nvalias,a@neuf.fr,test@exemple.fr\nuser,b@neuf.fr,"+testHash+"\nvalias,ycharbi@exemple.fr,autre@exemple.fr\nalias,bad name,x@y.fr\n"), "csv")
		if err != nil {
			t.Fatal(err)
		}
		_, err = s.Import(ctx, rows, ImportOptions{UID: 3000, GID: 3000})
		var ie ImportError
		if !errors.As(err, &ie) || len(ie) != 2 || !strings.HasPrefix(ie[0], "f.csv:4: virtual alias ycharbi@exemple.fr already exists") || !strings.HasPrefix(ie[1], "f.csv:5: \"bad name\" is not a local name") {
			t.Fatalf("Import = %v; want the errors of lines 4 and 5", err)
		}
		if dump(t, s) != before {
			t.Error("a refused import changed the database")
		}
		rows = rows[:3]
		res, err := s.Import(ctx, rows, ImportOptions{UID: 3000, GID: 3000, CheckIDs: func(uid, gid int) error {
			if uid != 3000 {
				return errors.New("bad uid")
			}
			return nil
		}})
		if err != nil || len(res) != 3 || res[0].Object != "domain" || res[1].Object != "user" || res[2].Object != "virtual alias" {
			t.Fatalf("Import = %v, %v; want domain, user, virtual alias in that order", res, err)
		}
		rows = append(rows, ImportRow{Pos: "f.csv:9", Kind: Users, Key: "c@neuf.fr", PasswordHash: testHash, UID: 5000})
		if _, err := s.Import(ctx, rows, ImportOptions{UID: 3000, GID: 3000, CheckIDs: func(uid, gid int) error {
			if uid != 3000 {
				return errors.New("bad uid")
			}
			return nil
		}}); err == nil || !strings.Contains(err.Error(), "f.csv:9: bad uid") {
			t.Errorf("uid check: %v", err)
		}
	})
}

// ParseImport never panics, and what it returns is rows or positioned
// errors.
func FuzzParseImport(f *testing.F) {
	f.Add([]byte("domain,exemple.fr,default\nuser,a@exemple.fr,{X}y,Name\n# c\nvalias,@exemple.fr,a@exemple.fr\n"), true)
	f.Add([]byte(`{"domains":[{"domain":"a.fr"}],"users":[{"user":"a@a.fr","password":"x"}],"valiases":[{"source":"@a.fr","destination":"a@a.fr"}]}`), false)
	f.Add([]byte("\"unterminated\n"), true)
	f.Fuzz(func(t *testing.T, data []byte, csv bool) {
		format := "json"
		if csv {
			format = "csv"
		}
		rows, err := ParseImport("f", data, format)
		if err != nil {
			var ie ImportError
			if !errors.As(err, &ie) || len(ie) == 0 {
				t.Fatalf("error %v is not a non-empty ImportError", err)
			}
			for _, e := range ie {
				if !strings.HasPrefix(e, "f:") {
					t.Fatalf("error %q has no position", e)
				}
			}
			return
		}
		for _, r := range rows {
			if r.Key == "" && r.Kind != Domains || !strings.HasPrefix(r.Pos, "f:") {
				t.Fatalf("row %+v", r)
			}
		}
	})
}

// A deleted user's or domain's quota goes with it: one created again
// later starts without it.
func TestDeleteDropsQuota(t *testing.T) {
	eachDriver(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		s := db.New(t)
		fixture(t, s)
		if _, err := s.AddUser(ctx, NewUser{Address: "a@toto.fr", PasswordHash: testHash, UID: 3000, GID: 3000}); err != nil {
			t.Fatal(err)
		}
		for _, q := range []string{"a@toto.fr", "@toto.fr"} {
			if _, err := s.SetQuota(ctx, q, 1<<30); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.SetQuota(ctx, "test@exemple.fr", 1<<20); err != nil {
			t.Fatal(err)
		}
		r, err := s.DeleteUser(ctx, "test@exemple.fr", AliasesCascade)
		if err != nil || !strings.Contains(fmt.Sprint(r.Cascaded), "quota test@exemple.fr") {
			t.Errorf("DeleteUser = %v, %v; want its quota deleted", r, err)
		}
		r, err = s.DeleteDomain(ctx, "toto.fr", true)
		if err != nil || !strings.Contains(fmt.Sprint(r.Cascaded), "quota a@toto.fr") || !strings.Contains(fmt.Sprint(r.Cascaded), "quota @toto.fr") {
			t.Errorf("DeleteDomain = %v, %v; want the quotas of a@toto.fr and @toto.fr deleted", r, err)
		}
		if qs, err := s.ListQuotas(ctx); err != nil || len(qs) != 0 {
			t.Errorf("quotas left: %v, %v", qs, err)
		}
	})
}
