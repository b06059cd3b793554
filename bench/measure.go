package bench

import (
	"context"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qtables/qtables/engine"
	"github.com/qtables/qtables/matchers"
	"github.com/qtables/qtables/packet"
)

// Frame is one captured or generated frame to evaluate.
type Frame struct {
	Data     []byte
	LinkType uint16 // pcap LINKTYPE_*; 1 is Ethernet
	Time     time.Time
}

// FramesOf returns the frames of generated packets.
func FramesOf(ps []Packet) []Frame {
	out := make([]Frame, len(ps))
	for i := range ps {
		out[i] = Frame{Data: ps[i].Frame, LinkType: 1, Time: ps[i].Time}
	}
	return out
}

// Workload is a compiled rule set and the packets to run through it, the
// way `qtables test` would: each packet enters table at the built-in chain,
// as if it arrived on In and left on Out, with the capture time as the time
// rules see. Packets that never reach a hook (not IPv4, malformed,
// truncated, TTL expiring before FORWARD) are left out and counted in
// Skipped; at FORWARD the TTL is decremented once, as the kernel does.
type Workload struct {
	Rules   *engine.Ruleset
	Program *engine.Program
	Table   string
	Chain   string
	In, Out string
	// Reachable is the number of rules a packet can be compared with.
	Reachable int

	frames []Frame
	tp     *engine.TableProgram
	hook   matchers.Hook
	// Index maps each evaluated packet to its frame in the input.
	Index   []int
	Skipped map[string]int
}

// NewWorkload compiles rs and decodes frames once, to check that the
// table, chain and interfaces make sense and to find the packets to
// evaluate. Rule counters are zeroed.
func NewWorkload(rs *engine.Ruleset, table, chain, in, out string, frames []Frame) (*Workload, error) {
	if table == "" {
		table = "filter"
	}
	rs.ZeroCounters()
	prog, err := engine.Compile(rs)
	if err != nil {
		return nil, err
	}
	tp := prog.Table(table)
	if tp == nil {
		return nil, fmt.Errorf("the rules define no %s table", table)
	}
	hook, ok := matchers.HookByName(chain)
	if !ok || !tp.HasHook(hook) {
		return nil, fmt.Errorf("%q is not a built-in chain of table %s", chain, table)
	}
	if (hook == matchers.HookOutput || hook == matchers.HookPostrouting) && in != "" {
		return nil, fmt.Errorf("packets at %s have no input interface (--in-interface given)", chain)
	}
	if (hook == matchers.HookPrerouting || hook == matchers.HookInput) && out != "" {
		return nil, fmt.Errorf("packets at %s have no output interface (--out-interface given)", chain)
	}
	w := &Workload{
		Rules: rs, Program: prog, Table: table, Chain: chain, In: in, Out: out,
		Reachable: Reachable(rs.Table(table), chain),
		frames:    frames, tp: tp, hook: hook, Skipped: map[string]int{},
	}
	_, w.Index = w.decode(w.Skipped)
	idx := w.Index
	if len(idx) == 0 {
		return nil, fmt.Errorf("none of the %d packets reaches the %s hook (skipped: %v)", len(frames), chain, w.Skipped)
	}
	return w, nil
}

// CompileStats is what compiling a Workload's rule set costs.
type CompileStats struct {
	// Bytes is the compiled Program's size (Program.CompiledBytes): the
	// rule records and the classifiers' tables.
	Bytes int
	// Time is the median wall time of Runs compiles of the parsed rule
	// set, from the Ruleset to a Program ready to evaluate.
	Time time.Duration
	Runs int
}

