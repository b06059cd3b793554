package bench

import (
	"math"
	"reflect"
	"testing"
	"time"
)

func TestRoundOrder(t *testing.T) {
	for _, tc := range []struct {
		n, rounds int
		want      [][]int
	}{
		{1, 1, [][]int{{0}}},
		{1, 3, [][]int{{0}, {0}, {0}}},
		{2, 1, [][]int{{0, 1}}},
		{2, 2, [][]int{{0, 1}, {1, 0}}},
		{3, 3, [][]int{{0, 1, 2}, {2, 1, 0}, {0, 1, 2}}},
		{4, 4, [][]int{{0, 1, 2, 3}, {3, 2, 1, 0}, {0, 1, 2, 3}, {3, 2, 1, 0}}},
	} {
		got := RoundOrder(tc.n, tc.rounds)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("RoundOrder(%d, %d) = %v, want %v", tc.n, tc.rounds, got, tc.want)
		}
		// Every round measures every configuration once, and with two
		// rounds or more no configuration is first in every round.
		for r, order := range got {
			seen := make([]bool, tc.n)
			for _, i := range order {
				seen[i] = true
			}
			for i, ok := range seen {
				if !ok {
					t.Errorf("RoundOrder(%d, %d): round %d misses %d", tc.n, tc.rounds, r, i)
				}
			}
		}
		if tc.n > 1 && tc.rounds > 1 && got[0][0] == got[1][0] {
			t.Errorf("RoundOrder(%d, %d): %d first in rounds 1 and 2", tc.n, tc.rounds, got[0][0])
		}
	}
}

