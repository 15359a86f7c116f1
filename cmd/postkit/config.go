package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/postkit/postkit/internal/config"
)

func init() { rootCmd.AddCommand(newConfigCommand()) }

// newConfigCommand builds the `config` command tree (tests build one per
// run).
func newConfigCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Check postkit.yaml, print a complete example or its JSON Schema"}
	var cfgPath string
	var asJSON bool
	check := &cobra.Command{
		Use:   "check",
		Short: "Validate postkit.yaml; every problem is printed as file:line:column, all in one run",
		Long: `Reads postkit.yaml as every command does and reports every problem at once, in
file order: YAML that does not decode (unknown keys, wrong types) and values that
do not validate (kinds, ranges, combinations), each as file:line:column, the key,
the message and a hint; then whether trusted_networks makes an open relay.
--json prints {"file": …, "ok": true} on success and the JSON error object of
every postkit command with --json on failure, its "errors" listing each problem.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, file, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			if err := cfg.OpenRelay(file); err != nil {
				return err
			}
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(struct {
					File string `json:"file"`
					OK   bool   `json:"ok"`
				}{cfgPath, true})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\n", cfgPath)
			return nil
		},
	}
	check.Flags().StringVarP(&cfgPath, "config", "c", "/etc/postkit/postkit.yaml", "postkit.yaml to read")
	check.Flags().BoolVar(&asJSON, "json", false, "print the result, or the errors, as JSON")
	schema := &cobra.Command{
		Use:   "schema",
		Short: "Print the JSON Schema of postkit.yaml (for editors' YAML language servers)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			e := json.NewEncoder(cmd.OutOrStdout())
			e.SetIndent("", "  ")
			return e.Encode(config.Schema())
		},
	}
	example := &cobra.Command{
		Use:   "example",
		Short: "Print a postkit.yaml listing every key with its default and documentation",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := cmd.OutOrStdout().Write(config.Example())
			return err
		},
	}
	cmd.AddCommand(check, schema, example)
	return cmd
}
