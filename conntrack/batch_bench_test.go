package conntrack

import (
	"math/rand/v2"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/qtables/qtables/packet"
)

// BenchmarkTrackBatch compares lookup-and-update of established UDP flows
// one packet at a time (TrackInto, "single") with TrackBatch at batch
// sizes 1, 8, 16 and 32, side by side, with Zipf (s=1.1) and uniform flow
// popularity, on 1M flows (far larger than the CPU caches: 200 MB of slab,
// 16 MB of index) and on 1K flows (all in cache: the CPU cost alone),
// each on a table on the Go heap ("mem=heap", 4 KiB pages) and right
// after on one with the default memory ("mem=huge", 2 MiB pages for a
// table this large).
//
// ns/op is per packet and includes building the packet's View (as a
// decoder leaves it; BenchmarkFillView measures that part alone).
// cpu-ns/op is the benchmark thread's CPU time per packet: on a machine
// busy with other work the wall clock also counts the time the thread
// waits for a CPU, the CPU time does not.
func BenchmarkTrackBatch(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"1M", million}, {"1K", 1 << 10}} {
		fs := newUDPFlows(size.n)
		// The same flows in a table on the Go heap (4 KiB pages) and in
		// one on huge pages (the default for a table this large), so
		// that each case runs on both, one right after the other.
		tabs := memTables(b, size.n, fs)
		now := t0.Add(3 * time.Second)
		for _, mode := range []string{"zipf", "uniform"} {
			rng := rand.New(rand.NewPCG(7, 7))
			zipf := rand.NewZipf(rng, 1.1, 1, uint64(size.n-1))
			seq := make([]int32, 1<<20)
			for i := range seq {
				if mode == "zipf" {
					seq[i] = int32(zipf.Uint64())
				} else {
					seq[i] = int32(rng.IntN(size.n))
				}
			}
			for _, batch := range []int{0, 1, 8, 16, 32} {
				name := "single"
				if batch > 0 {
					name = "batch=" + strconv.Itoa(batch)
				}
				for _, mt := range tabs {
					b.Run("flows="+size.name+"/"+mode+"/"+name+"/mem="+mt.name, func(b *testing.B) {
						benchBatch(b, mt.tab, fs, seq, now, batch)
					})
				}
			}
		}
		for _, mt := range tabs {
			mt.tab.Close()
		}
	}
}

// memTable is a benchmark table and the name of its memory.
type memTable struct {
	name string
	tab  *Table
}

// memTables returns two tables holding fs's n flows, established: one
// with Config.HeapMemory ("heap") and one with the default memory
// ("huge": 2 MiB pages once the table is large enough, and, after the
// sweep that Run would have made, all of it). The caller closes them.
func memTables(b *testing.B, n int, fs *flowSet) []memTable {
	var tabs []memTable
	for _, heap := range []bool{true, false} {
		tab := New(Config{MaxEntries: -1, HeapMemory: heap})
		fs.establish(b, tab, t0)
		tab.Sweep(t0) // as Run would: moves the heap part to huge pages
		name := "huge"
		if heap {
			name = "heap"
		}
		tabs = append(tabs, memTable{name, tab})
	}
	if n >= million {
		b.Logf("%d flows: arena %d MiB; process AnonHugePages %d MiB",
			n, tabs[1].tab.mem.mappedBytes()>>20, anonHugeBytes()>>20)
	}
	return tabs
}

// benchBatch tracks b.N packets of the flows seq names, alternating
// directions, in batches of size (TrackInto one by one for size 0).
func benchBatch(b *testing.B, tab *Table, fs *flowSet, seq []int32, now time.Time, size int) {
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
}

// BenchmarkFillView is the part of the per-packet benchmarks that is not
// the table: writing a packet into a View.
func BenchmarkFillView(b *testing.B) {
	fs := newUDPFlows(million)
	var v benchView
	for i := 0; b.Loop(); i++ {
		fs.fill(&v, i&(million-1), i&1 == 1)
	}
}

// BenchmarkTrackBatch1M is the case the per-packet budget is set for
// (1M established UDP flows drawn uniformly, batches of 32, the default
// memory: huge pages) alone, on one table, five times over: on a machine
// shared with other work, five short runs on the same table show the
// spread better than one long one, and skip building the other tables
// of BenchmarkTrackBatch.
func BenchmarkTrackBatch1M(b *testing.B) {
	fs := newUDPFlows(million)
	tab := New(Config{MaxEntries: -1})
	defer tab.Close()
	fs.establish(b, tab, t0)
	tab.Sweep(t0) // as Run would: moves the heap part to huge pages
	rng := rand.New(rand.NewPCG(7, 7))
	seq := make([]int32, 1<<20)
	for i := range seq {
		seq[i] = int32(rng.IntN(million))
	}
	now := t0.Add(3 * time.Second)
	for r := range 5 {
		b.Run("run="+strconv.Itoa(r+1), func(b *testing.B) { benchBatch(b, tab, fs, seq, now, 32) })
	}
}
