package bench

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/qtables/qtables/engine"
	"github.com/qtables/qtables/matchers"
)

// classbenchDir holds the ClassBench seed sets the classifier is measured
// on; the benchmarks that need them skip when it is missing.
const classbenchDir = "/work/shared/classbench/"

// classifierWorkload is the rule set of set at n rules ("gen:KIND" or a
// ClassBench file name) with its default traffic, compiled as the engine
// compiles (classified) or linearly.
func classifierWorkload(tb testing.TB, set string, n int, linear bool) *Workload {
	tb.Helper()
	var rs *engine.Ruleset
	var fs []Filter
	if kind, ok := strings.CutPrefix(set, "gen:"); ok {
		var err error
		rs, fs, _, err = Generated(RuleSpec{Kind: kind, Rules: n, Seed: 1, Actions: "accept", Policy: "DROP"}, "FORWARD", TrafficSpec{Packets: 1})
		if err != nil {
			tb.Fatal(err)
		}
	} else {
		all, err := LoadClassBench(classbenchDir + set)
		if err != nil {
			tb.Skip(err)
		}
		if n > len(all) {
			n = len(all)
		}
		text, order, _, err := ClassBenchRules(all[:n], "accept", EmitOptions{Chain: "FORWARD", Policy: "DROP"})
		if err != nil {
			tb.Fatal(err)
		}
		if rs, err = engine.Parse(set, strings.NewReader(text)); err != nil {
			tb.Fatal(err)
		}
		fs = order
	}
	w, err := NewWorkload(rs, "filter", "FORWARD", "", "", FramesOf(DefaultTraffic().Generate(fs)))
	if err != nil {
		tb.Fatal(err)
	}
	if linear {
		p, err := engine.CompileWith(rs, engine.CompileOptions{Linear: true})
		if err != nil {
			tb.Fatal(err)
		}
		w.Program, w.tp = p, p.Table("filter")
	}
	return w
}

// BenchmarkClassifier puts side by side, in one run, evaluation at 10 and
// 10,000 rules through the compiled program and at 10,000 rules through
// linear evaluation, for generated sets and the ClassBench acl1, fw1 and
// ipc1 10k sets (the bar: 10k compiled at least half the rate of 10, and
// 20 times linear). One op is one packet.
//
//	go test -run '^$' -bench Classifier -benchmem ./bench
func BenchmarkClassifier(b *testing.B) {
	sets := []string{"gen:acl", "gen:fw", "gen:ipc", "acl1_10k", "fw1_10k", "ipc1_10k"}
	if s := os.Getenv("QTABLES_BENCH_SETS"); s != "" {
		sets = strings.Split(s, ",")
	}
	for _, set := range sets {
		for _, c := range []struct {
			n      int
			linear bool
		}{{10, false}, {10000, false}, {10000, true}} {
			name := set + "/rules=" + strconv.Itoa(c.n)
			if c.linear {
				name += "/linear"
			} else {
				name += "/compiled"
			}
			b.Run(name, func(b *testing.B) {
				w := classifierWorkload(b, set, c.n, c.linear)
				views, _ := w.decode(nil)
				var ctx matchers.Context
				i := 0
				// CPU time of this thread, beside the wall time: on a
				// shared machine it leaves out the time others ran.
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				b.ReportAllocs()
				b.ResetTimer()
				cpu0, cpuOK := threadCPU()
				for b.Loop() {
					w.eval(&ctx, &views[i], nil)
					if i++; i == len(views) {
						i = 0
					}
				}
				if cpu1, ok := threadCPU(); ok && cpuOK {
					b.ReportMetric(float64(cpu1-cpu0)/float64(b.N), "cpu-ns/op")
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkts/s")
				if !c.linear {
					b.ReportMetric(float64(w.Program.CompiledBytes()), "bytes")
				}
			})
		}
	}
}

// TestClassifierAgrees checks the classified program against linear
// evaluation and against the filters' own first match on every packet of
// the generated families and the ClassBench 1k sets.
func TestClassifierAgrees(t *testing.T) {
	for _, set := range []string{"gen:acl", "gen:fw", "gen:ipc", "acl1_1k", "fw1_1k", "ipc1_1k"} {
		t.Run(set, func(t *testing.T) {
			w := classifierWorkload(t, set, 2000, false)
			lin := classifierWorkload(t, set, 2000, true)
			got, want := w.Decide(), lin.Decide()
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("packet %d: compiled %+v, linear %+v", i, got[i], want[i])
				}
			}
		})
	}
}

// BenchmarkClassifierCompile measures compiling each set at 10,000 rules
// (deriving every rule's keys and building the classifier), the cost a
// single -A or -D pays, since a rule-set edit recompiles the Program. One
// op is one compile.
//
//	go test -run '^$' -bench ClassifierCompile -benchmem ./bench
func BenchmarkClassifierCompile(b *testing.B) {
	sets := []string{"gen:acl", "gen:fw", "gen:ipc", "acl1_10k", "fw1_10k", "ipc1_10k"}
	if s := os.Getenv("QTABLES_BENCH_SETS"); s != "" {
		sets = strings.Split(s, ",")
	}
	for _, set := range sets {
		b.Run(set, func(b *testing.B) {
			w := classifierWorkload(b, set, 10000, false)
			var p *engine.Program
			for b.Loop() {
				var err error
				if p, err = engine.CompileWith(w.Rules, engine.CompileOptions{}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(p.CompiledBytes()), "bytes")
		})
	}
}
