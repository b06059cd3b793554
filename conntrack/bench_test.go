package conntrack

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qtables/qtables/packet"
	"golang.org/x/sys/unix"
)

// flowSet is n UDP flows, 10.x.y.z:port -> 198.51.100.2:53 for flow
// i = x<<16|y<<8|z. fill writes flow i's datagram into a View's own small
// buffer, as a decoder leaves a freshly received packet: hot in cache, so
// that the benchmarks measure the table, not fetching packet bytes.
type flowSet struct {
	n      int
	server byte // last byte of the server address
}

const dgram = 32

func newUDPFlows(n int) *flowSet { return &flowSet{n: n, server: 2} }

// benchView is a View with its own packet buffer.
type benchView struct {
	packet.View
	buf [dgram]byte
}

func (fs *flowSet) fill(bv *benchView, i int, reply bool) {
	b := bv.buf[:]
	cli := [4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}
	srv := [4]byte{198, 51, 100, fs.server}
	port := uint16(1024 + i%50000)
	src, dst, sp, dp := cli, srv, port, uint16(53)
	if reply {
		src, dst, sp, dp = srv, cli, dp, sp
	}
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:4], dgram)
	b[8], b[9] = 64, 17
	copy(b[12:16], src[:])
	copy(b[16:20], dst[:])
	binary.BigEndian.PutUint16(b[20:22], sp)
	binary.BigEndian.PutUint16(b[22:24], dp)
	binary.BigEndian.PutUint16(b[24:26], dgram-20)
	v := &bv.View
	v.Class, v.Family, v.Proto, v.Len = packet.ClassOK, 4, 17, dgram
	v.Network, v.L4 = b, b[20:]
	v.IPv4.IHL, v.IPv4.FragWord = 5, 0
	v.Src = netip.AddrFrom4(src)
	v.Dst = netip.AddrFrom4(dst)
}

// establish creates every flow and answers it, so each is ESTABLISHED.
func (fs *flowSet) establish(tb testing.TB, tab *Table, now time.Time) {
	var v benchView
	for i := range fs.n {
		fs.fill(&v, i, false)
		r := tab.Track(&v.View, now)
		if r.Info != CtNew || !r.Confirm(now) {
			tb.Fatalf("flow %d: %v", i, r)
		}
		fs.fill(&v, i, true)
		if r := tab.Track(&v.View, now); r.Info != CtEstablished {
			tb.Fatalf("flow %d reply: %v", i, r)
		}
	}
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

const million = 1 << 20

// BenchmarkTrackEstablished is lookup-and-update of an established flow:
// parse, hash, lock, probe, state update, copy out. With 1K flows the
// table is in cache and this is the CPU cost. With 1M flows (216 MB) the
// access pattern decides: "sequential" walks flows in creation order,
// "zipf" draws them with Zipf-distributed popularity (s=1.1, as real
// traffic concentrates on few flows), "uniform" draws every flow equally
// often, so that index slot and entry are each a cache and TLB miss.
// Each case runs on a table on the Go heap ("mem=heap", 4 KiB pages) and
// right after on one with the default memory ("mem=huge": 2 MiB pages
// once the table outgrows 8 MiB).
func BenchmarkTrackEstablished(b *testing.B) {
	for _, size := range []struct {
		name string
		n    int
	}{{"1K", 1 << 10}, {"1M", million}} {
		fs := newUDPFlows(size.n)
		tabs := memTables(b, size.n, fs)
		for _, mode := range []string{"sequential", "zipf", "uniform"} {
			rng := rand.New(rand.NewPCG(7, 7))
			zipf := rand.NewZipf(rng, 1.1, 1, uint64(size.n-1))
			// Draw the flow sequence up front so that the generator
			// does not count.
			seq := make([]int32, 1<<20)
			for i := range seq {
				switch mode {
				case "sequential":
					seq[i] = int32(i % size.n)
				case "zipf":
					seq[i] = int32(zipf.Uint64())
				default:
					seq[i] = int32(rng.IntN(size.n))
				}
			}
			for _, mt := range tabs {
				b.Run("flows="+size.name+"/"+mode+"/mem="+mt.name, func(b *testing.B) {
					var v benchView
					var r Result
					now := t0.Add(3 * time.Second)
					b.ReportAllocs()
					for i := 0; b.Loop(); i++ {
						fs.fill(&v, int(seq[i&(len(seq)-1)]), i&1 == 1)
						mt.tab.TrackInto(&r, &v.View, now)
						if r.Info != CtEstablished {
							b.Fatalf("%v", r)
						}
					}
				})
			}
		}
		for _, mt := range tabs {
			mt.tab.Close()
		}
	}
}

// BenchmarkTrackTCP is lookup-and-update of established TCP connections
// (1K, in cache): the state machine and window tracking on top of the
// lookup. Client and server alternate acknowledgements.
func BenchmarkTrackTCP(b *testing.B) {
	const n = 1 << 10
	h := newHarness(b, Config{})
	h.fast = true
	var frames [n][2][]byte
	for i := range n {
		cli := clientIP(i)
		h.send(tcpFrame(b, seg{src: cli, dst: ipServer, sport: 40000, dport: 443, flags: "S", seq: 1000}))
		h.send(tcpFrame(b, seg{src: ipServer, dst: cli, sport: 443, dport: 40000, flags: "SA", seq: 5000, ack: 1001}))
		frames[i][0] = tcpFrame(b, seg{src: cli, dst: ipServer, sport: 40000, dport: 443, flags: "A", seq: 1001, ack: 5001})
		frames[i][1] = tcpFrame(b, seg{src: ipServer, dst: cli, sport: 443, dport: 40000, flags: "A", seq: 5001, ack: 1001})
		h.send(frames[i][0])
	}
	dec, _ := packet.NewDecoder(packet.LinkTypeIPv4)
	views := make([]packet.View, 2*n)
	for i := range n {
		dec.Decode(frames[i][0], &views[2*i])
		dec.Decode(frames[i][1], &views[2*i+1])
	}
	var r Result
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		h.tab.TrackInto(&r, &views[i&(2*n-1)], h.now)
		if r.Info != CtEstablished {
			b.Fatalf("%v", r)
		}
	}
}

