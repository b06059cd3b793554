package main

// The rule-set comparison (-rules N, issue 7's live headline): the same
// N-rule set in the router's FORWARD chain run by the kernel's
// iptables-legacy, by its nf_tables backend (iptables-nft) and by qtables
// behind NFQUEUE, on the same traffic: packets of the project's traffic
// generator aimed at every rule of the set, so that the first match falls
// all over the chain (about half way on average) as in `qtables bench`.
//
// Every rule ACCEPTs and the chain's policy is DROP, and only packets that
// some rule accepts are sent: a consumer that answers as the rules say
// forwards every packet it gets to judge. Each measurement checks that on
// its own counters (the rules' packet counters add up to what the router
// sent on, and the policy dropped nothing) and that the router's and the
// sink's counts agree, so the rates compare the same work.
//
// Every measurement gets fresh namespaces (sender -- router -- sink):
// iptables-legacy's and iptables-nft's tables never meet in one namespace,
// and no consumer inherits another's state (tables, conntrack, queues).
// The router holds only the consumer's rules; the sink counts arrivals in
// its raw table. The generated packets carry addresses from all over the
// IPv4 unicast space: the router forwards them by a default route to the
// sink, inside the namespaces (which have no link to anywhere else).

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	qbench "github.com/qtables/qtables/bench"
	"github.com/qtables/qtables/internal/netns"
)

// ruleWorkload is the comparison's fixed input: the rule set and the
// packets, the same for every consumer.
type ruleWorkload struct {
	// desc says where the rules come from.
	desc string
	// text is the iptables-restore file: table filter, FORWARD policy
	// DROP, the rules all ACCEPT.
	text  string
	rules int
	// frames are the packets to send (Ethernet frames; the sender writes
	// its own MAC addresses in).
	frames [][]byte
	spread spread
}

// spread describes how the traffic reaches the rules.
type spread struct {
	// Generated is the generator's packet count; Unroutable of them were
	// left out for addresses the router does not forward (or the
	// namespaces' own), NoAccept for matching no accepting rule.
	Generated, Unroutable, NoAccept int
	// Packets is what is sent, Rules the distinct rules that decide them,
	// MeanPos the mean position of the deciding rule in the chain
	// (1-based) and LateHalf the packets decided in the chain's second
	// half.
	Packets, Rules, LateHalf int
	MeanPos                  float64
}

// defaultClassBench is where `make bench-live` finds ClassBench's acl1
// 10k seed set (the repository's sibling ../shared).
const defaultClassBench = "../shared/classbench/acl1_10k"

// ruleSource resolves -ruleset: "auto" is defaultClassBench when present,
// else the generator's acl family; "gen:KIND" is the generator; anything
// else a ClassBench file.
func ruleSource(spec string) string {
	if spec != "auto" {
		return spec
	}
	if _, err := os.Stat(defaultClassBench); err == nil {
		return defaultClassBench
	}
	return "gen:acl"
}

// ruleSet emits n rules of src (see ruleSource) as an iptables-restore
// file for FORWARD, every rule ACCEPT, policy DROP, and returns the
// filters in evaluation order. A ClassBench set gives its first n
// filters, some of which become two rules (TCP and UDP; see
// bench.Expressible), so the rule count can differ from n.
func ruleSet(src string, n int) (text string, fs []qbench.Filter, desc string, err error) {
	if n < 1 {
		return "", nil, "", fmt.Errorf("rules: %d, want at least 1", n)
	}
	if kind, ok := strings.CutPrefix(src, "gen:"); ok {
		sp := qbench.RuleSpec{Kind: kind, Rules: n, Seed: 1, Actions: "accept", Policy: "DROP"}
		text, fs, err = qbench.GenerateRules(sp, "FORWARD")
		if err != nil {
			return "", nil, "", err
		}
		return text, fs, "generated " + sp.String(), nil
	}
	all, err := qbench.LoadClassBench(src)
	if err != nil {
		return "", nil, "", fmt.Errorf("rule set: %w (-ruleset gen:acl uses the generator instead)", err)
	}
	all = all[:min(n, len(all))]
	text, fs, dropped, err := qbench.ClassBenchRules(all, "accept", qbench.EmitOptions{Chain: "FORWARD", Policy: "DROP"})
	if err != nil {
		return "", nil, "", err
	}
	desc = fmt.Sprintf("ClassBench %s, first %d filters", filepath.Base(src), len(all))
	if dropped > 0 {
		desc += fmt.Sprintf(" (%d that can never match left out)", dropped)
	}
	return text, fs, desc, nil
}

