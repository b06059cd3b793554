package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/qtables/qtables/bench"
	"github.com/qtables/qtables/engine"
	"github.com/qtables/qtables/matchers"
	"github.com/qtables/qtables/packet"
)

const benchLong = `bench measures how fast qtables evaluates a rule set. The packets are
decoded once; then each worker evaluates its own copy of them in a loop
through the built-in chain CHAIN of the table (as ` + "`qtables test`" + ` would:
at FORWARD the TTL is decremented once, packets that reach no hook are
left out) for --duration, after a short warm-up.

Rule set (one of):
  --rules FILE       an iptables-save file
  --classbench FILE  a ClassBench filter set, converted as classbench2iptables
                     does (--actions, --policy)
  --gen SPEC         a generated set: KIND[,rules=N,seed=N,chains=N,
                     comments=N,actions=accept|alternate,policy=DROP|ACCEPT],
                     KIND acl, fw or ipc (ClassBench's seed families);
                     the default when no rule set is given is "acl"
Traffic (one of):
  --pcap FILE        the frames of a capture
  --synth SPEC       qtables synth's traffic (see qtables synth --help)
  --traffic SPEC     the default: packets aimed at each rule in turn, with
                     misses: packets=N (0: max(10000, 2 x rules)),
                     miss=F (0.05), flow=F (mean packets per flow, Pareto
                     distributed; 4), active=N (flows interleaved; 32),
                     sizes=imix|N[:N...] (frame sizes; imix), seed=N
                     For --rules sets the rules are approximated by their
                     addresses, protocol and ports (see "spread").

Measured per configuration:
  pps, pps/core      packets per second over all workers, and per worker
  ns/pkt             worker time per packet (mean): duration x workers /
                     packets evaluated
  p50, p99           percentiles of per-packet latency: one packet in 64,
                     picked at random, is timed alone between two clock
                     reads; the clock's own cost (measured first) is
                     subtracted from each sample and, summed, from the
                     time behind ns/pkt, so sampling does not skew the mean
  cpu ns/pkt, cpu    the workers' threads' CPU time per packet, and as a
                     share of duration x workers: on a busy machine pps
                     and ns/pkt suffer, cpu ns/pkt does not
  allocs/pkt         heap allocations during the run (runtime.MemStats)
                     over packets evaluated
  compiled           the compiled rule set's size (rule records and the
                     classifiers of chains of 16 rules or more) and the
                     median wall time of up to 3 compiles of the parsed
                     rule set (fewer when they take longer than --duration
                     or 1 s)
  --workers N        runs 1, 2, 4, ... N workers, each with its own
                     Context over the shared compiled rule set (counters
                     are atomic) and reports the speedup over 1 worker

Where the time goes: before measuring, each packet is evaluated once with a
tracer (up to half the duration) that counts per rule the packets compared
with it (visits) and matched (hits). A rule's share of evaluation time is
its visits over all visits: comparing a packet with a rule costs about
the same for any rule whose addresses, interfaces or protocol reject the
packet, and timing each rule would measure the clock instead. --top N
rules are listed (0: all).

Checks: for generated and ClassBench sets, the rule that decided each
packet is compared with a linear first-match search over the filters the
set was made from ("first match: N/N agree"); a disagreement fails the
command. For generated traffic, "spread" reports how many packets aimed at
a rule were decided by it, by an earlier rule (first match: an earlier
rule covers them too), or otherwise, and how many rules decided packets.

--sweep rules=10,100,1000,10000 measures each size: generated sets are
generated at each size, a --classbench or --rules set is cut to its first
rules (a jump counts with the rules it reaches); traffic is generated anew
for each size unless it comes from --pcap or --synth. The sizes are
measured side by side, since a shared machine's speed drifts over seconds:
--rounds N (3; 1 without --sweep) splits each measurement into N rounds of
duration/N, each round measuring every size (each at every --workers
count) in turn, in alternating directions; the figures are over all rounds
(p50 and p99: the median round's). The column "vs R rules" is the
throughput relative to the smallest size measured in the same round (its
cpu ns/pkt over this size's): the median over the rounds, then the
smallest and largest. Compiling, checking, profiling and --kernel run once
per size. --plot F.svg draws packets per CPU second of each worker against
rules (log axes; with --kernel, the kernel's rates too).

--kernel also runs the rule set's filter table and the same packets
through the kernel: iptables-restore in a network namespace that forwards
between two veths, with the packets sent from a third namespace through a
packet socket (all created and removed by the run; packets the kernel
would not forward, such as multicast or loopback addresses, are left out
of both sides). A send runs the whole forwarding path in the sender's
softirq, so its CPU time is the path's cost. Reported: the path's rate
with the rules; the same path with an empty chain accepting and dropping
everything; the difference, weighted by the share of packets accepted,
as the kernel's rule evaluation per packet; and its ratio to qtables' CPU
time per packet (kernel/qtables: above 1, qtables is faster). The runs
are interleaved (accept, drop, rules, rules, drop, accept) and the
largest difference between halves is shown as the noise; no ratio is
given within twice the noise. Finally every packet is sent once more
and every rule's packet counter in the kernel is compared with qtables'.

Output: a table, or with --json one object per measured configuration
(an array when there is more than one) with the keys rules, packets,
pps, pps_per_core, ns_per_packet, ns_p50, ns_p99, allocs_per_packet,
compiled_bytes, compile_ms, workers, rounds, round_cpu_ns_per_packet
(one per round) and more; with --sweep ratio_to_first (0.46 for 46%),
ratio_to_first_min and ratio_to_first_max.`

type benchOptions struct {
	rules, classbench, gen string
	pcap, synth, traffic   string
	table, chain, in, out  string
	duration               time.Duration
	workers                int
	rounds                 int
	json                   bool
	sweep, plot            string
	top                    int
	actions, policy        string
	verify                 bool
	saveRules, saveCapture string
	trafficSet             bool
	kernel                 bool
}

