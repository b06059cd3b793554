package bench

import (
	"fmt"
	"sort"

	"github.com/qtables/qtables/engine"
)

// Check is the comparison of the engine's first-match answers with the
// linear evaluation of the filter list it was built from.
type Check struct {
	Packets, Agree int
	// Mismatches are the first few disagreements.
	Mismatches []Mismatch
}

// Mismatch is one packet on which the engine and FirstMatch disagree.
type Mismatch struct {
	Packet int // index among the evaluated packets
	Tuple  Tuple
	// Engine and Linear are filter indexes (-1: no filter, the policy).
	Engine, Linear int
	Result         engine.Result
}

func (m Mismatch) String() string {
	return fmt.Sprintf("packet %d (%s -> %s proto %d ports %d -> %d): engine decided by %s (filter %d), linear first match is filter %d",
		m.Packet, m.Tuple.Src, m.Tuple.Dst, m.Tuple.Proto, m.Tuple.SPort, m.Tuple.DPort, engine.RuleRef(m.Result), m.Engine, m.Linear)
}

// refIndex maps each filter's rule to its index in fs.
func refIndex(fs []Filter) map[RuleRef]int {
	m := make(map[RuleRef]int, len(fs))
	for i := range fs {
		m[fs[i].Ref] = i
	}
	return m
}

// resultFilter is the filter whose rule decided r: -1 for a policy, -2 for
// a rule that is no filter's.
func resultFilter(idx map[RuleRef]int, r engine.Result) int {
	if r.Rule == 0 {
		return -1
	}
	if i, ok := idx[RuleRef{r.Chain, r.Rule}]; ok {
		return i
	}
	return -2
}

// CheckFirstMatch compares, packet by packet, the rule that decided each
// result (in the order of tuples) with the first filter of fs, in
// evaluation order with Ref set (as Emit returns them), that the packet's
// tuple matches.
func CheckFirstMatch(fs []Filter, tuples []Tuple, results []engine.Result) Check {
	idx := refIndex(fs)
	c := Check{Packets: len(results)}
	for i, r := range results {
		got, want := resultFilter(idx, r), FirstMatch(fs, &tuples[i])
		if got == want {
			c.Agree++
			continue
		}
		if len(c.Mismatches) < 10 {
			c.Mismatches = append(c.Mismatches, Mismatch{Packet: i, Tuple: tuples[i], Engine: got, Linear: want, Result: r})
		}
	}
	return c
}

// Spread says how generated traffic landed: whether the packets aimed at a
// rule were decided by it, and how many rules decided any packet.
type Spread struct {
	// Aimed packets were built to match a filter; ByAim of them were
	// decided by its rule, ByEarlier by the rule of an earlier filter
	// (first match: an earlier rule covers the packet too), ByOther by
	// another rule or a policy (possible when filters approximate rules).
	Aimed, ByAim, ByEarlier, ByOther int
	// MissAimed packets were built to match no filter; Missed of them were
	// decided by a policy.
	MissAimed, Missed int
	// RulesHit of the Filters decided at least one packet.
	RulesHit, Filters int
	// TopTenthShare is the share of packets decided by the tenth of the
	// filters that decided most: 0.1 is an even spread, 1 a skewed one.
	TopTenthShare float64
}

// SpreadOf compares where each packet was aimed (ps[index[i]].Aim) with the
// rule that decided it (results[i]).
func SpreadOf(fs []Filter, ps []Packet, index []int, results []engine.Result) Spread {
	idx := refIndex(fs)
	s := Spread{Filters: len(fs)}
	hits := make([]int, len(fs))
	decided := 0
	for i, r := range results {
		aim := ps[index[i]].Aim
		got := resultFilter(idx, r)
		if got >= 0 {
			hits[got]++
			decided++
		}
		switch {
		case aim < 0:
			s.MissAimed++
			if r.Rule == 0 {
				s.Missed++
			}
		case got == aim:
			s.Aimed++
			s.ByAim++
		case got >= 0 && got < aim:
			s.Aimed++
			s.ByEarlier++
		default:
			s.Aimed++
			s.ByOther++
		}
	}
	var counts []int
	for _, h := range hits {
		if h > 0 {
			s.RulesHit++
			counts = append(counts, h)
		}
	}
	if decided > 0 && len(fs) > 0 {
		sortDesc(counts)
		top := max(1, len(fs)/10)
		sum := 0
		for i := 0; i < top && i < len(counts); i++ {
			sum += counts[i]
		}
		s.TopTenthShare = float64(sum) / float64(decided)
	}
	return s
}

func sortDesc(a []int) { sort.Sort(sort.Reverse(sort.IntSlice(a))) }
