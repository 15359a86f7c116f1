package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"

	"github.com/postkit/postkit/internal/version"
)

// The manual pages are generated from the command tree at package build time
// (make deb), never committed: they cannot drift from the flags.
func init() {
	var manDir string
	cmd := &cobra.Command{
		Use:    "docs",
		Short:  "Write the manual pages of every command (used by make deb)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if manDir == "" {
				return fmt.Errorf("docs: --man DIR is required")
			}
			if err := os.MkdirAll(manDir, 0o755); err != nil {
				return fmt.Errorf("docs: %w", err)
			}
			root := cmd.Root()
			root.DisableAutoGenTag = true
			// SOURCE_DATE_EPOCH (reproducible builds) dates the pages when set.
			hdr := &doc.GenManHeader{
				Title:   "POSTKIT",
				Section: "1",
				Source:  "postkit " + version.Get().Version,
				Manual:  "postkit manual",
			}
			if err := doc.GenManTree(root, hdr, manDir); err != nil {
				return fmt.Errorf("docs: %w", err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&manDir, "man", "", "directory for the section 1 manual pages")
	rootCmd.AddCommand(cmd)
}