func newBenchCmd() *cobra.Command {
	var o benchOptions
	c := &cobra.Command{
		Use:   "bench [--rules R | --classbench F | --gen SPEC] [--pcap P | --synth SPEC | --traffic SPEC] [flags]",
		Short: "Measure rule-set evaluation speed: packets per second, latency, allocations, per-rule cost",
		Long:  benchLong,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.trafficSet = cmd.Flags().Changed("traffic")
			if !cmd.Flags().Changed("rounds") {
				o.rounds = 1
				if o.sweep != "" {
					o.rounds = 3
				}
			}
			return runBench(cmd, &o)
		},
	}
	f := c.Flags()
	f.StringVar(&o.rules, "rules", "", "rules `FILE` (iptables-save format)")
	f.StringVar(&o.classbench, "classbench", "", "ClassBench filter set `FILE`")
	f.StringVar(&o.gen, "gen", "", "generate the rule set: `SPEC` (see above)")
	f.StringVar(&o.pcap, "pcap", "", "evaluate the packets of capture `FILE`")
	f.StringVar(&o.synth, "synth", "", "evaluate qtables synth traffic of `SPEC` (\"\" for its defaults: use --synth=default)")
	f.StringVar(&o.traffic, "traffic", "", "generated traffic aimed at the rules: `SPEC` (see above)")
	f.StringVarP(&o.table, "table", "t", "filter", "table to traverse")
	f.StringVar(&o.chain, "chain", "FORWARD", "built-in chain the packets enter")
	f.StringVarP(&o.in, "in-interface", "i", "", "input interface name the packets arrive on")
	f.StringVarP(&o.out, "out-interface", "o", "", "output interface name the packets leave on")
	f.DurationVar(&o.duration, "duration", 3*time.Second, "how long each configuration is measured")
	f.IntVar(&o.workers, "workers", 1, "measure 1, 2, 4, ... up to `N` concurrent workers")
	f.IntVar(&o.rounds, "rounds", 0, "split each measurement into `N` rounds interleaved across sweep sizes (default 3 with --sweep, 1 without)")
	f.BoolVar(&o.json, "json", false, "print JSON instead of tables")
	f.StringVar(&o.sweep, "sweep", "", "measure rule-set sizes: rules=N,N,...")
	f.StringVar(&o.plot, "plot", "", "with --sweep, write an SVG plot of pps per core against rules (and the kernel's, with --kernel) to `FILE`")
	f.IntVar(&o.top, "top", 10, "list the `N` rules with the largest share of evaluation (0: all)")
	f.StringVar(&o.actions, "actions", "accept", "ClassBench filters' targets: accept (all ACCEPT) or alternate (ACCEPT, DROP, ...)")
	f.StringVar(&o.policy, "policy", "DROP", "ClassBench sets' chain policy")
	f.BoolVar(&o.verify, "verify", true, "check first-match answers against linear evaluation (generated and ClassBench sets)")
	f.StringVar(&o.saveRules, "save-rules", "", "write the rule set measured to `FILE` (iptables-save format; not with --sweep)")
	f.StringVar(&o.saveCapture, "save-pcap", "", "write the traffic measured to pcap `FILE` (not with --sweep)")
	f.BoolVar(&o.kernel, "kernel", false, "also run the rules and traffic through the kernel (iptables in network namespaces) and compare")
	return c
}

// benchCase is one rule-set size to measure: the rule set and its traffic.
type benchCase struct {
	size    int // requested by --sweep; 0 without
	source  string
	rs      *engine.Ruleset
	filters []bench.Filter // evaluation order, Ref set
	exact   bool           // filters are the rule set's meaning
	traffic string
	packets []bench.Packet // generated traffic, or nil
	frames  []bench.Frame
	dropped int // ClassBench filters that can never match
	// excluded counts the packets left out because the kernel would not
	// forward them (--kernel).
	excluded int
}

// benchRecord is the JSON object of one measured configuration.
type benchRecord struct {
	Rules          int    `json:"rules"`
	Source         string `json:"source"`
	Table          string `json:"table"`
	Chain          string `json:"chain"`
	Traffic        string `json:"traffic"`
	TrafficPackets int    `json:"traffic_packets"`
	// CompiledBytes is the compiled rule set's size (rule records and
	// classifiers, engine.Program.CompiledBytes); CompileMs the median
	// wall time of CompileRuns compiles of the parsed rule set.
	CompiledBytes   int              `json:"compiled_bytes"`
	CompileMs       float64          `json:"compile_ms"`
	CompileRuns     int              `json:"compile_runs"`
	Skipped         map[string]int   `json:"skipped,omitempty"`
	Workers         int              `json:"workers"`
	DurationS       float64          `json:"duration_s"`
	Packets         uint64           `json:"packets"`
	PPS             float64          `json:"pps"`
	PPSPerCore      float64          `json:"pps_per_core"`
	NsPerPacket     float64          `json:"ns_per_packet"`
	CPUNsPerPacket  float64          `json:"cpu_ns_per_packet"`
	CPUShare        float64          `json:"cpu_share"`
	NsP50           float64          `json:"ns_p50"`
	NsP99           float64          `json:"ns_p99"`
	LatencySamples  int              `json:"latency_samples"`
	ClockNs         float64          `json:"clock_ns"`
	AllocsPerPacket float64          `json:"allocs_per_packet"`
	BytesPerPacket  float64          `json:"bytes_per_packet"`
	Speedup         float64          `json:"speedup,omitempty"`
	VisitsPerPacket float64          `json:"rules_visited_per_packet"`
	ProfiledPackets int              `json:"profiled_packets"`
	TopRules        []ruleRecord     `json:"top_rules"`
	PolicyHits      map[string]int64 `json:"policy_hits,omitempty"`
	FirstMatch      *checkRecord     `json:"first_match,omitempty"`
	Spread          *bench.Spread    `json:"spread,omitempty"`
	Kernel          *kernelRecord    `json:"kernel,omitempty"`
	// KernelRatio is the kernel's rule evaluation time per packet over
	// qtables' (CPU time per packet): how many times faster qtables
	// evaluates (below 1: slower). Absent when the kernel's figure is
	// within twice its noise.
	KernelRatio float64 `json:"kernel_ratio,omitempty"`
	// Rounds is the number of rounds the measurement was split into (see
	// measureRounds); RoundCPUNsPerPacket the CPU time per packet of each,
	// in the order measured.
	Rounds              int       `json:"rounds"`
	RoundCPUNsPerPacket []float64 `json:"round_cpu_ns_per_packet"`
	// RatioToFirst (with --sweep): this size's throughput relative to
	// the first (smallest) size's at the same worker count, measured in
	// the same round: the first's CPU time per packet over this one's
	// (worker time where CPU time is unknown). The median over the
	// rounds, and their smallest and largest.
	RatioToFirst    float64 `json:"ratio_to_first,omitempty"`
	RatioToFirstMin float64 `json:"ratio_to_first_min,omitempty"`
	RatioToFirstMax float64 `json:"ratio_to_first_max,omitempty"`
}