// benchNet holds the namespaces' own link subnets (10.0.1.0/24 and
// 10.0.2.0/24): generated packets addressed there are left out, as they
// would be delivered to the router or sent back to the sender.
var benchNet = netip.MustParsePrefix("10.0.0.0/16")

// forwardable reports whether the router forwards a packet from src to
// dst: Linux drops martian sources and destinations (0/8, 127/8,
// multicast 224/4, the limited broadcast) before FORWARD; class E (240/4)
// is routed as unicast. Addresses in benchNet are the namespaces' own.
func forwardable(src, dst netip.Addr) bool {
	for _, a := range []netip.Addr{src, dst} {
		if !a.Is4() || benchNet.Contains(a) {
			return false
		}
		b := a.As4()
		if b[0] == 0 || b[0] == 127 || b[0]&0xf0 == 224 || b == [4]byte{255, 255, 255, 255} {
			return false
		}
	}
	return true
}

// spreadTraffic picks from ps the packets to send: forwardable ones whose
// first matching filter of fs (the chain in evaluation order) accepts.
// It returns their frames in generated order and how they reach the
// rules.
func spreadTraffic(fs []qbench.Filter, ps []qbench.Packet) ([][]byte, spread) {
	s := spread{Generated: len(ps)}
	var frames [][]byte
	hit := make([]bool, len(fs))
	var posSum float64
	for i := range ps {
		t := &ps[i].Tuple
		if !forwardable(t.Src, t.Dst) {
			s.Unroutable++
			continue
		}
		k := qbench.FirstMatch(fs, t)
		if k < 0 || !fs[k].Accept {
			s.NoAccept++
			continue
		}
		frames = append(frames, ps[i].Frame)
		posSum += float64(k + 1)
		if !hit[k] {
			hit[k] = true
			s.Rules++
		}
		if k >= len(fs)/2 {
			s.LateHalf++
		}
	}
	s.Packets = len(frames)
	if s.Packets > 0 {
		s.MeanPos = posSum / float64(s.Packets)
	}
	return frames, s
}

// loadRuleWorkload builds the comparison's rules and traffic: the
// generator's traffic for the filters (no deliberate misses, frames as
// small as their headers allow), forwardable and accepted.
func loadRuleWorkload(spec string, n int) (*ruleWorkload, error) {
	text, fs, desc, err := ruleSet(ruleSource(spec), n)
	if err != nil {
		return nil, err
	}
	tr := qbench.TrafficSpec{Miss: 0, Flow: 4, Active: 32, Sizes: []int{0}, SizeWeights: []int{1}, Seed: 1}
	frames, sp := spreadTraffic(fs, tr.Generate(fs))
	if len(frames) == 0 {
		return nil, fmt.Errorf("rule set %s: no forwardable packet is accepted by it", desc)
	}
	return &ruleWorkload{desc: desc, text: text, rules: len(fs), frames: frames, spread: sp}, nil
}

// ruleConsumer is one thing under test in the comparison.
type ruleConsumer struct {
	name   string
	queues int // 0: the kernel alone
	// senders is the number of sending threads (0: one). The kernel
	// forwards in the sender's softirq, on the sender's CPU: with one
	// sender it uses one CPU, with two both.
	senders int
	// load puts the consumer in place in a fresh router and returns a
	// stop function (nil: nothing to stop).
	load func(rb *ruleBench) (stop func() error, err error)
	// counters reads the rules' accepted packets and the policy's drops
	// (after stop for qtables, which writes them on exit); nil when the
	// consumer has no rules.
	counters func(rb *ruleBench) (chainCounts, error)
}

// ruleResult is one measurement of the comparison.
type ruleResult struct {
	pps float64
	// consumerCPU is the consumer processes' CPU time per packet that
	// reached the sink, senderCPU the sending threads' (which includes
	// the kernel's forwarding path as far as it runs in their softirq).
	consumerCPU, senderCPU time.Duration
	counts                 flowCounts
}

