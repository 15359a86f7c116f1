package sqlmaps

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/postkit/postkit/internal/pgtest"
)

// The reference installation's SQLite database, plus postkit's own tables,
// copied into PostgreSQL: every row arrives with its id, a second copy
// changes nothing, a changed row is updated, a bad row stops the whole copy,
// and rows added afterwards get fresh ids.
func TestCopyFromSQLite(t *testing.T) {
	ctx := context.Background()
	seed, err := os.ReadFile("testdata/seed_postfix.sql")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "postfix.sqlite")
	lite, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer lite.Close()
	if _, err := lite.db.Exec(string(seed)); err != nil {
		t.Fatal(err)
	}
	// The reference database has no postkit tables: copied without them.
	pg := pgtest.Start(t)
	dst, err := Source{Driver: DriverPostgreSQL, DSN: pg.CreateDatabase("copy")}.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if _, err := dst.CopyFrom(ctx, lite); !errors.Is(err, ErrSchema) {
		t.Errorf("copy into an unmigrated database: %v; want ErrSchema", err)
	}
	if err := dst.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := dst.CopyFrom(ctx, lite)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 6 {
		t.Errorf("copy of the reference database: %v; want its 6 tables", res)
	}
	if err := lite.Migrate(ctx); err != nil { // now with postkit's tables
		t.Fatal(err)
	}
	if _, err := lite.SetQuota(ctx, "@exemple.fr", 5<<30); err != nil {
		t.Fatal(err)
	}
	if _, err := lite.AddSpamAllow(ctx, "exemple.fr", "partner.fr"); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.CopyFrom(ctx, lite); err != nil {
		t.Fatal(err)
	}
	want := dump(t, lite)
	got := dump(t, dst)
	norm := func(s string) string { // schema version rows differ by date only
		var keep []string
		for _, l := range strings.Split(s, "\n") {
			if !strings.HasPrefix(l, "postkit_schema_version") {
				keep = append(keep, l)
			}
		}
		return strings.Join(keep, "\n")
	}
	if norm(got) != norm(want) {
		t.Errorf("PostgreSQL rows differ from SQLite's:\nsqlite:\n%s\npostgresql:\n%s", want, got)
	}
	if q, err := dst.GetQuota(ctx, "@exemple.fr"); err != nil || q.Bytes != 5<<30 {
		t.Errorf("quota above 2 GiB copied as %+v, %v", q, err)
	}
	// Again: nothing changes.
	res, err = dst.CopyFrom(ctx, lite)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Change != Unchanged {
			t.Errorf("second copy: %v; want unchanged", r)
		}
	}
	// A changed row is updated.
	if _, err := lite.SetActive(ctx, Users, "test@exemple.fr", false); err != nil {
		t.Fatal(err)
	}
	res, _ = dst.CopyFrom(ctx, lite)
	if u, err := dst.GetUser(ctx, "test@exemple.fr"); err != nil || u.Active {
		t.Errorf("user after copying a disabled row: %+v, %v (%v)", u, err, res)
	}
	// A row PostgreSQL cannot take stops the copy: nothing of it lands.
	before := dump(t, dst)
	if _, err := lite.db.Exec("INSERT INTO postfix_alias (alias, destination, active) VALUES ('new', 'test', 1), ('bad', 'x', 'oui')"); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.CopyFrom(ctx, lite); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "active") {
		t.Errorf("copy with active = 'oui': %v; want ErrInvalid naming the column", err)
	}
	if after := dump(t, dst); after != before {
		t.Errorf("a refused copy changed rows:\n%s\n%s", before, after)
	}
	// New rows get ids after the copied ones.
	if _, err := lite.db.Exec("DELETE FROM postfix_alias WHERE alias = 'bad'"); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.CopyFrom(ctx, lite); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.AddAlias(ctx, "later", "test"); err != nil {
		t.Errorf("add after copy: %v (the id sequence must be past the copied ids)", err)
	}
}
