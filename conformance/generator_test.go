package conformance

import (
	"strings"
	"testing"
	"time"
)

func TestGenerateDeterministic(t *testing.T) {
	for seed := uint64(0); seed < 50; seed++ {
		a, b := Generate(seed), Generate(seed)
		if a.Rules != b.Rules {
			t.Fatalf("seed %d: rule sets differ", seed)
		}
		fa, err := a.Frames(testMAC1, testMAC2)
		if err != nil {
			t.Fatal(err)
		}
		fb, err := b.Frames(testMAC1, testMAC2)
		if err != nil {
			t.Fatal(err)
		}
		if len(fa) != len(fb) {
			t.Fatalf("seed %d: %d vs %d packets", seed, len(fa), len(fb))
		}
		for i := range fa {
			if string(fa[i]) != string(fb[i]) {
				t.Fatalf("seed %d: packet %d differs", seed, i)
			}
		}
	}
	if Generate(1).Rules == Generate(2).Rules {
		t.Error("seeds 1 and 2 give the same rule set")
	}
}

// harnessSeeds returns n seeds starting at QTABLES_CONFORMANCE_SEED
// (default 1000, away from the conformance test's default).
func harnessSeeds(t *testing.T, n int) []uint64 {
	start := seedFromEnv(t, 1000)
	seeds := make([]uint64, n)
	for i := range seeds {
		seeds[i] = start + uint64(i)
	}
	return seeds
}

// TestKernelHarness checks the harness without qtables: every generated
// rule set loads into the kernel, every generated packet reaches FORWARD,
// and a case run twice gives the same counters.
func TestKernelHarness(t *testing.T) {
	topo := newTopology(t)
	for i, seed := range harnessSeeds(t, 20) {
		c := GenerateAt(seed, time.Now())
		if err := topo.LoadRules(c.Rules); err != nil {
			t.Fatalf("seed %d: iptables-restore rejected a generated rule set (generator bug): %v\n%s", seed, err, numbered(c.Rules))
		}
		saved, err := topo.SaveFilter()
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(saved, "-A "); n < strings.Count(c.Rules, "\n-A ") {
			t.Errorf("seed %d: iptables-save shows %d rules, the rule set has more", seed, n)
		}
		frames, err := c.Frames(topo.SrcMAC, topo.FWMAC)
		if err != nil {
			t.Fatal(err)
		}
		got, err := topo.Send(frames, 10*time.Second)
		if err != nil {
			t.Errorf("seed %d: %v", seed, err)
			// Find the packets the kernel dropped before FORWARD.
			for i, p := range c.Packets {
				if !reachesForward(t, topo, p) {
					t.Errorf("seed %d packet %d never reached FORWARD: %s", seed, i, p.String())
				}
			}
			continue
		}
		if got != uint64(len(frames)) {
			t.Errorf("seed %d: %d of %d packets reached FORWARD", seed, got, len(frames))
		}
		if i < 5 {
			// The kernel side must be repeatable: same case, same output.
			first, err := topo.SaveFilter()
			if err != nil {
				t.Fatal(err)
			}
			if err := topo.LoadRules(c.Rules); err != nil {
				t.Fatal(err)
			}
			if _, err := topo.Send(frames, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			if again, err := topo.SaveFilter(); err != nil || again != first {
				t.Errorf("seed %d: a second run gives different counters (%v):\n%s\nthen\n%s", seed, err, first, again)
			}
		}
	}
}

var (
	testMAC1 = []byte{0x02, 0, 0, 0, 0, 1}
	testMAC2 = []byte{0x02, 0, 0, 0, 0, 2}
)
