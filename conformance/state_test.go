package conformance

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// newStateTopology builds the two-sided test network, removed when the
// test ends.
func newStateTopology(t *testing.T) *StateTopology {
	t.Helper()
	newTopology(t).Close() // tool checks and the stale-namespace sweep
	topo, err := NewStateTopology()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := topo.Close(); err != nil {
			t.Errorf("removing topology: %v", err)
		}
	})
	return topo
}

// stateResult is the outcome of one stateful case.
type stateResult struct {
	Case                *StateCase
	Kernel, Qtables     string // iptables-save -c, comments removed / qtables --counters
	KernelCt, QtablesCt string // conntrack -L / qtables --flows
	Diff, CtDiff        []DiffLine
	Dir                 string
}

// runStateCase loads c into FW with an empty connection table, sends its
// packets from both sides, runs qtables over the same frames (stamped
// with the times they were sent) and compares the counters and the
// connection tables.
func runStateCase(topo *StateTopology, c *StateCase, bin, dir string) (*stateResult, error) {
	res := &stateResult{Case: c, Dir: dir}
	rulesPath, pcapPath := filepath.Join(dir, "rules.txt"), filepath.Join(dir, "packets.pcap")
	if err := os.WriteFile(rulesPath, []byte(c.Rules), 0o644); err != nil {
		return res, err
	}
	if err := topo.LoadRules(c.Rules); err != nil {
		return res, err
	}
	// Accounting on, so that conntrack -L prints the counters qtables
	// prints (connbytes turns it on anyway; the sysctl exists once a
	// rule loaded nf_conntrack).
	topo.FW.SetSysctl("net.netfilter.nf_conntrack_acct", "1")
	if err := topo.FlushConntrack(); err != nil {
		return res, err
	}
	frames := make([][]byte, len(c.Packets))
	sink := make([]bool, len(c.Packets))
	for i := range c.Packets {
		f, err := c.Packets[i].Frame(topo)
		if err != nil {
			return res, fmt.Errorf("packet %d: %w", i, err)
		}
		frames[i], sink[i] = f, c.Packets[i].FromSink
	}
	times, err := topo.SendBoth(frames, sink, c.Pace, 10*time.Second)
	if err != nil {
		return res, err
	}
	if err := writePcapTimes(pcapPath, frames, times); err != nil {
		return res, err
	}
	if res.Kernel, err = topo.SaveFilter(); err != nil {
		return res, err
	}
	if res.KernelCt, err = topo.ListConntrack(); err != nil {
		return res, err
	}
	out, err := runQtablesArgs(bin, StateQtablesArgs(rulesPath, pcapPath))
	if err != nil {
		return res, err
	}
	res.Qtables, res.QtablesCt = splitFlows(string(out))
	res.Diff = Compare([]byte(res.Kernel), []byte(res.Qtables))
	res.CtDiff = diffLines(normalizeCt(res.KernelCt), normalizeCt(res.QtablesCt))
	for name, data := range map[string]string{"kernel.txt": res.Kernel, "qtables.txt": res.Qtables,
		"kernel-conntrack.txt": res.KernelCt, "qtables-flows.txt": res.QtablesCt,
		"REPLAY": fmt.Sprintf("QTABLES_STATE_SEED=%d QTABLES_STATE_N=1 go test -run 'TestKernelStateConformance$' -v ./conformance/\nqtables %s\n",
			c.Seed, strings.Join(StateQtablesArgs(rulesPath, pcapPath), " "))} {
		os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644)
	}
	return res, nil
}