// BenchmarkTrackParallel is the same lookup-and-update from all Ps at once
// (a worker pool), Zipf-distributed flows among 1M.
func BenchmarkTrackParallel(b *testing.B) {
	fs := newUDPFlows(million)
	tab := New(Config{MaxEntries: -1})
	fs.establish(b, tab, t0)
	now := t0.Add(3 * time.Second)
	var seed atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(seed.Add(1), 1))
		zipf := rand.NewZipf(rng, 1.1, 1, million-1)
		var v benchView
		var r Result
		for i := 0; pb.Next(); i++ {
			fs.fill(&v, int(zipf.Uint64()), i&1 == 0)
			tab.TrackInto(&r, &v.View, now)
			if r.Info != CtEstablished {
				b.Fatalf("%v", r)
			}
		}
	})
}

// BenchmarkNewFlowChurn creates, confirms and (by timeout) reclaims flows in
// steady state: the slab recycles entries, so nothing is allocated.
func BenchmarkNewFlowChurn(b *testing.B) {
	const live = 1 << 16
	fs := newUDPFlows(4 * live)
	tab := New(Config{MaxEntries: -1, Timeouts: Timeouts{UDP: time.Second}})
	var v benchView
	var r Result
	now := t0
	step := func(i int) {
		// live new flows per second: each lives 1 s, so about live are
		// in the table and the alloc sweep reclaims as fast as we add.
		now = now.Add(time.Second / live)
		fs.fill(&v, i%fs.n, false)
		tab.TrackInto(&r, &v.View, now)
		r.Confirm(now)
	}
	for i := range 3 * fs.n {
		step(i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		step(i)
	}
	b.ReportMetric(float64(tab.Len()), "entries")
}

// BenchmarkMemoryPerFlow reports the memory a live flow costs (entry,
// index share, slab slack), measured over 1M flows: the Go heap's growth
// plus the memory the table mapped outside it ("mem=huge", the default
// for a table this large), and the heap alone with Config.HeapMemory.
func BenchmarkMemoryPerFlow(b *testing.B) {
	fs := newUDPFlows(million)
	for _, heap := range []bool{true, false} {
		name := "mem=huge"
		if heap {
			name = "mem=heap"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				before := heapInUse()
				tab := New(Config{MaxEntries: -1, HeapMemory: heap})
				fs.establish(b, tab, t0)
				tab.Sweep(t0) // as Run would: the heap part moves to huge pages
				after := heapInUse()
				mapped := tab.mem.mappedBytes()
				b.ReportMetric(float64(int64(after-before)+mapped)/million, "B/flow")
				b.ReportMetric(float64(mapped)/million, "mapped-B/flow")
				tab.Close()
			}
		})
	}
}