// kernelRecord is the kernel's side of --kernel.
type kernelRecord struct {
	// PPS and NsPerPacket: the whole forwarding path with the rules, on one
	// CPU (veth receive, routing, FORWARD, veth transmit, the send call).
	PPS         float64 `json:"pps"`
	NsPerPacket float64 `json:"ns_per_packet"`
	// AcceptAllNs and DropAllNs: the same path with an empty FORWARD chain.
	AcceptAllNs float64 `json:"accept_all_ns_per_packet"`
	DropAllNs   float64 `json:"drop_all_ns_per_packet"`
	// EvalNs: the rules' share, NsPerPacket less the empty paths weighted
	// by the share of packets accepted.
	EvalNs float64 `json:"eval_ns_per_packet"`
	// NoiseNs: the largest difference between the two halves of a run.
	NoiseNs  float64 `json:"noise_ns_per_packet"`
	Accepted float64 `json:"accepted_share"`
	Sent     uint64  `json:"sent"`
	Counted  uint64  `json:"reached_forward"`
	Excluded int     `json:"excluded_packets"`
	// CountersAgree: after one pass of the packets, every rule's and
	// policy's packet counter in the kernel equals qtables'.
	CountersAgree bool     `json:"counters_agree"`
	CounterDiffs  []string `json:"counter_diffs,omitempty"`
}

type ruleRecord struct {
	Rule   string  `json:"rule"`
	Text   string  `json:"text"`
	Visits uint64  `json:"visits"`
	Hits   uint64  `json:"hits"`
	Share  float64 `json:"share"`
}

type checkRecord struct {
	Packets    int      `json:"packets"`
	Agree      int      `json:"agree"`
	Mismatches []string `json:"mismatches,omitempty"`
}

func benchUsage(cmd *cobra.Command, err error) error {
	fmt.Fprintln(cmd.ErrOrStderr(), "qtables bench:", err)
	return exitError{2}
}

