package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/qtables/qtables/engine"
)

// Exit statuses of the --file mode, as iptables uses them: 1 when the
// "kernel" (here the rules file) refuses the command, 2 for a command line
// that does not parse.
const (
	exitRefused = 1
	exitUsage   = 2
)

// runIptables implements "qtables --file RULES <iptables arguments>": the
// file plays the kernel's part. The command succeeds or fails when
// iptables' would; a command that fails leaves the file byte for byte as it
// was, one that changes the rules rewrites it in canonical iptables-save
// form (with counters when any is non-zero). Listings and -C never write.
func runIptables(args []string, stdout, stderr io.Writer) int {
	var file string
	if args[0] == "--file" {
		if len(args) < 2 {
			fmt.Fprintln(stderr, "qtables: --file requires a rules file")
			return exitUsage
		}
		file, args = args[1], args[2:]
	} else {
		file, args = strings.TrimPrefix(args[0], "--file="), args[1:]
	}
	if file == "" {
		fmt.Fprintln(stderr, "qtables: --file requires a rules file")
		return exitUsage
	}
	cmd, err := engine.ParseCommand(args)
	if err != nil {
		// A rule for nat fails on its nat-only target before the table
		// is looked at; name the real reason.
		if terr := tableError(args); terr != nil {
			err = terr
		}
		fmt.Fprintln(stderr, "qtables:", err)
		return exitUsage
	}
	rs, err := engine.LoadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		rs, err = &engine.Ruleset{}, nil
	}
	if err != nil {
		fmt.Fprintln(stderr, "qtables:", err)
		return exitRefused
	}
	var out bytes.Buffer
	err = rs.Run(&out, cmd)
	// iptables prints its verbose lines even when the command then fails.
	if _, werr := stdout.Write(out.Bytes()); werr != nil && err == nil {
		err = werr
	}
	if err != nil {
		fmt.Fprintln(stderr, "qtables:", err)
		return exitRefused
	}
	switch cmd.Kind {
	case engine.CmdList, engine.CmdListRules, engine.CmdCheck:
		if !cmd.Zero {
			return 0 // nothing changed: leave the file alone
		}
	}
	if err := writeRules(file, rs); err != nil {
		fmt.Fprintln(stderr, "qtables:", err)
		return exitRefused
	}
	return 0
}

// tableError returns why the table named by -t/--table in args cannot be
// used, or nil.
func tableError(args []string) error {
	for i, a := range args {
		name := ""
		switch {
		case a == "-t" || a == "--table":
			if i+1 < len(args) {
				name = args[i+1]
			}
		case strings.HasPrefix(a, "--table="):
			name = strings.TrimPrefix(a, "--table=")
		case strings.HasPrefix(a, "-t") && len(a) > 2 && !strings.HasPrefix(a, "--"):
			name = a[2:]
		}
		if name != "" {
			if _, err := engine.NewTable(name); err != nil {
				return err
			}
		}
	}
	return nil
}

// writeRules replaces file atomically with rs in iptables-save form, with
// counters when any is non-zero. A symbolic link is followed, so the link
// keeps pointing at the rewritten file.
func writeRules(file string, rs *engine.Ruleset) error {
	if real, err := filepath.EvalSymlinks(file); err == nil {
		file = real
	}
	var buf bytes.Buffer
	opts := engine.SaveOptions{Header: true, Now: time.Now(), Counters: rs.HasCounters()}
	if err := rs.Save(&buf, opts); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), ".qtables-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(buf.Bytes()); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	mode := fs.FileMode(0o644)
	if st, err := os.Stat(file); err == nil {
		mode = st.Mode().Perm()
	}
	if err := os.Chmod(tmp.Name(), mode); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), file)
}
