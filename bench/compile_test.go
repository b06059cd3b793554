package bench

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/qtables/qtables/engine"
)

// compileSet is the rule set of set ("gen:KIND" or a ClassBench file name
// under classbenchDir) cut to its first n filters, in chain FORWARD with
// policy DROP, as classifierWorkload builds it but without traffic. It
// skips tb when the ClassBench set is missing.
func compileSet(tb testing.TB, set string, n int) *engine.Ruleset {
	tb.Helper()
	var text string
	if kind, ok := strings.CutPrefix(set, "gen:"); ok {
		var err error
		text, _, err = GenerateRules(RuleSpec{Kind: kind, Rules: n, Seed: 1, Actions: "accept", Policy: "DROP"}, "FORWARD")
		if err != nil {
			tb.Fatal(err)
		}
	} else {
		all, err := LoadClassBench(classbenchDir + set)
		if err != nil {
			tb.Skipf("ClassBench set %s is not available (%v): skipping", set, err)
		}
		if n > len(all) {
			n = len(all)
		}
		if text, _, _, err = ClassBenchRules(all[:n], "accept", EmitOptions{Chain: "FORWARD", Policy: "DROP"}); err != nil {
			tb.Fatal(err)
		}
	}
	rs, err := engine.Parse(set, strings.NewReader(text))
	if err != nil {
		tb.Fatal(err)
	}
	return rs
}

// retainedHeap compiles rs once and returns the live heap the Program
// holds (the heap after a collection with the Program alive, less the
// heap before): a check on CompiledBytes, which is computed, not measured.
func retainedHeap(tb testing.TB, rs *engine.Ruleset) int64 {
	tb.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	p, err := engine.CompileWith(rs, engine.CompileOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(p)
	return int64(after.HeapAlloc) - int64(before.HeapAlloc)
}

// processCPU is the CPU time (user and system, all threads: the garbage
// collector's too) the process has used: on a shared machine it does not
// grow when other processes take the CPU, as wall time does.
func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCompile measures compiling a parsed rule set into a Program
// (rule records and the classifiers of chains of DefaultMinRules rules or
// more) at 10, 1,000 and 10,000 rules, for generated sets and the
// ClassBench acl1, fw1 and ipc1 10k sets (skipped when
// /work/shared/classbench is missing). One op is one compile; reported
// besides ns/op: cpu-ns/op (process CPU time, see processCPU),
// compiled-bytes (Program.CompiledBytes) and heap-bytes (the live heap
// the Program holds, measured). Issue 7's bar: under 2 s
// and 64 MiB at 10k.
//
//	go test -run '^$' -bench Compile -benchmem ./bench
func BenchmarkCompile(b *testing.B) {
	sets := []string{"gen:acl", "gen:fw", "gen:ipc", "acl1_10k", "fw1_10k", "ipc1_10k"}
	if s := os.Getenv("QTABLES_BENCH_SETS"); s != "" {
		sets = strings.Split(s, ",")
	}
	for _, set := range sets {
		for _, n := range []int{10, 1000, 10000} {
			b.Run(set+"/rules="+strconv.Itoa(n), func(b *testing.B) {
				rs := compileSet(b, set, n)
				heap := retainedHeap(b, rs)
				var p *engine.Program
				b.ReportAllocs()
				b.ResetTimer()
				cpu0 := processCPU(b)
				for b.Loop() {
					var err error
					if p, err = engine.CompileWith(rs, engine.CompileOptions{}); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
				b.ReportMetric(float64(p.CompiledBytes()), "compiled-bytes")
				b.ReportMetric(float64(heap), "heap-bytes")
			})
		}
	}
}

// TestCompiledBytesGrow checks that the compiled size grows with the rule
// set and that the classifier is what makes it grow: a 10-rule chain is
// walked linearly (no classifier), so it costs about what the linear
// program costs, while at 1,000 rules the classifier adds to it.
func TestCompiledBytesGrow(t *testing.T) {
	for _, set := range []string{"gen:acl", "gen:fw", "gen:ipc"} {
		t.Run(set, func(t *testing.T) {
			var prev int
			for _, n := range []int{10, 100, 1000} {
				rs := compileSet(t, set, n)
				p, err := engine.CompileWith(rs, engine.CompileOptions{})
				if err != nil {
					t.Fatal(err)
				}
				lin, err := engine.CompileWith(rs, engine.CompileOptions{Linear: true})
				if err != nil {
					t.Fatal(err)
				}
				got, linear := p.CompiledBytes(), lin.CompiledBytes()
				if got <= prev {
					t.Errorf("%d rules: %d compiled bytes, not more than %d at the size before", n, got, prev)
				}
				switch {
				case n < engine.DefaultMinRules && got != linear:
					t.Errorf("%d rules (below DefaultMinRules): %d bytes, want the linear program's %d (no classifier)", n, got, linear)
				case n >= engine.DefaultMinRules && got <= linear:
					t.Errorf("%d rules: %d bytes, want more than the linear program's %d (a classifier)", n, got, linear)
				}
				prev = got
			}
		})
	}
}
