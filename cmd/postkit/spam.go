package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/postkit/postkit/internal/config"
	"github.com/postkit/postkit/milter/assemble"
	"github.com/postkit/postkit/spam"
	"github.com/postkit/postkit/spam/mailbox"
)

func init() { rootCmd.AddCommand(newSpamCommand()) }

// newSpamCommand returns a fresh `postkit spam` command tree.
func newSpamCommand() *cobra.Command {
	spamCmd := &cobra.Command{
		Use:   "spam",
		Short: "Spam scoring: check a message, learn spam and ham, Bayes statistics",
	}
	spamCmd.AddCommand(spamCheckCmd(), spamLearnCmd(), spamStatsCmd())
	return spamCmd
}

// spamOptions are the engine settings the spam commands take: postkit.yaml's
// milter.spam with -c (read through assemble.SpamConfig, as the milter reads
// it), and flags that override it.
type spamOptions struct {
	cfgPath         string
	bayes           string
	bayesDSN        string
	bayesPassFile   string
	rulesDirs       []string
	required        float64
	whitelist       []string
	blacklist       []string
	minSpam, minHam int64
	expiry          time.Duration
	flags           *pflag.FlagSet

	// Set by engineConfig, for the commands' output.
	report     string // milter.spam.report with -c: none, spam or all
	subjectTag string // milter.spam.rewrite_subject with -c
}

func (o *spamOptions) register(f *pflag.FlagSet) {
	o.flags = f
	f.StringVarP(&o.cfgPath, "config", "c", "", "postkit.yaml to read milter.spam from (Bayes store, rules_dir, thresholds, sender lists); the other flags override it")
	f.StringVar(&o.bayes, "bayes", "", "Bayes store (SQLite file, created if missing); without it and without -c, rules only")
	f.StringVar(&o.bayesDSN, "bayes-dsn", "", "Bayes store in PostgreSQL, shared by several hosts (state.dsn), instead of --bayes")
	f.StringVar(&o.bayesPassFile, "bayes-password-file", "", "file holding the PostgreSQL password for --bayes-dsn (state.password_file)")
	f.StringArrayVar(&o.rulesDirs, "rules-dir", nil, "directory of *.rules files read after the shipped rules (repeatable; replaces milter.spam.rules_dir)")
	f.Float64Var(&o.required, "required", 5, "score from which a message is spam (milter.spam.required_score)")
	f.StringArrayVar(&o.whitelist, "whitelist-from", nil, "sender pattern to let through, e.g. *@exemple.fr (repeatable; added to milter.spam.whitelist_from)")
	f.StringArrayVar(&o.blacklist, "blacklist-from", nil, "sender pattern to mark as spam (repeatable; added to milter.spam.blacklist_from)")
	f.Int64Var(&o.minSpam, "min-spam", 200, "learned spam needed before Bayes votes (milter.spam.bayes.min_trained)")
	f.Int64Var(&o.minHam, "min-ham", 200, "learned ham needed before Bayes votes (milter.spam.bayes.min_trained)")
	f.DurationVar(&o.expiry, "expiry", 180*24*time.Hour, "forget tokens no learning touched for this long; 0 keeps them forever (milter.spam.bayes.expiry)")
}

func (o *spamOptions) changed(name string) bool { return o.flags != nil && o.flags.Changed(name) }

// engineConfig is the one place the commands build the engine's
// configuration: milter.spam of postkit.yaml with -c, else the built-in
// defaults; then the flags given. The Closer (nil without -c) releases what
// the configuration opened; close it after the engine.
func (o *spamOptions) engineConfig() (spam.Config, io.Closer, error) {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	sc := spam.Config{Required: 5, MinSpam: 200, MinHam: 200, Logger: log}
	var cl io.Closer
	if o.cfgPath != "" {
		c, _, err := config.Load(o.cfgPath)
		if err != nil {
			return spam.Config{}, nil, err
		}
		if sc, cl, err = assemble.SpamConfig(c, nil, log); err != nil {
			return spam.Config{}, nil, err
		}
		o.report = c.Milter.Spam.Report
		o.subjectTag = c.Milter.Spam.RewriteSubject
	}
	if o.cfgPath == "" || o.changed("bayes") || o.changed("bayes-dsn") {
		sc.BayesPath = o.bayes
		sc.BayesDSN, sc.BayesPassword = o.bayesDSN, ""
		if o.bayesDSN != "" && o.bayesPassFile != "" {
			b, err := os.ReadFile(o.bayesPassFile)
			if err != nil {
				return spam.Config{}, cl, fmt.Errorf("--bayes-password-file: %w", err)
			}
			pw, _, _ := strings.Cut(string(b), "\n")
			sc.BayesPassword = strings.TrimRight(pw, "\r")
		}
	}
	if o.cfgPath == "" || o.changed("rules-dir") {
		sc.RulesDirs = o.rulesDirs
	}
	if o.cfgPath == "" || o.changed("required") {
		sc.Required = o.required
	}
	if o.cfgPath == "" || o.changed("min-spam") {
		sc.MinSpam = o.minSpam
	}
	if o.cfgPath == "" || o.changed("min-ham") {
		sc.MinHam = o.minHam
	}
	if o.cfgPath == "" || o.changed("expiry") {
		sc.TokenTTL = o.expiry
		if sc.TokenTTL == 0 {
			sc.TokenTTL = -1 // the engine's "never"
		}
	}
	sc.WhitelistFrom = append(sc.WhitelistFrom, o.whitelist...)
	sc.BlacklistFrom = append(sc.BlacklistFrom, o.blacklist...)
	return sc, cl, nil
}