// writePcapTimes writes frames stamped with times.
func writePcapTimes(path string, frames [][]byte, times []time.Time) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := pcapgo.NewWriterNanos(f)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		f.Close()
		return err
	}
	for i, fr := range frames {
		ci := gopacket.CaptureInfo{Timestamp: times[i], CaptureLength: len(fr), Length: len(fr)}
		if err := w.WritePacket(ci, fr); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

// splitFlows separates qtables' output into the counters (up to the
// "# Completed" line) and the flows after it.
func splitFlows(out string) (counters, flows string) {
	i := strings.Index(out, "\n# Completed on ")
	if i < 0 {
		return out, ""
	}
	j := strings.IndexByte(out[i+1:], '\n')
	if j < 0 {
		return out, ""
	}
	return out[:i+1+j+1], out[i+1+j+1:]
}

// normalizeCt prepares a conntrack -L listing for comparison: sorted
// lines without the timeout (the kernel's clock ran on while qtables
// stops at the last packet) and the reference count.
func normalizeCt(s string) []string {
	var lines []string
	for _, l := range strings.Split(s, "\n") {
		f := strings.Fields(l)
		if len(f) < 4 {
			continue
		}
		f = slices.Delete(f, 2, 3)
		f = slices.DeleteFunc(f, func(w string) bool { return strings.HasPrefix(w, "use=") })
		lines = append(lines, strings.Join(f, " "))
	}
	slices.Sort(lines)
	return lines
}

func (r *stateResult) report() string {
	var b strings.Builder
	c := r.Case
	fmt.Fprintf(&b, "seed %d: qtables differs from the kernel (- kernel, + qtables)\n", c.Seed)
	if len(r.Diff) > 0 {
		b.WriteString("counters:\n")
		for _, d := range r.Diff {
			fmt.Fprintf(&b, "    %s\n", d)
		}
	}
	if len(r.CtDiff) > 0 {
		b.WriteString("connection tables (timeouts left out):\n")
		for _, d := range r.CtDiff {
			fmt.Fprintf(&b, "    %s\n", d)
		}
	}
	fmt.Fprintf(&b, "rule set:\n%s", numbered(c.Rules))
	b.WriteString("packets:\n")
	for i, p := range c.Packets {
		side := "b0"
		if p.FromSink {
			side = "b1"
		}
		fmt.Fprintf(&b, "  %3d %s %-42s %s\n", i+1, side, p.Note, p.Packet.String())
	}
	fmt.Fprintf(&b, "case saved in %s\n", r.Dir)
	return b.String()
}

// stateParams reads QTABLES_STATE_N (default 120) and QTABLES_STATE_SEED
// (default 1, "random" for a clock seed).
func stateParams(t *testing.T) (n int, seed uint64) {
	n = 120
	if s := os.Getenv("QTABLES_STATE_N"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("QTABLES_STATE_N=%q: want a positive integer", s)
		}
		n = v
	}
	seed = 1
	switch s := os.Getenv("QTABLES_STATE_SEED"); s {
	case "":
	case "random":
		seed = uint64(time.Now().UnixNano()) % 1_000_000_000
		t.Logf("QTABLES_STATE_SEED=random: using seed %d", seed)
	default:
		v, err := strconv.ParseUint(s, 0, 64)
		if err != nil {
			t.Fatalf("QTABLES_STATE_SEED=%q: %v", s, err)
		}
		seed = v
	}
	return n, seed
}

// TestKernelStateConformance runs generated stateful cases (connections
// in both directions through the router, rules with state, conntrack,
// connlimit, connmark, connbytes and CONNMARK) through the kernel and
// through qtables test, and requires the same counters and the same
// connection table.
//
// Replay one case with QTABLES_STATE_SEED=<seed> QTABLES_STATE_N=1.
func TestKernelStateConformance(t *testing.T) {
	requireKernel(t)
	n, seed := stateParams(t)
	work := t.TempDir()
	bin := buildQtables(t, work)
	topo := newStateTopology(t)
	noExpire := !ctExpireReliable(t)
	t.Logf("running %d stateful cases, seeds %d..%d", n, seed, seed+uint64(n)-1)
	failed, packets := 0, 0
	start := time.Now()
	for i := range n {
		c := GenerateState(seed+uint64(i), noExpire)
		packets += len(c.Packets)
		dir, err := os.MkdirTemp(work, fmt.Sprintf("state-seed-%d-", c.Seed))
		if err != nil {
			t.Fatal(err)
		}
		res, err := runStateCase(topo, c, bin, dir)
		if err != nil {
			t.Fatalf("seed %d: %v\nrule set:\n%s", c.Seed, err, numbered(c.Rules))
		}
		if os.Getenv("QTABLES_STATE_SHOW") != "" {
			t.Logf("seed %d:\n%s\n%s\n%s\n%s", c.Seed, res.Kernel, res.Qtables, res.KernelCt, res.QtablesCt)
		}
		if len(res.Diff) == 0 && len(res.CtDiff) == 0 {
			os.RemoveAll(dir)
			continue
		}
		failed++
		if failed <= maxReported {
			culprit := ""
			if i, err := findStateCulprit(topo, c, bin, dir); err != nil {
				culprit = fmt.Sprintf("looking for the first differing packet: %v\n", err)
			} else if i >= 0 {
				culprit = fmt.Sprintf("the first %d packets agree, the first %d do not: packet %d (%s) is the first counted differently\n", i, i+1, i+1, c.Packets[i].Note)
			}
			res.Dir = keepDir(t, dir, c.Seed)
			t.Errorf("%s%s", res.report(), culprit)
		}
	}
	if failed > maxReported {
		t.Errorf("%d more failing cases not shown", failed-maxReported)
	}
	t.Logf("%d cases (%d packets) in %v, %d failed", n, packets, time.Since(start).Round(time.Millisecond), failed)
}

