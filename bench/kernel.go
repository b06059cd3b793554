package bench

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/qtables/qtables/engine"
	"github.com/qtables/qtables/internal/netns"
	"github.com/qtables/qtables/matchers"
)

// Kernel drives frames through the Linux kernel's FORWARD hook with a rule
// set loaded by iptables, so that qtables' evaluation can be compared with
// the kernel's on the same rules and packets.
//
// Three network namespaces are created and removed by Close: src sends the
// frames from an AF_PACKET socket on a veth into fw, which forwards them
// (ip_forward on, rp_filter off, a default route to a permanent neighbour)
// out of a second veth to dst, where they are dropped. The fw-side devices
// are named after the bench's --in-interface and --out-interface, so rules
// with -i and -o see the same names as in qtables. Nothing is done in the
// root namespace.
//
// Sending is synchronous: a write on the packet socket runs the veth's
// receive path, routing, the FORWARD hook and the output veth in the
// writer's own softirq before the write returns, so the wall time of a
// send loop is the time of the whole forwarding path, on one CPU.
type Kernel struct {
	src, fw, dst *netns.Namespace
	conn         *netns.PacketConn
	In, Out      string
}

// KernelMAC is the fw input device's address: EncodeFrame's destination.
var KernelMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xfe}

// CheckKernel reports why Kernel cannot run here (not root, no ip or no
// iptables-restore).
func CheckKernel() error {
	if err := netns.Check(); err != nil {
		return err
	}
	for _, tool := range []string{"iptables", "iptables-restore", "iptables-save"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is not installed", tool)
		}
	}
	return nil
}

// NewKernel sets up the namespaces. in and out name the fw devices
// ("qtin" and "qtout" when empty).
func NewKernel(in, out string) (k *Kernel, err error) {
	if err := CheckKernel(); err != nil {
		return nil, err
	}
	if in == "" {
		in = "qtin"
	}
	if out == "" {
		out = "qtout"
	}
	if in == out || strings.ContainsAny(in+out, "+. /") || len(in) > 15 || len(out) > 15 {
		return nil, fmt.Errorf("kernel: interface names %q and %q must differ and be plain device names", in, out)
	}
	_, _ = netns.CleanStale("qtbench")
	k = &Kernel{In: in, Out: out}
	defer func() {
		if err != nil {
			k.Close()
			k = nil
		}
	}()
	if k.src, err = netns.New("qtbench", "src"); err != nil {
		return
	}
	if k.fw, err = netns.New("qtbench", "fw"); err != nil {
		return
	}
	if k.dst, err = netns.New("qtbench", "dst"); err != nil {
		return
	}
	steps := []func() error{
		func() error { return netns.AddVeth(k.src, "s0", k.fw, in) },
		func() error { return netns.AddVeth(k.fw, out, k.dst, "d0") },
		func() error { _, err := k.fw.IP("link", "set", "dev", in, "address", KernelMAC.String()); return err },
		func() error { return k.src.LinkUp("s0") },
		func() error { return k.fw.LinkUp(in) },
		func() error { return k.fw.LinkUp(out) },
		func() error { return k.dst.LinkUp("d0") },
		func() error { return k.fw.AddAddr(in, netip.MustParsePrefix("10.255.0.1/24")) },
		func() error { return k.fw.AddAddr(out, netip.MustParsePrefix("10.255.1.1/24")) },
		func() error { return k.fw.SetSysctl("net.ipv4.ip_forward", "1") },
		func() error { return k.fw.SetSysctl("net.ipv4.conf.all.rp_filter", "0") },
		func() error { return k.fw.SetSysctl("net.ipv4.conf.default.rp_filter", "0") },
		func() error { return k.fw.SetSysctl("net.ipv4.conf."+in+".rp_filter", "0") },
		func() error {
			l, err := k.dst.Link("d0")
			if err != nil {
				return err
			}
			return k.fw.AddNeigh(netip.MustParseAddr("10.255.1.2"), l.MAC, out)
		},
		func() error { return k.fw.AddRoute(netip.Prefix{}, netip.MustParseAddr("10.255.1.2"), out) },
	}
	for _, s := range steps {
		if err = s(); err != nil {
			return
		}
	}
	k.conn, err = k.src.OpenPacket("s0")
	return
}