// flowCounts are one measurement's totals, from the namespaces' birth to
// the end of the flood (warm-up included) so that they must add up.
type flowCounts struct {
	Sent      uint64 // sendmmsg's count
	RouterIn  uint64 // r0 rx_packets
	Forwarded uint64 // r1 tx_packets
	FwdDrops  uint64 // r1 tx_dropped
	AtSink    uint64 // the sink's raw PREROUTING counter
	// HasRules: Accepted and Policy are the consumer's own counters.
	HasRules         bool
	Accepted, Policy uint64
	// CtDrops are qtables' drops by its flow table after the rules
	// accepted (its statistics' ct_drops: a confirmation that lost a
	// clash, a full table).
	CtDrops uint64
}

// check reports whether the counts show the consumer forwarding what its
// rules accepted and nothing falling to the policy, and the sink
// receiving what the router sent (an empty string when they do).
func (c flowCounts) check() string {
	var bad []string
	if c.HasRules {
		if c.Policy != 0 {
			bad = append(bad, fmt.Sprintf("%d dropped by the policy", c.Policy))
		}
		if c.Accepted != c.Forwarded+c.FwdDrops {
			m := fmt.Sprintf("rules accepted %d, router sent on %d", c.Accepted, c.Forwarded+c.FwdDrops)
			if c.CtDrops > 0 {
				m += fmt.Sprintf(" (qtables' flow table dropped %d: ct_drops)", c.CtDrops)
			}
			bad = append(bad, m)
		}
	}
	// The sink's backlog may drop a few under load; more than 1% means
	// the sink, not the router, was measured.
	if c.AtSink > c.Forwarded || float64(c.Forwarded-c.AtSink) > 0.01*float64(c.Forwarded) {
		bad = append(bad, fmt.Sprintf("router sent %d, sink got %d", c.Forwarded, c.AtSink))
	}
	return strings.Join(bad, "; ")
}

// chainCounts are the FORWARD chain's totals in an iptables-save -c file.
type chainCounts struct {
	Accepted, Policy uint64
	Rules            int
}

// parseForwardCounts sums the packet counters of the FORWARD rules of
// table filter ("[p:b] -A FORWARD ... -j ACCEPT") and reads the chain's
// policy counter (":FORWARD DROP [p:b]") from iptables-save -c output.
// Only ACCEPT rules count as accepted: the comparison's sets have no
// other.
func parseForwardCounts(save []byte) (chainCounts, error) {
	var c chainCounts
	table, policy := "", false
	sc := bufio.NewScanner(bytes.NewReader(save))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "*"):
			table = l[1:]
		case table != "filter":
		case strings.HasPrefix(l, ":FORWARD "):
			f := strings.Fields(l)
			if len(f) != 3 {
				return c, fmt.Errorf("policy line %q", l)
			}
			p, _, err := packetBytes(f[2])
			if err != nil {
				return c, fmt.Errorf("policy line %q: %w", l, err)
			}
			c.Policy, policy = p, true
		case strings.HasPrefix(l, "["):
			cnt, rule, ok := strings.Cut(l, " ")
			if !ok || !strings.HasPrefix(rule, "-A FORWARD ") {
				continue
			}
			p, _, err := packetBytes(cnt)
			if err != nil {
				return c, fmt.Errorf("rule line %q: %w", l, err)
			}
			c.Rules++
			if strings.HasSuffix(rule, " -j ACCEPT") {
				c.Accepted += p
			}
		}
	}
	if err := sc.Err(); err != nil {
		return c, err
	}
	if !policy {
		return c, errors.New("no filter FORWARD chain in the counters")
	}
	return c, nil
}

// packetBytes reads "[p:b]".
func packetBytes(s string) (p, b uint64, err error) {
	in, ok := strings.CutPrefix(s, "[")
	in, ok2 := strings.CutSuffix(in, "]")
	ps, bs, ok3 := strings.Cut(in, ":")
	if !ok || !ok2 || !ok3 {
		return 0, 0, fmt.Errorf("%q is not [packets:bytes]", s)
	}
	if p, err = strconv.ParseUint(ps, 10, 64); err == nil {
		b, err = strconv.ParseUint(bs, 10, 64)
	}
	return p, b, err
}

// ruleBench is one measurement's namespaces.
type ruleBench struct {
	*bench
	w        *ruleWorkload
	rulePath string
	counters string // qtables' --counters-file
	stats    string // and --stats-file
}