// findStateCulprit bisects on the length of the packet prefix (each run
// starts from an empty connection table, so a prefix is a case of its
// own) and returns the index of the first packet after which the kernel
// and qtables disagree, or -1.
func findStateCulprit(topo *StateTopology, c *StateCase, bin, dir string) (int, error) {
	differs := func(n int) (bool, error) {
		p := *c
		p.Packets = c.Packets[:n]
		sub, err := os.MkdirTemp(dir, "prefix-")
		if err != nil {
			return false, err
		}
		defer os.RemoveAll(sub)
		res, err := runStateCase(topo, &p, bin, sub)
		if err != nil {
			return false, err
		}
		return len(res.Diff) > 0 || len(res.CtDiff) > 0, nil
	}
	lo, hi := 0, len(c.Packets)
	if d, err := differs(hi); err != nil || !d {
		return -1, err
	}
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		d, err := differs(mid)
		if err != nil {
			return -1, err
		}
		if d {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi - 1, nil
}

// keepDir moves a failing case's files out of the test's temporary
// directory.
func keepDir(t *testing.T, dir string, seed uint64) string {
	dst, err := os.MkdirTemp("", fmt.Sprintf("qtables-state-seed-%d-", seed))
	if err != nil {
		return dir
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if b, err := os.ReadFile(filepath.Join(dir, e.Name())); err == nil {
			os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644)
		}
	}
	return dst
}

// ctExpireReliable reports whether the kernel shows 0 s left for a
// connection whose first packet is still in the rules, as qtables does:
// the kernel stores the relative timeout until confirmation and
// subtracts the 32-bit jiffies counter, which gives 0 unless the machine
// has been up for less than about ten minutes (or more than 99 days, when
// the counter's sign flips).
func ctExpireReliable(t *testing.T) bool {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return false
	}
	up, err := strconv.ParseFloat(strings.Fields(string(b))[0], 64)
	if err != nil {
		return false
	}
	if up < 900 || up > 98*86400 {
		t.Logf("uptime %.0f s: --ctexpire left out of the stateful cases", up)
		return false
	}
	return true
}