func runBench(cmd *cobra.Command, o *benchOptions) error {
	sources := 0
	for _, s := range []string{o.rules, o.classbench, o.gen} {
		if s != "" {
			sources++
		}
	}
	trafficSources := 0
	for _, s := range []string{o.pcap, o.synth} {
		if s != "" {
			trafficSources++
		}
	}
	if o.trafficSet {
		trafficSources++
	}
	switch {
	case sources > 1:
		return benchUsage(cmd, errors.New("give one of --rules, --classbench and --gen"))
	case trafficSources > 1:
		return benchUsage(cmd, errors.New("give one of --pcap, --synth and --traffic"))
	case o.workers < 1:
		return benchUsage(cmd, errors.New("--workers must be at least 1"))
	case o.duration <= 0:
		return benchUsage(cmd, errors.New("--duration must be positive"))
	case o.rounds < 1:
		return benchUsage(cmd, fmt.Errorf("--rounds %d: must be at least 1", o.rounds))
	case o.duration/time.Duration(o.rounds) < time.Millisecond:
		return benchUsage(cmd, fmt.Errorf("--rounds %d: --duration %v leaves less than 1ms a round", o.rounds, o.duration))
	case o.plot != "" && o.sweep == "":
		return benchUsage(cmd, errors.New("--plot needs --sweep"))
	case o.sweep != "" && (o.saveRules != "" || o.saveCapture != ""):
		return benchUsage(cmd, errors.New("--save-rules and --save-pcap measure one rule set: not with --sweep"))
	case o.kernel && (o.table != "filter" || o.chain != "FORWARD"):
		return benchUsage(cmd, errors.New("--kernel compares the filter table's FORWARD chain"))
	}
	var kern *bench.Kernel
	if o.kernel {
		var err error
		if kern, err = bench.NewKernel(o.in, o.out); err != nil {
			return fmt.Errorf("--kernel: %w", err)
		}
		defer kern.Close()
	}
	if sources == 0 {
		o.gen = "acl"
	}
	var sizes []int
	if o.sweep != "" {
		var err error
		if sizes, err = parseSweep(o.sweep); err != nil {
			return benchUsage(cmd, err)
		}
	}
	var (
		gen     bench.RuleSpec
		tspec   bench.TrafficSpec
		cbf     []bench.Filter
		userRS  *engine.Ruleset
		frames  []bench.Frame
		traffic string
		err     error
	)
	if o.gen != "" {
		if gen, err = bench.ParseRuleSpec(o.gen); err != nil {
			return benchUsage(cmd, err)
		}
	}
	if tspec, err = bench.ParseTraffic(o.traffic); err != nil {
		return benchUsage(cmd, err)
	}
	if o.actions != "accept" && o.actions != "alternate" {
		return benchUsage(cmd, fmt.Errorf("--actions %q: accept or alternate expected", o.actions))
	}
	switch {
	case o.pcap != "":
		if frames, err = bench.ReadCapture(o.pcap); err != nil {
			return err
		}
		traffic = "pcap " + o.pcap
	case o.synth != "":
		spec := o.synth
		if spec == "default" {
			spec = ""
		}
		sp, err := bench.ParseSynth(spec)
		if err != nil {
			return benchUsage(cmd, err)
		}
		if frames, err = bench.SynthFrames(sp); err != nil {
			return err
		}
		traffic = "synth " + o.synth
	}
	switch {
	case o.classbench != "":
		if cbf, err = bench.LoadClassBench(o.classbench); err != nil {
			return err
		}
	case o.rules != "":
		if userRS, err = engine.LoadFile(o.rules); err != nil {
			return err
		}
	}

	build := func(size int) (*benchCase, error) {
		bc := &benchCase{size: size, frames: frames, traffic: traffic}
		switch {
		case o.gen != "":
			sp := gen
			if size > 0 {
				sp.Rules = size
			}
			text, fs, err := bench.GenerateRules(sp, o.chain)
			if err != nil {
				return nil, err
			}
			if bc.rs, err = engine.Parse("generated", strings.NewReader(text)); err != nil {
				return nil, fmt.Errorf("generated rule set does not load: %w", err)
			}
			bc.source, bc.filters, bc.exact = "gen "+sp.String(), fs, true
		case o.classbench != "":
			fs := cbf
			if size > 0 {
				if size > len(fs) {
					return nil, nil
				}
				fs = fs[:size]
			}
			text, order, dropped, err := bench.ClassBenchRules(fs, o.actions, bench.EmitOptions{Chain: o.chain, Policy: strings.ToUpper(o.policy)})
			if err != nil {
				return nil, err
			}
			if bc.rs, err = engine.Parse(o.classbench, strings.NewReader(text)); err != nil {
				return nil, fmt.Errorf("converted ClassBench set does not load: %w", err)
			}
			bc.source = fmt.Sprintf("classbench %s (%d filters)", o.classbench, len(fs))
			bc.filters, bc.exact, bc.dropped = order, true, dropped
		default:
			rs := userRS
			if size > 0 {
				t := rs.Table(o.table)
				if t == nil {
					return nil, fmt.Errorf("the rules define no %s table", o.table)
				}
				if bench.Reachable(t, o.chain) < size {
					return nil, nil
				}
				if rs, err = bench.Truncate(rs, o.table, o.chain, size); err != nil {
					return nil, err
				}
			}
			fs, err := bench.FiltersFromRules(rs, o.table, o.chain)
			if err != nil {
				return nil, err
			}
			bc.rs, bc.filters, bc.source = rs, fs, "rules "+o.rules
		}
		if bc.frames == nil {
			bc.packets = tspec.Generate(bc.filters)
			bc.frames = bench.FramesOf(bc.packets)
			bc.traffic = "generated " + trafficString(tspec, len(bc.packets))
		}
		if o.kernel {
			// Both sides evaluate the packets the kernel forwards.
			keep := bench.KernelRoutable(bc.frames)
			bc.excluded = len(bc.frames) - len(keep)
			frames := make([]bench.Frame, len(keep))
			for i, k := range keep {
				frames[i] = bc.frames[k]
			}
			if bc.packets != nil {
				ps := make([]bench.Packet, len(keep))
				for i, k := range keep {
					ps[i] = bc.packets[k]
				}
				bc.packets = ps
			}
			bc.frames = frames
		}
		return bc, nil
	}

	var cases []*benchCase
	if sizes == nil {
		bc, err := build(0)
		if err != nil {
			return err
		}
		cases = append(cases, bc)
	} else {
		for _, n := range sizes {
			bc, err := build(n)
			if err != nil {
				return err
			}
			if bc == nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "qtables bench: skipping size %d: the rule set is smaller\n", n)
				continue
			}
			cases = append(cases, bc)
		}
		if len(cases) == 0 {
			return fmt.Errorf("no sweep size fits the rule set")
		}
	}
	if o.saveRules != "" {
		if err := writeFileWith(o.saveRules, func(w io.Writer) error {
			return cases[0].rs.Save(w, engine.SaveOptions{})
		}); err != nil {
			return err
		}
	}
	if o.saveCapture != "" {
		if err := saveFrames(o.saveCapture, cases[0].frames); err != nil {
			return err
		}
	}

	stdout := bufio.NewWriter(cmd.OutOrStdout())
	defer stdout.Flush()
	stderr := cmd.ErrOrStderr()
	var prepared []*preparedCase
	failed := false
	for _, bc := range cases {
		pc, err := prepareCase(o, bc, kern)
		if err != nil {
			return err
		}
		failed = failed || !pc.ok
		prepared = append(prepared, pc)
	}
	counts := workerCounts(o.workers)
	ms, err := measureRounds(cmd.Context(), prepared, counts, o.rounds, o.duration)
	if err != nil {
		return err
	}
	var records []benchRecord
	for i, pc := range prepared {
		var first [][]bench.Measurement
		if sizes != nil {
			first = ms[0]
		}
		recs := caseRecords(o, pc, counts, ms[i], first)
		records = append(records, recs...)
		if !o.json && sizes == nil {
			printCase(stdout, pc.bc, recs, o.top)
		}
	}
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		var v any = records
		if len(records) == 1 && sizes == nil {
			v = records[0]
		}
		if err := enc.Encode(v); err != nil {
			return err
		}
	} else if sizes != nil {
		printSweep(stdout, records)
	}
	if err := stdout.Flush(); err != nil {
		return err
	}
	if o.plot != "" {
		if err := writeFileWith(o.plot, func(w io.Writer) error { return sweepPlot(records).WriteSVG(w) }); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "qtables bench: wrote %s\n", o.plot)
	}
	if failed {
		fmt.Fprintln(stderr, "qtables bench: first-match answers differ from the linear evaluation")
		return exitError{1}
	}
	return nil
}

// preparedCase is a rule set ready to measure: compiled, checked against
// linear first match, profiled and (with --kernel) run through the kernel.
type preparedCase struct {
	bc   *benchCase
	w    *bench.Workload
	base benchRecord // all but the throughput measurement
	ok   bool        // the first-match check passed
}

