package report

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/postkit/postkit/milter/dmarc"
)

// Store is what reporting reads of the store of evaluations
// (milter/dmarc/store).
type Store interface {
	Days(ctx context.Context) ([]string, error)
	Rows(ctx context.Context, day string) ([]dmarc.Row, error)
	Sent(ctx context.Context, domain, day string) (bool, error)
	MarkSent(ctx context.Context, domain, day string, at time.Time) error
	Claim(ctx context.Context, domain, day string, at time.Time) (bool, error)
	Release(ctx context.Context, domain, day string, at time.Time) error
	Purge(ctx context.Context, before string) error
}

// Mode is what Run does with the reports.
type Mode int

const (
	Print  Mode = iota // a table for humans
	DryRun             // the XML and where it would go; nothing sent or marked
	Send               // mail the reports not sent yet, mark them, forget old days
)

// Options configure Run.
type Options struct {
	Mode Mode
	Meta Meta
	// Day limits the run to one UTC day (YYYY-MM-DD); "" takes every day
	// before today that has evaluations.
	Day string
	// MaxBytes caps a report mail; a smaller rua= limit wins.
	MaxBytes int64
	// Keep is how long days are kept after they are reported.
	Keep     time.Duration
	Resolver TXTResolver
	// Sendmail hands one message to the MTA for the recipients.
	Sendmail func(ctx context.Context, from string, to []string, msg []byte) error
	Out      io.Writer
	Logger   *slog.Logger
	Now      func() time.Time
}

// Run builds the reports of the chosen days and prints, shows or sends
// them. Sending goes on past a report that cannot be sent (it is retried
// next run) and returns the first error at the end.
func Run(ctx context.Context, st Store, o Options) error {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	today := o.Now().UTC().Format(time.DateOnly)
	days := []string{o.Day}
	if o.Day == "" {
		all, err := st.Days(ctx)
		if err != nil {
			return err
		}
		days = days[:0]
		for _, d := range all {
			if d < today { // a day is reported once it is over
				days = append(days, d)
			}
		}
	}
	var firstErr error
	fail := func(err error) {
		o.Logger.Warn("dmarc report: " + err.Error())
		if firstErr == nil {
			firstErr = err
		}
	}
	for _, day := range days {
		rows, err := st.Rows(ctx, day)
		if err != nil {
			return err
		}
		reps, err := Build(rows, day, o.Meta)
		if err != nil {
			return err
		}
		for i := range reps {
			r := &reps[i]
			switch o.Mode {
			case Print:
				printReport(o.Out, r)
			case DryRun:
				dests, why := Destinations(ctx, o.Resolver, r)
				x, err := r.XML()
				if err != nil {
					return err
				}
				fmt.Fprintf(o.Out, "# %s %s: to %s\n", r.Domain, r.Day, addrs(dests))
				for _, w := range why {
					fmt.Fprintf(o.Out, "# not to %s\n", w)
				}
				o.Out.Write(x)
			case Send:
				// Claim, not Sent: of several hosts reporting from one
				// shared store, only the one that wins the claim sends.
				at := o.Now()
				won, err := st.Claim(ctx, r.Domain, day, at)
				if err != nil {
					return err
				}
				if !won {
					continue
				}
				if err := send(ctx, st, r, o, at); err != nil {
					fail(err)
				}
			}
		}
	}
	if o.Mode == Send && o.Keep > 0 {
		before := o.Now().Add(-o.Keep).UTC().Format(time.DateOnly)
		if err := st.Purge(ctx, before); err != nil {
			fail(err)
		}
	}
	return firstErr
}

// send mails one report to its verified destinations, each within its
// size limit (section 7.2.1.1: a report too large for a destination is not
// sent to it; we log it rather than split it).
// A report that could not be handed to the MTA is released for the next
// run; once handed over it stays claimed.
func send(ctx context.Context, st Store, r *Report, o Options, claimed time.Time) error {
	dests, why := Destinations(ctx, o.Resolver, r)
	for _, w := range why {
		o.Logger.Warn("dmarc report: destination left out", "domain", r.Domain, "day", r.Day, "why", w)
	}
	if len(dests) == 0 {
		// Nothing will ever take it: mark it so that it is not built again.
		return st.MarkSent(ctx, r.Domain, r.Day, o.Now())
	}
	var to []string
	for _, d := range dests {
		to = append(to, d.Addr)
	}
	msg, err := r.Mail(o.Meta, to, o.Now())
	if err != nil {
		return err
	}
	var ok []string
	for _, d := range dests {
		limit := o.MaxBytes
		if d.Limit > 0 && (limit <= 0 || d.Limit < limit) {
			limit = d.Limit
		}
		if limit > 0 && int64(len(msg)) > limit {
			o.Logger.Warn("dmarc report: report larger than the destination takes; not sent to it", "domain", r.Domain,
				"day", r.Day, "to", d.Addr, "bytes", len(msg), "limit", limit)
			continue
		}
		ok = append(ok, d.Addr)
	}
	if len(ok) > 0 {
		if err := o.Sendmail(ctx, o.Meta.Email, ok, msg); err != nil {
			if rerr := st.Release(ctx, r.Domain, r.Day, claimed); rerr != nil {
				o.Logger.Warn("dmarc report: " + rerr.Error() + "; a run retries it once the claim lapses (an hour)")
			}
			return fmt.Errorf("sending the report of %s for %s: %w", r.Domain, r.Day, err)
		}
		o.Logger.Info("dmarc report: sent", "domain", r.Domain, "day", r.Day, "to", strings.Join(ok, ","), "bytes", len(msg), "messages", r.Messages)
	}
	return st.MarkSent(ctx, r.Domain, r.Day, o.Now())
}

func addrs(us []dmarc.URI) string {
	var s []string
	for _, u := range us {
		s = append(s, u.Addr)
	}
	if len(s) == 0 {
		return "(nobody)"
	}
	return strings.Join(s, ", ")
}

// printReport writes one report as a table.
func printReport(w io.Writer, r *Report) {
	p := r.Feedback.PolicyPublished
	fmt.Fprintf(w, "%s  %s  p=%s sp=%s pct=%d adkim=%s aspf=%s  %d messages  rua=%s\n", r.Day, r.Domain, p.P, p.SP, p.Pct, p.ADKIM, p.ASPF, r.Messages, addrs(r.RUA))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  SOURCE\tCOUNT\tDISPOSITION\tDKIM\tSPF\tHEADER FROM\tENVELOPE FROM\tREASON")
	recs := append([]Record(nil), r.Feedback.Records...)
	sort.SliceStable(recs, func(i, j int) bool { return recs[i].Row.Count > recs[j].Row.Count })
	for _, rec := range recs {
		reason := ""
		for _, x := range rec.Row.PolicyEvaluated.Reason {
			reason += x.Type
		}
		pe := rec.Row.PolicyEvaluated
		fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", rec.Row.SourceIP, rec.Row.Count, pe.Disposition, pe.DKIM, pe.SPF,
			rec.Identifiers.HeaderFrom, rec.Identifiers.EnvelopeFrom, reason)
	}
	tw.Flush()
	fmt.Fprintln(w)
}