// BenchmarkSweep1M expires 1M flows in one Sweep pass and reports the
// lock holds ("max-hold-µs" is the longest a packet could wait on the
// sweeper). A sweep made before, as Run would have made it, moved the
// table's first chunks and indexes (allocated on the Go heap before the
// table was large enough for huge pages) into mapped memory; its longest
// hold is "max-promote-hold-µs".
func BenchmarkSweep1M(b *testing.B) {
	// Keep the sweeping goroutine on one thread so that the thread CPU
	// clock measures it alone.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	fs := newUDPFlows(million)
	var holds, cpuHolds, promote, cpuPromote []time.Duration
	var perFlow float64
	for b.Loop() {
		b.StopTimer()
		tab := New(Config{MaxEntries: -1})
		fs.establish(b, tab, t0)
		if st := tab.sweep(t0, probe(&promote, &cpuPromote)); st.Expired != 0 {
			b.Fatalf("%+v", st)
		}
		b.StartTimer()
		start := time.Now()
		st := tab.sweep(t0.Add(time.Hour), probe(&holds, &cpuHolds))
		perFlow = float64(time.Since(start).Nanoseconds()) / million
		if st.Expired != million || tab.Len() != 0 {
			b.Fatalf("%+v, %d left", st, tab.Len())
		}
		b.StopTimer()
		tab.Close()
		b.StartTimer()
	}
	reportHolds(b, holds, cpuHolds)
	b.ReportMetric(float64(slices.Max(promote).Nanoseconds())/1e3, "max-promote-hold-µs")
	b.ReportMetric(float64(slices.Max(cpuPromote).Nanoseconds())/1e3, "max-promote-hold-cpu-µs")
	b.ReportMetric(perFlow, "ns/expired-flow")
}

// probe collects every sweep lock hold, by the wall clock and by the
// sweeping thread's CPU time.
func probe(wall, cpu *[]time.Duration) *holdProbe {
	return &holdProbe{
		clock: threadCPUTime,
		onHold: func(w, c time.Duration) {
			*wall = append(*wall, w)
			*cpu = append(*cpu, c)
		},
	}
}

func threadCPUTime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// reportHolds reports the median, 99.9th percentile and worst lock hold by
// the wall clock, and the worst by the sweeping thread's CPU time. The wall
// clock includes the OS descheduling the sweeper while it holds the lock
// (on a loaded machine that dominates the worst case); the CPU time is the
// work the sweeper does under the lock.
func reportHolds(b *testing.B, holds, cpu []time.Duration) {
	slices.Sort(holds)
	q := func(p float64) float64 {
		return float64(holds[min(len(holds)-1, int(p*float64(len(holds))))].Nanoseconds()) / 1e3
	}
	b.ReportMetric(q(0.5), "p50-hold-µs")
	b.ReportMetric(q(0.999), "p99.9-hold-µs")
	b.ReportMetric(q(1), "max-hold-µs")
	if len(cpu) > 0 {
		b.ReportMetric(float64(slices.Max(cpu).Nanoseconds())/1e3, "max-hold-cpu-µs")
	}
}

