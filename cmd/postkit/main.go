// Command postkit generates and runs a Postfix + Dovecot mail stack: config
// generation, the SQL store, a milter daemon and a policy server.
package main

import (
	"os"

	"github.com/spf13/cobra"
)

// rootCmd is the top of the command tree; every subcommand file registers itself
// with rootCmd.AddCommand in its own init function.
var rootCmd = &cobra.Command{
	Use:           "postkit",
	Short:         "Generate and run a Postfix + Dovecot mail stack from one YAML file",
	SilenceUsage:  true,
	SilenceErrors: true,
}

func main() {
	if cmd, err := rootCmd.ExecuteC(); err != nil {
		os.Exit(reportError(cmd, err, os.Stdout, os.Stderr))
	}
}
