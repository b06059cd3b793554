package queue

import (
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/qtables/qtables/conntrack"
	"github.com/qtables/qtables/matchers"
)

// batchBench is an established UDP traffic mix over many flows for the
// judge benchmarks: ctRules' state rules, the flows' queries and replies
// in random order.
type batchBench struct {
	r    *Rules
	ct   *conntrack.Table
	pkts [][]byte
	now  time.Time
}

// udpFlowPacket builds flow i's query (10.x.y.z:port -> 10.0.2.2:5353) or
// its reply.
func udpFlowPacket(i int, reply bool) []byte {
	src := "10." + strconv.Itoa(1+i>>16&0xff) + "." + strconv.Itoa(i>>8&0xff) + "." + strconv.Itoa(i&0xff)
	sport := uint16(1024 + i%50000)
	if reply {
		return udp("10.0.2.2", src, 5353, sport)
	}
	return udp(src, "10.0.2.2", sport, 5353)
}

func newBatchBench(b *testing.B, flows int) *batchBench {
	b.Helper()
	bb := &batchBench{r: mustRules(b, ctRules), now: time.Unix(1700000000, 0)}
	bb.ct = conntrack.New(conntrack.Config{MaxEntries: 1 << 20})
	j := NewJudge(matchers.Accept)
	j.SetConntrack(bb.ct, []matchers.Hook{matchers.HookForward})
	m := fwdMeta()
	m.Now = bb.now
	for i := range flows {
		for _, reply := range []bool{false, true} {
			if out := j.Judge(bb.r, udpFlowPacket(i, reply), &m); out.Verdict != matchers.Accept {
				b.Fatalf("flow %d setup: %+v", i, out)
			}
		}
	}
	if bb.ct.Len() != flows {
		b.Fatalf("%d flows, want %d", bb.ct.Len(), flows)
	}
	rng := rand.New(rand.NewPCG(7, uint64(flows)))
	// 64Ki packets: a stream longer than the caches hold at the larger
	// sizes, reused round and round.
	for range 1 << 16 {
		p := udpFlowPacket(rng.IntN(flows), rng.IntN(2) == 1)
		bb.pkts = append(bb.pkts, p)
	}
	return bb
}

// judgeOneByOne judges pkts one at a time (Judge: the flow table's
// TrackInto per packet).
func judgeOneByOne(b *testing.B, j *Judge, r *Rules, pkts [][]byte, metas []Meta, now time.Time) {
	for i, p := range pkts {
		metas[i].Now = now
		if out := j.Judge(r, p, &metas[i]); out.Verdict != matchers.Accept {
			b.Fatalf("%+v", out)
		}
	}
}

// judgeBatched judges pkts as one batch (Add, one TrackBatch, Eval).
func judgeBatched(b *testing.B, j *Judge, r *Rules, pkts [][]byte, metas []Meta, now time.Time) {
	j.Begin()
	for i, p := range pkts {
		metas[i].Now = now
		j.Add(r, p, &metas[i])
	}
	j.Track(now)
	for i := range pkts {
		if out := j.Eval(r, i); out.Verdict != matchers.Accept {
			b.Fatalf("%+v", out)
		}
	}
}

// BenchmarkJudgeBatch judges batches of 32 packets of established flows
// through the flow table and ctRules, one packet at a time (Judge: the
// table's TrackInto per packet) and as a batch (Add, one TrackBatch,
// Eval), side by side on the same table. ns/packet is the figure to
// compare; allocs/op (per batch of 32) must be 0.
func BenchmarkJudgeBatch(b *testing.B) {
	for _, flows := range []int{1000, 250000} {
		bb := newBatchBench(b, flows)
		for _, mode := range []string{"perpacket", "batched"} {
			b.Run("flows="+strconv.Itoa(flows)+"/"+mode, func(b *testing.B) {
				j := NewJudge(matchers.Accept)
				j.SetConntrack(bb.ct, []matchers.Hook{matchers.HookForward})
				metas := make([]Meta, judgeBatch)
				for i := range metas {
					metas[i] = fwdMeta()
				}
				now := bb.now
				next := 0
				b.ReportAllocs()
				for b.Loop() {
					now = now.Add(time.Microsecond)
					batch := bb.pkts[next : next+judgeBatch]
					next = (next + judgeBatch) % len(bb.pkts)
					if mode == "perpacket" {
						judgeOneByOne(b, j, bb.r, batch, metas, now)
					} else {
						judgeBatched(b, j, bb.r, batch, metas, now)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*judgeBatch), "ns/packet")
			})
		}
		// Both ways in alternation, batch by batch, timed apart: on a
		// shared machine whatever else runs slows both alike, so the
		// ratio holds better than between separate runs.
		b.Run("flows="+strconv.Itoa(flows)+"/interleaved", func(b *testing.B) {
			j := NewJudge(matchers.Accept)
			j.SetConntrack(bb.ct, []matchers.Hook{matchers.HookForward})
			metas := make([]Meta, judgeBatch)
			for i := range metas {
				metas[i] = fwdMeta()
			}
			now := bb.now
			next := 0
			var one, bat time.Duration
			b.ReportAllocs()
			for b.Loop() {
				now = now.Add(time.Microsecond)
				t0 := time.Now()
				judgeOneByOne(b, j, bb.r, bb.pkts[next:next+judgeBatch], metas, now)
				t1 := time.Now()
				judgeBatched(b, j, bb.r, bb.pkts[next+judgeBatch:next+2*judgeBatch], metas, now)
				bat += time.Since(t1)
				one += t1.Sub(t0)
				next = (next + 2*judgeBatch) % len(bb.pkts)
			}
			n := float64(b.N * judgeBatch)
			b.ReportMetric(float64(one.Nanoseconds())/n, "perpacket-ns/pkt")
			b.ReportMetric(float64(bat.Nanoseconds())/n, "batched-ns/pkt")
			b.ReportMetric(float64(one)/float64(bat), "speedup")
		})
	}
}

// TestJudgeBatchAllocs: judging a batch of established flows (tracking,
// the stateful matches, CONNMARK) allocates nothing.
func TestJudgeBatchAllocs(t *testing.T) {
	r := mustRules(t, ctRules)
	j, _ := ctJudge(t, matchers.HookForward)
	m := fwdMeta()
	var pkts [][]byte
	for i := range judgeBatch / 2 {
		q, a := udpFlowPacket(i, false), udpFlowPacket(i, true)
		j.Judge(r, q, &m)
		j.Judge(r, a, &m)
		pkts = append(pkts, q, a)
	}
	metas := make([]Meta, len(pkts))
	allocs := testing.AllocsPerRun(200, func() {
		m.Now = m.Now.Add(time.Microsecond)
		j.Begin()
		for i, p := range pkts {
			metas[i] = m
			j.Add(r, p, &metas[i])
		}
		j.Track(m.Now)
		for i := range pkts {
			if out := j.Eval(r, i); out.Verdict != matchers.Accept || out.Decided.Rule > 2 {
				t.Fatalf("packet %d: %+v, want ESTABLISHED", i, out)
			}
		}
	})
	if allocs != 0 {
		t.Errorf("a batch of %d allocates %.1f times, want 0", len(pkts), allocs)
	}
}