// ruleConsumers lists the comparison: the kernel without rules (the
// ceiling of the traffic), iptables-legacy, iptables-nft, and qtables with
// one and two queues, all with one sending thread; then iptables-legacy
// and qtables with two queues fed by two sending threads, so that the
// kernel's forwarding gets both CPUs too.
func ruleConsumers() []ruleConsumer {
	restore := func(prog string) func(rb *ruleBench) (func() error, error) {
		return func(rb *ruleBench) (func() error, error) {
			if out, err := rb.router.Exec([]byte(rb.w.text), prog); err != nil {
				return nil, fmt.Errorf("%s: %v %s", prog, err, out)
			}
			return nil, nil
		}
	}
	save := func(prog string) func(rb *ruleBench) (chainCounts, error) {
		return func(rb *ruleBench) (chainCounts, error) {
			out, err := rb.router.Exec(nil, prog, "-c", "-t", "filter")
			if err != nil {
				return chainCounts{}, fmt.Errorf("%s: %v", prog, err)
			}
			return parseForwardCounts(out)
		}
	}
	qt := func(queues, senders int) ruleConsumer {
		return ruleConsumer{name: "qtables", queues: queues, senders: senders,
			load: func(rb *ruleBench) (func() error, error) {
				qs := "0"
				if queues > 1 {
					qs = "0-" + strconv.Itoa(queues-1)
				}
				p, err := rb.spawn(`msg="qtables running"`, rb.o.qtables, "run", "--rules", rb.rulePath, "--hook", "FORWARD",
					"--queues", qs, "--fail-closed", "--metrics-addr", "", "--control-socket", "none",
					"--counters-file", rb.counters, "--stats-file", rb.stats, "--log-to", "stdout")
				if err != nil {
					return nil, err
				}
				return p.stop, nil
			},
			counters: func(rb *ruleBench) (chainCounts, error) {
				out, err := os.ReadFile(rb.counters)
				if err != nil {
					return chainCounts{}, fmt.Errorf("qtables counters: %w", err)
				}
				return parseForwardCounts(out)
			}}
	}
	return []ruleConsumer{
		{name: "kernel (no rules)", load: func(*ruleBench) (func() error, error) { return nil, nil }},
		{name: "kernel iptables-legacy", load: restore("iptables-legacy-restore"), counters: save("iptables-legacy-save")},
		{name: "kernel iptables-nft", load: restore("iptables-nft-restore"), counters: save("iptables-nft-save")},
		qt(1, 1), qt(2, 1),
		{name: "kernel iptables-legacy", senders: 2, load: restore("iptables-legacy-restore"), counters: save("iptables-legacy-save")},
		qt(2, 2),
	}
}

// ruleKey names a consumer's results.
func ruleKey(c ruleConsumer) string {
	return c.name + "/" + strconv.Itoa(c.queues) + "/" + strconv.Itoa(c.nsenders())
}

func (c ruleConsumer) nsenders() int { return max(c.senders, 1) }

// runRules runs the comparison: rounds over all consumers, each in fresh
// namespaces registered with reg (deleted at the end of the measurement,
// or by reg on a signal).
func runRules(o options, dir string, reg *nsRegistry) (string, error) {
	w, err := loadRuleWorkload(o.ruleset, o.rules)
	if err != nil {
		return "", err
	}
	fmt.Fprintf(os.Stderr, "rules: %s, %d rules; %d packets reach %d rules, deciding rule at %.0f on average\n",
		w.desc, w.rules, w.spread.Packets, w.spread.Rules, w.spread.MeanPos)
	rulePath := filepath.Join(dir, "ruleset.rules")
	if err := os.WriteFile(rulePath, []byte(w.text), 0o644); err != nil {
		return "", err
	}
	cs := ruleConsumers()
	if o.only != "" {
		want := strings.Split(o.only, ",")
		cs = slices.DeleteFunc(cs, func(c ruleConsumer) bool { return !slices.Contains(want, c.name) })
	}
	res := map[string][]ruleResult{}
	load0 := loadAvg()
	for round := 1; round <= o.rounds; round++ {
		for _, c := range cs {
			r, err := measureRules(o, dir, reg, w, rulePath, c)
			if err != nil {
				return "", fmt.Errorf("%s, %d queue(s), %d sender(s): %w", c.name, c.queues, c.nsenders(), err)
			}
			chk := r.counts.check()
			if chk == "" {
				chk = "ok"
			} else if st, err := os.ReadFile(filepath.Join(dir, "stats.json")); err == nil {
				var js bytes.Buffer
				if json.Compact(&js, st) == nil {
					chk += "; qtables' statistics: " + js.String()
				}
			}
			fmt.Fprintf(os.Stderr, "rules round %d: %-24s %d queue(s) %d sender(s): %9.0f packets/s, consumer CPU %v/packet, sender CPU %v/packet; counts %+v: %s\n",
				round, c.name, c.queues, c.nsenders(), r.pps, r.consumerCPU, r.senderCPU, r.counts, chk)
			res[ruleKey(c)] = append(res[ruleKey(c)], r)
		}
	}
	return rulesReport(w, cs, res, o, fmt.Sprintf("load average %s at the start, %s at the end", load0, loadAvg())), nil
}