// prepareCase does everything for one rule set that is done once, before
// the throughput measurement (measureRounds).
func prepareCase(o *benchOptions, bc *benchCase, kern *bench.Kernel) (*preparedCase, error) {
	w, err := bench.NewWorkload(bc.rs, o.table, o.chain, o.in, o.out, bc.frames)
	if err != nil {
		return nil, err
	}
	base := benchRecord{
		Rules: w.Reachable, Source: bc.source, Table: w.Table, Chain: w.Chain,
		Traffic: bc.traffic, TrafficPackets: w.Packets(), Skipped: w.Skipped,
		DurationS: o.duration.Seconds(),
	}
	if len(base.Skipped) == 0 {
		base.Skipped = nil
	}
	// Three compiles are cheap next to the measurement (about 0.1-0.3 s
	// at 10k rules); a slower set stops once a second or the duration,
	// whichever is longer, is spent.
	cs, err := w.MeasureCompile(3, max(o.duration, time.Second))
	if err != nil {
		return nil, err
	}
	base.CompiledBytes, base.CompileMs, base.CompileRuns = cs.Bytes, round(float64(cs.Time)/1e6, 3), cs.Runs
	ok := true
	var results []engine.Result
	if (o.verify && bc.exact) || bc.packets != nil || kern != nil {
		results = w.Decide()
		if o.verify && bc.exact {
			chk := bench.CheckFirstMatch(bc.filters, w.Tuples(), results)
			base.FirstMatch = &checkRecord{Packets: chk.Packets, Agree: chk.Agree}
			for _, m := range chk.Mismatches {
				base.FirstMatch.Mismatches = append(base.FirstMatch.Mismatches, m.String())
			}
			ok = chk.Agree == chk.Packets
		}
		if bc.packets != nil {
			s := bench.SpreadOf(bc.filters, bc.packets, w.Index, results)
			base.Spread = &s
		}
	}
	prof := w.Profile(o.duration / 2)
	base.VisitsPerPacket, base.ProfiledPackets = prof.VisitsPerPacket, prof.Packets
	for _, r := range prof.Top(o.top) {
		if r.Visits == 0 {
			break
		}
		base.TopRules = append(base.TopRules, ruleRecord{Rule: r.Ref.String(), Text: r.Text, Visits: r.Visits, Hits: r.Hits, Share: r.Share})
	}
	if base.TopRules == nil {
		base.TopRules = []ruleRecord{}
	}
	if len(prof.Policy) > 0 {
		base.PolicyHits = map[string]int64{}
		for k, v := range prof.Policy {
			base.PolicyHits[k] = int64(v)
		}
	}
	if kern != nil {
		verdicts := make([]matchers.Verdict, len(results))
		for i, r := range results {
			verdicts[i] = r.Verdict
		}
		kc, err := kern.Compare(bc.rs, bc.frames, verdicts, o.duration)
		if err != nil {
			return nil, fmt.Errorf("--kernel: %w", err)
		}
		// Agreement: one pass through each, then every counter compared.
		bc.rs.ZeroCounters()
		w.Decide()
		ours := bench.CountsOf(bc.rs)
		theirs, err := kern.Counts(bc.rs, bc.frames)
		if err != nil {
			return nil, fmt.Errorf("--kernel: %w", err)
		}
		diffs := ours.Diff(theirs, 10)
		base.Kernel = &kernelRecord{
			CountersAgree: len(diffs) == 0, CounterDiffs: diffs,
			PPS: round(1e9/kc.Rules.NsPerPacket(), 0), NsPerPacket: round(kc.Rules.NsPerPacket(), 1),
			AcceptAllNs: round(kc.AcceptAll.NsPerPacket(), 1), DropAllNs: round(kc.DropAll.NsPerPacket(), 1),
			EvalNs: round(kc.EvalNs, 1), NoiseNs: round(kc.NoiseNs, 1), Accepted: round(kc.Accepted, 4),
			Sent: kc.Rules.Sent, Counted: kc.Rules.Counted, Excluded: bc.excluded,
		}
	}
	return &preparedCase{bc: bc, w: w, base: base, ok: ok}, nil
}

// measureRounds measures the throughput of every case at every worker
// count in rounds: each round measures each case for duration/rounds, in
// the order of bench.RoundOrder (alternating direction), and the worker
// counts of a case one after the other. On a machine whose speed drifts,
// the cases of one round see about the same machine, so their ratios
// (caseRecords) hold better than their rates. The result is indexed
// [case][worker count][round].
func measureRounds(ctx context.Context, cases []*preparedCase, counts []int, rounds int, duration time.Duration) ([][][]bench.Measurement, error) {
	out := make([][][]bench.Measurement, len(cases))
	for i := range out {
		out[i] = make([][]bench.Measurement, len(counts))
		for j := range out[i] {
			out[i][j] = make([]bench.Measurement, rounds)
		}
	}
	per := duration / time.Duration(rounds)
	for r, order := range bench.RoundOrder(len(cases), rounds) {
		for _, i := range order {
			for j, n := range counts {
				m, err := cases[i].w.Measure(ctx, bench.Config{Duration: per, Workers: n})
				if err != nil {
					return nil, err
				}
				out[i][j][r] = m
			}
		}
	}
	return out, nil
}

// caseRecords makes one record per worker count of a case from its
// rounds ms ([worker count][round]), combined (bench.CombineRounds). With
// first, the rounds of the sweep's first size, each record has the ratio
// of throughputs to it (bench.RatioToFirst).
func caseRecords(o *benchOptions, pc *preparedCase, counts []int, ms, first [][]bench.Measurement) []benchRecord {
	var recs []benchRecord
	var pps1 float64
	for j, n := range counts {
		m := bench.CombineRounds(ms[j])
		r := pc.base
		r.Rounds = len(ms[j])
		r.RoundCPUNsPerPacket = make([]float64, len(ms[j]))
		for k, rm := range ms[j] {
			r.RoundCPUNsPerPacket[k] = round(rm.CPUNsPerPacket, 1)
		}
		if first != nil {
			med, lo, hi := bench.RatioToFirst(first[j], ms[j])
			r.RatioToFirst, r.RatioToFirstMin, r.RatioToFirstMax = round(med, 4), round(lo, 4), round(hi, 4)
		}
		r.Workers, r.Packets = n, m.Packets
		r.PPS, r.PPSPerCore, r.NsPerPacket = round(m.PPS, 0), round(m.PPSPerCore, 0), round(m.NsPerPacket, 1)
		r.CPUNsPerPacket, r.CPUShare = round(m.CPUNsPerPacket, 1), round(m.CPUShare, 3)
		r.NsP50, r.NsP99, r.LatencySamples, r.ClockNs = round(m.P50, 1), round(m.P99, 1), m.Samples, round(m.ClockNs, 1)
		r.AllocsPerPacket, r.BytesPerPacket = round(m.AllocsPerPacket, 6), round(m.BytesPerPacket, 3)
		r.DurationS = round(m.Elapsed.Seconds(), 3)
		if n == 1 {
			pps1 = m.PPS
		}
		if pps1 > 0 && o.workers > 1 {
			r.Speedup = round(m.PPS/pps1, 2)
		}
		// The ratio compares CPU times where known: the kernel side is
		// timed by its sending thread's CPU time too.
		if ns := m.CPUNsPerPacket; r.Kernel != nil && r.Kernel.EvalNs > 2*r.Kernel.NoiseNs {
			if ns <= 0 {
				ns = m.NsPerPacket
			}
			r.KernelRatio = round(r.Kernel.EvalNs/ns, 3)
		}
		recs = append(recs, r)
	}
	return recs
}