// MeasureCompile compiles the rule set again, as NewWorkload did, up to
// runs times (at least once; it stops early once budget is spent, so a
// slow set is not compiled over and over) and returns the median time
// and the compiled size. The Workload keeps its own Program.
func (w *Workload) MeasureCompile(runs int, budget time.Duration) (CompileStats, error) {
	runs = max(runs, 1)
	var times []time.Duration
	var spent time.Duration
	var p *engine.Program
	for len(times) < runs && (len(times) == 0 || spent < budget) {
		start := time.Now()
		var err error
		if p, err = engine.Compile(w.Rules); err != nil {
			return CompileStats{}, err
		}
		d := time.Since(start)
		times = append(times, d)
		spent += d
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	return CompileStats{Bytes: p.CompiledBytes(), Time: times[len(times)/2], Runs: len(times)}, nil
}

// Packets is the number of packets evaluated per pass.
func (w *Workload) Packets() int { return len(w.Index) }

// decode copies every frame into one buffer owned by the caller and
// decodes the copies, returning the views of the packets that reach the
// hook and their frame numbers. Each worker decodes its own copy, so that
// workers share no packet memory (the TTL decrement writes to it).
func (w *Workload) decode(skipped map[string]int) ([]packet.View, []int) {
	total := 0
	for _, f := range w.frames {
		total += len(f.Data)
	}
	buf := make([]byte, 0, total)
	decs := map[uint16]*packet.Decoder{}
	views := make([]packet.View, 0, len(w.frames))
	var idx []int
	for i, f := range w.frames {
		start := len(buf)
		buf = append(buf, f.Data...)
		data := buf[start:len(buf):len(buf)]
		dec := decs[f.LinkType]
		if dec == nil {
			var err error
			if dec, err = packet.NewDecoder(f.LinkType); err != nil {
				if skipped != nil {
					skipped[packet.ClassUnsupportedLink.String()]++
				}
				continue
			}
			decs[f.LinkType] = dec
		}
		views = append(views, packet.View{})
		v := &views[len(views)-1]
		dec.Decode(data, v)
		v.Timestamp = f.Time
		reason := ""
		switch {
		case v.Class != packet.ClassOK || v.Family != 4:
			reason = v.Class.String()
		case w.hook == matchers.HookForward && v.TTL <= 1:
			reason = "ttl-expired"
		}
		if reason != "" {
			if skipped != nil {
				skipped[reason]++
			}
			views = views[:len(views)-1]
			continue
		}
		if w.hook == matchers.HookForward {
			v.DecTTL()
		}
		idx = append(idx, i)
	}
	return views, idx
}

// eval evaluates one packet with c.
func (w *Workload) eval(c *matchers.Context, v *packet.View, tr engine.Tracer) engine.Result {
	c.Reset()
	c.Pkt, c.Hook, c.Table = v, w.hook, w.Table
	c.In, c.Out, c.Now = w.In, w.Out, v.Timestamp
	return w.tp.Eval(c, tr)
}

// Decide evaluates every packet once and returns the results, in the
// order of Index.
func (w *Workload) Decide() []engine.Result {
	views, _ := w.decode(nil)
	out := make([]engine.Result, len(views))
	var c matchers.Context
	for i := range views {
		out[i] = w.eval(&c, &views[i], nil)
	}
	return out
}

// Tuple is the five-tuple of an evaluated packet, from its decoded view.
func tupleOf(v *packet.View) Tuple {
	return Tuple{Src: v.Src, Dst: v.Dst, Proto: v.Proto, SPort: v.SrcPort, DPort: v.DstPort, HasPorts: v.HasPorts}
}

// Tuples returns the five-tuples of the evaluated packets, as decoded.
func (w *Workload) Tuples() []Tuple {
	views, _ := w.decode(nil)
	out := make([]Tuple, len(views))
	for i := range views {
		out[i] = tupleOf(&views[i])
	}
	return out
}

// Config is one measured configuration.
type Config struct {
	// Duration is how long the workers evaluate (after a short warm-up).
	Duration time.Duration
	// Workers is the number of goroutines evaluating at once, each with
	// its own Context and copy of the packets over the shared Program.
	Workers int
	// SampleShift: one packet in 2^SampleShift, picked at random, is timed
	// on its own for the latency percentiles (6, one in 64, when 0).
	SampleShift uint
}

// Measurement is what one configuration measured.
type Measurement struct {
	Workers int
	// Packets is the number of packet evaluations in the measured interval.
	Packets uint64
	Elapsed time.Duration
	// PPS is packets per second over all workers; PPSPerCore divides it by
	// the workers.
	PPS, PPSPerCore float64
	// NsPerPacket is worker time per packet: Elapsed × Workers / Packets,
	// less the cost of the clock reads taken for the samples.
	NsPerPacket float64
	// CPUNsPerPacket is the workers' CPU time (their OS threads' user and
	// system time) per packet, with the same clock correction: unlike
	// NsPerPacket it does not grow when other processes take the CPU.
	// CPUShare is the workers' CPU time over Elapsed × Workers: near 1 on
	// an otherwise idle machine. Both are 0 where threads' CPU time is
	// unknown (not Linux).
	CPUNsPerPacket, CPUShare float64
	// P50 and P99 are percentiles of the sampled per-packet latencies, in
	// ns, with the clock-read cost subtracted.
	P50, P99 float64
	Samples  int
	// ClockNs is the measured cost of one sample's pair of clock reads.
	ClockNs float64
	// AllocsPerPacket and BytesPerPacket are heap allocations (from
	// runtime.MemStats) during the measured interval over Packets.
	AllocsPerPacket, BytesPerPacket float64
}

const reservoirSize = 1 << 15

// Measure runs cfg: each worker first evaluates its packets for a short
// warm-up (one pass, at most Duration/10), then all evaluate in a loop,
// from the same start, until Duration has passed.
//
// Latency: a worker times one packet in 2^SampleShift, chosen by a
// per-worker xorshift generator (not by position, so a packet set whose
// size is a multiple of the stride is not sampled unfairly), with two
// clock reads around that packet's evaluation, and keeps a uniform
// reservoir of those times. The cost of the clock reads, measured before
// the run, is subtracted from each sample and, times the number of
// samples, from the worker time behind NsPerPacket, so that sampling
// does not inflate the mean.
func (w *Workload) Measure(ctx context.Context, cfg Config) (Measurement, error) {
	if cfg.Workers < 1 {
		cfg.Workers = 1
	}
	if cfg.Duration <= 0 {
		cfg.Duration = time.Second
	}
	shift := cfg.SampleShift
	if shift == 0 {
		shift = 6
	}
	mask := uint64(1)<<shift - 1
	clock := clockCost()

	type result struct {
		packets uint64
		samples []float32
		seen    uint64
		cpu     time.Duration
		cpuOK   bool
	}
	var (
		stop    atomic.Bool
		ready   sync.WaitGroup
		done    sync.WaitGroup
		startCh = make(chan struct{})
		results = make([]result, cfg.Workers)
	)
	warmLimit := cfg.Duration / 10
	for k := 0; k < cfg.Workers; k++ {
		views, _ := w.decode(nil)
		ready.Add(1)
		done.Add(1)
		go func(k int, views []packet.View) {
			defer done.Done()
			// One OS thread per worker, so that the thread's CPU time is
			// the worker's.
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var c matchers.Context
			res := &results[k]
			res.samples = make([]float32, 0, reservoirSize)
			rng := uint64(k)*0x9e3779b97f4a7c15 + 0x2545f4914f6cdd1d
			// Warm-up: caches, branch predictors, the Context's buffers.
			t0 := time.Now()
			for i := range views {
				w.eval(&c, &views[i], nil)
				if i%16 == 15 && time.Since(t0) > warmLimit {
					break
				}
			}
			ready.Done()
			<-startCh
			cpu0, ok0 := threadCPU()
			n := uint64(0)
			i := 0
			for !stop.Load() {
				for j := 0; j < 16; j++ {
					v := &views[i]
					if i++; i == len(views) {
						i = 0
					}
					rng ^= rng << 13
					rng ^= rng >> 7
					rng ^= rng << 17
					if rng&mask != 0 {
						w.eval(&c, v, nil)
						continue
					}
					s := time.Now()
					w.eval(&c, v, nil)
					d := float32(time.Since(s))
					res.seen++
					if len(res.samples) < cap(res.samples) {
						res.samples = append(res.samples, d)
					} else if r := (rng >> 20) % res.seen; r < uint64(len(res.samples)) {
						res.samples[r] = d
					}
				}
				n += 16
			}
			res.packets = n
			cpu1, ok1 := threadCPU()
			res.cpu, res.cpuOK = cpu1-cpu0, ok0 && ok1
		}(k, views)
	}
	ready.Wait()
	// Everything this goroutine allocates is allocated before the first
	// MemStats read: the timer and the context's Done channel.
	timer := time.NewTimer(time.Hour)
	cancel := ctx.Done()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	close(startCh)
	timer.Reset(cfg.Duration)
	select {
	case <-timer.C:
	case <-cancel:
	}
	timer.Stop()
	stop.Store(true)
	done.Wait()
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)

	m := Measurement{Workers: cfg.Workers, Elapsed: elapsed, ClockNs: clock}
	var all []float32
	var seen uint64
	var cpu time.Duration
	cpuOK := true
	for _, r := range results {
		m.Packets += r.packets
		all = append(all, r.samples...)
		seen += r.seen
		cpu += r.cpu
		cpuOK = cpuOK && r.cpuOK
	}
	if m.Packets == 0 {
		return m, fmt.Errorf("no packet evaluated in %v", elapsed)
	}
	m.Samples = int(seen)
	sec := elapsed.Seconds()
	m.PPS = float64(m.Packets) / sec
	m.PPSPerCore = m.PPS / float64(cfg.Workers)
	work := float64(elapsed.Nanoseconds())*float64(cfg.Workers) - float64(seen)*clock
	m.NsPerPacket = work / float64(m.Packets)
	if cpuOK {
		m.CPUNsPerPacket = (float64(cpu.Nanoseconds()) - float64(seen)*clock) / float64(m.Packets)
		m.CPUShare = float64(cpu) / (float64(elapsed) * float64(cfg.Workers))
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	m.P50 = max(0, percentile(all, 0.50)-clock)
	m.P99 = max(0, percentile(all, 0.99)-clock)
	m.AllocsPerPacket = float64(after.Mallocs-before.Mallocs) / float64(m.Packets)
	m.BytesPerPacket = float64(after.TotalAlloc-before.TotalAlloc) / float64(m.Packets)
	return m, ctx.Err()
}

func percentile(sorted []float32, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q * float64(len(sorted)-1))
	return float64(sorted[i])
}