// TestKernelStateFacts pins down, on the running kernel, the behaviours
// of the stateful matches that surprised (they are what qtables models),
// and checks that qtables agrees on each.
func TestKernelStateFacts(t *testing.T) {
	requireKernel(t)
	work := t.TempDir()
	bin := buildQtables(t, work)
	topo := newStateTopology(t)
	c, s := netip.MustParseAddr("10.1.0.1"), netip.MustParseAddr("198.51.100.7")
	udp := func(fromClient bool, cp, sp uint16) StatePacket {
		src, dst, a, b := c, s, cp, sp
		if !fromClient {
			src, dst, a, b = s, c, sp, cp
		}
		return StatePacket{Packet: Packet{Src: src, Dst: dst, Proto: 17, TTL: 64, L4: udpDatagram(src, dst, a, b, nil)}, FromSink: !fromClient}
	}
	conn := &conv{g: &stateGen{r: newRand(1)}, c: c, s: s, cp: 40000, sp: 80, cNxt: 1000, sNxt: 5000, cWin: 60000, sWin: 60000}
	conn.seg(true, flagSYN, 0, "SYN")
	conn.seg(false, flagSYN|flagACK, 0, "SYN/ACK")
	conn.seg(true, flagACK, 0, "ACK")
	conn.seg(true, flagPSH|flagACK, 10, "data")
	conn.seg(false, flagACK, 0, "ACK")
	conn.seg(true, flagFIN|flagACK, 0, "FIN")
	conn.seg(false, flagACK, 0, "ACK")
	conn.seg(false, flagFIN|flagACK, 0, "FIN")
	conn.seg(true, flagACK, 0, "last ACK")
	const head = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
	facts := []struct {
		name  string
		rules string
		pkts  []StatePacket
		pace  time.Duration
		// want are counters the kernel must show, as "[p:b] -A ..."
		// prefixes of iptables-save -c lines; atLeast instead requires
		// at least that many packets (for timing-dependent facts).
		want    []string
		atLeast map[string]int
		// timing: the kernel's jiffies decide, so qtables (which counts
		// jiffies from the capture's clock, not the kernel's) is not
		// compared.
		timing bool
	}{
		{
			name: "connlimit adds a confirmed connection's reply before it is assured",
			rules: head + "-A FORWARD -p udp -m udp --dport 1 -m conntrack --ctstate NEW -j ACCEPT\n" +
				"-A FORWARD -m connlimit --connlimit-above 1 --connlimit-mask 0\nCOMMIT\n",
			pkts: []StatePacket{udp(true, 1000, 1), udp(true, 1001, 2), udp(false, 1000, 1)},
			pace: statePace,
			want: []string{"[1:28] -A FORWARD -m connlimit"},
		},
		{
			name:  "connlimit cleans a list once per jiffy: paced, a dropped connection no longer counts",
			rules: head + "-A FORWARD -m connlimit --connlimit-above 1 --connlimit-mask 0\n-A FORWARD -j DROP\nCOMMIT\n",
			pkts:  []StatePacket{udp(true, 2000, 1), udp(true, 2001, 1), udp(true, 2002, 1)},
			pace:  statePace,
			want:  []string{"[0:0] -A FORWARD -m connlimit"},
		},
		{
			name:    "connlimit cleans a list once per jiffy: in a burst, dropped connections still count",
			rules:   head + "-A FORWARD -m connlimit --connlimit-above 1 --connlimit-mask 0\n-A FORWARD -j DROP\nCOMMIT\n",
			pkts:    []StatePacket{udp(true, 2000, 1), udp(true, 2001, 1), udp(true, 2002, 1)},
			atLeast: map[string]int{"-A FORWARD -m connlimit": 1},
			timing:  true,
		},
		{
			name: "connlimit drops the ACK that puts its key's only connection in TIME_WAIT",
			rules: head + "-A FORWARD -m connlimit --connlimit-above 5 --connlimit-mask 0\n" +
				"-A FORWARD -m conntrack --ctstate NEW,ESTABLISHED\nCOMMIT\n",
			pkts: conn.pkts,
			pace: statePace,
			want: []string{":FORWARD ACCEPT [8:330]", "[0:0] -A FORWARD -m connlimit", "[8:330] -A FORWARD -m conntrack"},
		},
		{
			name: "a connection's first packet has 0 s left (--ctexpire), later ones the full timeout",
			rules: head + "-A FORWARD -m conntrack --ctexpire 0\n-A FORWARD -m conntrack --ctexpire 30\n" +
				"-A FORWARD -m conntrack --ctstatus CONFIRMED\nCOMMIT\n",
			pkts: []StatePacket{udp(true, 3000, 1), udp(true, 3000, 1), udp(false, 3000, 1)},
			want: []string{"[1:28] -A FORWARD -m conntrack --ctexpire 0", "[2:56] -A FORWARD -m conntrack --ctexpire 30",
				"[2:56] -A FORWARD -m conntrack --ctstatus CONFIRMED"},
		},
	}
	if !ctExpireReliable(t) {
		facts = facts[:len(facts)-1]
	}
	for i, f := range facts {
		dir := filepath.Join(work, fmt.Sprintf("fact-%d", i))
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		sc := &StateCase{Rules: f.rules, Packets: f.pkts, Pace: f.pace}
		res, err := runStateCase(topo, sc, bin, dir)
		if err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
		for _, w := range f.want {
			if !slices.ContainsFunc(strings.Split(res.Kernel, "\n"), func(l string) bool { return strings.HasPrefix(l, w) }) {
				t.Errorf("%s: the kernel's counters lack %q:\n%s", f.name, w, res.Kernel)
			}
		}
		for rule, n := range f.atLeast {
			for _, l := range strings.Split(res.Kernel, "\n") {
				if strings.Contains(l, rule) {
					p, _, _ := strings.Cut(strings.TrimPrefix(l, "["), ":")
					if v, _ := strconv.Atoi(p); v < n {
						t.Errorf("%s: the kernel counts %d packets for %q, want at least %d", f.name, v, rule, n)
					}
				}
			}
		}
		if !f.timing && (len(res.Diff) > 0 || len(res.CtDiff) > 0) {
			t.Errorf("%s: %s", f.name, res.report())
		}
	}
}