// Close removes the namespaces.
func (k *Kernel) Close() error {
	var first error
	if k.conn != nil {
		first = k.conn.Close()
	}
	for _, n := range []*netns.Namespace{k.src, k.fw, k.dst} {
		if n != nil {
			if err := n.Close(); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}

// KernelRoutable returns the indexes of the frames the kernel forwards
// (reaching FORWARD): Ethernet IPv4 frames whose addresses are not ones
// its routing drops as martians or treats as local, multicast or
// broadcast (0/8, 127/8, 224/4, 255.255.255.255) or the bench's own
// 10.255/16. Class E (240/4) is routed like unicast by Linux.
func KernelRoutable(frames []Frame) []int {
	var out []int
	for i, f := range frames {
		d := f.Data
		if f.LinkType != 1 || len(d) < 34 || binary.BigEndian.Uint16(d[12:]) != 0x0800 || d[14]>>4 != 4 || d[22] <= 1 {
			continue
		}
		ok := true
		for _, a := range [][]byte{d[26:30], d[30:34]} {
			if a[0] == 0 || a[0] == 127 || a[0]&0xf0 == 224 || (a[0] == 10 && a[1] == 255) ||
				binary.BigEndian.Uint32(a) == 0xffffffff {
				ok = false
			}
		}
		if ok {
			out = append(out, i)
		}
	}
	return out
}

// KernelRun is one timed send loop (or the sum of several).
type KernelRun struct {
	// Sent frames reached the FORWARD hook Counted times (a counting rule
	// first in FORWARD); they differ when the kernel dropped some before.
	Sent, Counted uint64
	Elapsed       time.Duration
	// CPU is the sending thread's CPU time, which includes the forwarding
	// path the kernel runs in the thread's softirq; CPUOK says whether it
	// is known.
	CPU   time.Duration
	CPUOK bool
}

// NsPerPacket is the time per packet sent: CPU time where known (it does
// not grow when other processes take the CPU), else wall time.
func (r KernelRun) NsPerPacket() float64 {
	if r.Sent == 0 {
		return 0
	}
	if r.CPUOK {
		return float64(r.CPU.Nanoseconds()) / float64(r.Sent)
	}
	return float64(r.Elapsed.Nanoseconds()) / float64(r.Sent)
}

func (r *KernelRun) add(o KernelRun) {
	r.CPUOK = (r.Sent == 0 || r.CPUOK) && o.CPUOK
	r.Sent += o.Sent
	r.Counted += o.Counted
	r.Elapsed += o.Elapsed
	r.CPU += o.CPU
}

// countRule is the rule the kernel runs count packets with: no match, no
// target, inserted first in FORWARD.
const countRule = "-I FORWARD 1"

// Run loads rules (an iptables-restore file for table filter), inserts
// the counting rule, and sends frames in a loop (in order, repeating)
// for d.
func (k *Kernel) Run(rules string, frames []Frame, d time.Duration) (KernelRun, error) {
	var r KernelRun
	if len(frames) == 0 {
		return r, fmt.Errorf("kernel: no frames to send")
	}
	if _, err := k.fw.Exec([]byte(rules), "iptables-restore"); err != nil {
		return r, fmt.Errorf("kernel: loading the rules: %w", err)
	}
	if _, err := k.fw.Exec(nil, "iptables", append([]string{"-t", "filter"}, strings.Fields(countRule)...)...); err != nil {
		return r, fmt.Errorf("kernel: inserting the counting rule: %w", err)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	// Warm-up: one pass, at most d/10.
	t0 := time.Now()
	for i := range frames {
		if err := k.conn.WriteFrame(frames[i].Data); err != nil {
			return r, err
		}
		if i%16 == 15 && time.Since(t0) > d/10 {
			break
		}
	}
	warm, err := k.forwardCount()
	if err != nil {
		return r, err
	}
	cpu0, ok0 := threadCPU()
	start := time.Now()
	i := 0
	for {
		for j := 0; j < 16; j++ {
			if err := k.conn.WriteFrame(frames[i].Data); err != nil {
				return r, err
			}
			if i++; i == len(frames) {
				i = 0
			}
		}
		r.Sent += 16
		if time.Since(start) >= d {
			break
		}
	}
	r.Elapsed = time.Since(start)
	cpu1, ok1 := threadCPU()
	r.CPU, r.CPUOK = cpu1-cpu0, ok0 && ok1
	n, err := k.forwardCount()
	if err != nil {
		return r, err
	}
	r.Counted = n - warm
	return r, nil
}

// forwardCount reads the counting rule's packet counter.
func (k *Kernel) forwardCount() (uint64, error) {
	out, err := k.fw.Exec(nil, "iptables-save", "-c", "-t", "filter")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		// "[p:b] -A FORWARD" exactly: the counting rule, first in FORWARD.
		if c, rest, ok := strings.Cut(line, "] "); ok && strings.HasPrefix(c, "[") && strings.HasPrefix(rest, "-A FORWARD") {
			if rest != "-A FORWARD" {
				return 0, fmt.Errorf("kernel: first FORWARD rule is %q, not the counting rule", rest)
			}
			p, _, _ := strings.Cut(c[1:], ":")
			return strconv.ParseUint(p, 10, 64)
		}
	}
	return 0, fmt.Errorf("kernel: counting rule not found in iptables-save output")
}

// KernelComparison is the kernel's side of a comparison.
type KernelComparison struct {
	// Rules is the run with the rule set, AcceptAll and DropAll the runs
	// with an empty FORWARD chain whose policy accepts or drops every
	// packet: the cost of the path without rules.
	Rules, AcceptAll, DropAll KernelRun
	// Accepted is the share of the traffic the rule set accepts (from
	// qtables' verdicts, which the first-match checks tie to the rules).
	Accepted float64
	// EvalNs estimates the kernel's rule evaluation per packet: the rule
	// run's time per packet less the empty runs' times, weighted by the
	// share of packets each verdict's path takes. It is the difference of
	// two measurements of the whole path and is noisy when the rules are
	// cheap next to it.
	EvalNs float64
	// NoiseNs is the largest difference, per packet, between the two
	// halves of any of the three runs: an EvalNs not well above it is
	// noise.
	NoiseNs float64
}

// Compare runs the rule set (the filter table of rs, as iptables-save
// prints it) for d in all and the two empty chains for d/4 each, in the
// order accept, drop, rules, rules, drop, accept (each half as long), so
// that a drift of the machine's speed during the runs cancels out.
// verdicts are qtables' verdicts of the frames, to weight the empty runs.
func (k *Kernel) Compare(rs *engine.Ruleset, frames []Frame, verdicts []matchers.Verdict, d time.Duration) (KernelComparison, error) {
	var c KernelComparison
	var text bytes.Buffer
	if err := rs.Save(&text, engine.SaveOptions{Table: "filter"}); err != nil {
		return c, err
	}
	empty := func(policy string) string {
		return "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD " + policy + " [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
	}
	runs := []struct {
		into  *KernelRun
		rules string
		d     time.Duration
	}{
		{&c.AcceptAll, empty("ACCEPT"), d / 8}, {&c.DropAll, empty("DROP"), d / 8}, {&c.Rules, text.String(), d / 2},
		{&c.Rules, text.String(), d / 2}, {&c.DropAll, empty("DROP"), d / 8}, {&c.AcceptAll, empty("ACCEPT"), d / 8},
	}
	halves := map[*KernelRun][]float64{}
	for _, r := range runs {
		res, err := k.Run(r.rules, frames, r.d)
		if err != nil {
			return c, err
		}
		r.into.add(res)
		halves[r.into] = append(halves[r.into], res.NsPerPacket())
	}
	for _, h := range halves {
		c.NoiseNs = max(c.NoiseNs, math.Abs(h[0]-h[1]))
	}
	acc := 0
	for _, v := range verdicts {
		if v.Base() == matchers.Accept {
			acc++
		}
	}
	if len(verdicts) > 0 {
		c.Accepted = float64(acc) / float64(len(verdicts))
	}
	base := c.Accepted*c.AcceptAll.NsPerPacket() + (1-c.Accepted)*c.DropAll.NsPerPacket()
	c.EvalNs = c.Rules.NsPerPacket() - base
	return c, nil
}

// ChainCounts are the packet counters of one table after a pass: per
// chain, the counter of each rule in order, and the policy counters of
// the built-in chains.
type ChainCounts struct {
	Rules  map[string][]uint64
	Policy map[string]uint64
}

// Counts loads the filter table of rs (zeroing its counters in the
// kernel), sends every frame once and returns the kernel's counters.
func (k *Kernel) Counts(rs *engine.Ruleset, frames []Frame) (ChainCounts, error) {
	var rules bytes.Buffer
	if err := rs.Save(&rules, engine.SaveOptions{Table: "filter"}); err != nil {
		return ChainCounts{}, err
	}
	if _, err := k.fw.Exec(rules.Bytes(), "iptables-restore"); err != nil {
		return ChainCounts{}, fmt.Errorf("kernel: loading the rules: %w", err)
	}
	for i := range frames {
		if err := k.conn.WriteFrame(frames[i].Data); err != nil {
			return ChainCounts{}, err
		}
	}
	out, err := k.fw.Exec(nil, "iptables-save", "-c", "-t", "filter")
	if err != nil {
		return ChainCounts{}, err
	}
	return parseSaveCounts(out)
}

// parseSaveCounts reads the counters of iptables-save -c output.
func parseSaveCounts(out []byte) (ChainCounts, error) {
	cc := ChainCounts{Rules: map[string][]uint64{}, Policy: map[string]uint64{}}
	packets := func(s string) (uint64, error) {
		s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
		p, _, _ := strings.Cut(s, ":")
		return strconv.ParseUint(p, 10, 64)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, ":"):
			f := strings.Fields(line[1:])
			if len(f) == 3 && f[1] != "-" {
				p, err := packets(f[2])
				if err != nil {
					return cc, fmt.Errorf("kernel: counters in %q: %w", line, err)
				}
				cc.Policy[f[0]] = p
			}
		case strings.HasPrefix(line, "["):
			c, rest, _ := strings.Cut(line, " ")
			f := strings.Fields(rest)
			if len(f) < 2 || f[0] != "-A" {
				continue
			}
			p, err := packets(c)
			if err != nil {
				return cc, fmt.Errorf("kernel: counters in %q: %w", line, err)
			}
			cc.Rules[f[1]] = append(cc.Rules[f[1]], p)
		}
	}
	return cc, sc.Err()
}

