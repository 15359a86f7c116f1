package store

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/postkit/postkit/internal/config"
)

// OpenConfigured opens the store c names: with state.driver postgresql
// the shared database of state.dsn (every MX host records there and any
// of them reports), else the SQLite file milter.dmarc.report.path, its
// directory created when create is set (the milter) and the file required
// otherwise ('postkit dmarc report').
func OpenConfigured(ctx context.Context, c *config.Config, create bool) (Store, error) {
	driver, dsn, password, err := c.StateStore()
	if err != nil {
		return nil, err
	}
	if driver == "postgresql" {
		return OpenPG(ctx, dsn, password)
	}
	path := c.Milter.DMARC.Report.Path
	if create {
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
			return nil, fmt.Errorf("milter.dmarc.report.path: %w", err)
		}
	} else if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("dmarc report: no evaluations recorded (%v): is milter.dmarc.report.enabled on and the milter running?", err)
	}
	st, err := Open(path)
	if err != nil {
		return nil, fmt.Errorf("milter.dmarc.report.path: %w", err)
	}
	return st, nil
}