// measureRules runs one consumer in fresh namespaces.
func measureRules(o options, dir string, reg *nsRegistry, w *ruleWorkload, rulePath string, c ruleConsumer) (res ruleResult, err error) {
	rb := &ruleBench{bench: &bench{o: o, dir: dir, reg: reg}, w: w, rulePath: rulePath,
		counters: filepath.Join(dir, "counters"), stats: filepath.Join(dir, "stats.json")}
	os.Remove(rb.counters)
	os.Remove(rb.stats)
	for _, p := range []struct {
		ns   **netns.Namespace
		role string
	}{{&rb.sender, "sender"}, {&rb.router, "router"}, {&rb.sink, "sink"}} {
		n, err := netns.New(nsPrefix, p.role)
		if err != nil {
			return res, err
		}
		reg.add(n)
		defer reg.close(n)
		*p.ns = n
	}
	if err := rb.topology(); err != nil {
		return res, err
	}
	stop, err := c.load(rb)
	if err != nil {
		return res, err
	}
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	var sent atomic.Uint64
	var senderCPU atomic.Int64
	quit := make(chan struct{})
	floodDone := make(chan error, c.nsenders())
	for k := range c.nsenders() {
		fd, err := rb.packetSocket()
		if err != nil {
			close(quit)
			for range k {
				<-floodDone
			}
			return res, err
		}
		defer unix.Close(fd)
		// Each sender starts at its own share of the frames.
		go func() { floodDone <- rb.flood(fd, k*len(w.frames)/c.nsenders(), quit, &sent, &senderCPU) }()
	}
	stopFlood := func() error {
		if quit == nil {
			return nil
		}
		close(quit)
		quit = nil
		var err error
		for range c.nsenders() {
			err = errors.Join(err, <-floodDone)
		}
		return err
	}
	defer stopFlood()
	time.Sleep(500 * time.Millisecond) // warm up
	c0, err := rb.sinkCount()
	if err != nil {
		return res, err
	}
	t0, cpu0, s0 := time.Now(), rb.cpuTime(), senderCPU.Load()
	time.Sleep(o.duration)
	c1, err := rb.sinkCount()
	t1, cpu1, s1 := time.Now(), rb.cpuTime(), senderCPU.Load()
	if err != nil {
		return res, err
	}
	if err := stopFlood(); err != nil {
		return res, err
	}
	res.pps = float64(c1-c0) / t1.Sub(t0).Seconds()
	if c1 > c0 {
		res.consumerCPU = (cpu1 - cpu0) / time.Duration(c1-c0)
		// senderCPU is sampled once per batch: a batch's worth of error.
		res.senderCPU = time.Duration(s1-s0) / time.Duration(c1-c0)
	}
	time.Sleep(300 * time.Millisecond) // let the queues drain
	// The totals, after the flood: qtables writes its counters on exit.
	if stop != nil {
		s := stop
		stop = nil
		if err := s(); err != nil {
			return res, err
		}
	}
	fc := flowCounts{Sent: sent.Load()}
	if fc.AtSink, err = rb.sinkCount(); err != nil {
		return res, err
	}
	var in, out linkStats
	if in, err = rb.linkStats(rb.router, "r0"); err == nil {
		out, err = rb.linkStats(rb.router, "r1")
	}
	if err != nil {
		return res, err
	}
	fc.RouterIn, fc.Forwarded, fc.FwdDrops = in.RxPackets, out.TxPackets, out.TxDropped
	if c.counters != nil {
		cc, err := c.counters(rb)
		if err != nil {
			return res, err
		}
		if cc.Rules != w.rules {
			return res, fmt.Errorf("the consumer's FORWARD chain has %d rules, the set %d", cc.Rules, w.rules)
		}
		fc.HasRules, fc.Accepted, fc.Policy = true, cc.Accepted, cc.Policy
	}
	if st, err := os.ReadFile(rb.stats); err == nil {
		var qs struct {
			CtDrops uint64 `json:"ct_drops"`
		}
		if err := json.Unmarshal(st, &qs); err != nil {
			return res, fmt.Errorf("qtables statistics: %w", err)
		}
		fc.CtDrops = qs.CtDrops
	}
	res.counts = fc
	return res, nil
}