// clockCost is the median time between two clock reads with nothing in
// between, as a sample in Measure takes them.
func clockCost() float64 {
	var d [255]float64
	for i := range d {
		s := time.Now()
		d[i] = float64(time.Since(s))
	}
	sort.Float64s(d[:])
	return d[len(d)/2]
}

// RuleStat is one rule's share of the evaluation.
type RuleStat struct {
	Ref  RuleRef
	Text string // "-A CHAIN ..." as iptables-save prints it
	// Visits counts the packets compared with the rule; Hits those it
	// matched (for a jump, the packets it sent into its chain).
	Visits, Hits uint64
	// Share is Visits over all rules' visits: the rule's estimated share
	// of evaluation time.
	Share float64
}

// Profile says where a rule set spends its time.
type Profile struct {
	// Packets were evaluated once each, with a Tracer.
	Packets int
	// VisitsPerPacket is the mean number of rules a packet was compared
	// with: the cost proxy behind each rule's Share.
	VisitsPerPacket float64
	// Rules lists every reachable rule, in table order.
	Rules []RuleStat
	// Policy counts the packets each built-in chain's policy decided.
	Policy map[string]uint64
}

// Profile evaluates the packets once each, in order, with a Tracer that
// counts per rule the packets compared with it (visits) and matched
// (hits), for at most budget (at least one packet).
//
// The share of evaluation time is estimated from visits, not timed: a
// clock read per rule costs more than most rules do, so timing rules
// would measure the clock. Comparing a packet with a rule costs about the
// same for every rule whose header (addresses, interfaces, protocol)
// rejects the packet, the common case; rules with extension matches cost
// more per visit than this proxy says, by their match calls.
func (w *Workload) Profile(budget time.Duration) Profile {
	views, _ := w.decode(nil)
	t := w.Rules.Table(w.Table)
	index := map[*engine.Rule]int{}
	var stats []RuleStat
	for _, c := range t.Chains {
		for i, r := range c.Rules {
			index[r] = len(stats)
			stats = append(stats, RuleStat{Ref: RuleRef{c.Name, i + 1}, Text: "-A " + c.Name + " " + r.String()})
		}
	}
	p := Profile{Policy: map[string]uint64{}}
	var visits uint64
	tr := func(s engine.Step) {
		switch s.Kind {
		case engine.StepRule:
			st := &stats[index[s.Rule]]
			st.Visits++
			visits++
			if s.Matched {
				st.Hits++
			}
		case engine.StepPolicy:
			p.Policy[s.Chain]++
		}
	}
	var c matchers.Context
	t0 := time.Now()
	for i := range views {
		w.eval(&c, &views[i], tr)
		p.Packets++
		if i%16 == 15 && time.Since(t0) > budget {
			break
		}
	}
	for _, s := range stats {
		if s.Visits > 0 {
			s.Share = float64(s.Visits) / float64(visits)
		}
		p.Rules = append(p.Rules, s)
	}
	if p.Packets > 0 {
		p.VisitsPerPacket = float64(visits) / float64(p.Packets)
	}
	return p
}

// Top returns the n rules with the largest shares (all when n <= 0),
// largest first, ties in table order.
func (p *Profile) Top(n int) []RuleStat {
	out := append([]RuleStat(nil), p.Rules...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Visits > out[j].Visits })
	if n > 0 && len(out) > n {
		out = out[:n]
	}
	return out
}