// engine builds the engine; close it with the returned func.
func (o *spamOptions) engine() (*spam.Engine, spam.Config, func(), error) {
	sc, cl, err := o.engineConfig()
	if err != nil {
		return nil, sc, nil, err
	}
	e, err := spam.New(sc)
	if err != nil {
		if cl != nil {
			cl.Close()
		}
		return nil, sc, nil, err
	}
	return e, sc, func() {
		e.Close()
		if cl != nil {
			cl.Close()
		}
	}, nil
}

// noBayes is the error of a command that needs the Bayes store.
func (o *spamOptions) noBayes(cmd string) error {
	if o.cfgPath != "" {
		return fmt.Errorf("spam %s: %s has no Bayes store (milter.spam.bayes.enabled is false): enable it, or give --bayes PATH or --bayes-dsn URL", cmd, o.cfgPath)
	}
	return fmt.Errorf("spam %s: --bayes PATH, --bayes-dsn URL or -c postkit.yaml is required (the Bayes store, e.g. /var/lib/postkit/bayes.sqlite)", cmd)
}

func readMessage(cmd *cobra.Command, args []string) ([]byte, error) {
	if len(args) == 0 || args[0] == "-" {
		return io.ReadAll(io.LimitReader(cmd.InOrStdin(), mailbox.MaxMessage+1))
	}
	return os.ReadFile(args[0])
}

func spamCheckCmd() *cobra.Command {
	var o spamOptions
	var report bool
	var subjectTag string
	var clues int
	var exitCode bool
	cmd := &cobra.Command{
		Use:   "check [FILE]",
		Short: "Score a message (stdin or FILE): print it with the X-Spam-* fields, then each test that hit",
		Long: `Score one message like the milter would and print it with the header fields
the milter would add (X-Spam-Flag on spam only, X-Spam-Level, X-Spam-Status,
X-Spam-Checker-Version; X-Spam-Report with --report), then the score and
each test that hit with its score, like spamassassin -t. The shipped rules
work before any training; --bayes adds the Bayes classifier once it has
learned enough (spam learn). With -c postkit.yaml, the engine is the milter's:
milter.spam's Bayes store, rules_dir, required_score, sender lists, DNS lists,
report and rewrite_subject; flags given override them.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			raw, err := readMessage(cmd, args)
			if err != nil {
				return fmt.Errorf("spam check: %w", err)
			}
			if len(raw) > mailbox.MaxMessage {
				return errors.New("spam check: message larger than 32 MiB")
			}
			e, _, closeEngine, err := o.engine()
			if err != nil {
				return err
			}
			defer closeEngine()
			ctx := context.Background()
			res, err := e.Score(ctx, spam.Input{Raw: raw})
			if err != nil && !errors.Is(err, spam.ErrTimeout) {
				return err
			}
			if !cmd.Flags().Changed("report") {
				report = o.report == "all" || o.report == "spam" && res.Spam()
			}
			if !cmd.Flags().Changed("rewrite-subject") {
				subjectTag = o.subjectTag
			}
			host, _ := os.Hostname()
			tag := ""
			if res.Spam() {
				tag = subjectTag
			}
			out := cmd.OutOrStdout()
			out.Write(spam.Annotate(raw, spam.Fields(res, spam.HeaderOptions{Report: report, Host: host}), tag))
			if !bytes.HasSuffix(raw, []byte("\n")) {
				fmt.Fprintln(out)
			}
			fmt.Fprintln(out)
			fmt.Fprint(out, spam.Describe(res))
			if clues > 0 && res.Bayes >= 0 {
				_, cl, err := e.BayesClues(ctx, raw, clues)
				if err != nil {
					return err
				}
				fmt.Fprintln(out, "\nBayes clues (probability, spam, ham, token):")
				for _, c := range cl {
					fmt.Fprintf(out, "  %.3f %6d %6d  %s\n", c.Prob, c.Spam, c.Ham, c.Token)
				}
			}
			if exitCode && res.Spam() {
				return &exitError{code: 1, err: errors.New("spam check: the message is spam")}
			}
			return nil
		},
	}
	o.register(cmd.Flags())
	f := cmd.Flags()
	f.BoolVar(&report, "report", false, "add X-Spam-Report")
	f.StringVar(&subjectTag, "rewrite-subject", "", "prefix the Subject of spam with this tag, e.g. "+spam.DefaultSubjectTag)
	f.IntVar(&clues, "clues", 0, "also print the N strongest Bayes clues")
	f.BoolVar(&exitCode, "exit-code", false, "exit with status 1 when the message is spam")
	return cmd
}

func spamLearnCmd() *cobra.Command {
	var o spamOptions
	var asSpam, asHam, forget bool
	cmd := &cobra.Command{
		Use:   "learn --spam|--ham|--forget [PATH...]",
		Short: "Teach the Bayes classifier from Maildir folders, mbox files or one message on stdin",
		Long: `Learn every message under each PATH (a Maildir with its subfolders, a
directory of them, an mbox file or a message file; stdin when no PATH or -)
as spam or as ham, or forget it. Learning is idempotent: a message already
learned the same way (same Message-ID and body) is not counted twice, and one
learned the other way is moved.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			n := 0
			for _, b := range []bool{asSpam, asHam, forget} {
				if b {
					n++
				}
			}
			if n != 1 {
				return errors.New("spam learn: give exactly one of --spam, --ham and --forget")
			}
			sc, cl, err := o.engineConfig()
			if err != nil {
				return err
			}
			if cl != nil {
				defer cl.Close()
			}
			if sc.BayesPath == "" && sc.BayesDSN == "" && sc.Store == nil {
				return o.noBayes("learn")
			}
			e, err := spam.New(sc)
			if err != nil {
				return err
			}
			defer e.Close()
			ctx := context.Background()
			var changed, unchanged, failed int
			learn := func(name string, raw []byte, err error) error {
				if err != nil {
					failed++
					fmt.Fprintf(cmd.ErrOrStderr(), "postkit: spam learn: %s: %v\n", name, err)
					return nil
				}
				mctx, cancel := context.WithTimeout(ctx, time.Minute)
				defer cancel()
				var ch bool
				if forget {
					ch, err = e.Forget(mctx, raw)
				} else {
					ch, err = e.Learn(mctx, raw, asSpam)
				}
				switch {
				case err != nil:
					return fmt.Errorf("spam learn: %s: %w", name, err)
				case ch:
					changed++
				default:
					unchanged++
				}
				return nil
			}
			if len(args) == 0 {
				args = []string{"-"}
			}
			for _, p := range args {
				if p == "-" {
					raw, err := io.ReadAll(io.LimitReader(cmd.InOrStdin(), mailbox.MaxMessage+1))
					if err == nil && len(raw) > mailbox.MaxMessage {
						err = mailbox.ErrTooLarge
					}
					if err := learn("stdin", raw, err); err != nil {
						return err
					}
					continue
				}
				if err := mailbox.Walk(p, learn); err != nil {
					return fmt.Errorf("spam learn: %w", err)
				}
			}
			verb := "learned as ham"
			switch {
			case asSpam:
				verb = "learned as spam"
			case forget:
				verb = "forgotten"
			}
			already := "already so"
			if forget {
				already = "not learned"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d %s, %d %s, %d unreadable\n", changed, verb, unchanged, already, failed)
			if failed > 0 {
				return &exitError{code: 1, err: fmt.Errorf("spam learn: %d messages could not be read", failed)}
			}
			return nil
		},
	}
	o.register(cmd.Flags())
	f := cmd.Flags()
	f.BoolVar(&asSpam, "spam", false, "learn as spam")
	f.BoolVar(&asHam, "ham", false, "learn as ham")
	f.BoolVar(&forget, "forget", false, "forget what was learned from these messages")
	return cmd
}

