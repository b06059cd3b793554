package conntrack

import (
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	"github.com/qtables/qtables/packet"
)

// BenchmarkTrackBatch compares lookup-and-update of established flows one
// packet at a time (TrackInto, "single") with TrackBatch at several batch
// sizes, on 1M flows (much larger than the CPU caches), with Zipf (s=1.1)
// and uniform flow popularity. ns/op is per packet; cpu-ns/op is the
// benchmark thread's CPU time per packet, which other load on the machine
// does not inflate the way it inflates the wall clock.
func BenchmarkTrackBatch(b *testing.B) {
	n := benchFlows
	fs := newUDPFlows(n)
	tab := New(Config{MaxEntries: -1})
	fs.establish(b, tab, t0)
	now := t0.Add(3 * time.Second)
	for _, mode := range []string{"zipf", "uniform"} {
		rng := rand.New(rand.NewPCG(7, 7))
		zipf := rand.NewZipf(rng, 1.1, 1, uint64(n-1))
		seq := make([]int32, 1<<20)
		for i := range seq {
			if mode == "zipf" {
				seq[i] = int32(zipf.Uint64())
			} else {
				seq[i] = int32(rng.IntN(n))
			}
		}
		for _, size := range []int{0, 1, 8, 16, 32} {
			name := "single"
			if size > 0 {
				name = "batch=" + itoa(size)
			}
			b.Run("flows=1M/"+mode+"/"+name, func(b *testing.B) {
				k := max(size, 1)
				bvs := make([]benchView, k)
				views := make([]*packet.View, k)
				for j := range bvs {
					views[j] = &bvs[j].View
				}
				results := make([]Result, k)
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				b.ReportAllocs()
				b.ResetTimer()
				cpu0 := threadCPUTime()
				for i := 0; i < b.N; i += k {
					m := min(k, b.N-i)
					for j := range m {
						fs.fill(&bvs[j], int(seq[(i+j)&(len(seq)-1)]), (i+j)&1 == 1)
					}
					if size == 0 {
						tab.TrackInto(&results[0], views[0], now)
					} else {
						tab.TrackBatch(views[:m], now, results[:m])
					}
					for j := range m {
						if results[j].Info != CtEstablished {
							b.Fatalf("%v", results[j])
						}
					}
				}
				b.ReportMetric(float64(threadCPUTime()-cpu0)/float64(b.N), "cpu-ns/op")
			})
		}
	}
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}

var benchFlows = million
