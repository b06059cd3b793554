package engine

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"unsafe"

	"github.com/qtables/qtables/matchers"
	"github.com/qtables/qtables/packet"
)

// recompileRules has classified chains (FORWARD, A, mangle's PREROUTING)
// and linear ones (B, INPUT), jumps between them, and a second table.
func recompileRules(r *rand.Rand) string {
	var b strings.Builder
	b.WriteString("*mangle\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n")
	for i := 0; i < 20; i++ {
		fmt.Fprintf(&b, "-A PREROUTING %s -j MARK --set-xmark 0x%x/0xffffffff\n", randomSpec(r), i+1)
	}
	b.WriteString("COMMIT\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:A - [0:0]\n:B - [0:0]\n")
	for i := 0; i < 5; i++ {
		fmt.Fprintf(&b, "-A INPUT %s -j DROP\n", randomSpec(r))
	}
	for i := 0; i < 40; i++ {
		fmt.Fprintf(&b, "-A FORWARD %s\n", randomRule(r, "A", "B"))
	}
	for i := 0; i < 30; i++ {
		fmt.Fprintf(&b, "-A A %s\n", randomRule(r, "B"))
	}
	for i := 0; i < 6; i++ {
		fmt.Fprintf(&b, "-A B %s\n", randomRule(r))
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

var recompileNets = []string{"10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.1.2.3/32", "192.168.0.0/16", "192.168.7.9/32"}

func randomSpec(r *rand.Rand) string {
	var parts []string
	if r.IntN(2) == 0 {
		parts = append(parts, "-s "+recompileNets[r.IntN(len(recompileNets))])
	}
	if r.IntN(2) == 0 {
		parts = append(parts, "-d "+recompileNets[r.IntN(len(recompileNets))])
	}
	switch r.IntN(3) {
	case 0:
		parts = append(parts, fmt.Sprintf("-p tcp -m tcp --dport %d", 20+r.IntN(6)))
	case 1:
		parts = append(parts, "-p udp")
	}
	return strings.Join(parts, " ")
}

// randomRule is a rule spec with a target: a verdict, RETURN, nothing, or
// a jump to one of chains.
func randomRule(r *rand.Rand, chains ...string) string {
	targets := append([]string{"-j ACCEPT", "-j DROP", "-j RETURN", ""}, chains...)
	t := targets[r.IntN(len(targets))]
	if t != "" && !strings.HasPrefix(t, "-j") {
		t = "-j " + t
	}
	return strings.TrimSpace(randomSpec(r) + " " + t)
}

// randomCommand is a command line that changes the rule set: mostly rule
// edits of one chain, sometimes a chain or policy change.
func randomCommand(r *rand.Rand, rs *Ruleset) []string {
	chains := []string{"FORWARD", "A", "B", "INPUT"}
	c := chains[r.IntN(len(chains))]
	n := len(rs.Table("filter").Chain(c).Rules)
	jumps := map[string][]string{"FORWARD": {"A", "B"}, "A": {"B"}}[c]
	rule := strings.Fields(randomRule(r, jumps...))
	switch k := r.IntN(12); {
	case k < 3:
		return append([]string{"-A", c}, rule...)
	case k < 5:
		return append([]string{"-I", c, fmt.Sprint(1 + r.IntN(n+1))}, rule...)
	case k < 7 && n > 0:
		return []string{"-D", c, fmt.Sprint(1 + r.IntN(n))}
	case k < 8 && n > 0:
		// -D by spec: the text of an existing rule.
		return append([]string{"-D", c}, strings.Fields(rs.Table("filter").Chain(c).Rules[r.IntN(n)].String())...)
	case k < 9 && n > 0:
		return append([]string{"-R", c, fmt.Sprint(1 + r.IntN(n))}, rule...)
	case k < 10:
		return []string{"-P", "FORWARD", []string{"ACCEPT", "DROP"}[r.IntN(2)]}
	case k < 11:
		return []string{"-t", "mangle", "-A", "PREROUTING", "-p", "udp", "-j", "MARK", "--set-mark", "7"}
	default:
		if rs.Table("filter").Chain("C") == nil {
			return []string{"-N", "C"}
		}
		return []string{"-X", "C"}
	}
}

func randomPacket(r *rand.Rand) *packet.View {
	hosts := []string{"10.1.2.3", "10.1.9.9", "10.200.0.1", "192.168.7.9", "192.168.1.1", "172.16.0.1"}
	protos := []uint8{6, 17, 1}
	v := ipv4View(hosts[r.IntN(len(hosts))], hosts[r.IntN(len(hosts))], protos[r.IntN(len(protos))], 60+r.IntN(1400))
	if v.Proto != 1 {
		v.SrcPort, v.DstPort, v.HasPorts, v.HasTransport = uint16(1024+r.IntN(100)), uint16(18+r.IntN(10)), true, true
		v.L4 = make([]byte, 20)
		v.L4[0], v.L4[1] = byte(v.SrcPort>>8), byte(v.SrcPort)
		v.L4[2], v.L4[3] = byte(v.DstPort>>8), byte(v.DstPort)
		v.L4[12] = 5 << 4
	}
	return v
}

// evalAll evaluates packets through the FORWARD and PREROUTING hooks of p
// and returns one line per packet: the decision and the mark.
func evalAll(p *Program, pkts []*packet.View) []string {
	out := make([]string, len(pkts))
	var c matchers.Context
	for i, v := range pkts {
		c.Reset()
		c.Pkt, c.Hook, c.Table = v, matchers.HookPrerouting, "mangle"
		m := p.Table("mangle").Eval(&c, nil)
		c.Hook, c.Table = matchers.HookForward, "filter"
		f := p.Table("filter").Eval(&c, nil)
		out[i] = fmt.Sprintf("%v %s mark=%d / %v %s", m.Verdict, RuleRef(m), c.Mark, f.Verdict, RuleRef(f))
	}
	return out
}

// TestRecompile applies random edits, each to a Clone of the rule set in
// force, and checks that the Program Recompile builds from the previous
// one decides every packet as a fresh compile of the edited set does, that
// it reused the compiled chains the edit left alone, and that a rule left
// alone keeps counting into the same counters.
func TestRecompile(t *testing.T) {
	for _, verify := range []bool{false, true} {
		t.Run(fmt.Sprintf("verify=%v", verify), func(t *testing.T) {
			opt := CompileOptions{Verify: verify}
			r := rand.New(rand.NewPCG(1, 2))
			rs, err := Parse("test.rules", strings.NewReader(recompileRules(r)))
			if err != nil {
				t.Fatal(err)
			}
			prog, err := CompileWith(rs, opt)
			if err != nil {
				t.Fatal(err)
			}
			pkts := make([]*packet.View, 200)
			for i := range pkts {
				pkts[i] = randomPacket(r)
			}
			reused, edits := 0, 0
			for step := 0; step < 70; step++ {
				args := randomCommand(r, rs)
				cmd, err := ParseCommand(args)
				if err != nil {
					t.Fatalf("step %d: %q: %v", step, args, err)
				}
				next := rs.Clone()
				before := rs.Table("filter").Chain("FORWARD").Rules
				if err := next.Apply(cmd); err != nil {
					continue // e.g. a loop or a duplicate -N: nothing to swap
				}
				if got := rs.Table("filter").Chain("FORWARD").Rules; len(got) != len(before) {
					t.Fatalf("step %d: %q changed the original rule set", step, args)
				}
				edits++
				inc, err := RecompileWith(prog, next, opt)
				if err != nil {
					t.Fatalf("step %d: %q: recompile: %v", step, args, err)
				}
				full, err := CompileWith(next, opt)
				if err != nil {
					t.Fatal(err)
				}
				got, want := evalAll(inc, pkts), evalAll(full, pkts)
				for i := range got {
					if got[i] != want[i] {
						t.Fatalf("step %d after %q: packet %d: recompiled %s, compiled %s", step, args, i, got[i], want[i])
					}
				}
				if inc.CompiledBytes() != full.CompiledBytes() {
					t.Errorf("step %d after %q: recompiled %d bytes, compiled %d", step, args, inc.CompiledBytes(), full.CompiledBytes())
				}
				// Chains with the same rules as before: the same compiled
				// rules and classifier, not a copy.
				for _, nt := range inc.tables {
					ot := prog.Table(nt.Name)
					if len(ot.chains) != len(nt.chains) {
						continue
					}
					for i := range nt.chains {
						oc, nc := &ot.chains[i], &nt.chains[i]
						if len(oc.rules) > 0 && oc.name == nc.name && sameRules(oc, next.Table(nt.Name).Chains[i]) {
							if &oc.rules[0] != &nc.rules[0] || oc.cls != nc.cls {
								t.Errorf("step %d after %q: chain %s unchanged but compiled again", step, args, nc.name)
							}
							reused++
						}
						if want := &next.Table(nt.Name).Chains[i].Counters; nc.counters != want {
							t.Errorf("step %d: chain %s counts its policy into the old chain's counters", step, nc.name)
						}
					}
				}
				rs, prog = next, inc
			}
			if edits < 45 || reused < edits {
				t.Errorf("%d edits applied, %d chains reused: the test exercises too little", edits, reused)
			}
			// Counters: a rule never edited counts into the one Counters
			// its parsed Rule holds, whichever Program evaluates.
			fwd := rs.Table("filter").Chain("FORWARD").Rules
			rs.ZeroCounters()
			evalAll(prog, pkts)
			total := uint64(0)
			for _, r := range fwd {
				p, _ := r.Counters.Get()
				total += p
			}
			if total == 0 {
				t.Error("no FORWARD rule counted a packet")
			}
		})
	}
}

// TestCloneIsolated: commands on a Clone leave the original's chains,
// policies and rule lists alone, also when the original's rule slice has
// room to grow in place.
func TestCloneIsolated(t *testing.T) {
	rs, err := Parse("test.rules", strings.NewReader("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [3:180]\n:OUTPUT ACCEPT [0:0]\n-A FORWARD -s 10.0.0.1/32 -j ACCEPT\nCOMMIT\n"))
	if err != nil {
		t.Fatal(err)
	}
	fwd := rs.Table("filter").Chain("FORWARD")
	fwd.Rules = append(make([]*Rule, 0, 8), fwd.Rules...) // spare capacity
	a, b := rs.Clone(), rs.Clone()
	for _, c := range []struct {
		rs   *Ruleset
		args string
	}{
		{a, "-A FORWARD -s 10.0.0.2 -j DROP"},
		{b, "-A FORWARD -s 10.0.0.3 -j ACCEPT"},
		{a, "-P FORWARD ACCEPT"},
		{b, "-N X"},
	} {
		cmd, err := ParseCommand(strings.Fields(c.args))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.rs.Apply(cmd); err != nil {
			t.Fatalf("%s: %v", c.args, err)
		}
	}
	save := func(rs *Ruleset) string {
		var s strings.Builder
		rs.Save(&s, SaveOptions{Counters: true})
		return s.String()
	}
	orig, sa, sb := save(rs), save(a), save(b)
	if strings.Contains(orig, "10.0.0.2") || strings.Contains(orig, "10.0.0.3") || strings.Contains(orig, ":X") || !strings.Contains(orig, ":FORWARD DROP [3:180]") {
		t.Errorf("original changed:\n%s", orig)
	}
	// -P zeroes the policy counters of a's FORWARD; b's are the copy.
	if !strings.Contains(sa, "10.0.0.2") || strings.Contains(sa, "10.0.0.3") || !strings.Contains(sa, ":FORWARD ACCEPT [0:0]") {
		t.Errorf("clone a:\n%s", sa)
	}
	if strings.Contains(sb, "10.0.0.2") || !strings.Contains(sb, "10.0.0.3") || !strings.Contains(sb, ":X - [0:0]") || !strings.Contains(sb, ":FORWARD DROP [3:180]") {
		t.Errorf("clone b:\n%s", sb)
	}
	// The rules are shared: the same counters.
	if a.Table("filter").Chain("FORWARD").Rules[0] != fwd.Rules[0] {
		t.Error("the clone copied an untouched rule")
	}
}

// TestExactHitCounters checks the dense counters that exact hits (like
// every compiled rule) count into: the rules compiled together count side
// by side (one array, 16 bytes apart),
// what Get reports includes them, Set zeroes them, and an edited rule set
// keeps counting into the same cells.
func TestExactHitCounters(t *testing.T) {
	var b strings.Builder
	b.WriteString("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n")
	for i := range 20 {
		fmt.Fprintf(&b, "-A FORWARD -s 10.0.%d.0/24 -p tcp -m tcp --dport %d -j ACCEPT\n", i, 1000+i)
	}
	b.WriteString("COMMIT\n")
	rs, err := Parse("dense.rules", strings.NewReader(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	p, err := Compile(rs)
	if err != nil {
		t.Fatal(err)
	}
	rules := rs.Table("filter").Chain("FORWARD").Rules
	packet := func(i int) *packet.View {
		v := ipv4View(fmt.Sprintf("10.0.%d.7", i), "192.0.2.1", 6, 100+i)
		v.SrcPort, v.DstPort, v.HasPorts, v.HasTransport = 40000, uint16(1000+i), true, true
		v.L4 = make([]byte, 20)
		v.L4[0], v.L4[1], v.L4[2], v.L4[3] = 40000>>8, 40000&0xff, byte(v.DstPort>>8), byte(v.DstPort)
		v.L4[12] = 5 << 4
		return v
	}
	eval := func(p *Program, i int) {
		var c matchers.Context
		c.Pkt, c.Hook, c.Table = packet(i), matchers.HookForward, "filter"
		if res := p.Table("filter").Eval(&c, nil); res.Verdict != matchers.Accept || res.Rule != i+1 {
			t.Fatalf("packet %d: %v at rule %d, want ACCEPT at %d", i, res.Verdict, res.Rule, i+1)
		}
	}
	for i := range rules {
		for range i + 1 {
			eval(p, i)
		}
	}
	for i, r := range rules {
		d := r.Counters.dense.Load()
		if d == nil {
			t.Fatalf("rule %d has no dense cell: not an exact hit", i+1)
		}
		if i > 0 {
			if gap := uintptr(unsafe.Pointer(d)) - uintptr(unsafe.Pointer(rules[i-1].Counters.dense.Load())); gap != unsafe.Sizeof(counterCell{}) {
				t.Errorf("rule %d's cell is %d bytes after rule %d's", i+1, gap, i)
			}
		}
		if pk, by := r.Counters.Get(); pk != uint64(i+1) || by != uint64((i+1)*(100+i)) {
			t.Errorf("rule %d: %d packets %d bytes, want %d, %d", i+1, pk, by, i+1, (i+1)*(100+i))
		}
	}
	// An edit: the rules left alone keep their cells and their counts.
	next := rs.Clone()
	cmd, err := ParseCommand(strings.Fields("-I FORWARD 1 -s 10.9.0.0/16 -j DROP"))
	if err != nil {
		t.Fatal(err)
	}
	if err := next.Apply(cmd); err != nil {
		t.Fatal(err)
	}
	p2, err := Recompile(p, next)
	if err != nil {
		t.Fatal(err)
	}
	cell := rules[3].Counters.dense.Load()
	eval2 := func(i int) {
		var c matchers.Context
		c.Pkt, c.Hook, c.Table = packet(i), matchers.HookForward, "filter"
		if res := p2.Table("filter").Eval(&c, nil); res.Rule != i+2 {
			t.Fatalf("after the edit, packet %d decided by rule %d, want %d", i, res.Rule, i+2)
		}
	}
	eval2(3)
	if rules[3].Counters.dense.Load() != cell {
		t.Error("the edit gave rule 4 a new cell")
	}
	if pk, _ := rules[3].Counters.Get(); pk != 5 {
		t.Errorf("rule 4 after the edit: %d packets, want 5", pk)
	}
	rules[3].Counters.Set(7, 70)
	if pk, by := rules[3].Counters.Get(); pk != 7 || by != 70 {
		t.Errorf("after Set(7, 70): %d, %d", pk, by)
	}
}
