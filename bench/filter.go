package bench

import (
	"fmt"
	"math"
	"net/netip"
	"sort"
	"strconv"
	"strings"
)

// PortRange is an inclusive range of TCP/UDP ports.
type PortRange struct{ Lo, Hi uint16 }

// AnyPort is the full range: no port constraint.
var AnyPort = PortRange{0, 65535}

// Any reports whether r is the full range.
func (r PortRange) Any() bool { return r.Lo == 0 && r.Hi == 65535 }

// Contains reports whether p is in r.
func (r PortRange) Contains(p uint16) bool { return r.Lo <= p && p <= r.Hi }

// iptables spells a range "lo:hi" and a single port "p".
func (r PortRange) String() string {
	if r.Lo == r.Hi {
		return strconv.Itoa(int(r.Lo))
	}
	return strconv.Itoa(int(r.Lo)) + ":" + strconv.Itoa(int(r.Hi))
}

// Filter is one rule of a five-tuple classifier, the model behind the
// generated and ClassBench rule sets: a packet matches when its addresses
// are in both prefixes, its protocol equals Proto (0 = any protocol) and,
// for each port range that is not the full range, the packet has ports
// (TCP or UDP, as the kernel's tcp/udp matches require) in that range.
type Filter struct {
	Src, Dst     netip.Prefix
	SPort, DPort PortRange
	Proto        uint8 // 0: any
	// Accept is the rule's action: ACCEPT when true, DROP otherwise.
	Accept bool
	// Orig numbers the filter in its source (a ClassBench line, from 0);
	// several Filters share one Orig when one source filter needed several
	// iptables rules.
	Orig int
	// Ref is the iptables rule the Filter became (set by Emit and by
	// FiltersFromRules).
	Ref RuleRef
}

// Scope is ClassBench's measure of how much of the header space f
// covers: the base-2 logarithm of the number of (source, destination,
// protocol, source port, destination port) tuples it matches, from 0 (one
// tuple) to 104 (every tuple).
func (f *Filter) Scope() float64 {
	s := float64(64 - f.Src.Bits() - f.Dst.Bits())
	if f.Proto == 0 {
		s += 8
	}
	for _, p := range []PortRange{f.SPort, f.DPort} {
		s += math.Log2(float64(p.Hi) - float64(p.Lo) + 1)
	}
	return s
}

// RuleRef names a rule of a table: chain and 1-based rule number.
type RuleRef struct {
	Chain string
	Num   int
}

func (r RuleRef) String() string { return r.Chain + ":" + strconv.Itoa(r.Num) }

// Tuple is the part of a packet a Filter looks at.
type Tuple struct {
	Src, Dst     netip.Addr
	Proto        uint8
	SPort, DPort uint16
	// HasPorts is set for TCP and UDP packets.
	HasPorts bool
}

// Matches reports whether t matches f.
func (f *Filter) Matches(t *Tuple) bool {
	if !f.Src.Contains(t.Src) || !f.Dst.Contains(t.Dst) {
		return false
	}
	if f.Proto != 0 && f.Proto != t.Proto {
		return false
	}
	if !f.SPort.Any() && (!t.HasPorts || !f.SPort.Contains(t.SPort)) {
		return false
	}
	if !f.DPort.Any() && (!t.HasPorts || !f.DPort.Contains(t.DPort)) {
		return false
	}
	return true
}

// HasPorts reports whether f constrains a port.
func (f *Filter) HasPorts() bool { return !f.SPort.Any() || !f.DPort.Any() }

// FirstMatch returns the index of the first filter of fs that t matches,
// or -1: the linear search that defines the answer of a filter list.
func FirstMatch(fs []Filter, t *Tuple) int {
	for i := range fs {
		if fs[i].Matches(t) {
			return i
		}
	}
	return -1
}

// spec appends f as iptables rule options (after "-A CHAIN"), with -j.
// A port constraint needs -p tcp or -p udp; callers split other filters
// first (see Expressible).
func (f *Filter) spec(b *strings.Builder) {
	if f.Src.Bits() > 0 {
		fmt.Fprintf(b, " -s %s", f.Src.Masked())
	}
	if f.Dst.Bits() > 0 {
		fmt.Fprintf(b, " -d %s", f.Dst.Masked())
	}
	if f.Proto != 0 {
		fmt.Fprintf(b, " -p %d", f.Proto)
	}
	if f.HasPorts() {
		name := "tcp"
		if f.Proto == 17 {
			name = "udp"
		}
		b.WriteString(" -m " + name)
		if !f.SPort.Any() {
			b.WriteString(" --sport " + f.SPort.String())
		}
		if !f.DPort.Any() {
			b.WriteString(" --dport " + f.DPort.String())
		}
	}
	if f.Accept {
		b.WriteString(" -j ACCEPT")
	} else {
		b.WriteString(" -j DROP")
	}
}

// Expressible splits filters into ones iptables can state one rule each.
// Ports need -p tcp or -p udp: a filter of any protocol with a port range
// becomes two filters, TCP then UDP (exact, since only TCP and UDP packets
// have ports for a Filter); a filter of another protocol with a port range
// can never match and is dropped, and counted in the second result.
func Expressible(fs []Filter) (out []Filter, dropped int) {
	out = make([]Filter, 0, len(fs))
	for _, f := range fs {
		switch {
		case !f.HasPorts() || f.Proto == 6 || f.Proto == 17:
			out = append(out, f)
		case f.Proto == 0:
			t, u := f, f
			t.Proto, u.Proto = 6, 17
			out = append(out, t, u)
		default:
			dropped++
		}
	}
	return out, dropped
}

