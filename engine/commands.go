package engine

import (
	"fmt"
	"strings"

	"github.com/qtables/qtables/matchers"
)

// Apply carries out cmd on rs. On error rs may be partly changed: callers
// that must keep the old state apply commands to a Clone.
// Listing commands (-L, -S) do not change rs; use List and ListRules.
func (rs *Ruleset) Apply(cmd *Command) error {
	t := rs.Table(cmd.Table)
	if t == nil {
		nt, err := NewTable(cmd.Table)
		if err != nil {
			return errAt(cmd.cmdTok, "%v", err)
		}
		rs.Tables = append(rs.Tables, nt)
		t = nt
	}
	return t.apply(cmd)
}

func (t *Table) chainFor(cmd *Command) (*Chain, error) {
	c := t.Chain(cmd.Chain)
	if c == nil {
		return nil, errAt(cmd.chainTok, "chain %q does not exist in table %s", cmd.Chain, t.Name)
	}
	return c, nil
}

// resolveTargets checks the rules' -j/-g against the table's chains.
func (t *Table) resolveTargets(cmd *Command) error {
	for _, r := range cmd.Rules {
		switch r.Target.Kind {
		case TargetJump, TargetGoto:
			c := t.Chain(r.Target.Name)
			if c == nil {
				if r.Target.Kind == TargetGoto {
					return errAt(cmd.targetTok, "goto %q is not a chain", r.Target.Name)
				}
				return errAt(cmd.targetTok, "couldn't load target %q: no such chain or target extension", r.Target.Name)
			}
			if c.Builtin {
				return errAt(cmd.targetTok, "cannot jump to built-in chain %q", r.Target.Name)
			}
		case TargetExt:
			ext, _ := matchers.LookupTarget(r.Target.Name)
			if ext.Tables != nil && !contains(ext.Tables, t.Name) {
				return errAt(cmd.targetTok, "target %s is not valid in table %s (only %s)", r.Target.Name, t.Name, strings.Join(ext.Tables, ", "))
			}
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (t *Table) apply(cmd *Command) error {
	switch cmd.Kind {
	case CmdAppend, CmdInsert, CmdReplace, CmdCheck, CmdDelete:
		c, err := t.chainFor(cmd)
		if err != nil {
			return err
		}
		if err := t.resolveTargets(cmd); err != nil {
			return err
		}
		switch cmd.Kind {
		case CmdAppend:
			c.Rules = append(c.Rules, cmd.Rules...)
		case CmdInsert:
			if cmd.RuleNum > len(c.Rules)+1 {
				return errAt(cmd.ruleNumTok, "index of insertion too big")
			}
			i := cmd.RuleNum - 1
			rules := append([]*Rule{}, c.Rules[:i]...)
			rules = append(rules, cmd.Rules...)
			c.Rules = append(rules, c.Rules[i:]...)
		case CmdReplace:
			if len(cmd.Rules) != 1 {
				return errAt(cmd.cmdTok, "-R requires a rule specification that expands to exactly one rule")
			}
			if cmd.RuleNum > len(c.Rules) {
				return errAt(cmd.ruleNumTok, "index of replacement too big")
			}
			c.Rules[cmd.RuleNum-1] = cmd.Rules[0]
		case CmdDelete:
			if cmd.hasRuleNum {
				if cmd.RuleNum > len(c.Rules) {
					return errAt(cmd.ruleNumTok, "index of deletion too big")
				}
				c.Rules = append(c.Rules[:cmd.RuleNum-1:cmd.RuleNum-1], c.Rules[cmd.RuleNum:]...)
				return nil
			}
			for _, r := range cmd.Rules {
				i := c.find(r)
				if i < 0 {
					return errAt(cmd.cmdTok, "bad rule (does a matching rule exist in that chain?)")
				}
				c.Rules = append(c.Rules[:i:i], c.Rules[i+1:]...)
			}
		case CmdCheck:
			for _, r := range cmd.Rules {
				if c.find(r) < 0 {
					return errAt(cmd.cmdTok, "bad rule (does a matching rule exist in that chain?)")
				}
			}
		}
		return t.Validate()
	case CmdNewChain:
		if _, ok := matchers.LookupTarget(cmd.Chain); ok || isStandardTarget(cmd.Chain) {
			return errAt(cmd.chainTok, "chain name %q may not clash with target name", cmd.Chain)
		}
		if _, err := t.AddChain(cmd.Chain); err != nil {
			return errAt(cmd.chainTok, "%v", err)
		}
	case CmdRenameChain:
		c, err := t.chainFor(cmd)
		if err != nil {
			return err
		}
		if c.Builtin {
			return errAt(cmd.chainTok, "cannot rename built-in chain %q", c.Name)
		}
		if t.Chain(cmd.NewName) != nil {
			return errAt(cmd.chainTok, "chain %q already exists", cmd.NewName)
		}
		if _, ok := matchers.LookupTarget(cmd.NewName); ok || isStandardTarget(cmd.NewName) {
			return errAt(cmd.chainTok, "chain name %q may not clash with target name", cmd.NewName)
		}
		old := c.Name
		t.removeChain(c)
		nc, err := t.AddChain(cmd.NewName)
		if err != nil {
			return errAt(cmd.chainTok, "%v", err)
		}
		nc.Rules = c.Rules
		for _, ch := range t.Chains {
			for _, r := range ch.Rules {
				if (r.Target.Kind == TargetJump || r.Target.Kind == TargetGoto) && r.Target.Name == old {
					r.Target.Name = cmd.NewName
				}
			}
		}
	case CmdFlush:
		if cmd.Chain == "" {
			for _, c := range t.Chains {
				c.Rules = nil
			}
			return nil
		}
		c, err := t.chainFor(cmd)
		if err != nil {
			return err
		}
		c.Rules = nil
	case CmdDeleteChain:
		if cmd.Chain == "" {
			// Delete every user chain; like iptables, fail if one is still
			// referenced from a chain that stays.
			for _, c := range t.Chains {
				if c.Builtin {
					continue
				}
				for _, b := range t.Chains {
					if !b.Builtin {
						continue
					}
					for _, r := range b.Rules {
						if (r.Target.Kind == TargetJump || r.Target.Kind == TargetGoto) && r.Target.Name == c.Name {
							return errAt(cmd.cmdTok, "too many links: chain %q is referenced from %s", c.Name, b.Name)
						}
					}
				}
				if len(c.Rules) > 0 {
					return errAt(cmd.cmdTok, "directory not empty: chain %q is not empty", c.Name)
				}
			}
			var keep []*Chain
			for _, c := range t.Chains {
				if c.Builtin {
					keep = append(keep, c)
				}
			}
			t.Chains = keep
			return nil
		}
		c, err := t.chainFor(cmd)
		if err != nil {
			return err
		}
		if c.Builtin {
			return errAt(cmd.chainTok, "cannot delete built-in chain %q", c.Name)
		}
		if n := t.References(c.Name); n > 0 {
			return errAt(cmd.chainTok, "too many links: chain %q is referenced by %d rule(s)", c.Name, n)
		}
		if len(c.Rules) > 0 {
			return errAt(cmd.chainTok, "directory not empty: chain %q is not empty", c.Name)
		}
		t.removeChain(c)
	case CmdPolicy:
		c, err := t.chainFor(cmd)
		if err != nil {
			return err
		}
		if !c.Builtin {
			return errAt(cmd.chainTok, "cannot set policy on user-defined chain %q", c.Name)
		}
		switch cmd.Policy {
		case "ACCEPT":
			c.Policy = matchers.Accept
		case "DROP":
			c.Policy = matchers.Drop
		default:
			return errAt(cmd.targetTok, "bad policy name %q (ACCEPT or DROP)", cmd.Policy)
		}
		if cmd.SetCounters {
			c.Counters.Set(cmd.Pkts, cmd.Bytes)
		}
	case CmdZero:
		if cmd.Chain == "" {
			t.ZeroCounters()
			return nil
		}
		c, err := t.chainFor(cmd)
		if err != nil {
			return err
		}
		if cmd.RuleNum > 0 {
			if cmd.RuleNum > len(c.Rules) {
				return errAt(cmd.ruleNumTok, "index of rule too big")
			}
			c.Rules[cmd.RuleNum-1].Counters.Set(0, 0)
			return nil
		}
		c.Counters.Set(0, 0)
		for _, r := range c.Rules {
			r.Counters.Set(0, 0)
		}
	case CmdList, CmdListRules:
		if cmd.Chain != "" {
			c, err := t.chainFor(cmd)
			if err != nil {
				return err
			}
			if cmd.RuleNum > len(c.Rules) {
				return errAt(cmd.ruleNumTok, "index of rule too big")
			}
		}
	}
	return nil
}

func isStandardTarget(n string) bool {
	switch n {
	case "ACCEPT", "DROP", "QUEUE", "RETURN", "CONTINUE":
		return true
	}
	return false
}

// find returns the index of the first rule equal to r, or -1. Rules are
// equal when they print the same (the same spec and options).
func (c *Chain) find(r *Rule) int {
	want := r.String()
	for i, x := range c.Rules {
		if x.String() == want {
			return i
		}
	}
	return -1
}

func (t *Table) removeChain(c *Chain) {
	for i, x := range t.Chains {
		if x == c {
			t.Chains = append(t.Chains[:i:i], t.Chains[i+1:]...)
			return
		}
	}
}

// ZeroCounters zeroes every rule and policy counter of t.
func (t *Table) ZeroCounters() {
	for _, c := range t.Chains {
		c.Counters.Set(0, 0)
		for _, r := range c.Rules {
			r.Counters.Set(0, 0)
		}
	}
}

// ZeroCounters zeroes every counter of rs.
func (rs *Ruleset) ZeroCounters() {
	for _, t := range rs.Tables {
		t.ZeroCounters()
	}
}

// Validate checks what the kernel checks when a table is loaded: no loops
// in the chain graph, and targets restricted to some hooks (REJECT) are
// reachable only from those hooks.
func (t *Table) Validate() error {
	// hooks[c] = set of hooks from which chain c is reachable.
	hooks := map[*Chain]matchers.HookMask{}
	var visit func(c *Chain, h matchers.Hook, path []*Chain) error
	visit = func(c *Chain, h matchers.Hook, path []*Chain) error {
		if hooks[c].Has(h) {
			return nil // already explored from this hook: any loop was found then
		}
		hooks[c] |= 1 << h
		path = append(path, c)
		for _, r := range c.Rules {
			if r.Target.Kind != TargetJump && r.Target.Kind != TargetGoto {
				continue
			}
			next := t.Chain(r.Target.Name)
			if next == nil {
				continue
			}
			for _, p := range path {
				if p == next {
					return &Error{Pos: r.Source, Msg: fmt.Sprintf("too many levels of links: rule in chain %q jumps back to %q, a loop", c.Name, next.Name)}
				}
			}
			if err := visit(next, h, path); err != nil {
				return err
			}
		}
		return nil
	}
	for _, c := range t.Chains {
		if c.Builtin {
			if err := visit(c, c.Hook, nil); err != nil {
				return err
			}
		}
	}
	for _, c := range t.Chains {
		for i, r := range c.Rules {
			if r.Target.Kind != TargetExt {
				continue
			}
			ext, _ := matchers.LookupTarget(r.Target.Name)
			if ext.Hooks == 0 {
				continue
			}
			if bad := hooks[c] &^ ext.Hooks; bad != 0 {
				for h := matchers.Hook(0); h < 5; h++ {
					if bad.Has(h) {
						return &Error{Pos: r.Source, Msg: fmt.Sprintf("target %s in chain %s rule %d is reachable from hook %s, where the kernel does not allow it", r.Target.Name, c.Name, i+1, h)}
					}
				}
			}
		}
	}
	return nil
}
