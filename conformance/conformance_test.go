package conformance

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// maxReported bounds how many failing cases one run prints in full.
const maxReported = 5

// conformanceParams reads QTABLES_CONFORMANCE_N (default 100) and
// QTABLES_CONFORMANCE_SEED (see seedFromEnv; default 1).
func conformanceParams(t *testing.T) (n int, seed uint64) {
	t.Helper()
	n = 100
	if s := os.Getenv("QTABLES_CONFORMANCE_N"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("QTABLES_CONFORMANCE_N=%q: want a positive integer", s)
		}
		n = v
	}
	return n, seedFromEnv(t, 1)
}

// seedFromEnv returns QTABLES_CONFORMANCE_SEED: a number, or "random" for
// a seed taken from the clock (logged, so a failure can be replayed);
// unset means def, so plain `go test` runs are repeatable.
func seedFromEnv(t *testing.T, def uint64) uint64 {
	t.Helper()
	s := os.Getenv("QTABLES_CONFORMANCE_SEED")
	switch s {
	case "":
		return def
	case "random":
		seed := uint64(time.Now().UnixNano()) % 1_000_000_000
		t.Logf("QTABLES_CONFORMANCE_SEED=random: using seed %d", seed)
		return seed
	}
	v, err := strconv.ParseUint(s, 0, 64)
	if err != nil {
		t.Fatalf("QTABLES_CONFORMANCE_SEED=%q: want a number or \"random\": %v", s, err)
	}
	return v
}

// buildQtables builds ./cmd/qtables into dir and checks it has the test
// command.
func buildQtables(t *testing.T, dir string) string {
	t.Helper()
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	bin := filepath.Join(dir, "qtables")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/qtables")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cannot build the qtables binary (go build ./cmd/qtables in %s): %v\n%s", root, err, out)
	}
	if err := CheckQtables(bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestKernelConformance runs generated rule sets and packets through the
// kernel's FORWARD chain and through `qtables test`, and requires identical
// iptables-save -c output: every policy counter, every rule counter, and
// every rule printed the way iptables-save prints it.
//
// Replay one case with QTABLES_CONFORMANCE_SEED=<seed> QTABLES_CONFORMANCE_N=1.
func TestKernelConformance(t *testing.T) {
	requireKernel(t)
	n, seed := conformanceParams(t)
	work := t.TempDir()
	bin := buildQtables(t, work)
	topo := newTopology(t)
	t.Logf("running %d cases, seeds %d..%d (replay with QTABLES_CONFORMANCE_SEED=%d QTABLES_CONFORMANCE_N=%d)", n, seed, seed+uint64(n)-1, seed, n)

	failed := 0
	start := time.Now()
	for i := range n {
		// Time rules are built around the moment the case is sent.
		c := GenerateAt(seed+uint64(i), time.Now())
		res, err := RunCase(topo, c, bin, work)
		if err != nil {
			keep := keepCase(t, res)
			t.Fatalf("seed %d: %v\nrule set:\n%s%s", c.Seed, err, numbered(c.Rules), keep)
		}
		if len(res.Diff) == 0 {
			os.RemoveAll(res.Dir)
			continue
		}
		failed++
		if failed <= maxReported {
			culprit := ""
			if cu, err := FindCulprit(topo, res, bin); err != nil {
				culprit = fmt.Sprintf("looking for the first differing packet: %v\n", err)
			} else if cu != nil {
				culprit = cu.String()
			} else {
				culprit = "no single packet reproduces the difference (a printing difference, or packets that only differ together)\n"
			}
			keepCase(t, res)
			t.Errorf("%s%s", res.Report(), culprit)
		} else {
			os.RemoveAll(res.Dir)
		}
	}
	if failed > maxReported {
		t.Errorf("%d more failing cases not shown", failed-maxReported)
	}
	t.Logf("%d cases in %v, %d failed", n, time.Since(start).Round(time.Millisecond), failed)
}

// keepCase moves a case directory out of the test's temporary directory,
// which is deleted when the test ends, into one that survives, and points
// res.Dir at it.
func keepCase(t *testing.T, res *Result) string {
	if res == nil || res.Dir == "" {
		return ""
	}
	dst, err := os.MkdirTemp("", fmt.Sprintf("qtables-conformance-seed-%d-", res.Case.Seed))
	if err != nil {
		t.Logf("keeping case: %v", err)
		return ""
	}
	entries, _ := os.ReadDir(res.Dir)
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(res.Dir, e.Name()))
		if err == nil {
			err = os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644)
		}
		if err != nil {
			t.Logf("keeping case: %v", err)
		}
	}
	os.RemoveAll(res.Dir)
	res.Dir = dst
	return "case saved in " + dst + "\n"
}