// BenchmarkTrackDuringSweep measures, from the packet side, how long a
// sweep that expires 1M flows holds packets up: the latency of Track calls
// on 4096 other, live flows (99.9th percentile and worst) while the
// sweeper runs. In "sweep=same" the sweeper expires the table's own 1M
// flows, so packets contend for its shard locks; in "sweep=other", the
// control, it expires a second table's, doing the same work without
// sharing a lock with the packets; in "sweep=none" no sweep runs while
// the packets are tracked. The differences are what waiting on the
// sweeper, and sharing the machine with it, cost; what all show is the
// machine (the OS descheduling the tracking thread, timer reads). The sweeper's lock
// holds are reported too, by the wall clock (BenchmarkSweep1M also times
// them by CPU time).
func BenchmarkTrackDuringSweep(b *testing.B) {
	for _, mode := range []string{"same", "other", "none"} {
		b.Run("sweep="+mode, func(b *testing.B) { benchTrackDuringSweep(b, mode) })
	}
}

// sweepNoneFor is how long "sweep=none" tracks packets: about as long as
// a 1M-flow sweep takes.
const sweepNoneFor = 300 * time.Millisecond

func benchTrackDuringSweep(b *testing.B, mode string) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	dying := newUDPFlows(million)
	liveSet := newUDPFlows(1 << 12)
	liveSet.server = 3 // other flows than the dying ones
	var tracks, holds []time.Duration
	for b.Loop() {
		b.StopTimer()
		tab := New(Config{MaxEntries: -1})
		swept := tab
		if mode != "same" {
			swept = New(Config{MaxEntries: -1})
		}
		dying.establish(b, swept, t0)
		swept.Sweep(t0) // as Run would have, long before the flows expire
		liveSet.establish(b, tab, t0.Add(59*time.Minute+50*time.Second))
		tracks = slices.Grow(tracks[:0], 1<<22)[:0]
		runtime.GC()
		b.StartTimer()
		var wg sync.WaitGroup
		var stop atomic.Bool
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var v benchView
			var r Result
			now := t0.Add(time.Hour)
			for i := 0; !stop.Load(); i++ {
				liveSet.fill(&v, i%liveSet.n, false)
				start := time.Now()
				tab.TrackInto(&r, &v.View, now)
				d := time.Since(start)
				if r.Info != CtEstablished {
					panic(r.String())
				}
				if len(tracks) < cap(tracks) {
					tracks = append(tracks, d)
				}
			}
		}()
		var st SweepStats
		if mode == "none" {
			time.Sleep(sweepNoneFor)
			stop.Store(true)
			wg.Wait()
			st = swept.Sweep(t0.Add(time.Hour)) // after the packets: for the checks below
		} else {
			// Wall-clock holds only: reading the thread's CPU clock is a
			// system call, which would lengthen every hold the packets
			// wait on.
			st = swept.sweep(t0.Add(time.Hour), &holdProbe{onHold: func(w, _ time.Duration) {
				holds = append(holds, w)
			}})
		}
		stop.Store(true)
		wg.Wait()
		b.StopTimer()
		// (In "same", new live flows reclaimed some dying ones already:
		// every new connection sweeps a few slab positions.)
		if tab.Len() != liveSet.n || swept.Len() != 0 && swept != tab || st.Expired == 0 {
			b.Fatalf("%+v, %d and %d left", st, tab.Len(), swept.Len())
		}
		tab.Close()
		swept.Close()
		b.StartTimer()
	}
	if len(holds) > 0 {
		reportHolds(b, holds, nil)
	}
	slices.Sort(tracks)
	b.ReportMetric(float64(len(tracks)), "tracks")
	b.ReportMetric(float64(tracks[len(tracks)*999/1000].Nanoseconds())/1e3, "p99.9-track-µs")
	b.ReportMetric(float64(tracks[len(tracks)-1].Nanoseconds())/1e3, "max-track-µs")
	slow, _ := slices.BinarySearch(tracks, time.Millisecond)
	b.ReportMetric(float64(len(tracks)-slow), "tracks>1ms")
}

// tcpFlows is n TCP connections 10.x.y.z:port -> 198.51.100.4:443 for
// connection i = x<<16|y<<8|z, written straight into a View's buffer as
// flowSet does for UDP.
type tcpFlows struct{ n int }

type tcpView struct {
	packet.View
	buf [40]byte
}

// TCP flag bits for tcpFlows.fill.
const (
	tcpSYN = 0x02
	tcpACK = 0x10
)