func TestCombineRounds(t *testing.T) {
	// Round a: 1000 packets in 1 ms at 1 worker, 800 ns of CPU each
	// (80% of the time); round b: 3000 packets in 1 ms, 300 ns each
	// (90%); round c: 2000 packets in 2 ms, 900 ns each (90%).
	a := Measurement{Workers: 1, Packets: 1000, Elapsed: time.Millisecond, NsPerPacket: 1000, CPUNsPerPacket: 800, CPUShare: 0.8,
		P50: 700, P99: 2000, Samples: 16, ClockNs: 20, AllocsPerPacket: 0.002, BytesPerPacket: 0.1}
	b := Measurement{Workers: 1, Packets: 3000, Elapsed: time.Millisecond, NsPerPacket: 1000.0 / 3, CPUNsPerPacket: 300, CPUShare: 0.9,
		P50: 250, P99: 900, Samples: 47, ClockNs: 21}
	c := Measurement{Workers: 1, Packets: 2000, Elapsed: 2 * time.Millisecond, NsPerPacket: 1000, CPUNsPerPacket: 900, CPUShare: 0.9,
		P50: 800, P99: 3000, Samples: 31, ClockNs: 22, AllocsPerPacket: 0.001}
	m := CombineRounds([]Measurement{a, b, c})
	near := func(name string, got, want float64) {
		t.Helper()
		if math.Abs(got-want) > 1e-9*math.Max(1, math.Abs(want)) {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if m.Packets != 6000 || m.Elapsed != 4*time.Millisecond || m.Samples != 94 || m.Workers != 1 {
		t.Errorf("packets %d elapsed %v samples %d workers %d", m.Packets, m.Elapsed, m.Samples, m.Workers)
	}
	// 6000 packets in 4 ms; 4 ms of worker time; CPU 0.8+0.9+1.8 ms.
	near("PPS", m.PPS, 1.5e6)
	near("PPSPerCore", m.PPSPerCore, 1.5e6)
	near("NsPerPacket", m.NsPerPacket, 4e6/6000)
	near("CPUNsPerPacket", m.CPUNsPerPacket, 3.5e6/6000)
	near("CPUShare", m.CPUShare, (0.8+0.9+1.8)/4)
	// 2 + 0 + 2 allocations; 100 bytes.
	near("AllocsPerPacket", m.AllocsPerPacket, 4.0/6000)
	near("BytesPerPacket", m.BytesPerPacket, 100.0/6000)
	// Costs 800, 300, 900: the median round is a.
	if m.P50 != 700 || m.P99 != 2000 || m.ClockNs != 20 {
		t.Errorf("percentiles %v %v clock %v, want round a's", m.P50, m.P99, m.ClockNs)
	}
	// Two workers: pps per core halves.
	a2, b2 := a, b
	a2.Workers, b2.Workers = 2, 2
	near("PPSPerCore at 2", CombineRounds([]Measurement{a2, b2}).PPSPerCore, 4000/0.002/2)
	// One round without CPU time: no CPU figures, and the median by wall
	// time (a 1000, b 333, c 1000; sorted b, a, c: a).
	c.CPUNsPerPacket, c.CPUShare = 0, 0
	m = CombineRounds([]Measurement{a, b, c})
	if m.CPUNsPerPacket != 0 || m.CPUShare != 0 {
		t.Errorf("CPU %v %v with a round without CPU time", m.CPUNsPerPacket, m.CPUShare)
	}
	if one := CombineRounds([]Measurement{b}); !reflect.DeepEqual(one, b) {
		t.Errorf("one round: %+v, want %+v", one, b)
	}
	if none := CombineRounds(nil); !reflect.DeepEqual(none, Measurement{}) {
		t.Errorf("no round: %+v", none)
	}
}

func TestMedianRound(t *testing.T) {
	ms := func(costs ...float64) []Measurement {
		out := make([]Measurement, len(costs))
		for i, c := range costs {
			out[i] = Measurement{CPUNsPerPacket: c, NsPerPacket: 2 * c}
		}
		return out
	}
	for _, tc := range []struct {
		costs []float64
		want  int
	}{
		{[]float64{5}, 0},
		{[]float64{5, 3}, 1}, // the cheaper of two
		{[]float64{5, 3, 4}, 2},
		{[]float64{1, 9, 5, 7}, 2}, // 1 5 7 9: the cheaper middle, 5
	} {
		if got := MedianRound(ms(tc.costs...)); got != tc.want {
			t.Errorf("MedianRound(%v) = %d, want %d", tc.costs, got, tc.want)
		}
	}
}

func TestRatioToFirst(t *testing.T) {
	cpu := func(ns ...float64) []Measurement {
		out := make([]Measurement, len(ns))
		for i, n := range ns {
			out[i] = Measurement{CPUNsPerPacket: n, NsPerPacket: 10 * n}
		}
		return out
	}
	for _, tc := range []struct {
		name        string
		first, ms   []Measurement
		med, lo, hi float64
	}{
		{"itself", cpu(100, 300), cpu(100, 300), 1, 1, 1},
		{"half", cpu(100), cpu(200), 0.5, 0.5, 0.5},
		// Per round 0.5, 0.25, 0.4: the median is the middle one, not the
		// ratio of the sums.
		{"three rounds", cpu(100, 100, 200), cpu(200, 400, 500), 0.4, 0.25, 0.5},
		{"two rounds: mean", cpu(100, 300), cpu(200, 400), 0.625, 0.5, 0.75},
		// Without CPU time in a round, that round compares wall times.
		{"wall fallback", []Measurement{{NsPerPacket: 100}}, []Measurement{{CPUNsPerPacket: 5, NsPerPacket: 400}}, 0.25, 0.25, 0.25},
		{"nothing", nil, nil, 0, 0, 0},
	} {
		med, lo, hi := RatioToFirst(tc.first, tc.ms)
		if math.Abs(med-tc.med) > 1e-12 || math.Abs(lo-tc.lo) > 1e-12 || math.Abs(hi-tc.hi) > 1e-12 {
			t.Errorf("%s: %v (%v-%v), want %v (%v-%v)", tc.name, med, lo, hi, tc.med, tc.lo, tc.hi)
		}
	}
}