// EmitOptions control how a filter list is written as iptables rules.
type EmitOptions struct {
	// Chain is the built-in chain the filters go to ("FORWARD" if empty).
	Chain string
	// Policy is the chain's policy: "DROP" (the default) or "ACCEPT".
	Policy string
	// Chains > 0 moves the filters whose destination lies in one of the
	// Chains most common /8 networks into a user chain per network
	// ("NET-10" for 10.0.0.0/8), reached by "-d 10.0.0.0/8 -j NET-10" from
	// the built-in chain, the way hand-written rule sets group rules. The
	// filters are reordered (each group, in order of the group's first
	// filter, then the rest) so that the result is the same first-match
	// list as the returned filters.
	Chains int
	// Comments adds "-m comment --comment" to every Nth rule (0: none), as
	// rule sets managed by tools carry them; it costs a match call.
	Comments int
}

// Emit writes fs as an iptables-restore file of table filter and returns
// the filters in the evaluation order of the rules written, each with Ref
// set to its rule. fs must be Expressible.
func Emit(fs []Filter, o EmitOptions) (string, []Filter, error) {
	chain := o.Chain
	if chain == "" {
		chain = "FORWARD"
	}
	if chain != "INPUT" && chain != "FORWARD" && chain != "OUTPUT" {
		return "", nil, fmt.Errorf("chain %q is not a built-in chain of the filter table", chain)
	}
	policy := o.Policy
	if policy == "" {
		policy = "DROP"
	}
	if policy != "DROP" && policy != "ACCEPT" {
		return "", nil, fmt.Errorf("policy %q: ACCEPT or DROP expected", policy)
	}
	for i := range fs {
		f := &fs[i]
		if f.HasPorts() && f.Proto != 6 && f.Proto != 17 {
			return "", nil, fmt.Errorf("filter %d has ports but protocol %d (split it with Expressible)", i, f.Proto)
		}
	}
	groups := groupByNet8(fs, o.Chains)
	var order []Filter
	var b strings.Builder
	b.WriteString("*filter\n")
	for _, c := range []string{"INPUT", "FORWARD", "OUTPUT"} {
		p := "ACCEPT"
		if c == chain {
			p = policy
		}
		fmt.Fprintf(&b, ":%s %s [0:0]\n", c, p)
	}
	for _, g := range groups.nets {
		fmt.Fprintf(&b, ":NET-%d - [0:0]\n", g)
	}
	n := 0
	rule := func(c string, num int, f Filter) {
		f.Ref = RuleRef{c, num}
		order = append(order, f)
		b.WriteString("-A " + c)
		if o.Comments > 0 && n%o.Comments == 0 {
			fmt.Fprintf(&b, " -m comment --comment \"filter %d\"", f.Orig)
		}
		n++
		f.spec(&b)
		b.WriteByte('\n')
	}
	num := 0
	for _, g := range groups.nets {
		num++
		fmt.Fprintf(&b, "-A %s -d %d.0.0.0/8 -j NET-%d\n", chain, g, g)
	}
	for _, i := range groups.rest {
		num++
		rule(chain, num, fs[i])
	}
	// The user chains' rules come after the built-in chain's in the
	// file, but first in evaluation order: put them first in order.
	restOrder := order
	order = nil
	for _, g := range groups.nets {
		for k, i := range groups.members[g] {
			rule("NET-"+strconv.Itoa(int(g)), k+1, fs[i])
		}
	}
	order = append(order, restOrder...)
	b.WriteString("COMMIT\n")
	return b.String(), order, nil
}

type net8Groups struct {
	nets    []uint8 // in order of their first filter
	members map[uint8][]int
	rest    []int
}

// groupByNet8 picks the k /8 networks holding most filters whose
// destination prefix is at least a /8.
func groupByNet8(fs []Filter, k int) net8Groups {
	g := net8Groups{members: map[uint8][]int{}}
	if k <= 0 {
		for i := range fs {
			g.rest = append(g.rest, i)
		}
		return g
	}
	count := map[uint8]int{}
	first := map[uint8]int{}
	for i := range fs {
		if fs[i].Dst.Bits() >= 8 {
			n := fs[i].Dst.Addr().As4()[0]
			if _, ok := first[n]; !ok {
				first[n] = i
			}
			count[n]++
		}
	}
	var nets []uint8
	for n := range count {
		nets = append(nets, n)
	}
	// Most filters first, ties by network number, to pick k.
	sort.Slice(nets, func(i, j int) bool {
		a, b := nets[i], nets[j]
		if count[a] != count[b] {
			return count[a] > count[b]
		}
		return a < b
	})
	if len(nets) > k {
		nets = nets[:k]
	}
	sort.Slice(nets, func(i, j int) bool { return first[nets[i]] < first[nets[j]] })
	chosen := map[uint8]bool{}
	for _, n := range nets {
		chosen[n] = true
	}
	g.nets = nets
	for i := range fs {
		if fs[i].Dst.Bits() >= 8 {
			if n := fs[i].Dst.Addr().As4()[0]; chosen[n] {
				g.members[n] = append(g.members[n], i)
				continue
			}
		}
		g.rest = append(g.rest, i)
	}
	return g
}
