package bench

import "sort"

// RoundOrder returns the order in which n configurations are measured in
// each of rounds rounds: the first round in order (0, 1, ..., n-1), the
// second in reverse, and so on, alternating. On a machine whose speed
// drifts over seconds, configurations measured side by side in each round
// see about the same machine, so their ratio within a round is steadier
// than any one's rate; alternating the direction keeps a configuration
// from always being measured first or last.
func RoundOrder(n, rounds int) [][]int {
	out := make([][]int, rounds)
	for r := range out {
		order := make([]int, n)
		for i := range order {
			if r%2 == 0 {
				order[i] = i
			} else {
				order[i] = n - 1 - i
			}
		}
		out[r] = order
	}
	return out
}

// Cost is the time a Measurement spent per packet: CPU time where known,
// else worker (wall) time.
func (m Measurement) Cost() float64 {
	if m.CPUNsPerPacket > 0 {
		return m.CPUNsPerPacket
	}
	return m.NsPerPacket
}

// CombineRounds merges the measurements of one configuration taken in
// several rounds into one over all of them, as if measured for their
// summed time: packets, elapsed time, worker time, CPU time, latency
// samples and allocations are summed, so the rates and per-packet times
// are over all rounds. The latency percentiles and the clock cost are
// those of the round with the median cost per packet (of an even number,
// the faster of the middle two): percentiles do not add up, and the
// rounds keep no samples to pool. CPU figures are 0 unless every round
// has them. ms must all have the same Workers; CombineRounds of none is
// the zero Measurement.
func CombineRounds(ms []Measurement) Measurement {
	if len(ms) == 0 {
		return Measurement{}
	}
	if len(ms) == 1 {
		return ms[0]
	}
	m := Measurement{Workers: ms[0].Workers}
	var work, cpu, share, allocs, bytes float64
	cpuOK := true
	for _, r := range ms {
		p := float64(r.Packets)
		m.Packets += r.Packets
		m.Elapsed += r.Elapsed
		m.Samples += r.Samples
		work += r.NsPerPacket * p
		cpu += r.CPUNsPerPacket * p
		share += r.CPUShare * float64(r.Elapsed)
		allocs += r.AllocsPerPacket * p
		bytes += r.BytesPerPacket * p
		cpuOK = cpuOK && r.CPUNsPerPacket > 0
	}
	if m.Packets == 0 || m.Elapsed <= 0 {
		return m
	}
	p := float64(m.Packets)
	m.PPS = p / m.Elapsed.Seconds()
	m.PPSPerCore = m.PPS / float64(max(m.Workers, 1))
	m.NsPerPacket = work / p
	if cpuOK {
		m.CPUNsPerPacket = cpu / p
		m.CPUShare = share / float64(m.Elapsed)
	}
	m.AllocsPerPacket, m.BytesPerPacket = allocs/p, bytes/p
	med := ms[MedianRound(ms)]
	m.P50, m.P99, m.ClockNs = med.P50, med.P99, med.ClockNs
	return m
}

// MedianRound is the index of the measurement with the median cost per
// packet (Cost; of an even number, the cheaper of the middle two).
func MedianRound(ms []Measurement) int {
	idx := make([]int, len(ms))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return ms[idx[a]].Cost() < ms[idx[b]].Cost() })
	return idx[(len(idx)-1)/2]
}

// RatioToFirst is, per round, the throughput of the rounds ms relative to
// first's in the same round (first's cost per packet over ms'), and the
// median (of an even number, the mean of the middle two), smallest and
// largest of those ratios. Cost is CPU time per packet where both rounds
// have it, else worker time, so a ratio never mixes the two.
func RatioToFirst(first, ms []Measurement) (med, lo, hi float64) {
	var rs []float64
	for k := range min(len(first), len(ms)) {
		f, m := first[k].CPUNsPerPacket, ms[k].CPUNsPerPacket
		if f <= 0 || m <= 0 {
			f, m = first[k].NsPerPacket, ms[k].NsPerPacket
		}
		if f > 0 && m > 0 {
			rs = append(rs, f/m)
		}
	}
	if len(rs) == 0 {
		return 0, 0, 0
	}
	sort.Float64s(rs)
	med = rs[len(rs)/2]
	if len(rs)%2 == 0 {
		med = (rs[len(rs)/2-1] + rs[len(rs)/2]) / 2
	}
	return med, rs[0], rs[len(rs)-1]
}
