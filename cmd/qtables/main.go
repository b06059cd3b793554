// Command qtables is a userspace packet filter that speaks iptables' rule
// language: it checks and edits rules files, evaluates captures offline
// against them, and (later) filters live traffic from NFQUEUE.
package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/qtables/qtables/engine"
	_ "github.com/qtables/qtables/matchers" // extension registry
)

// exitError carries a process exit status through cobra.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	// "qtables --file RULES <iptables arguments>" edits a rules file with
	// iptables' own command line; iptables options (-A, -s, ...) would
	// clash with cobra's flag parsing, so this mode is dispatched first.
	if len(args) > 0 && (args[0] == "--file" || strings.HasPrefix(args[0], "--file=")) {
		return runIptables(args, os.Stdout, os.Stderr)
	}
	// "qtables --control SOCK <iptables arguments>" does the same against
	// a running daemon's rules.
	if len(args) > 0 && (args[0] == "--control" || strings.HasPrefix(args[0], "--control=")) {
		return runControl(args, os.Stdin, os.Stdout, os.Stderr)
	}
	root := newRoot()
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			return ee.code
		}
		fmt.Fprintln(os.Stderr, "qtables:", err)
		return 1
	}
	return 0
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "qtables",
		Short: "A userspace packet filter with iptables' rule language",
		Long: `qtables evaluates iptables rule sets in userspace.

  qtables --file RULES <iptables command>   edit a rules file as iptables edits the kernel
  qtables check RULES                        validate a rules file, print it canonically
  qtables test --rules R --chain C PCAP      evaluate a capture offline`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       engine.Version,
	}
	root.AddCommand(newCheckCmd(), newTestCmd(), newSynthCmd(), newBenchCmd(), newClassbenchCmd())
	root.AddCommand(newRunCmd(), newHooksCmd())
	root.AddCommand(newControlCmds()...)
	return root
}
