package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/postkit/postkit/internal/daemon"
	"github.com/postkit/postkit/internal/dkimkey"
	"github.com/postkit/postkit/internal/dnsclient"
	"github.com/postkit/postkit/milter/dkimsign"
	"github.com/postkit/postkit/milter/dkimverify"
)

func init() {
	dkimCmd := &cobra.Command{
		Use:   "dkim",
		Short: "DKIM keys: generate, import from OpenDKIM, print records, sign and verify offline",
	}
	dkimCmd.AddCommand(dkimKeygenCmd(), dkimImportCmd(), dkimTXTCmd(), dkimSignCmd(), dkimVerifyCmd(), dkimTestkeyCmd())
	rootCmd.AddCommand(dkimCmd)
}

func dkimKeygenCmd() *cobra.Command {
	var domain, selector, algo, dir, owner string
	var bits int
	cmd := &cobra.Command{
		Use:   "keygen",
		Short: "Generate a DKIM key: DIR/SELECTOR.private and DIR/SELECTOR.txt (like opendkim-genkey)",
		Long: `Generate a DKIM signing key. SELECTOR.private is the PEM key (mode 0600;
PKCS#1 for RSA, PKCS#8 for Ed25519, both readable by OpenDKIM), SELECTOR.txt
the TXT record to publish at SELECTOR._domainkey.DOMAIN. An existing key is
never overwritten: rotate by generating a new selector.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if domain == "" || dir == "" {
				return fmt.Errorf("dkim keygen: --domain and --dir are required")
			}
			alg, err := dkimkey.ParseAlgorithm(algo)
			if err != nil {
				return err
			}
			if alg == dkimkey.Ed25519 && !cmd.Flags().Changed("bits") {
				bits = 0
			}
			key, err := dkimkey.Generate(alg, bits, nil)
			if err != nil {
				return err
			}
			priv, txt, err := dkimkey.WriteKeyFiles(dir, selector, strings.ToLower(domain), key)
			if err != nil {
				return err
			}
			if owner != "" {
				if err := chownKey(priv, owner); err != nil {
					return err
				}
			}
			zone, err := os.ReadFile(txt)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "wrote %s and %s\n\n; publish in the zone of %s:\n%s\n", priv, txt, domain, zone)
			fmt.Fprintf(out, "# postkit.yaml, milter.dkim.keys:\n      - domain: %s\n        selector: %s\n        key_file: %s\n", domain, selector, priv)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&domain, "domain", "", "signing domain (d=)")
	f.StringVar(&selector, "selector", "mail", "selector (s=); a new one per rotation, e.g. 202601")
	f.StringVar(&algo, "algo", "rsa", "key type: rsa or ed25519 (RFC 8463; sign with both for old verifiers)")
	f.IntVar(&bits, "bits", dkimkey.DefaultRSABits, "RSA key size, 2048 to 4096")
	f.StringVar(&dir, "dir", "", "directory for the key files, created if missing")
	f.StringVar(&owner, "owner", "", "user[:group] owning the private key, e.g. postkit or opendkim:opendkim")
	return cmd
}

// chownKey gives a key file to user[:group].
func chownKey(path, spec string) error {
	user, group, _ := strings.Cut(spec, ":")
	uid, gid := -1, -1
	var err error
	if user != "" {
		if uid, err = daemon.LookupUID(user); err != nil {
			return fmt.Errorf("dkim keygen: --owner %q: %w", spec, err)
		}
	}
	if group != "" {
		if gid, err = daemon.LookupGID(group); err != nil {
			return fmt.Errorf("dkim keygen: --owner %q: %w", spec, err)
		}
	}
	if err := os.Chown(path, uid, gid); err != nil {
		return fmt.Errorf("dkim keygen: %w", err)
	}
	return nil
}

func dkimImportCmd() *cobra.Command {
	var keyTable, signingTable string
	cmd := &cobra.Command{
		Use:   "import",
		Short: "Read OpenDKIM's KeyTable and SigningTable and print the milter.dkim section of postkit.yaml",
		Long: `Read OpenDKIM's KeyTable and SigningTable, as opendkim.conf names them
(/path, file:/path or refile:/path), and print the milter.dkim section of
postkit.yaml: one key per KeyTable entry used, with the From addresses it signs
(from:) when they are not simply its own domain. Per-user entries, wildcards
and sub-domain entries carry over; what postkit cannot express, or what OpenDKIM
never used (a refile: line after one that matches first), is printed as a
warning on stderr and as a comment. Check the keys against DNS afterwards with
'postkit dkim testkey'.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if keyTable == "" || signingTable == "" {
				return fmt.Errorf("dkim import: --keytable and --signingtable are required (see KeyTable and SigningTable in opendkim.conf)")
			}
			im, err := dkimkey.ImportTables(keyTable, signingTable)
			if err != nil {
				return err
			}
			for _, k := range im.Keys {
				if _, err := dkimkey.LoadPrivateKey(k.KeyFile); err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "warning: %v\n", err)
				}
			}
			for _, w := range im.Warnings {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s\n", w)
			}
			fmt.Fprint(cmd.OutOrStdout(), im.YAML())
			return nil
		},
	}
	cmd.Flags().StringVar(&keyTable, "keytable", "", "OpenDKIM KeyTable (/path, file:/path or refile:/path)")
	cmd.Flags().StringVar(&signingTable, "signingtable", "", "OpenDKIM SigningTable (/path, file:/path or refile:/path)")
	return cmd
}

