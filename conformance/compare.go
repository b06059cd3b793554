package conformance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// pcapBaseUnix is the first timestamp of WritePcap's files.
const pcapBaseUnix = 1_700_000_000

// WritePcap writes frames to path as an Ethernet pcap file. Timestamps are
// fixed (one microsecond apart from a constant epoch, DefaultClock) so that
// the file is a pure function of the frames.
func WritePcap(path string, frames [][]byte) error {
	return WritePcapAt(path, frames, time.Unix(pcapBaseUnix, 0).UTC())
}

// WritePcapAt is WritePcap with the first frame stamped at base.
func WritePcapAt(path string, frames [][]byte, base time.Time) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := pcapgo.NewWriter(f)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		f.Close()
		return fmt.Errorf("write pcap header: %w", err)
	}
	for i, fr := range frames {
		ci := gopacket.CaptureInfo{Timestamp: base.Add(time.Duration(i) * time.Microsecond), CaptureLength: len(fr), Length: len(fr)}
		if err := w.WritePacket(ci, fr); err != nil {
			f.Close()
			return fmt.Errorf("write pcap packet %d: %w", i, err)
		}
	}
	return f.Close()
}

// ErrNoTestCommand means the qtables binary has no `test` subcommand yet.
var ErrNoTestCommand = errors.New("the qtables binary lacks the `test` command (qtables test --rules ... --counters PCAP); the conformance comparison needs it")

// QtablesArgs are the arguments of the qtables run that must reproduce the
// kernel's counters: the filter table's FORWARD chain for packets entering
// on b0 and leaving on b1, as in the test topology.
func QtablesArgs(rulesPath, pcapPath string) []string {
	return []string{"test", "--rules", rulesPath, "--table", "filter", "--chain", "FORWARD",
		"--in-interface", InIface, "--out-interface", OutIface, "--counters", pcapPath}
}

// CheckQtables verifies that bin has the test command.
func CheckQtables(bin string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "test", "--help").CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("--counters")) {
		return fmt.Errorf("%w\n`%s test --help` said (%v):\n%s", ErrNoTestCommand, bin, err, out)
	}
	return nil
}

// RunQtables runs `qtables test` on a rule file and a pcap and returns its
// standard output.
func RunQtables(bin, rulesPath, pcapPath string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, QtablesArgs(rulesPath, pcapPath)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%s %s: %v\nstderr:\n%s", bin, strings.Join(QtablesArgs(rulesPath, pcapPath), " "), err, stderr.Bytes())
	}
	return stdout.Bytes(), nil
}

// DiffLine is one line present on only one side of a comparison.
type DiffLine struct {
	// Side is '-' for a line only the kernel printed, '+' for one only
	// qtables printed.
	Side byte
	Line string
}

func (d DiffLine) String() string { return string(d.Side) + " " + d.Line }

// Compare compares iptables-save -c output from the kernel with qtables'
// output, ignoring comment lines ('#') and blank lines. It returns nil when
// every chain line (":CHAIN POLICY [p:b]"), rule line ("[p:b] -A ...") and
// the table and COMMIT lines are equal and in the same order; otherwise the
// lines that differ, in a line diff.
func Compare(kernel, qtables []byte) []DiffLine {
	a, b := significant(kernel), significant(qtables)
	if equalLines(a, b) {
		return nil
	}
	return diffLines(a, b)
}

func significant(out []byte) []string {
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		l = strings.TrimSuffix(l, "\r")
		if l == "" || l[0] == '#' {
			continue
		}
		lines = append(lines, l)
	}
	return lines
}

func equalLines(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// diffLines returns a minimal line diff (longest common subsequence; the
// outputs are small).
func diffLines(a, b []string) []DiffLine {
	n, m := len(a), len(b)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out []DiffLine
	i, j := 0, 0
	for i < n && j < m {
		switch {
		case a[i] == b[j]:
			i++
			j++
		case lcs[i+1][j] >= lcs[i][j+1]:
			out = append(out, DiffLine{'-', a[i]})
			i++
		default:
			out = append(out, DiffLine{'+', b[j]})
			j++
		}
	}
	for ; i < n; i++ {
		out = append(out, DiffLine{'-', a[i]})
	}
	for ; j < m; j++ {
		out = append(out, DiffLine{'+', b[j]})
	}
	return out
}

// Result is the outcome of one case.
type Result struct {
	Case    *Case
	Kernel  string // iptables-save -c -t filter, comments removed
	Qtables string // qtables' output
	Diff    []DiffLine
	// Dir holds the case's files (rules, pcap, both outputs).
	Dir string
}

// RunCase loads c into the kernel, sends its packets, runs qtables on the
// same rules and frames, and compares the counters. The case's files are
// written to a new directory under workDir; the caller keeps it when the
// case fails (Result.Diff non-empty) and may delete it otherwise.
func RunCase(topo *Topology, c *Case, qtablesBin, workDir string) (*Result, error) {
	dir, err := os.MkdirTemp(workDir, fmt.Sprintf("case-seed-%d-", c.Seed))
	if err != nil {
		return nil, err
	}
	res := &Result{Case: c, Dir: dir}
	frames, err := c.Frames(topo.SrcMAC, topo.FWMAC)
	if err != nil {
		return res, err
	}
	kernel, out, err := runFrames(topo, c, frames, qtablesBin, dir, "packets.pcap")
	res.Kernel, res.Qtables = kernel, string(out)
	rulesPath, pcapPath := filepath.Join(dir, "rules.txt"), filepath.Join(dir, "packets.pcap")
	for name, data := range map[string]string{
		"kernel.txt":  res.Kernel,
		"qtables.txt": res.Qtables,
		"REPLAY": fmt.Sprintf("# replay this case\nQTABLES_CONFORMANCE_SEED=%d QTABLES_CONFORMANCE_N=1 go test -run 'TestKernelConformance$' -v ./conformance/\n# or only the qtables side\nqtables %s\n",
			c.Seed, strings.Join(QtablesArgs(rulesPath, pcapPath), " ")),
	} {
		if werr := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); werr != nil && err == nil {
			err = werr
		}
	}
	if err != nil {
		return res, err
	}
	res.Diff = Compare([]byte(res.Kernel), out)
	return res, nil
}

