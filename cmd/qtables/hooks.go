package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/qtables/qtables/matchers"
	"github.com/qtables/qtables/queue"
)

func newHooksCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "hooks",
		Short: "Install, remove or show the kernel hook rules of the live filter by hand",
		Long: `hooks manages the chains qtables run installs: QTABLES-<HOOK> in the filter
table (mangle for PREROUTING and POSTROUTING), each holding the NFQUEUE rule
and jumped to from the built-in chain. qtables run installs and removes them
itself; these commands are for inspection and repair. They act on the
network namespace they run in (ip netns exec NS qtables hooks status).

Hooks without a daemon bound to their queues pass traffic unfiltered when
installed with --queue-bypass (the default) and drop it with --fail-closed.`,
	}
	c.AddCommand(newHooksInstallCmd(), newHooksRemoveCmd(), newHooksStatusCmd())
	return c
}

func newHooksInstallCmd() *cobra.Command {
	var hf hookFlags
	c := &cobra.Command{
		Use:   "install --hook HOOK [--hook HOOK ...] [--queues N-M] [--fail-closed]",
		Short: "Install (or replace) the hook chains",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := hf.config()
			if err != nil {
				return err
			}
			ipt, err := queue.NewIPTables()
			if err != nil {
				return err
			}
			if err := queue.Install(ipt, cfg); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "installed %s: %s\n", hookNames(cfg.Hooks), strings.Join(cfg.QueueRuleSpec(), " "))
			return nil
		},
	}
	hf.register(c)
	_ = c.MarkFlagRequired("hook")
	return c
}

func newHooksRemoveCmd() *cobra.Command {
	var names []string
	c := &cobra.Command{
		Use:   "remove [--hook HOOK ...]",
		Short: "Remove the hook chains (all of them without --hook)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var hooks []matchers.Hook
			for _, n := range names {
				for _, part := range strings.Split(n, ",") {
					h, err := queue.ParseHook(part)
					if err != nil {
						return err
					}
					hooks = append(hooks, h)
				}
			}
			ipt, err := queue.NewIPTables()
			if err != nil {
				return err
			}
			found, err := queue.Find(ipt)
			if err != nil {
				return err
			}
			if len(hooks) == 0 {
				hooks = found
			}
			if queue.DaemonRunning() {
				fmt.Fprintln(cmd.ErrOrStderr(), "qtables: warning: a qtables daemon runs in this namespace; the removed hooks stop its filtering")
			}
			if err := queue.Remove(ipt, hooks); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", orNone(hookNames(intersect(hooks, found))))
			return nil
		},
	}
	c.Flags().StringArrayVar(&names, "hook", nil, "hook whose chain to remove (repeatable; default all)")
	return c
}

func newHooksStatusCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "status",
		Short: "Show the installed hook chains, their NFQUEUE rules and kernel counters",
		Long: `status lists every qtables hook chain in the kernel: the hook, its table and
chain, how many jumps lead to it from the built-in chain (1 is healthy; FIRST
when it is the built-in chain's first rule), the packets and bytes the
NFQUEUE rule has sent, and the rule. It also says whether a daemon runs in
this namespace; hooks without one are stale. Exit status 3 when no hook is
installed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ipt, err := queue.NewIPTables()
			if err != nil {
				return err
			}
			st, err := queue.Status(ipt)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			running := queue.DaemonRunning()
			if running {
				fmt.Fprintln(out, "daemon: running")
			} else {
				fmt.Fprintln(out, "daemon: not running")
			}
			if len(st) == 0 {
				fmt.Fprintln(out, "hooks: none")
				return exitError{3}
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "HOOK\tTABLE\tCHAIN\tJUMPS\tPACKETS\tBYTES\tRULE")
			for _, s := range st {
				jumps := fmt.Sprint(s.Jumps)
				if s.First {
					jumps += " FIRST"
				}
				rule := "(empty)"
				if len(s.Rules) > 0 {
					rule = strings.Join(s.Rules, "; ")
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\n", s.Hook, s.Table, s.Chain, jumps, s.Packets, s.Bytes, rule)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if !running {
				fmt.Fprintln(out, "note: no daemon reads these queues: traffic through hooks with --queue-bypass passes unfiltered, without it is dropped")
			}
			return nil
		},
	}
	return c
}

func intersect(a, b []matchers.Hook) []matchers.Hook {
	var out []matchers.Hook
	for _, x := range a {
		for _, y := range b {
			if x == y {
				out = append(out, x)
				break
			}
		}
	}
	return out
}

func orNone(s string) string {
	if s == "" {
		return "nothing"
	}
	return s
}
