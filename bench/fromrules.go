package bench

import (
	"bytes"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/qtables/qtables/engine"
)

// FiltersFromRules approximates the rules reachable from the built-in
// chain of table as a filter list in evaluation order, to aim generated
// traffic at each rule of a user's rule set. Jumps and gotos are followed
// (their conditions narrow the target chain's rules); each rule that does
// not jump becomes one Filter with Ref naming it, from what a Filter can
// say: contiguous -s/-d prefixes, -p, and tcp/udp --sport/--dport and
// multiport's first port or range. Everything else (inverted conditions,
// interfaces, other matches) is left out, so a packet aimed at a rule may
// still miss it: the spread report shows how many do. Rules whose
// conditions contradict a jump's are skipped.
func FiltersFromRules(rs *engine.Ruleset, table, chain string) ([]Filter, error) {
	t := rs.Table(table)
	if t == nil {
		return nil, fmt.Errorf("the rules define no %s table", table)
	}
	c := t.Chain(chain)
	if c == nil || !c.Builtin {
		return nil, fmt.Errorf("%q is not a built-in chain of table %s", chain, table)
	}
	var out []Filter
	onPath := map[string]bool{}
	var walk func(c *engine.Chain, cond Filter, depth int)
	walk = func(c *engine.Chain, cond Filter, depth int) {
		if onPath[c.Name] || depth > 16 {
			return
		}
		onPath[c.Name] = true
		defer delete(onPath, c.Name)
		for i, r := range c.Rules {
			f, ok := intersect(cond, ruleFilter(r))
			if !ok {
				continue
			}
			switch r.Target.Kind {
			case engine.TargetJump, engine.TargetGoto:
				if tc := t.Chain(r.Target.Name); tc != nil {
					walk(tc, f, depth+1)
				}
				continue
			case engine.TargetVerdict:
				f.Accept = r.Target.Verdict.Base() == 1
			}
			f.Ref = RuleRef{c.Name, i + 1}
			f.Orig = len(out)
			out = append(out, f)
		}
	}
	walk(c, Filter{Src: netip.PrefixFrom(netip.IPv4Unspecified(), 0), Dst: netip.PrefixFrom(netip.IPv4Unspecified(), 0), SPort: AnyPort, DPort: AnyPort}, 0)
	return out, nil
}

// ruleFilter is what a Filter can say of r.
func ruleFilter(r *engine.Rule) Filter {
	f := Filter{SPort: AnyPort, DPort: AnyPort}
	f.Src = addrPrefix(r.Src)
	f.Dst = addrPrefix(r.Dst)
	if !r.InvProto {
		f.Proto = r.Proto
	}
	for _, m := range r.Matches {
		if m.Name != "tcp" && m.Name != "udp" && m.Name != "multiport" {
			continue
		}
		var b strings.Builder
		m.Match.Save(&b)
		tok := strings.Fields(b.String())
		for i := 0; i+1 < len(tok); i++ {
			if i > 0 && tok[i-1] == "!" {
				continue
			}
			var dst *PortRange
			switch tok[i] {
			case "--sport", "--sports", "--source-ports":
				dst = &f.SPort
			case "--dport", "--dports", "--destination-ports":
				dst = &f.DPort
			case "--ports":
				// Either direction: aim at the destination.
				dst = &f.DPort
			default:
				continue
			}
			first, _, _ := strings.Cut(tok[i+1], ",")
			if pr, ok := parsePortSpec(first); ok {
				*dst = pr
			}
		}
	}
	return f
}

func parsePortSpec(s string) (PortRange, bool) {
	lo, hi, isRange := strings.Cut(s, ":")
	l, err := strconv.ParseUint(lo, 10, 16)
	if err != nil {
		return PortRange{}, false
	}
	h := l
	if isRange {
		if h, err = strconv.ParseUint(hi, 10, 16); err != nil || h < l {
			return PortRange{}, false
		}
	}
	return PortRange{uint16(l), uint16(h)}, true
}

// addrPrefix is a as a prefix; inverted or non-contiguous masks give /0.
func addrPrefix(a engine.Addr) netip.Prefix {
	bits := 0
	for bits < 32 && a.Mask&(1<<(31-bits)) != 0 {
		bits++
	}
	if a.Inv || (bits < 32 && a.Mask<<bits != 0) {
		bits = 0
	}
	return netip.PrefixFrom(addrFrom(a.Addr), bits).Masked()
}

// intersect narrows a by b, or reports that nothing matches both.
func intersect(a, b Filter) (Filter, bool) {
	out := b
	var ok bool
	if out.Src, ok = narrower(a.Src, b.Src); !ok {
		return out, false
	}
	if out.Dst, ok = narrower(a.Dst, b.Dst); !ok {
		return out, false
	}
	switch {
	case a.Proto == 0:
	case b.Proto == 0:
		out.Proto = a.Proto
	case a.Proto != b.Proto:
		return out, false
	}
	if out.SPort, ok = rangeAnd(a.SPort, b.SPort); !ok {
		return out, false
	}
	if out.DPort, ok = rangeAnd(a.DPort, b.DPort); !ok {
		return out, false
	}
	return out, true
}

func narrower(a, b netip.Prefix) (netip.Prefix, bool) {
	switch {
	case a.Bits() <= b.Bits() && a.Contains(b.Addr()):
		return b, true
	case b.Bits() < a.Bits() && b.Contains(a.Addr()):
		return a, true
	}
	return b, false
}

func rangeAnd(a, b PortRange) (PortRange, bool) {
	r := PortRange{max(a.Lo, b.Lo), min(a.Hi, b.Hi)}
	return r, r.Lo <= r.Hi
}

// Reachable counts the rules a packet entering chain of t can be compared
// with: the chain's rules and, once each, those of the chains they jump or
// go to.
func Reachable(t *engine.Table, chain string) int {
	seen := map[string]bool{}
	var count func(name string) int
	count = func(name string) int {
		c := t.Chain(name)
		if c == nil || seen[name] {
			return 0
		}
		seen[name] = true
		n := len(c.Rules)
		for _, r := range c.Rules {
			if r.Target.Kind == engine.TargetJump || r.Target.Kind == engine.TargetGoto {
				n += count(r.Target.Name)
			}
		}
		return n
	}
	return count(chain)
}

// Truncate returns a copy of rs in which the built-in chain of table keeps
// only as many of its first rules as fit in n reachable rules (a jump
// counts with the chains it reaches). The copy is made by printing and
// re-reading the rule set, so it shares nothing with rs.
func Truncate(rs *engine.Ruleset, table, chain string, n int) (*engine.Ruleset, error) {
	var buf bytes.Buffer
	if err := rs.Save(&buf, engine.SaveOptions{}); err != nil {
		return nil, err
	}
	cp, err := engine.Parse("truncated", &buf)
	if err != nil {
		return nil, fmt.Errorf("re-reading the rule set to truncate it: %w", err)
	}
	t := cp.Table(table)
	if t == nil {
		return nil, fmt.Errorf("the rules define no %s table", table)
	}
	c := t.Chain(chain)
	if c == nil {
		return nil, fmt.Errorf("table %s has no chain %s", table, chain)
	}
	all := c.Rules
	lo, hi := 0, len(all)
	// Reachable grows with the number of rules kept: binary search.
	for lo < hi {
		mid := (lo + hi + 1) / 2
		c.Rules = all[:mid]
		if Reachable(t, chain) <= n {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	c.Rules = all[:lo]
	return cp, nil
}