// runFrames runs frames through the kernel and through qtables (the rules
// go to dir/rules.txt, the frames to dir/pcapName) and returns both
// outputs.
//
// The pcap's timestamps are the moment the kernel was handed the first
// frame, one microsecond apart: the clock the kernel's time and limit
// matches read is the clock qtables reads from the file. (The kernel gets
// the frames over some milliseconds, not microseconds; the generator's
// limit rules refill far more slowly than that, so both see the same.)
func runFrames(topo *Topology, c *Case, frames [][]byte, qtablesBin, dir, pcapName string) (kernel string, qtables []byte, err error) {
	rulesPath := filepath.Join(dir, "rules.txt")
	pcapPath := filepath.Join(dir, pcapName)
	if err := os.WriteFile(rulesPath, []byte(c.Rules), 0o644); err != nil {
		return "", nil, err
	}
	if err := topo.LoadRules(c.Rules); err != nil {
		return "", nil, fmt.Errorf("seed %d: %w", c.Seed, err)
	}
	sent := time.Now()
	if _, err := topo.Send(frames, 10*time.Second); err != nil {
		return "", nil, fmt.Errorf("seed %d: %w", c.Seed, err)
	}
	if err := WritePcapAt(pcapPath, frames, sent); err != nil {
		return "", nil, err
	}
	if kernel, err = topo.SaveFilter(); err != nil {
		return "", nil, err
	}
	qtables, err = RunQtables(qtablesBin, rulesPath, pcapPath)
	return kernel, qtables, err
}

// Culprit is the first packet of a failing case that qtables counts
// differently from the kernel, with the comparison for that packet alone.
type Culprit struct {
	Index  int
	Packet Packet
	Diff   []DiffLine
}

// FindCulprit locates the first packet of a failing case whose counting
// differs. Packets influence each other only through limit matches (no
// conntrack, counters only add), so it bisects on the length of the packet
// prefix, then runs the packet found on its own (which a limit rule may
// then treat differently); its frame is left in Result.Dir as culprit.pcap.
// It returns nil if the outputs differ with no packets at all (a printing
// difference) or if no single packet reproduces the difference.
func FindCulprit(topo *Topology, res *Result, qtablesBin string) (*Culprit, error) {
	c := res.Case
	frames, err := c.Frames(topo.SrcMAC, topo.FWMAC)
	if err != nil {
		return nil, err
	}
	differs := func(fs [][]byte, pcapName string) ([]DiffLine, error) {
		k, q, err := runFrames(topo, c, fs, qtablesBin, res.Dir, pcapName)
		if err != nil {
			return nil, err
		}
		return Compare([]byte(k), q), nil
	}
	// A difference without any packet is one of printing, not counting.
	if d, err := differs(nil, "prefix.pcap"); err != nil || len(d) > 0 {
		return nil, err
	}
	// Invariant: the first lo packets agree, the first hi differ.
	lo, hi := 0, len(frames)
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		d, err := differs(frames[:mid], "prefix.pcap")
		if err != nil {
			return nil, err
		}
		if len(d) > 0 {
			hi = mid
		} else {
			lo = mid
		}
	}
	os.Remove(filepath.Join(res.Dir, "prefix.pcap"))
	i := hi - 1
	d, err := differs(frames[i:i+1], "culprit.pcap")
	if err != nil || len(d) == 0 {
		return nil, err
	}
	return &Culprit{Index: i, Packet: c.Packets[i], Diff: d}, nil
}

// String describes the culprit for a test log.
func (c *Culprit) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "first differing packet: #%d (frame %d of the pcap): %s\n  alone, it gives (- kernel, + qtables):\n", c.Index, c.Index+1, c.Packet.String())
	for _, d := range c.Diff {
		fmt.Fprintf(&b, "    %s\n", d)
	}
	return b.String()
}

// Report describes a failed case for a test log.
func (r *Result) Report() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d: qtables differs from the kernel (- kernel, + qtables):\n", r.Case.Seed)
	for _, d := range r.Diff {
		fmt.Fprintf(&b, "    %s\n", d)
	}
	fmt.Fprintf(&b, "rule set:\n%s", numbered(r.Case.Rules))
	fmt.Fprintf(&b, "case saved in %s (rules.txt, packets.pcap, kernel.txt, qtables.txt, REPLAY; culprit.pcap holds the first differing packet)\n", r.Dir)
	return b.String()
}

func numbered(s string) string {
	var b strings.Builder
	for i, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		fmt.Fprintf(&b, "%4d  %s\n", i+1, l)
	}
	return b.String()
}
