package sqlmaps

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
)

// InitOptions are what Init does beyond creating the schema.
type InitOptions struct {
	// Group may read the database (Postfix's, "postfix", or a gid); ""
	// leaves ownership alone. It is applied only when running as root.
	Group string
	// Domains are added (not as the default domain) when missing.
	Domains []string
}

// Init creates or adopts the database at path: the directory (0750) and an
// empty file (0640) when missing, so that the database is never
// world-readable, not even briefly; the missing tables and the schema
// version (Migrate); the group; the domains. An existing database, one made
// by the reference installation's postfix.sql included, keeps its rows; its
// file gets mode 0640 whatever it had (Open). It is safe to run again. The
// results say what changed; warning is set when the group is unknown (the
// file then keeps its group).
func Init(ctx context.Context, path string, o InitOptions) (res []Result, warning string, err error) {
	for _, d := range o.Domains {
		if _, err := CheckDomain(d); err != nil {
			return nil, "", err
		}
	}
	fileCreated, dirCreated, err := createFile(path)
	if err != nil {
		return nil, "", err
	}
	s, err := Open(path)
	if err != nil {
		return nil, "", err
	}
	defer s.Close()
	if err := s.Migrate(ctx); err != nil {
		return nil, "", err
	}
	if o.Group != "" && os.Geteuid() == 0 {
		gid, err := lookupGroup(o.Group)
		if err != nil {
			warning = err.Error()
		} else if err := SetAccess(path, gid, dirCreated); err != nil {
			return nil, "", err
		}
	}
	db := Result{Object: "database", Key: path, Change: Unchanged, Detail: fmt.Sprintf("schema version %d", SchemaVersion)}
	if fileCreated {
		db.Change = Created
	}
	res = []Result{db}
	for _, d := range o.Domains {
		r, err := s.AddDomain(ctx, d, false)
		if err != nil {
			return nil, "", err
		}
		res = append(res, r)
	}
	return res, warning, nil
}

// InitSource is Init for either driver. On PostgreSQL the database must
// exist (createdb, with its owner the DSN's user): InitSource creates the
// missing tables, records the schema version and adds the domains, in the
// same way and as safely again.
func InitSource(ctx context.Context, src Source, o InitOptions) ([]Result, string, error) {
	if !src.IsPostgres() {
		return Init(ctx, src.Path, o)
	}
	for _, d := range o.Domains {
		if _, err := CheckDomain(d); err != nil {
			return nil, "", err
		}
	}
	s, err := src.Open()
	if err != nil {
		return nil, "", err
	}
	defer s.Close()
	before, err := s.Version(ctx)
	if err != nil {
		return nil, "", err
	}
	if err := s.Migrate(ctx); err != nil {
		return nil, "", err
	}
	db := Result{Object: "database", Key: s.Path(), Change: Unchanged, Detail: fmt.Sprintf("schema version %d", SchemaVersion)}
	if before < SchemaVersion {
		db.Change = Updated
		if before == 0 {
			db.Change = Created
		}
	}
	res := []Result{db}
	for _, d := range o.Domains {
		r, err := s.AddDomain(ctx, d, false)
		if err != nil {
			return nil, "", err
		}
		res = append(res, r)
	}
	return res, "", nil
}

// createFile makes the directory (0750) and an empty file (FileMode) when
// missing, and says which it created.
func createFile(path string) (file, dir bool, err error) {
	d := filepath.Dir(path)
	if _, err := os.Stat(d); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return false, false, fmt.Errorf("sqlmaps: %w", err)
		}
		dir = true
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, FileMode)
	switch {
	case err == nil:
		return true, dir, f.Close()
	case errors.Is(err, fs.ErrExist):
		return false, dir, nil
	default:
		return false, dir, fmt.Errorf("sqlmaps: %w", err)
	}
}

func lookupGroup(name string) (int, error) {
	if n, err := strconv.Atoi(name); err == nil {
		return n, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return 0, fmt.Errorf("group %s not found (%v): the database keeps its group; install Postfix first or pass --group", name, err)
	}
	return strconv.Atoi(g.Gid)
}
