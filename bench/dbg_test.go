package bench

import (
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"testing"

	"github.com/qtables/qtables/matchers"
	"github.com/qtables/qtables/packet"
)

// cgLoop evaluates every packet passes times. It is a function of its
// own so that a profiler can collect it alone; TestCG drives it.
//
//go:noinline
func cgLoop(w *Workload, views []packet.View, passes int) {
	var c matchers.Context
	for p := 0; p < passes; p++ {
		for i := range views {
			w.eval(&c, &views[i], nil)
		}
	}
}

// TestCG runs the classifier benchmark's workload (CG_SET at CG_N rules,
// linear with CG_LINEAR set) for CG_PASSES passes after a warm-up, for a
// deterministic count of instructions, cache misses and branch
// mispredictions per packet under valgrind, where the shared machine's
// timings are too noisy to compare designs:
//
//	go test -c -o /tmp/b.test ./bench
//	GODEBUG=asyncpreemptoff=1 CG_SET=acl1_10k CG_N=10000 CG_PASSES=2 \
//	  valgrind --tool=callgrind --toggle-collect='*cgLoop*' \
//	  --cache-sim=yes --branch-sim=yes /tmp/b.test -test.run TestCG
//
// The collection covers the warm-up pass as well: per packet, divide the
// counts by (CG_PASSES+1) times the packets logged. It skips unless
// CG_SET is set.
func TestCG(t *testing.T) {
	set := os.Getenv("CG_SET")
	if set == "" {
		t.Skip()
	}
	n, _ := strconv.Atoi(os.Getenv("CG_N"))
	passes, _ := strconv.Atoi(os.Getenv("CG_PASSES"))
	w := classifierWorkload(t, set, n, os.Getenv("CG_LINEAR") != "")
	views, _ := w.decode(nil)
	runtime.GC()
	debug.SetGCPercent(-1)
	cgLoop(w, views, 1) // warm
	cgLoop(w, views, passes)
	t.Logf("packets %d", len(views))
}