// topology builds sender -- router -- sink for the comparison: the
// router forwards everything not its own to the sink (default route, a
// permanent neighbour: no ARP under load), without reverse-path checks
// (the sources are the generator's); the sink drops all it receives in
// raw PREROUTING and counts it there.
func (rb *ruleBench) topology() (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("topology: %v", p)
		}
	}()
	joinVeths(rb.sender, rb.router, rb.sink)
	must(rb.sink.AddAddr("k0", netip.PrefixFrom(sinkFirst, 24)))
	for _, l := range []struct {
		ns  *netns.Namespace
		dev string
	}{{rb.sender, "s0"}, {rb.sender, "lo"}, {rb.router, "r0"}, {rb.router, "r1"}, {rb.router, "lo"}, {rb.sink, "k0"}, {rb.sink, "lo"}} {
		must(l.ns.LinkUp(l.dev))
	}
	must(rb.router.SetSysctl("net.ipv4.ip_forward", "1"))
	for _, k := range []string{"all", "default", "r0"} {
		must(rb.router.SetSysctl("net.ipv4.conf."+k+".rp_filter", "0"))
	}
	k0, err := rb.sink.Link("k0")
	must(err)
	must(rb.router.AddNeigh(sinkFirst, k0.MAC, "r1"))
	must(rb.router.AddRoute(netip.Prefix{}, sinkFirst, "r1"))
	if out, err := rb.sink.Exec(nil, "iptables", "-t", "raw", "-A", "PREROUTING", "-j", "DROP"); err != nil {
		return fmt.Errorf("%v %s", err, out)
	}
	return nil
}

// sinkCount reads the sink's count of packets received.
func (rb *ruleBench) sinkCount() (uint64, error) {
	out, err := rb.sink.Exec(nil, "iptables-save", "-c", "-t", "raw")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(out), "\n") {
		if c, rule, ok := strings.Cut(l, " "); ok && rule == "-A PREROUTING -j DROP" {
			p, _, err := packetBytes(c)
			return p, err
		}
	}
	return 0, fmt.Errorf("sink: no counter in %q", out)
}

// linkStats are a device's counters.
type linkStats struct {
	RxPackets, TxPackets, TxDropped uint64
}

// linkStats reads dev's counters (ip -s -j link).
func (rb *ruleBench) linkStats(n *netns.Namespace, dev string) (linkStats, error) {
	out, err := n.IP("-s", "-j", "link", "show", "dev", dev)
	if err != nil {
		return linkStats{}, err
	}
	return parseLinkStats(out)
}

