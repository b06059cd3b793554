package engine

import "os"

// Clone returns a copy of rs that commands (Apply, Run) can change while
// rs stays as it is: the tables and chains are copied, the rules are
// shared. Sharing rules is safe because commands never change a rule in
// place (-R, -E and the rest put a new Rule in its slot) and it is what
// makes a live edit cheap: a rule the command leaves alone is the same
// Rule, with the same counters, in the copy, so Recompile can reuse its
// compiled chain and no counter needs carrying over. Policy counters are
// copied (the chains are new): a caller that swaps the copy in while
// packets are counted carries them over at the swap.
//
// Counters are the exception to "rs stays as it is": -Z on the copy zeroes
// the shared rules' counters. Zero the rules in force, as iptables does.
func (rs *Ruleset) Clone() *Ruleset {
	out := &Ruleset{Tables: make([]*Table, len(rs.Tables))}
	for i, t := range rs.Tables {
		nt := &Table{Name: t.Name, Chains: make([]*Chain, len(t.Chains))}
		for j, c := range t.Chains {
			nc := &Chain{Name: c.Name, Builtin: c.Builtin, Hook: c.Hook, Policy: c.Policy}
			nc.Counters.Set(c.Counters.Get())
			// Full slice expression: an append to the copy's chain must
			// not write into spare capacity that rs's chain shares.
			nc.Rules = c.Rules[:len(c.Rules):len(c.Rules)]
			nt.Chains[j] = nc
		}
		out.Tables[i] = nt
	}
	return out
}

// Recompile builds the Program for rs, as Compile does, reusing the
// compiled chains of old that rs did not change: a chain is reused when
// its table has the same chains in the same order as when old was
// compiled and it holds the same *Rule values in the same order (see
// Clone); only the other chains are compiled, their classifiers included.
// A table whose chains were added, removed or renamed is compiled whole.
// old must have been compiled by Compile (or Recompile) in this process;
// nil compiles everything.
//
// A live edit (-A, -D, -I, -R on a copy made by Clone) thus costs the
// compile of the chain it changed, not of the whole rule set.
func Recompile(old *Program, rs *Ruleset) (*Program, error) {
	return RecompileWith(old, rs, CompileOptions{Verify: os.Getenv("QTABLES_VERIFY_CLASSIFIER") == "1"})
}

// RecompileWith is Recompile with options opt, which must be those old
// was compiled with.
func RecompileWith(old *Program, rs *Ruleset, opt CompileOptions) (*Program, error) {
	if old == nil {
		return CompileWith(rs, opt)
	}
	p := &Program{}
	for _, t := range rs.Tables {
		tp, err := recompileTable(old.Table(t.Name), t, opt)
		if err != nil {
			return nil, err
		}
		p.tables = append(p.tables, tp)
	}
	return p, nil
}

// recompileTable compiles t, reusing the chains of ot (t's table as
// compiled before) whose rules are unchanged.
func recompileTable(ot *TableProgram, t *Table, opt CompileOptions) (*TableProgram, error) {
	compile := func(t *Table) (*TableProgram, error) {
		p, err := CompileWith(&Ruleset{Tables: []*Table{t}}, opt)
		if err != nil {
			return nil, err
		}
		return p.tables[0], nil
	}
	// Reusing a chain keeps its rules' jump targets, which are chain
	// indexes: the chains must be the same, in the same order.
	if ot == nil || ot.verify != opt.Verify || len(ot.chains) != len(t.Chains) {
		return compile(t)
	}
	for i, c := range t.Chains {
		if oc := &ot.chains[i]; oc.name != c.Name || oc.builtin != c.Builtin {
			return compile(t)
		}
	}
	// The changed chains are compiled in a stand-in table that has every
	// chain, so that jumps resolve to the same indexes, but the unchanged
	// ones empty, so that compiling them costs nothing.
	stand := &Table{Name: t.Name, Chains: make([]*Chain, len(t.Chains))}
	changed := make([]bool, len(t.Chains))
	for i, c := range t.Chains {
		if changed[i] = !sameRules(&ot.chains[i], c); changed[i] {
			stand.Chains[i] = c
		} else {
			stand.Chains[i] = &Chain{Name: c.Name, Builtin: c.Builtin, Hook: c.Hook, Policy: c.Policy}
		}
	}
	st, err := compile(stand)
	if err != nil {
		return nil, err
	}
	tp := *st
	tp.chains = make([]progChain, len(t.Chains))
	tp.classified = false
	for i, c := range t.Chains {
		if changed[i] {
			tp.chains[i] = st.chains[i]
		} else {
			// The compiled rules point at the shared Rules and their
			// counters; the chain's policy and its counters are t's.
			tp.chains[i] = ot.chains[i]
			tp.chains[i].policy = c.Policy
			tp.chains[i].counters = &c.Counters
		}
		tp.classified = tp.classified || tp.chains[i].cls != nil
	}
	// Whether the table holds a stateful match is known per table only:
	// ot's answer covers the reused chains (conservatively: a stateful
	// rule since deleted still counts, which only costs the verifier).
	tp.stateful = st.stateful || ot.stateful
	return &tp, nil
}

// sameRules reports whether c holds exactly the rules oc was compiled
// from.
func sameRules(oc *progChain, c *Chain) bool {
	if len(oc.rules) != len(c.Rules) {
		return false
	}
	for j := range oc.rules {
		if oc.rules[j].rule != c.Rules[j] {
			return false
		}
	}
	return true
}
