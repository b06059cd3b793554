package queue

import (
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qtables/qtables/engine"
	"github.com/qtables/qtables/matchers"
)

// counterRules is a 10-rule FORWARD chain: nine UDP port rules the
// benchmark's datagram fails, then the ACCEPT it matches. Every packet
// adds to the same rule's counters (engine.Counters: two atomic adds).
func counterRules() string {
	var b strings.Builder
	b.WriteString("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n")
	for i := range 9 {
		b.WriteString("-A FORWARD -p udp -m udp --dport " + strconv.Itoa(10000+i) + " -j DROP\n")
	}
	b.WriteString("-A FORWARD -p udp -j ACCEPT\nCOMMIT\n")
	return b.String()
}

func compileText(text string) *Rules {
	rs, err := engine.Parse("bench.rules", strings.NewReader(text))
	if err != nil {
		panic(err)
	}
	r, err := CompileRules(rs, "bench.rules")
	if err != nil {
		panic(err)
	}
	return r
}

// BenchmarkCountersParallel measures what the shared per-rule counters
// cost when workers judge in parallel: each goroutine (run with -cpu 1,2)
// is a worker with its own Judge (no flow table) judging the same
// datagram through counterRules. "shared" is the daemon today: every
// worker adds to the one Ruleset's counters, whose cache line then
// moves between the cores at every packet. "private" gives each worker
// its own compiled copy of the rules, so its counters stay in its core's
// cache: what per-worker counters would cost (the bound on their gain).
// core-ns/packet is the CPU time a packet takes (elapsed time x
// GOMAXPROCS / packets); with no sharing it stays flat from -cpu 1 to 2.
func BenchmarkCountersParallel(b *testing.B) {
	text := counterRules()
	pkt := udp("10.0.1.2", "10.0.2.2", 5000, 53)
	for _, mode := range []string{"shared", "private"} {
		b.Run(mode, func(b *testing.B) {
			shared := compileText(text)
			var seen atomic.Uint64
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				r := shared
				if mode == "private" {
					r = compileText(text)
				}
				j := NewJudge(matchers.Accept)
				m := fwdMeta()
				n := uint64(0)
				for pb.Next() {
					if out := j.Judge(r, pkt, &m); out.Decided.Rule != 10 {
						panic("packet not accepted by rule 10")
					}
					n++
				}
				seen.Add(n)
			})
			if mode == "shared" {
				if p, _ := shared.Set.Table("filter").Chain("FORWARD").Rules[9].Counters.Get(); p != seen.Load() {
					b.Fatalf("rule 10 counted %d packets of %d", p, seen.Load())
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())*float64(runtime.GOMAXPROCS(0))/float64(b.N), "core-ns/packet")
		})
	}
}

// BenchmarkCountersParallelInterleaved runs the shared and private
// configurations of BenchmarkCountersParallel in alternation, 4096
// packets at a time, every worker switching together (a barrier per
// round), and reports both per-packet core times and their ratio from
// the one run, so that a noisy machine slows both alike.
func BenchmarkCountersParallelInterleaved(b *testing.B) {
	text := counterRules()
	pkt := udp("10.0.1.2", "10.0.2.2", 5000, 53)
	workers := runtime.GOMAXPROCS(0)
	shared := compileText(text)
	const round = 4096
	rounds := max(1, b.N/round/workers)
	var tShared, tPrivate atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	start := make([]chan struct{}, 2*rounds)
	for i := range start {
		start[i] = make(chan struct{})
	}
	done := make(chan struct{}, workers)
	for range workers {
		go func() {
			private := compileText(text)
			j := NewJudge(matchers.Accept)
			m := fwdMeta()
			for i := range 2 * rounds {
				<-start[i]
				r, acc := shared, &tShared
				if i%2 == 1 {
					r, acc = private, &tPrivate
				}
				t0 := time.Now()
				for range round {
					j.Judge(r, pkt, &m)
				}
				acc.Add(int64(time.Since(t0)))
				done <- struct{}{}
			}
		}()
	}
	for i := range 2 * rounds {
		close(start[i])
		for range workers {
			<-done
		}
	}
	n := float64(rounds * round * workers)
	b.ReportMetric(float64(tShared.Load())/n, "shared-core-ns/packet")
	b.ReportMetric(float64(tPrivate.Load())/n, "private-core-ns/packet")
	b.ReportMetric(float64(tShared.Load())/float64(tPrivate.Load()), "shared/private")
}

// BenchmarkCounterAdd isolates the counter update the judge path makes
// for the rule that decides (engine.Counters.Add: two atomic adds): every
// goroutine adding to one Counters ("shared", the cache line moving
// between cores) or each to its own, 128 bytes apart ("private").
// core-ns/add is elapsed time x GOMAXPROCS / adds.
func BenchmarkCounterAdd(b *testing.B) {
	for _, mode := range []string{"shared", "private"} {
		b.Run(mode, func(b *testing.B) {
			type padded struct {
				c engine.Counters
				_ [112]byte
			}
			cs := make([]padded, runtime.GOMAXPROCS(0)+1)
			var next atomic.Int32
			b.RunParallel(func(pb *testing.PB) {
				c := &cs[0].c
				if mode == "private" {
					c = &cs[next.Add(1)].c
				}
				for pb.Next() {
					c.Add(100)
				}
			})
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())*float64(runtime.GOMAXPROCS(0))/float64(b.N), "core-ns/add")
		})
	}
}
