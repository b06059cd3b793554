package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/qtables/qtables/queue"
)

// controlTimeout bounds one request to the daemon.
const controlTimeout = 60 * time.Second

// runControl implements "qtables --control SOCK <command>": the command
// runs in the daemon listening on SOCK. <command> is an iptables command
// line (-L, -S, -A, -I, -D, -R, -N, -E, -F, -X, -P, -Z, -C, with the same
// output, errors and exit statuses as qtables --file), or save, restore
// (the rules on stdin), reload, ct list [--kernel].
func runControl(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	sock := ""
	switch {
	case len(args) > 0 && args[0] == "--control":
		if len(args) < 2 {
			fmt.Fprintln(stderr, "qtables: --control requires a socket path")
			return exitUsage
		}
		sock, args = args[1], args[2:]
	case len(args) > 0 && strings.HasPrefix(args[0], "--control="):
		sock, args = strings.TrimPrefix(args[0], "--control="), args[1:]
	}
	if sock == "" {
		sock = queue.DefaultControlSocket()
	}
	req := queue.ControlRequest{Op: queue.OpIptables, Args: args}
	if len(args) > 0 {
		switch args[0] {
		case "save":
			req = queue.ControlRequest{Op: queue.OpSave}
		case "reload":
			req = queue.ControlRequest{Op: queue.OpReload}
		case "restore":
			in, err := io.ReadAll(stdin)
			if err != nil {
				fmt.Fprintln(stderr, "qtables:", err)
				return exitRefused
			}
			req = queue.ControlRequest{Op: queue.OpRestore, Input: string(in)}
		case "ct":
			switch {
			case len(args) == 2 && args[1] == "list":
				req = queue.ControlRequest{Op: queue.OpCtList}
			case len(args) == 3 && args[1] == "list" && args[2] == "--kernel":
				req = queue.ControlRequest{Op: queue.OpCtKernel}
			default:
				fmt.Fprintln(stderr, "qtables: usage: ct list [--kernel]")
				return exitUsage
			}
		}
	}
	return controlCall(sock, &req, stdout, stderr)
}

func controlCall(sock string, req *queue.ControlRequest, stdout, stderr io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), controlTimeout)
	defer cancel()
	rep, err := queue.ControlCall(ctx, sock, req)
	if err != nil {
		fmt.Fprintln(stderr, "qtables:", err)
		return exitRefused
	}
	if rep.Code == exitUsage && req.Op == queue.OpIptables {
		// As --file does: a rule for nat fails on its nat-only target
		// before the table is looked at; name the real reason.
		if terr := tableError(req.Args); terr != nil {
			rep.Stderr = "qtables: " + terr.Error() + "\n"
		}
	}
	io.WriteString(stdout, rep.Stdout)
	io.WriteString(stderr, rep.Stderr)
	return rep.Code
}

// newCtlCmd is "qtables ctl [--control SOCK] <command>", the spelling of
// runControl that goes through the command tree.
func newCtlCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "ctl [--control SOCK] <iptables command | save | restore | reload | ct list [--kernel]>",
		Short: "Manage the running daemon's rules with iptables' command line (through its control socket)",
		Long: `ctl sends a command to a running qtables daemon over its control socket
(--control SOCK, default /run/qtables/<netns>.sock: the name ip netns gives
the caller's namespace, "default" outside a named one).

An iptables command line (-L, -S, -A, -I, -D, -R, -N, -E, -F, -X, -P, -Z,
-C) prints and fails exactly as qtables --file does. A command that changes
the rules is applied to a copy, compiled and swapped in at once: a command
that fails changes nothing, and rules it does not touch keep their counters.
save prints the running rules with counters (iptables-save -c); restore
swaps in the rules read from stdin; reload re-reads the daemon's rules file
(as SIGHUP); ct list prints the daemon's flow table as conntrack -L, ct list
--kernel the kernel's conntrack table of the daemon's namespace.

Edits live in the daemon only: save them with "qtables ctl save > FILE".`,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
				return cmd.Help()
			}
			if code := runControl(args, cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()); code != 0 {
				return exitError{code}
			}
			return nil
		},
	}
}

// newControlOpCmd is one of save, restore, reload, ct: shorthands for
// ctl OP with the default socket or --control.
func newControlOpCmd(use, short string, args ...string) *cobra.Command {
	var sock string
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			full := append([]string{"--control", sock}, args...)
			if sock == "" {
				full = args
			}
			if code := runControl(full, cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()); code != 0 {
				return exitError{code}
			}
			return nil
		},
	}
	c.Flags().StringVar(&sock, "control", "", "the daemon's control socket (default /run/qtables/<netns>.sock)")
	return c
}

func newCtCmd() *cobra.Command {
	ct := &cobra.Command{Use: "ct", Short: "Connection tracking of the running daemon"}
	var sock string
	var kernel bool
	list := &cobra.Command{
		Use:   "list [--kernel]",
		Short: "Print the daemon's flow table (or with --kernel the kernel's) as conntrack -L",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			args := []string{"ct", "list"}
			if kernel {
				args = append(args, "--kernel")
			}
			if sock != "" {
				args = append([]string{"--control", sock}, args...)
			}
			if code := runControl(args, os.Stdin, cmd.OutOrStdout(), cmd.ErrOrStderr()); code != 0 {
				return exitError{code}
			}
			return nil
		},
	}
	list.Flags().StringVar(&sock, "control", "", "the daemon's control socket (default /run/qtables/<netns>.sock)")
	list.Flags().BoolVar(&kernel, "kernel", false, "list the kernel's conntrack table of the daemon's namespace")
	ct.AddCommand(list)
	return ct
}

// newControlCmds are the control commands for the root.
func newControlCmds() []*cobra.Command {
	return []*cobra.Command{
		newCtlCmd(),
		newControlOpCmd("save", "Print the running daemon's rules with counters (iptables-save -c)", "save"),
		newControlOpCmd("restore", "Swap the rules read from stdin into the running daemon, atomically", "restore"),
		newControlOpCmd("reload", "Have the running daemon re-read its rules file (as SIGHUP)", "reload"),
		newCtCmd(),
	}
}
