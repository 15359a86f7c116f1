package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/postkit/postkit/internal/bytesize"
	"github.com/postkit/postkit/sqlmaps"
)

func dbQuotaCmd(o *dbOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "quota",
		Short: "Storage limits per user and per domain (postkit_quotas), applied by Dovecot's quota plugin",
		Long: `A user's limit is their own, else their domain's (set on the domain: example.org
or @example.org), else mailbox.quota.default of postkit.yaml. Sizes are in binary
units: 500M, 1G, 1.5G, or a number of bytes; 0 means no limit (for a user, also
none from the domain). Dovecot reads the limits at each login and delivery:
changes apply at once, nothing to reload. Mail to a full mailbox is refused at
RCPT with 552 5.2.2 (mailbox.quota.status).`,
	}
	set := &cobra.Command{
		Use:     "set USER|DOMAIN SIZE",
		Short:   "Set the limit of a user, or the default of a domain's users (e.g. set @example.org 1G)",
		Example: "  postkit db quota set test@exemple.fr 2G\n  postkit db quota set exemple.fr 500M",
		Args:    cobra.ExactArgs(2),
		RunE: o.change(func(ctx context.Context, s *sqlmaps.Store, args []string) (sqlmaps.Result, error) {
			n, err := bytesize.Parse(args[1])
			if err != nil {
				return sqlmaps.Result{}, fmt.Errorf("db quota set: %w", err)
			}
			return s.SetQuota(ctx, args[0], n)
		}),
	}
	clear := &cobra.Command{
		Use:   "clear USER|DOMAIN",
		Short: "Remove the limit of a user (who gets the domain's) or of a domain (whose users get the default); exits 0 when there is none",
		Args:  cobra.ExactArgs(1),
		RunE: o.change(func(ctx context.Context, s *sqlmaps.Store, args []string) (sqlmaps.Result, error) {
			return s.ClearQuota(ctx, args[0])
		}),
	}
	show := &cobra.Command{
		Use:   "show [USER|DOMAIN]",
		Short: "Show every limit set, a user's limit and where it comes from, or a domain's",
		Args:  cobra.MaximumNArgs(1),
	}
	show.RunE = func(cmd *cobra.Command, args []string) error {
		return o.read(func(ctx context.Context, s *sqlmaps.Store, w io.Writer) error {
			if len(args) == 0 {
				qs, err := s.ListQuotas(ctx)
				if err != nil {
					return err
				}
				return o.table(w, nonNil(qs), "TARGET\tLIMIT\tBYTES\tACTIVE", func(p func(...any)) {
					for _, q := range qs {
						p(q.Target, limitText(q.Size), q.Bytes, q.Active)
					}
				})
			}
			key, domain, err := sqlmaps.CheckQuotaTarget(args[0])
			if err != nil {
				return err
			}
			if domain {
				q, err := s.GetQuota(ctx, key)
				if errors.Is(err, sqlmaps.ErrNotFound) {
					def := o.quotaDefault()
					q = sqlmaps.Quota{Target: key, Bytes: def, Size: bytesize.Format(def)}
					return o.table(w, []any{map[string]any{"target": key, "bytes": def, "size": q.Size, "source": "default"}}, "TARGET\tLIMIT\tSOURCE", func(p func(...any)) {
						p(key, limitText(q.Size), "default (mailbox.quota.default)")
					})
				}
				if err != nil {
					return err
				}
				return o.table(w, []any{map[string]any{"target": key, "bytes": q.Bytes, "size": q.Size, "source": "domain"}}, "TARGET\tLIMIT\tSOURCE", func(p func(...any)) {
					p(key, limitText(q.Size), "domain")
				})
			}
			e, err := s.EffectiveQuota(ctx, key, o.quotaDefault())
			if err != nil {
				return err
			}
			src := e.Source
			if src == "default" {
				src = "default (mailbox.quota.default)"
			}
			return o.table(w, []any{e}, "USER\tLIMIT\tSOURCE", func(p func(...any)) {
				p(e.User, limitText(e.Size), src)
			})
		})(cmd, args)
	}
	cmd.AddCommand(set, show, clear)
	return cmd
}

// quotaDefault is mailbox.quota.default of the config read by resolve, 0
// (no limit) when only --db was given.
func (o *dbOptions) quotaDefault() int64 {
	if o.cfg == nil {
		return 0
	}
	return o.cfg.Mailbox.Quota.DefaultBytes()
}

func limitText(size string) string {
	if size == "0" {
		return "none"
	}
	return size
}
