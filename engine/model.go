// Package engine holds qtables' rule-set model (tables, chains, rules), its
// parser for iptables-save/iptables-restore files and iptables command lines,
// the canonical printer that reproduces iptables-save byte for byte, and the
// evaluator that walks chains as the kernel's ipt_do_table does.
//
// The model is what the user wrote and what prints back; a Program compiled
// from it is what evaluates packets. Match and target extensions come from
// package matchers' registry: the engine never names one.
package engine

import (
	"fmt"
	"sync/atomic"

	"github.com/qtables/qtables/matchers"
)

// Counters are a rule's or a policy's packet and byte counters. They are
// updated atomically so that the live daemon's workers can share a Program.
type Counters struct {
	// The counts set or restored, and a chain policy's (which compiled
	// programs add to here); Add is the cell's.
	counterCell
	// dense is where compiled programs count a rule's packets: a cell
	// of an array shared by the rules compiled together, so that at
	// 10,000 rules the counters evaluation touches stay in cache (a
	// rule's own cell sits in its Rule, one cache line a rule, and the
	// locked add on that cold line was the largest single part of what
	// 10,000 rules cost more than 10). Set once, by the first compile of
	// the rule, never replaced; Get and Set include it.
	dense atomic.Pointer[counterCell]
}

// counterCell is a dense counter: 16 bytes, four to a cache line.
type counterCell struct {
	packets atomic.Uint64
	bytes   atomic.Uint64
}

// Add counts one packet of n bytes.
func (c *counterCell) Add(n int) {
	c.packets.Add(1)
	c.bytes.Add(uint64(n))
}

// Get returns the packet and byte counts.
func (c *Counters) Get() (packets, bytes uint64) {
	packets, bytes = c.packets.Load(), c.bytes.Load()
	if d := c.dense.Load(); d != nil {
		packets += d.packets.Load()
		bytes += d.bytes.Load()
	}
	return packets, bytes
}

// Set replaces both counts.
func (c *Counters) Set(packets, bytes uint64) {
	c.packets.Store(packets)
	c.bytes.Store(bytes)
	if d := c.dense.Load(); d != nil {
		d.packets.Store(0)
		d.bytes.Store(0)
	}
}

// denseCells returns the dense cell of each of rules' counters, making
// the missing ones in one array: the rules compiled together count side
// by side.
func denseCells(rules []*Rule) []*counterCell {
	out := make([]*counterCell, len(rules))
	missing := 0
	for i, r := range rules {
		if out[i] = r.Counters.dense.Load(); out[i] == nil {
			missing++
		}
	}
	if missing == 0 {
		return out
	}
	cells := make([]counterCell, missing)
	for i, r := range rules {
		if out[i] != nil {
			continue
		}
		cell := &cells[0]
		cells = cells[1:]
		if !r.Counters.dense.CompareAndSwap(nil, cell) {
			cell = r.Counters.dense.Load() // a concurrent compile set it first
		}
		out[i] = cell
	}
	return out
}

// Ruleset is every table of one rules file, in the order they were loaded.
type Ruleset struct {
	Tables []*Table
}

// Table returns the table called name, or nil.
func (rs *Ruleset) Table(name string) *Table {
	for _, t := range rs.Tables {
		if t.Name == name {
			return t
		}
	}
	return nil
}

// tableDefs lists the tables qtables honours and their built-in chains in
// hook order. nat is refused: a queue verdict cannot rewrite addresses.
var tableDefs = map[string][]matchers.Hook{
	"filter": {matchers.HookInput, matchers.HookForward, matchers.HookOutput},
	"mangle": {matchers.HookPrerouting, matchers.HookInput, matchers.HookForward, matchers.HookOutput, matchers.HookPostrouting},
}

// NewTable returns table name with its built-in chains, policies ACCEPT.
func NewTable(name string) (*Table, error) {
	hooks, ok := tableDefs[name]
	if !ok {
		switch name {
		case "nat":
			return nil, fmt.Errorf("table %q is not supported: NAT rewrites addresses, which a queue verdict cannot do; keep nat rules in the kernel", name)
		case "raw", "security":
			return nil, fmt.Errorf("table %q is not supported yet (qtables implements filter and mangle)", name)
		}
		return nil, fmt.Errorf("can't initialize iptables table %q: Table does not exist", name)
	}
	t := &Table{Name: name}
	for _, h := range hooks {
		t.Chains = append(t.Chains, &Chain{Name: h.String(), Builtin: true, Hook: h, Policy: matchers.Accept})
	}
	return t, nil
}