// workerCounts is 1, 2, 4, ... below n, then n.
func workerCounts(n int) []int {
	var out []int
	for k := 1; k < n; k *= 2 {
		out = append(out, k)
	}
	return append(out, n)
}

func parseSweep(s string) ([]int, error) {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k != "rules" {
		return nil, fmt.Errorf("--sweep %q: rules=N,N,... expected", s)
	}
	var out []int
	for _, p := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(p))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("--sweep: %q is not a positive rule count", p)
		}
		out = append(out, n)
	}
	sort.Ints(out)
	return out, nil
}

func trafficString(sp bench.TrafficSpec, packets int) string {
	sizes := make([]string, len(sp.Sizes))
	for i, s := range sp.Sizes {
		sizes[i] = strconv.Itoa(s)
	}
	return fmt.Sprintf("packets=%d,miss=%g,flow=%g,active=%d,sizes=%s,seed=%d", packets, sp.Miss, sp.Flow, sp.Active, strings.Join(sizes, ":"), sp.Seed)
}

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}

// humanBytes formats a byte count in B, KiB or MiB.
func humanBytes(n int) string {
	switch {
	case n >= 1<<20:
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 2, 64) + " MiB"
	case n >= 1<<10:
		return strconv.FormatFloat(float64(n)/(1<<10), 'f', 1, 64) + " KiB"
	}
	return strconv.Itoa(n) + " B"
}