// parseLinkStats reads the counters of `ip -s -j link show dev DEV`.
func parseLinkStats(js []byte) (linkStats, error) {
	var links []struct {
		Stats struct {
			Rx struct {
				Packets uint64 `json:"packets"`
			} `json:"rx"`
			Tx struct {
				Packets uint64 `json:"packets"`
				Dropped uint64 `json:"dropped"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(js, &links); err != nil {
		return linkStats{}, fmt.Errorf("ip -s -j link: %w", err)
	}
	if len(links) != 1 {
		return linkStats{}, fmt.Errorf("ip -s -j link: %d links", len(links))
	}
	s := links[0].Stats
	return linkStats{RxPackets: s.Rx.Packets, TxPackets: s.Tx.Packets, TxDropped: s.Tx.Dropped}, nil
}

// packetSocket opens an AF_PACKET socket on the sender's s0, bound, for
// sendmmsg without addresses.
func (rb *ruleBench) packetSocket() (int, error) {
	l, err := rb.sender.Link("s0")
	if err != nil {
		return -1, err
	}
	fd, err := rb.sender.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
	if err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: l.Index}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind packet socket: %w", err)
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
	return fd, nil
}

// addressed returns copies of frames with the Ethernet addresses set.
func addressed(frames [][]byte, dst, src net.HardwareAddr) [][]byte {
	out := make([][]byte, len(frames))
	for i, f := range frames {
		c := slices.Clone(f)
		copy(c[0:6], dst)
		copy(c[6:12], src)
		out[i] = c
	}
	return out
}

// flood sends the workload's frames in order from the first-th on, over
// and over, 64 to a sendmmsg, until quit is closed; it adds the thread's
// CPU time to cpu after every call.
func (rb *ruleBench) flood(fd, first int, quit <-chan struct{}, sent *atomic.Uint64, cpu *atomic.Int64) error {
	r0, err := rb.router.Link("r0")
	if err != nil {
		return err
	}
	s0, err := rb.sender.Link("s0")
	if err != nil {
		return err
	}
	frames := addressed(rb.w.frames, r0.MAC, s0.MAC)
	iovs := make([]unix.Iovec, len(frames))
	msgs := make([]mmsghdr, len(frames))
	for i := range frames {
		iovs[i].Base = &frames[i][0]
		iovs[i].SetLen(len(frames[i]))
		msgs[i].hdr.Iov = &iovs[i]
		msgs[i].hdr.SetIovlen(1)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	last := ts.Nano()
	const batch = 64
	i := first
	for {
		select {
		case <-quit:
			runtime.KeepAlive(frames)
			runtime.KeepAlive(iovs)
			return nil
		default:
		}
		k := min(batch, len(msgs)-i)
		n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[i])), uintptr(k), 0, 0, 0)
		if errno != 0 && errno != unix.EINTR && errno != unix.ENOBUFS && errno != unix.EAGAIN {
			return fmt.Errorf("sendmmsg: %w", errno)
		}
		// A message the kernel refused (ENOBUFS: a full backlog) is
		// skipped, not retried: the next call starts after it.
		step := 1
		if errno == 0 && n > 0 {
			sent.Add(uint64(n))
			step = int(n)
		}
		if i += step; i >= len(msgs) {
			i = 0
		}
		unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
		now := ts.Nano()
		cpu.Add(now - last)
		last = now
	}
}

// nsRegistry holds the namespaces alive and the consumer processes
// running in them, for cleaning up on a signal.
type nsRegistry struct {
	mu    sync.Mutex
	live  []*netns.Namespace
	procs []*os.Process
}

func (r *nsRegistry) addProc(p *os.Process) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.procs = append(r.procs, p)
}

// removeProc forgets p (it has exited).
func (r *nsRegistry) removeProc(p *os.Process) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.procs = slices.DeleteFunc(r.procs, func(q *os.Process) bool { return q == p })
}

func (r *nsRegistry) add(n *netns.Namespace) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.live = append(r.live, n)
}

// close deletes n.
func (r *nsRegistry) close(n *netns.Namespace) {
	r.mu.Lock()
	r.live = slices.DeleteFunc(r.live, func(m *netns.Namespace) bool { return m == n })
	r.mu.Unlock()
	n.Close()
}

// closeAll kills the processes still running and deletes every
// namespace still alive (a namespace outlives its deletion while a
// process runs in it).
func (r *nsRegistry) closeAll() {
	r.mu.Lock()
	live, procs := r.live, r.procs
	r.live, r.procs = nil, nil
	r.mu.Unlock()
	for _, p := range procs {
		p.Kill()
	}
	for _, n := range live {
		n.Close()
	}
}

// legacyName is the comparison's reference.
const legacyName = "kernel iptables-legacy"

// rulesReport formats the comparison's medians, with each consumer's rate
// and CPU cost against iptables-legacy's with as many sending threads in
// the same round (a ratio per round, then their median: steadier than a
// ratio of medians on a shared machine). load describes the machine's
// load during the runs.
func rulesReport(w *ruleWorkload, cs []ruleConsumer, res map[string][]ruleResult, o options, load string) string {
	legacy := map[int][]ruleResult{} // by senders
	for _, c := range cs {
		if c.name == legacyName {
			legacy[c.nsenders()] = res[ruleKey(c)]
		}
	}
	var s strings.Builder
	host, _ := os.Hostname()
	sp := w.spread
	fmt.Fprintf(&s, "bench-live rules: %d CPUs (%s), %s per measurement, median of %d rounds, fresh namespaces per measurement", runtime.NumCPU(), host, o.duration, o.rounds)
	if load != "" {
		s.WriteString(", " + load)
	}
	fmt.Fprintf(&s, "\n\nrule set: %s: %d rules in FORWARD, all ACCEPT, policy DROP\n", w.desc, w.rules)
	fmt.Fprintf(&s, "traffic: %d packets of the traffic generator (minimum-size frames, TCP/UDP/ICMP as the rules ask), sent in a loop, each accepted by its first matching rule: %d distinct rules decide them, at position %.0f of %d on average, %d%% in the chain's second half (%d generated packets left out: %d not forwardable, %d accepted by no rule)\n\n",
		sp.Packets, sp.Rules, sp.MeanPos, w.rules, percent(sp.LateHalf, sp.Packets), sp.Unroutable+sp.NoAccept, sp.Unroutable, sp.NoAccept)
	s.WriteString("| consumer | queues | sending threads | packets/s, median (min-max) | packets/s vs iptables-legacy | consumer CPU per packet | sender CPU per packet | iptables-legacy's CPU per packet vs this one's | counters |\n|---|---|---|---|---|---|---|---|---|\n")
	total := func(r ruleResult) float64 { return float64(r.consumerCPU + r.senderCPU) }
	// ratio is the median over rounds of num(this)/den(legacy's), or
	// its inverse, with the range.
	ratio := func(rs, lg []ruleResult, f func(ruleResult) float64, inverse bool) string {
		var rr []float64
		for i := range rs {
			if i >= len(lg) {
				break
			}
			a, b := f(rs[i]), f(lg[i])
			if inverse {
				a, b = b, a
			}
			if b > 0 {
				rr = append(rr, a/b)
			}
		}
		if len(rr) == 0 {
			return "-"
		}
		lo, hi, med := minMaxMedian(rr)
		return fmt.Sprintf("%.2fx (%.2f-%.2fx)", med, lo, hi)
	}
	var disagree []string
	for _, c := range cs {
		rs := res[ruleKey(c)]
		if len(rs) == 0 {
			continue
		}
		pps := make([]float64, len(rs))
		var ccpu, scpu []time.Duration
		checks := 0
		for i, r := range rs {
			pps[i] = r.pps
			ccpu, scpu = append(ccpu, r.consumerCPU), append(scpu, r.senderCPU)
			if r.counts.check() == "" {
				checks++
			}
		}
		lo, hi, med := minMaxMedian(pps)
		rate, cost := "-", "-"
		if c.name != legacyName {
			lg := legacy[c.nsenders()]
			rate = ratio(rs, lg, func(r ruleResult) float64 { return r.pps }, false)
			cost = ratio(rs, lg, total, true)
		}
		q, cpu := strconv.Itoa(c.queues), percentile(ccpu, 50).Round(10*time.Nanosecond).String()
		if c.queues == 0 {
			q, cpu = "-", "-"
		}
		what := "agree"
		if c.counters == nil {
			what = "sink agrees"
		}
		fmt.Fprintf(&s, "| %s | %s | %d | %.0f (%.0f-%.0f) | %s | %s | %s | %s | %s in %d/%d |\n", c.name, q, c.nsenders(), med, lo, hi, rate, cpu,
			percentile(scpu, 50).Round(10*time.Nanosecond), cost, what, checks, len(rs))
		for i, r := range rs {
			if bad := r.counts.check(); bad != "" {
				disagree = append(disagree, fmt.Sprintf("- %s, %d queue(s), %d sender(s), round %d: %s", c.name, c.queues, c.nsenders(), i+1, bad))
			}
		}
	}
	if len(disagree) > 0 {
		s.WriteString("\ncounters that do not add up:\n" + strings.Join(disagree, "\n") + "\n")
	}
	s.WriteString(`
packets/s vs iptables-legacy: the rate over iptables-legacy's with as many sending threads in the same round, median (min-max) over rounds.
sender CPU: the sending threads' CPU time, which includes the kernel's forwarding path run in their softirq (all of it for the kernel consumers, up to the queue for qtables); with one sender the kernel consumers forward on one CPU, qtables judges on the other.
CPU vs iptables-legacy: iptables-legacy's CPU time per packet (sender) over this consumer's (consumer and sender), same round: the cost ratio, which other load on the machine does not move as it moves the rates.
counters: the consumer's rule counters add up to what the router sent on and its policy dropped nothing, and the sink received what the router sent (within 1%), in that many measurements.
`)
	return s.String()
}

// loadAvg is the 1-minute load average.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

func percent(a, b int) int {
	if b == 0 {
		return 0
	}
	return (100*a + b/2) / b
}

// minMaxMedian of a non-empty slice (the upper median for an even count,
// as the main table's).
func minMaxMedian(v []float64) (lo, hi, med float64) {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[0], s[len(s)-1], s[len(s)/2]
}