// Table is one iptables table: built-in chains in hook order, then user
// chains sorted by name (the order iptables-save prints).
type Table struct {
	Name   string
	Chains []*Chain
}

// Chain returns the chain called name, or nil.
func (t *Table) Chain(name string) *Chain {
	for _, c := range t.Chains {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// AddChain creates user chain name, keeping user chains sorted.
func (t *Table) AddChain(name string) (*Chain, error) {
	if err := validChainName(name); err != nil {
		return nil, err
	}
	if t.Chain(name) != nil {
		return nil, fmt.Errorf("chain %q already exists", name)
	}
	c := &Chain{Name: name}
	i := len(t.Chains)
	for i > 0 && !t.Chains[i-1].Builtin && t.Chains[i-1].Name > name {
		i--
	}
	t.Chains = append(t.Chains, nil)
	copy(t.Chains[i+1:], t.Chains[i:])
	t.Chains[i] = c
	return c, nil
}

// References counts the rules in t that jump or go to chain name.
func (t *Table) References(name string) int {
	n := 0
	for _, c := range t.Chains {
		for _, r := range c.Rules {
			if (r.Target.Kind == TargetJump || r.Target.Kind == TargetGoto) && r.Target.Name == name {
				n++
			}
		}
	}
	return n
}

// Chain is a built-in or user-defined chain.
type Chain struct {
	Name    string
	Builtin bool
	// Hook is the hook of a built-in chain.
	Hook matchers.Hook
	// Policy is ACCEPT or DROP for built-in chains.
	Policy   matchers.Verdict
	Counters Counters // policy counters of a built-in chain
	Rules    []*Rule
}

// FragMode is the -f flag of a rule.
type FragMode uint8

const (
	FragAny      FragMode = iota // no -f
	FragNonFirst                 // -f: only non-first fragments
	FragNotFrag                  // ! -f: unfragmented packets and first fragments
)

// Addr is an IPv4 address and (possibly non-contiguous) mask as iptables
// stores them: Addr is already ANDed with Mask.
type Addr struct {
	Addr, Mask uint32
	Inv        bool
}

// Iface is an -i/-o interface match. With Wild the name is a prefix
// (written with a trailing "+" on the command line).
type Iface struct {
	Name string
	Wild bool
	Inv  bool
}

// TargetKind says what a rule does when it matches.
type TargetKind uint8

const (
	TargetNone    TargetKind = iota // no -j: count and continue
	TargetVerdict                   // ACCEPT, DROP (Target.Verdict)
	TargetReturn                    // RETURN
	TargetJump                      // -j CHAIN
	TargetGoto                      // -g CHAIN
	TargetExt                       // an extension target (LOG, MARK, ...)
)

// Target is a rule's -j/-g.
type Target struct {
	Kind TargetKind
	// Name is the name as printed after -j/-g (chain or extension name).
	Name    string
	Verdict matchers.Verdict
	Ext     matchers.Target
}

// MatchInstance is one -m in a rule.
type MatchInstance struct {
	Name  string
	Match matchers.Match
}

// Rule is one rule of a chain.
type Rule struct {
	Src, Dst Addr
	In, Out  Iface
	Proto    uint8
	InvProto bool
	Frag     FragMode
	Matches  []MatchInstance
	Target   Target
	Counters Counters
	// Source is where the rule was written, for traces and diagnostics.
	Source Pos
}

// Pos is a position in a rules file or command line.
type Pos struct {
	File string
	Line int
	Col  int
}

func (p Pos) String() string {
	if p.File == "" && p.Line == 0 {
		return "-"
	}
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col)
}

// HasCounters reports whether any rule or policy counter is non-zero.
func (rs *Ruleset) HasCounters() bool {
	for _, t := range rs.Tables {
		for _, c := range t.Chains {
			if p, b := c.Counters.Get(); p != 0 || b != 0 {
				return true
			}
			for _, r := range c.Rules {
				if p, b := r.Counters.Get(); p != 0 || b != 0 {
					return true
				}
			}
		}
	}
	return false
}
