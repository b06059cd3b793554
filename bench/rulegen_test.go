package bench

import (
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/qtables/qtables/engine"
)

func TestParseRuleSpec(t *testing.T) {
	sp, err := ParseRuleSpec("fw,rules=20,seed=4,chains=3,comments=2,actions=alternate,policy=accept")
	if err != nil {
		t.Fatal(err)
	}
	want := RuleSpec{Kind: "fw", Rules: 20, Seed: 4, Chains: 3, Comments: 2, Actions: "alternate", Policy: "ACCEPT"}
	if sp != want {
		t.Errorf("got %+v, want %+v", sp, want)
	}
	if sp, err := ParseRuleSpec(""); err != nil || sp != DefaultRuleSpec() {
		t.Errorf("empty spec: %+v %v", sp, err)
	}
	for _, bad := range []string{"tree", "acl,rules=0", "acl,rules=x", "acl,foo=1", "acl,actions=reject", "acl,policy=REJECT", "acl,5"} {
		if _, err := ParseRuleSpec(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// TestGeneratedShapes checks that each family has its defining traits, as
// measured on the ClassBench seed sets the distributions come from.
func TestGeneratedShapes(t *testing.T) {
	type shape struct{ tcp, udp, any, wildSrc, host, dportExact float64 }
	measure := func(fs []Filter) shape {
		var s shape
		n := float64(len(fs))
		for _, f := range fs {
			switch f.Proto {
			case 6:
				s.tcp++
			case 17:
				s.udp++
			case 0:
				s.any++
			}
			if f.Src.Bits() <= 1 {
				s.wildSrc++
			}
			if f.Src.Bits() >= 31 && f.Dst.Bits() >= 31 {
				s.host++
			}
			if f.DPort.Lo == f.DPort.Hi {
				s.dportExact++
			}
		}
		return shape{s.tcp / n, s.udp / n, s.any / n, s.wildSrc / n, s.host / n, s.dportExact / n}
	}
	acl, fw, ipc := measure(genSet(t, "acl", 5000)), measure(genSet(t, "fw", 5000)), measure(genSet(t, "ipc", 5000))
	// acl1: 87% TCP, host pairs dominate, exact destination ports.
	if acl.tcp < 0.8 || acl.host < 0.4 || acl.dportExact < 0.4 {
		t.Errorf("acl shape %+v", acl)
	}
	// fw1: 60% of sources are /0 or /1, a third UDP.
	if fw.wildSrc < 0.5 || fw.udp < 0.25 || fw.tcp < 0.5 {
		t.Errorf("fw shape %+v", fw)
	}
	// ipc1: a third any-protocol, UDP the largest.
	if ipc.any < 0.25 || ipc.udp < 0.3 || ipc.udp < ipc.tcp {
		t.Errorf("ipc shape %+v", ipc)
	}
	// Deterministic, and ports only on TCP/UDP.
	a, b := genSet(t, "ipc", 500), genSet(t, "ipc", 500)
	if !reflect.DeepEqual(a, b) {
		t.Error("generation is not deterministic")
	}
	if _, dropped := Expressible(a); dropped != 0 {
		t.Errorf("%d generated filters are not expressible", dropped)
	}
}

// TestEmitChains checks the chain layout of Emit against its own claim
// (the returned evaluation order) with the test's brute force: packets
// through the engine decide by the rule of the first filter of that order
// the packet matches.
func TestEmitChains(t *testing.T) {
	for _, kind := range []string{"acl", "ipc"} {
		sp := RuleSpec{Kind: kind, Rules: 400, Seed: 2, Chains: 6, Comments: 3, Actions: "alternate", Policy: "DROP"}
		text, order, err := GenerateRules(sp, "FORWARD")
		if err != nil {
			t.Fatal(err)
		}
		rs, err := engine.Parse("gen", strings.NewReader(text))
		if err != nil {
			t.Fatal(err)
		}
		tb := rs.Table("filter")
		users := 0
		for _, c := range tb.Chains {
			if !c.Builtin {
				users++
				if !strings.HasPrefix(c.Name, "NET-") || len(c.Rules) == 0 {
					t.Errorf("chain %s with %d rules", c.Name, len(c.Rules))
				}
			}
		}
		if users != 6 {
			t.Errorf("%s: %d user chains, want 6", kind, users)
		}
		if n := Reachable(tb, "FORWARD"); n != 400+6 {
			t.Errorf("%d reachable rules, want 406", n)
		}
		if !strings.Contains(text, "-m comment --comment") {
			t.Error("no comments")
		}
		var rules []cbRule
		for _, f := range order {
			r := cbRule{proto: -1, spLo: int(f.SPort.Lo), spHi: int(f.SPort.Hi), dpLo: int(f.DPort.Lo), dpHi: int(f.DPort.Hi)}
			r.srcLo, r.srcHi = rangeOfPrefix(t, f.Src.String())
			r.dstLo, r.dstHi = rangeOfPrefix(t, f.Dst.String())
			if f.Proto != 0 {
				r.proto = int(f.Proto)
			}
			rules = append(rules, r)
		}
		pkts := DefaultTraffic().Generate(order)
		w, err := NewWorkload(rs, "filter", "FORWARD", "", "", FramesOf(pkts))
		if err != nil {
			t.Fatal(err)
		}
		for i, res := range w.Decide() {
			want := bruteForce(rules, tupleToCB(pkts[w.Index[i]].Tuple))
			got := "FORWARD:0"
			if want >= 0 {
				got = order[want].Ref.String()
			}
			if have := res.Chain + ":" + strconv.Itoa(res.Rule); have != got {
				t.Fatalf("%s packet %d: engine %s, brute force over the claimed order %s", kind, i, have, got)
			}
		}
	}
}

// inversions returns the share of filter pairs (i before j, with
// different scopes) in which the later filter is the more specific: 0 for
// a set in scope order.
func inversions(fs []Filter) float64 {
	var inv, pairs int
	for i := range fs {
		for j := i + 1; j < len(fs); j++ {
			si, sj := fs[i].Scope(), fs[j].Scope()
			if si == sj || fs[i].Orig == fs[j].Orig {
				continue
			}
			pairs++
			if si > sj {
				inv++
			}
		}
	}
	return float64(inv) / float64(max(1, pairs))
}

// TestGeneratedScopeOrder checks that generated sets are ordered as
// ClassBench orders its sets, most specific first, and that this is what
// ClassBench does (on the shared 1k sets, where present).
func TestGeneratedScopeOrder(t *testing.T) {
	for _, kind := range []string{"acl", "fw", "ipc"} {
		fs := genSet(t, kind, 1000)
		if got := inversions(fs); got != 0 {
			t.Errorf("%s: %.3f of pairs out of scope order", kind, got)
		}
		for i := range fs {
			if fs[i].Orig != i {
				t.Fatalf("%s: filter %d numbered %d", kind, i, fs[i].Orig)
			}
		}
	}
	if _, err := os.Stat(sharedClassBench); err != nil {
		t.Skipf("skipping the ClassBench half: %s not found (the shared sets live next to the project)", sharedClassBench)
	}
	for _, name := range []string{"acl1_1k", "fw1_1k", "ipc1_1k"} {
		fs, err := LoadClassBench(filepath.Join(sharedClassBench, name))
		if err != nil {
			t.Fatal(err)
		}
		// Under 10% of pairs out of order (fw1_1k: 4%); a shuffled set has
		// about half.
		got := inversions(fs)
		if got > 0.10 {
			t.Errorf("%s: %.3f of pairs out of scope order", name, got)
		}
		t.Logf("%s: %.4f of pairs out of scope order", name, got)
	}
}