// CountsOf returns the packet counters of table filter of rs.
func CountsOf(rs *engine.Ruleset) ChainCounts {
	cc := ChainCounts{Rules: map[string][]uint64{}, Policy: map[string]uint64{}}
	t := rs.Table("filter")
	if t == nil {
		return cc
	}
	for _, c := range t.Chains {
		if c.Builtin {
			cc.Policy[c.Name], _ = c.Counters.Get()
		}
		for _, r := range c.Rules {
			p, _ := r.Counters.Get()
			cc.Rules[c.Name] = append(cc.Rules[c.Name], p)
		}
	}
	return cc
}

// Diff lists where a and b differ ("FORWARD:3 12 vs 11 packets"), at
// most limit of them.
func (a ChainCounts) Diff(b ChainCounts, limit int) []string {
	var out []string
	add := func(s string) {
		if len(out) < limit {
			out = append(out, s)
		}
	}
	names := map[string]bool{}
	for n := range a.Rules {
		names[n] = true
	}
	for n := range b.Rules {
		names[n] = true
	}
	var sorted []string
	for n := range names {
		sorted = append(sorted, n)
	}
	sort.Strings(sorted)
	for _, n := range sorted {
		ra, rb := a.Rules[n], b.Rules[n]
		if len(ra) != len(rb) {
			add(fmt.Sprintf("%s: %d rules vs %d", n, len(ra), len(rb)))
			continue
		}
		for i := range ra {
			if ra[i] != rb[i] {
				add(fmt.Sprintf("%s:%d %d vs %d packets", n, i+1, ra[i], rb[i]))
			}
		}
	}
	for _, n := range []string{"INPUT", "FORWARD", "OUTPUT"} {
		if a.Policy[n] != b.Policy[n] {
			add(fmt.Sprintf("%s:policy %d vs %d packets", n, a.Policy[n], b.Policy[n]))
		}
	}
	return out
}