func spamStatsCmd() *cobra.Command {
	var o spamOptions
	cmd := &cobra.Command{
		Use:   "stats",
		Short: "Print the Bayes store's counts: learned spam and ham, tokens, expiry",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			sc, cl, err := o.engineConfig()
			if err != nil {
				return err
			}
			if cl != nil {
				defer cl.Close()
			}
			if sc.BayesPath == "" && sc.BayesDSN == "" {
				return o.noBayes("stats")
			}
			if _, err := os.Stat(sc.BayesPath); sc.BayesDSN == "" && err != nil {
				return fmt.Errorf("spam stats: %w; learn something first (postkit spam learn)", err)
			}
			e, err := spam.New(sc)
			if err != nil {
				return err
			}
			defer e.Close()
			st, err := e.Stats(context.Background())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "spam learned:    %d\n", st.Spam)
			fmt.Fprintf(out, "ham learned:     %d\n", st.Ham)
			fmt.Fprintf(out, "tokens:          %d\n", st.Tokens)
			fmt.Fprintf(out, "learned records: %d\n", st.Records)
			if !st.OldestAtime.IsZero() {
				fmt.Fprintf(out, "oldest token:    %s\n", st.OldestAtime.Format(time.RFC3339))
				fmt.Fprintf(out, "newest token:    %s\n", st.NewestAtime.Format(time.RFC3339))
			}
			if !st.LastExpire.IsZero() {
				fmt.Fprintf(out, "expired before:  %s (%d tokens in all)\n", st.LastExpire.Format(time.RFC3339), st.ExpiredTotal)
			}
			votes := st.Spam >= sc.MinSpam && st.Ham >= sc.MinHam
			fmt.Fprintf(out, "Bayes votes:     %v (needs %d spam and %d ham)\n", votes, sc.MinSpam, sc.MinHam)
			return nil
		},
	}
	o.register(cmd.Flags())
	return cmd
}
