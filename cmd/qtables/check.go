package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/qtables/qtables/engine"
)

func newCheckCmd() *cobra.Command {
	var counters bool
	c := &cobra.Command{
		Use:   "check RULES",
		Short: "Validate a rules file and print it in canonical iptables-save form",
		Long: `check parses an iptables-save/iptables-restore file exactly as qtables
loads it. On success it prints the canonical form (what iptables-save would
print for the same rules); on error it prints FILE:LINE:COL: message and
exits 1.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rs, err := engine.LoadFile(args[0])
			if err != nil {
				fmt.Fprintln(cmd.ErrOrStderr(), err)
				return exitError{1}
			}
			return rs.Save(cmd.OutOrStdout(), engine.SaveOptions{Counters: counters, Header: true, Now: time.Now()})
		},
	}
	c.Flags().BoolVarP(&counters, "counters", "c", false, "print rule counters as iptables-save -c")
	_ = os.Stdout
	return c
}
