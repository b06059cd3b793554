package bench

import (
	"strconv"
	"testing"

	"github.com/qtables/qtables/matchers"
)

// BenchmarkEval is the hot path `qtables bench` measures: one packet, already
// decoded, through a generated ACL-shaped FORWARD chain of 10 to 10,000
// rules, with traffic aimed at every rule plus 5% misses (so a packet walks
// about half the chain on average). One op is one packet; it must report
// 0 allocs/op.
func BenchmarkEval(b *testing.B) {
	for _, n := range []int{10, 100, 1000, 10000} {
		b.Run("rules="+strconv.Itoa(n), func(b *testing.B) {
			rs, _, ps, err := Generated(RuleSpec{Kind: "acl", Rules: n, Seed: 1, Actions: "accept", Policy: "DROP"}, "FORWARD", DefaultTraffic())
			if err != nil {
				b.Fatal(err)
			}
			w, err := NewWorkload(rs, "filter", "FORWARD", "", "", FramesOf(ps))
			if err != nil {
				b.Fatal(err)
			}
			views, _ := w.decode(nil)
			var c matchers.Context
			i := 0
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				w.eval(&c, &views[i], nil)
				if i++; i == len(views) {
					i = 0
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
		})
	}
}

// TestEvalDoesNotAllocate is the 0-allocation promise of BenchmarkEval as
// a test.
func TestEvalDoesNotAllocate(t *testing.T) {
	rs, _, ps, err := Generated(RuleSpec{Kind: "ipc", Rules: 300, Seed: 1, Chains: 4, Comments: 2, Actions: "alternate", Policy: "DROP"}, "FORWARD", TrafficSpec{Packets: 500, Flow: 2, Active: 4, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	w, err := NewWorkload(rs, "filter", "FORWARD", "", "", FramesOf(ps))
	if err != nil {
		t.Fatal(err)
	}
	views, _ := w.decode(nil)
	var c matchers.Context
	i := 0
	if n := testing.AllocsPerRun(2000, func() {
		w.eval(&c, &views[i%len(views)], nil)
		i++
	}); n != 0 {
		t.Errorf("%v allocations per packet", n)
	}
}