func (fs *tcpFlows) fill(bv *tcpView, i int, reply bool, flags byte, seq, ack uint32) {
	b := bv.buf[:]
	cli := [4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}
	srv := [4]byte{198, 51, 100, 4}
	port := uint16(1024 + i%50000)
	src, dst, sp, dp := cli, srv, port, uint16(443)
	if reply {
		src, dst, sp, dp = srv, cli, dp, sp
	}
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:4], 40)
	b[8], b[9] = 64, 6
	copy(b[12:16], src[:])
	copy(b[16:20], dst[:])
	t := b[20:]
	binary.BigEndian.PutUint16(t[0:2], sp)
	binary.BigEndian.PutUint16(t[2:4], dp)
	binary.BigEndian.PutUint32(t[4:8], seq)
	binary.BigEndian.PutUint32(t[8:12], ack)
	t[12], t[13] = 5<<4, flags
	binary.BigEndian.PutUint16(t[14:16], 65535)
	v := &bv.View
	v.Class, v.Family, v.Proto, v.Len = packet.ClassOK, 4, 6, 40
	v.Network, v.L4 = b, t
	v.IPv4.IHL, v.IPv4.FragWord = 5, 0
	v.Src = netip.AddrFrom4(src)
	v.Dst = netip.AddrFrom4(dst)
}

// ack fills connection i's steady-state acknowledgement in direction
// reply: the same in-window segment every time.
func (fs *tcpFlows) ack(bv *tcpView, i int, reply bool) {
	if reply {
		fs.fill(bv, i, true, tcpACK, 5001, 1001)
	} else {
		fs.fill(bv, i, false, tcpACK, 1001, 5001)
	}
}

// establish opens every connection with a three-way handshake.
func (fs *tcpFlows) establish(tb testing.TB, tab *Table, now time.Time) {
	var v tcpView
	for i := range fs.n {
		fs.fill(&v, i, false, tcpSYN, 1000, 0)
		r := tab.Track(&v.View, now)
		if r.Info != CtNew || !r.Confirm(now) {
			tb.Fatalf("SYN %d: %v", i, r)
		}
		fs.fill(&v, i, true, tcpSYN|tcpACK, 5000, 1001)
		if r := tab.Track(&v.View, now); r.Info != CtEstablished {
			tb.Fatalf("SYN/ACK %d: %v", i, r)
		}
		fs.ack(&v, i, false)
		if r := tab.Track(&v.View, now); r.Info != CtEstablished || r.Entry.TCPState() != TCPEstablished {
			tb.Fatalf("ACK %d: %v", i, r)
		}
	}
}

// BenchmarkTrackTCP1M is BenchmarkTrackTCP on 1M established connections
// drawn uniformly (each packet's index cell, flow and TCP slot are cache
// misses), one packet at a time and in batches of 32, on the Go heap and
// on huge pages side by side.
func BenchmarkTrackTCP1M(b *testing.B) {
	fs := &tcpFlows{n: million}
	var tabs []memTable
	for _, heap := range []bool{true, false} {
		tab := New(Config{MaxEntries: -1, HeapMemory: heap})
		fs.establish(b, tab, t0)
		tab.Sweep(t0)
		name := "huge"
		if heap {
			name = "heap"
		}
		tabs = append(tabs, memTable{name, tab})
	}
	defer func() {
		for _, mt := range tabs {
			mt.tab.Close()
		}
	}()
	rng := rand.New(rand.NewPCG(7, 7))
	seq := make([]int32, 1<<20)
	for i := range seq {
		seq[i] = int32(rng.IntN(fs.n))
	}
	now := t0.Add(time.Second)
	for _, size := range []int{0, 32} {
		name := "single"
		if size > 0 {
			name = "batch=32"
		}
		for _, mt := range tabs {
			b.Run(name+"/mem="+mt.name, func(b *testing.B) {
				k := max(size, 1)
				bvs := make([]tcpView, k)
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
						fs.ack(&bvs[j], int(seq[(i+j)&(len(seq)-1)]), (i+j)&1 == 1)
					}
					if size == 0 {
						mt.tab.TrackInto(&results[0], views[0], now)
					} else {
						mt.tab.TrackBatch(views[:m], now, results[:m])
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
