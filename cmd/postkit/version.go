package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/postkit/postkit/internal/version"
)

func init() {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print postkit's version, VCS revision and Go version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := version.Get()
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(info)
			}
			_, err := fmt.Fprintln(cmd.OutOrStdout(), "postkit", info.String())
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON object")
	rootCmd.AddCommand(cmd)
	rootCmd.Version = version.Get().String()
}