// human formats a count with k, M or G.
func human(v float64) string {
	switch {
	case v >= 1e9:
		return strconv.FormatFloat(v/1e9, 'f', 2, 64) + "G"
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', 2, 64) + "M"
	case v >= 1e3:
		return strconv.FormatFloat(v/1e3, 'f', 1, 64) + "k"
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}

func printCase(w io.Writer, bc *benchCase, recs []benchRecord, top int) {
	r := recs[0]
	fmt.Fprintf(w, "rule set:  %s\n", r.Source)
	fmt.Fprintf(w, "           %d rules reachable from %s %s\n", r.Rules, r.Table, r.Chain)
	if bc.dropped > 0 {
		fmt.Fprintf(w, "           %d filters dropped: ports on a protocol other than tcp/udp never match\n", bc.dropped)
	}
	fmt.Fprintf(w, "traffic:   %s\n", r.Traffic)
	fmt.Fprintf(w, "           %d packets evaluated per pass", r.TrafficPackets)
	if len(r.Skipped) > 0 {
		fmt.Fprintf(w, ", skipped %v", r.Skipped)
	}
	fmt.Fprintln(w)
	runs := "1 compile"
	if r.CompileRuns > 1 {
		runs = fmt.Sprintf("median of %d compiles", r.CompileRuns)
	}
	fmt.Fprintf(w, "compiled:  %s in %.2f ms (%s)\n", humanBytes(r.CompiledBytes), r.CompileMs, runs)
	if c := r.FirstMatch; c != nil {
		fmt.Fprintf(w, "first match: %d/%d packets agree with linear evaluation of the filters\n", c.Agree, c.Packets)
		for _, m := range c.Mismatches {
			fmt.Fprintf(w, "  MISMATCH %s\n", m)
		}
	}
	if s := r.Spread; s != nil {
		fmt.Fprintf(w, "spread:    %d packets aimed at rules: %d decided by their rule, %d by an earlier rule, %d otherwise\n",
			s.Aimed, s.ByAim, s.ByEarlier, s.ByOther)
		fmt.Fprintf(w, "           %d aimed at no rule: %d decided by the policy\n", s.MissAimed, s.Missed)
		fmt.Fprintf(w, "           %d of %d rules decided packets; the busiest tenth of the rules decided %.0f%%\n",
			s.RulesHit, s.Filters, 100*s.TopTenthShare)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "%-8s %10s %10s %10s %10s %10s %10s %11s %6s %8s\n", "workers", "pps", "pps/core", "ns/pkt", "cpu ns/pkt", "p50 ns", "p99 ns", "allocs/pkt", "cpu", "speedup")
	busy := false
	for _, r := range recs {
		sp := "-"
		if r.Speedup > 0 {
			sp = strconv.FormatFloat(r.Speedup, 'f', 2, 64)
		}
		fmt.Fprintf(w, "%-8d %10s %10s %10.1f %10.1f %10.0f %10.0f %11.4f %5.0f%% %8s\n", r.Workers, human(r.PPS), human(r.PPSPerCore),
			r.NsPerPacket, r.CPUNsPerPacket, r.NsP50, r.NsP99, r.AllocsPerPacket, 100*r.CPUShare, sp)
		busy = busy || (r.CPUShare > 0 && r.CPUShare < 0.9)
	}
	rounds := ""
	if r.Rounds > 1 {
		rounds = fmt.Sprintf(" in %d rounds", r.Rounds)
	}
	fmt.Fprintf(w, "(%.1fs per configuration%s, %d latency samples at 1 worker, clock read %.0f ns subtracted)\n", r.DurationS, rounds, r.LatencySamples, r.ClockNs)
	if busy {
		fmt.Fprintln(w, "note: the workers got less than 90% of their CPUs (other processes, or more workers than cores): pps and ns/pkt understate; cpu ns/pkt is the cost")
	}
	fmt.Fprintln(w)
	if k := r.Kernel; k != nil {
		fmt.Fprintf(w, "kernel (iptables %s %s in a namespace, same packets; %d excluded as not forwardable):\n", r.Table, r.Chain, k.Excluded)
		fmt.Fprintf(w, "  forwarding path with the rules: %s pps, %.0f ns/pkt (%d sent, %d reached FORWARD)\n", human(k.PPS), k.NsPerPacket, k.Sent, k.Counted)
		fmt.Fprintf(w, "  same path, empty chain: %.0f ns/pkt accepting, %.0f dropping (%.0f%% of the packets are accepted)\n", k.AcceptAllNs, k.DropAllNs, 100*k.Accepted)
		if r.KernelRatio > 0 {
			fmt.Fprintf(w, "  kernel rule evaluation: %.0f ns/pkt (%s pps; noise %.0f); qtables: %.0f cpu ns/pkt; kernel/qtables %.2f\n",
				k.EvalNs, human(1e9/k.EvalNs), k.NoiseNs, r.CPUNsPerPacket, r.KernelRatio)
		} else {
			fmt.Fprintf(w, "  kernel rule evaluation: %.0f ns/pkt, within the noise of the path (%.0f ns/pkt between halves of a run): no ratio\n", k.EvalNs, k.NoiseNs)
		}
		if k.Counted != k.Sent {
			fmt.Fprintf(w, "  warning: %d packets sent, %d reached FORWARD\n", k.Sent, k.Counted)
		}
		if k.CountersAgree {
			fmt.Fprintf(w, "  counters: after one pass every rule's packet count in the kernel equals qtables'\n")
		} else {
			fmt.Fprintf(w, "  counters DIFFER after one pass (qtables vs kernel): %s\n", strings.Join(k.CounterDiffs, "; "))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "rules compared per packet: %.1f (mean over %d packets, traced once each)\n", r.VisitsPerPacket, r.ProfiledPackets)
	if len(r.TopRules) > 0 {
		label := fmt.Sprintf("top %d rules", len(r.TopRules))
		if top <= 0 {
			label = "rules"
		}
		fmt.Fprintf(w, "%s by share of evaluation (visits / all visits):\n", label)
		fmt.Fprintf(w, "  %7s %10s %10s  %s\n", "share", "visits", "hits", "rule")
		for _, t := range r.TopRules {
			fmt.Fprintf(w, "  %6.2f%% %10d %10d  %s  %s\n", 100*t.Share, t.Visits, t.Hits, t.Rule, t.Text)
		}
	}
	if len(r.PolicyHits) > 0 {
		var keys []string
		for k := range r.PolicyHits {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(w, "policy of %s decided %d packets\n", k, r.PolicyHits[k])
		}
	}
	fmt.Fprintln(w)
}

func printSweep(w io.Writer, recs []benchRecord) {
	vs := "vs first"
	if len(recs) > 0 {
		vs = fmt.Sprintf("vs %d rules", recs[0].Rules)
	}
	fmt.Fprintf(w, "%8s %8s %10s %10s %10s %10s %15s %9s %9s %11s %5s %8s %11s %10s  %s\n", "rules", "workers", "pps", "pps/core", "ns/pkt", "cpu ns/pkt", vs, "p50 ns", "p99 ns", "allocs/pkt", "cpu", "visits", "compiled", "compile ms", "first match")
	busy := false
	for _, r := range recs {
		fm := "-"
		if r.FirstMatch != nil {
			fm = fmt.Sprintf("%d/%d agree", r.FirstMatch.Agree, r.FirstMatch.Packets)
		}
		fmt.Fprintf(w, "%8d %8d %10s %10s %10.1f %10.1f %s %9.0f %9.0f %11.4f %4.0f%% %8.1f %11s %10.2f  %s\n", r.Rules, r.Workers, human(r.PPS), human(r.PPSPerCore),
			r.NsPerPacket, r.CPUNsPerPacket, padLeft(ratioCell(r), 15), r.NsP50, r.NsP99, r.AllocsPerPacket, 100*r.CPUShare, r.VisitsPerPacket, humanBytes(r.CompiledBytes), r.CompileMs, fm)
		busy = busy || (r.CPUShare > 0 && r.CPUShare < 0.9)
	}
	if len(recs) > 0 {
		fmt.Fprintf(w, "(source %s, cut or generated at each size; traffic %s; %.1fs per configuration", recs[0].Source, recs[0].Traffic, recs[0].DurationS)
		if n := recs[0].Rounds; n > 1 {
			fmt.Fprintf(w, " in %d rounds interleaved across sizes", n)
		}
		fmt.Fprintf(w, ")\n(%s: throughput relative to the %d-rule set at the same workers in the same round, its cpu ns/pkt over this one's; median over %s)\n",
			vs, recs[0].Rules, roundsPhrase(recs[0].Rounds))
	}
	header := false
	for _, r := range recs {
		k := r.Kernel
		if k == nil || r.Workers != 1 {
			continue
		}
		if !header {
			fmt.Fprintf(w, "\nkernel (iptables, FORWARD in a namespace, one CPU; cpu ns per packet):\n")
			fmt.Fprintf(w, "%8s %10s %10s %10s %10s %10s %10s %10s  %s\n", "rules", "path pps", "path ns", "empty acc", "empty drop", "eval ns", "noise ns", "kern/qt", "counters")
			header = true
		}
		ratio, agree := "-", "agree"
		if r.KernelRatio > 0 {
			ratio = strconv.FormatFloat(r.KernelRatio, 'f', 2, 64)
		}
		if !k.CountersAgree {
			agree = "DIFFER: " + strings.Join(k.CounterDiffs, "; ")
		}
		fmt.Fprintf(w, "%8d %10s %10.0f %10.0f %10.0f %10.0f %10.0f %10s  %s\n", r.Rules, human(k.PPS), k.NsPerPacket, k.AcceptAllNs, k.DropAllNs, k.EvalNs, k.NoiseNs, ratio, agree)
	}
	if header {
		fmt.Fprintln(w, "(eval ns: path with the rules less the empty paths; kern/qt: eval ns over qtables' cpu ns/pkt, only where eval ns > 2 x noise)")
	}
	if busy {
		fmt.Fprintln(w, "note: the workers got less than 90% of their CPUs (other processes, or more workers than cores): pps and ns/pkt understate; cpu ns/pkt is the cost")
	}
}

// ratioCell is a sweep record's ratio to the first size as a percentage,
// with the range over the rounds when they differ: "46% 41–52%".
func ratioCell(r benchRecord) string {
	if r.RatioToFirst <= 0 {
		return "-"
	}
	pct := func(v float64) string { return strconv.FormatFloat(100*v, 'f', 0, 64) }
	lo, hi := pct(r.RatioToFirstMin), pct(r.RatioToFirstMax)
	if lo == hi {
		return pct(r.RatioToFirst) + "%"
	}
	return pct(r.RatioToFirst) + "% " + lo + "–" + hi + "%"
}

func roundsPhrase(n int) string {
	if n == 1 {
		return "1 round"
	}
	return fmt.Sprintf("%d rounds, min–max", n)
}

// padLeft pads s with spaces on the left to width characters (runes, not
// bytes as fmt counts them: the range holds an en dash).
func padLeft(s string, width int) string {
	if n := utf8.RuneCountInString(s); n < width {
		return strings.Repeat(" ", width-n) + s
	}
	return s
}

// sweepPlot draws packets per CPU second per core (1 / cpu ns per packet;
// pps per core where CPU time is unknown) against rules, one line per
// worker count, and the kernel's rates when measured.
func sweepPlot(recs []benchRecord) *bench.Plot {
	p := &bench.Plot{Title: "qtables: packets per second per core vs rule-set size", XLabel: "rules", YLabel: "packets per CPU second"}
	byWorkers := map[int]*bench.Series{}
	var order []int
	for _, r := range recs {
		s := byWorkers[r.Workers]
		if s == nil {
			name := fmt.Sprintf("qtables, %d worker", r.Workers)
			if r.Workers > 1 {
				name += "s"
			}
			s = &bench.Series{Name: name}
			byWorkers[r.Workers] = s
			order = append(order, r.Workers)
		}
		// Per CPU second where the CPU time is known, as the kernel's
		// figures are, so that a busy machine does not bend the curve.
		y := r.PPSPerCore
		if r.CPUNsPerPacket > 0 {
			y = 1e9 / r.CPUNsPerPacket
		}
		s.X = append(s.X, float64(r.Rules))
		s.Y = append(s.Y, math.Max(y, 1))
	}
	for _, k := range order {
		p.Series = append(p.Series, *byWorkers[k])
	}
	// With --kernel: the kernel's rule evaluation (where it stands out of
	// the noise) and its whole forwarding path, one CPU.
	eval := bench.Series{Name: "kernel: rule evaluation"}
	path := bench.Series{Name: "kernel: forwarding path"}
	for _, r := range recs {
		if r.Workers != 1 || r.Kernel == nil {
			continue
		}
		if k := r.Kernel; k.EvalNs > 2*k.NoiseNs {
			eval.X, eval.Y = append(eval.X, float64(r.Rules)), append(eval.Y, 1e9/k.EvalNs)
		}
		if r.Kernel.PPS > 0 {
			path.X, path.Y = append(path.X, float64(r.Rules)), append(path.Y, r.Kernel.PPS)
		}
	}
	for _, s := range []bench.Series{eval, path} {
		if len(s.X) > 0 {
			p.Series = append(p.Series, s)
		}
	}
	return p
}

func saveFrames(path string, frames []bench.Frame) error {
	if len(frames) == 0 {
		return fmt.Errorf("%s: no packets to write", path)
	}
	lt := frames[0].LinkType
	w, err := packet.CreateCapture(path, lt)
	if err != nil {
		return err
	}
	for _, f := range frames {
		if f.LinkType != lt {
			w.Close()
			return fmt.Errorf("%s: the packets have several link types; a pcap file holds one", path)
		}
		if err := w.WritePacket(f.Time, f.Data); err != nil {
			w.Close()
			return err
		}
	}
	return w.Close()
}

func newClassbenchCmd() *cobra.Command {
	var actions, policy, chain string
	var chains int
	c := &cobra.Command{
		Use:   "classbench2iptables FILE",
		Short: "Convert a ClassBench filter set to an iptables-save rule set",
		Long: `classbench2iptables prints a ClassBench filter set (lines
"@src/len dst/len lo : hi lo : hi proto/mask flags/mask") as an iptables-save
file of table filter, one rule per filter in the chain (FORWARD), in order:
-s and -d for prefixes other than /0, -p N when the protocol mask is 0xFF
(0x00/0x00 is any protocol), and -m tcp or -m udp with --sport/--dport for
port ranges other than 0 : 65535. The flags field is ignored.

Ports exist only for TCP and UDP (the kernel's tcp and udp matches), so a
filter of any protocol with a port range becomes two rules, -p 6 then
-p 17; a filter of another protocol with a port range can never match and
is left out (counted on stderr). Targets: --actions accept (default) makes
every rule ACCEPT, with the chain's --policy (default DROP) deciding the
rest; --actions alternate makes filters 1, 3, 5, ... ACCEPT and 2, 4, ...
DROP. --chains N groups the filters of the N busiest destination /8
networks into user chains reached by jumps (reordering them; first-match
answers follow the printed order).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			fs, err := bench.LoadClassBench(args[0])
			if err != nil {
				return err
			}
			text, order, dropped, err := bench.ClassBenchRules(fs, actions, bench.EmitOptions{Chain: chain, Policy: strings.ToUpper(policy), Chains: chains})
			if err != nil {
				return err
			}
			rs, err := engine.Parse(args[0], strings.NewReader(text))
			if err != nil {
				return fmt.Errorf("converted set does not load: %w", err)
			}
			out := bufio.NewWriter(cmd.OutOrStdout())
			fmt.Fprintf(out, "# ClassBench %s: %d filters, %d rules\n", args[0], len(fs), len(order))
			if err := rs.Save(out, engine.SaveOptions{}); err != nil {
				return err
			}
			if dropped > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "classbench2iptables: %d filters left out: ports on a protocol other than tcp/udp never match\n", dropped)
			}
			return out.Flush()
		},
	}
	c.Flags().StringVar(&actions, "actions", "accept", "accept (all ACCEPT, policy decides the rest) or alternate (ACCEPT, DROP, ...)")
	c.Flags().StringVar(&policy, "policy", "DROP", "policy of the chain")
	c.Flags().StringVar(&chain, "chain", "FORWARD", "built-in chain of the rules (INPUT, FORWARD or OUTPUT)")
	c.Flags().IntVar(&chains, "chains", 0, "group the rules of the N busiest destination /8s into user chains")
	return c
}