func dkimTXTCmd() *cobra.Command {
	var keyFile, selector, domain string
	cmd := &cobra.Command{
		Use:   "txt",
		Short: "Print the TXT record of a private key in zone-file syntax",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if keyFile == "" {
				return fmt.Errorf("dkim txt: --key is required")
			}
			if err := dkimkey.CheckSelector(selector); err != nil {
				return err
			}
			key, err := dkimkey.LoadPrivateKey(keyFile)
			if err != nil {
				return err
			}
			z, err := dkimkey.KeyZoneTXT(selector, domain, key.Public())
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), z)
			return nil
		},
	}
	cmd.Flags().StringVar(&keyFile, "key", "", "PEM private key")
	cmd.Flags().StringVar(&selector, "selector", "mail", "selector")
	cmd.Flags().StringVar(&domain, "domain", "", "domain, for the comment")
	return cmd
}

func dkimSignCmd() *cobra.Command {
	var keys []string
	var canon string
	cmd := &cobra.Command{
		Use:   "sign [FILE]",
		Short: "Sign a message (file or stdin) and print it with its DKIM-Signature fields",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var ks []dkimsign.Key
			for _, spec := range keys {
				p := strings.SplitN(spec, ":", 3)
				if len(p) != 3 {
					return fmt.Errorf("dkim sign: --key %q: want DOMAIN:SELECTOR:KEYFILE", spec)
				}
				ks = append(ks, dkimsign.Key{Domain: p[0], Selector: p[1], KeyFile: p[2]})
			}
			if len(ks) == 0 {
				return fmt.Errorf("dkim sign: give at least one --key DOMAIN:SELECTOR:KEYFILE")
			}
			s, err := dkimsign.New(dkimsign.Config{Keys: ks, Canonicalization: canon})
			if err != nil {
				return err
			}
			msg, err := readInput(cmd, args)
			if err != nil {
				return err
			}
			sigs, err := s.Sign(strings.NewReader(msg))
			if err != nil {
				return err
			}
			if len(sigs) == 0 {
				return fmt.Errorf("dkim sign: no key for the From domain of the message")
			}
			out := cmd.OutOrStdout()
			for _, sig := range sigs {
				fmt.Fprintf(out, "DKIM-Signature: %s\r\n", sig)
			}
			_, err = io.WriteString(out, msg)
			return err
		},
	}
	cmd.Flags().StringArrayVar(&keys, "key", nil, "signing key DOMAIN:SELECTOR:KEYFILE (repeatable: one signature each)")
	cmd.Flags().StringVar(&canon, "canonicalization", dkimsign.DefaultCanonicalization, "header/body canonicalization")
	return cmd
}

func dkimVerifyCmd() *cobra.Command {
	var servers, records []string
	var authserv, bodyLength string
	cmd := &cobra.Command{
		Use:   "verify [FILE]",
		Short: "Verify the DKIM signatures of a message (file or stdin) and print Authentication-Results",
		Long: `Verify the DKIM signatures of a message. Keys are looked up with the
system resolver, or --dns servers, or given with --record NAME=TEXT (offline).`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var res dkimverify.Resolver
			if len(records) > 0 {
				st := staticTXT{}
				for _, r := range records {
					name, text, ok := strings.Cut(r, "=")
					if !ok {
						return fmt.Errorf("dkim verify: --record %q: want NAME=TEXT", r)
					}
					st[strings.ToLower(strings.TrimSuffix(name, "."))] = text
				}
				res = st
			} else {
				r, err := dnsclient.New(dnsclient.Config{Servers: servers})
				if err != nil {
					return err
				}
				res = r
			}
			if authserv == "" {
				authserv, _ = os.Hostname()
			}
			bl, err := dkimverify.ParseBodyLength(bodyLength)
			if err != nil {
				return err
			}
			v, err := dkimverify.New(dkimverify.Config{Resolver: res, AuthservID: authserv, BodyLength: bl})
			if err != nil {
				return err
			}
			msg, err := readInput(cmd, args)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			results, err := v.VerifyMessage(ctx, strings.NewReader(msg))
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Authentication-Results: %s\n", strings.ReplaceAll(dkimverify.Format(authserv, results), "\r\n", "\n"))
			for _, r := range results {
				if r.Value != "pass" {
					return &exitError{code: 1, err: fmt.Errorf("dkim verify: %s for d=%s s=%s", r.Value, r.Domain, r.Selector)}
				}
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&servers, "dns", nil, "DNS server host:port (repeatable; default /etc/resolv.conf)")
	cmd.Flags().StringArrayVar(&records, "record", nil, "key record NAME=TEXT, e.g. sel._domainkey.example.org='v=DKIM1; k=ed25519; p=…' (repeatable, no DNS)")
	cmd.Flags().StringVar(&authserv, "authserv-id", "", "authserv-id of the printed header (default: host name)")
	cmd.Flags().StringVar(&bodyLength, "body-length", "pass", "what a signature with l= is worth: pass, complete or policy (milter.dkim.body_length)")
	return cmd
}

// staticTXT answers key lookups from --record flags.
type staticTXT map[string]string

func (s staticTXT) LookupTXT(_ context.Context, name string) ([]string, error) {
	if v, ok := s[strings.ToLower(strings.TrimSuffix(name, "."))]; ok {
		return []string{v}, nil
	}
	return nil, &net.DNSError{Err: "no --record for this name", Name: name, IsNotFound: true}
}

// readInput reads the message from the file argument or stdin, with CRLF
// line endings (the form DKIM signs).
func readInput(cmd *cobra.Command, args []string) (string, error) {
	var r io.Reader = cmd.InOrStdin()
	if len(args) == 1 && args[0] != "-" {
		f, err := os.Open(args[0])
		if err != nil {
			return "", err
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, 64<<20))
	if err != nil {
		return "", err
	}
	s := strings.ReplaceAll(string(data), "\r\n", "\n")
	return strings.ReplaceAll(s, "\n", "\r\n"), nil
}
