package main

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/postkit/postkit/sqlmaps"
)

func dbMigrateCmd(o *dbOptions) *cobra.Command {
	var from string
	cmd := &cobra.Command{
		Use:   "migrate --from SQLITE_PATH",
		Short: "Copy a SQLite database (the reference installation's or postkit's) into the PostgreSQL database",
		Long: `Copies every domain, user, alias, blacklist entry, spam allow list row and quota of
the SQLite file SQLITE_PATH into the PostgreSQL database of postkit.yaml
(database.driver: postgresql, database.dsn), in one transaction: all rows or none.
The PostgreSQL tables are created first when missing (as 'postkit db init' does).
Rows are matched by their key (address, alias, domain): a missing row is added with
its id, a row with other values takes the file's values, an equal row is left alone,
so running it again changes nothing. The SQLite file is only read.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if from == "" {
				return errors.New("db migrate: give the SQLite file with --from PATH")
			}
			if o.dbPath != "" {
				return errors.New("db migrate: --db names a SQLite file; the target is the PostgreSQL database of -c postkit.yaml: use --from for the file")
			}
			dst, err := o.resolve()
			if err != nil {
				return err
			}
			if !dst.IsPostgres() {
				return errors.New("db migrate: the config's database.driver is not postgresql: set database.driver: postgresql and database.dsn, then copy")
			}
			src, err := sqlmaps.OpenReadOnly(from)
			if err != nil {
				return err
			}
			defer src.Close()
			s, err := dst.Open()
			if err != nil {
				return err
			}
			defer s.Close()
			if err := s.Migrate(ctx); err != nil {
				return err
			}
			res, err := s.CopyFrom(ctx, src)
			if err != nil {
				return err
			}
			return o.report(cmd.OutOrStdout(), res...)
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "SQLite database file to copy from")
	return cmd
}
