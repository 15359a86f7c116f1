package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/postkit/postkit/internal/config"
)

func init() {
	cmd := &cobra.Command{Use: "config", Short: "Check postkit.yaml or print its JSON Schema"}
	var cfgPath string
	check := &cobra.Command{
		Use:   "check",
		Short: "Validate postkit.yaml; every problem is printed as file:line:column",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, file, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			if err := cfg.OpenRelay(file); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\n", cfgPath)
			return nil
		},
	}
	check.Flags().StringVarP(&cfgPath, "config", "c", "/etc/postkit/postkit.yaml", "postkit.yaml to read")
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
	rootCmd.AddCommand(cmd)
}
