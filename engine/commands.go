package engine

import (
	"fmt"
	"io"
	"strings"

	"github.com/qtables/qtables/matchers"
)

// Apply carries out cmd on rs as the kernel would carry out the same
// iptables command: it succeeds or fails when iptables (nf_tables backend)
// does, and on failure rs is left exactly as it was.
//
// A table that rs does not hold is created by the commands that create it
// in the kernel (-A, -I, -R, -N, -E, -P); the others (-F, -Z, -X, -D, -C,
// -L, -S) see an empty table and leave rs without it, as iptables-nft
// leaves the kernel without one.
//
// Listing commands (-L, -S) only check their chain here; use Run, List or
// ListRules to print.
func (rs *Ruleset) Apply(cmd *Command) error {
	t := rs.Table(cmd.Table)
	created := false
	if t == nil {
		nt, err := NewTable(cmd.Table)
		if err != nil {
			return errAt(cmd.cmdTok, "%v", err)
		}
		t, created = nt, true
	}
	snap := t.snapshot()
	err := t.apply(cmd)
	if err == nil && cmd.Kind.takesRule() {
		// The kernel checks the whole table (loops, hook restrictions)
		// when it is replaced; a rules file checks once at COMMIT.
		err = t.Validate()
	}
	if err != nil {
		t.restore(snap)
		return err
	}
	if created && cmd.Kind.createsTable() {
		rs.Tables = append(rs.Tables, t)
	}
	return nil
}

// Run carries out cmd as the iptables command does, printing to w what
// iptables prints: the listing of -L and -S, and with -v the rules echoed
// by -A/-I/-D/-R/-C and the "Flushing chain", "Deleting chain" and
// "Zeroing chain" lines of -F, -X and -Z.
func (rs *Ruleset) Run(w io.Writer, cmd *Command) error {
	var err error
	switch cmd.Kind {
	case CmdList:
		err = rs.List(w, cmd)
	case CmdListRules:
		err = rs.ListRules(w, cmd)
	default:
		if cmd.Verbose {
			var b strings.Builder
			rs.writeVerbose(&b, cmd)
			if _, err := io.WriteString(w, b.String()); err != nil {
				return err
			}
		}
		return rs.Apply(cmd)
	}
	if err != nil || !cmd.Zero {
		return err
	}
	// "-L -Z": the counters are zeroed after they were listed.
	z := *cmd
	z.Kind, z.Zero = CmdZero, false
	if z.RuleNum > 0 && z.Chain == "" {
		z.RuleNum = 0
	}
	return rs.Apply(&z)
}

// writeVerbose prints what iptables -v prints before carrying out cmd.
func (rs *Ruleset) writeVerbose(b *strings.Builder, cmd *Command) {
	t := rs.Table(cmd.Table)
	var chainNames []string
	if cmd.Chain != "" {
		chainNames = []string{cmd.Chain}
	} else if t != nil {
		for _, c := range t.Chains {
			if cmd.Kind != CmdDeleteChain || !c.Builtin {
				chainNames = append(chainNames, c.Name)
			}
		}
	}
	verb := ""
	switch cmd.Kind {
	case CmdAppend, CmdInsert, CmdReplace, CmdCheck, CmdDelete:
		writeEcho(b, cmd.Rules)
		return
	case CmdFlush:
		verb = "Flushing"
	case CmdDeleteChain:
		verb = "Deleting"
	case CmdZero:
		if cmd.RuleNum > 0 {
			return
		}
		verb = "Zeroing"
	default:
		return
	}
	for _, n := range chainNames {
		b.WriteString(verb + " chain `" + n + "'\n")
	}
}

// createsTable reports whether the command makes iptables-nft create a
// table that does not exist yet.
func (k CommandKind) createsTable() bool {
	switch k {
	case CmdAppend, CmdInsert, CmdReplace, CmdNewChain, CmdRenameChain, CmdPolicy:
		return true
	}
	return false
}

// tableSnapshot is what a failed command must put back.
type tableSnapshot struct {
	chains []*Chain
	state  []chainState
}

type chainState struct {
	name   string
	policy matchers.Verdict
	rules  []*Rule
}

func (t *Table) snapshot() tableSnapshot {
	s := tableSnapshot{chains: append([]*Chain(nil), t.Chains...)}
	for _, c := range t.Chains {
		s.state = append(s.state, chainState{c.Name, c.Policy, append([]*Rule(nil), c.Rules...)})
	}
	return s
}

func (t *Table) restore(s tableSnapshot) {
	t.Chains = s.chains
	for i, c := range s.chains {
		c.Name, c.Policy, c.Rules = s.state[i].name, s.state[i].policy, s.state[i].rules
	}
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

// checkKernelRule makes the checks nf_tables makes on a new rule that
// iptables' parser lets through.
func checkKernelRule(cmd *Command, r *Rule) error {
	// "! -s 0.0.0.0/0" compiles to a zero-length comparison, which
	// nf_tables refuses with EINVAL (iptables-legacy accepted it).
	if r.Src.Inv && r.Src.Mask == 0 || r.Dst.Inv && r.Dst.Mask == 0 {
		return errAt(cmd.cmdTok, "the kernel (nf_tables) refuses a negated /0 address: the rule could never match")
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
		return t.applyRule(cmd)
	case CmdNewChain:
		if clashesWithTarget(cmd.Chain) {
			return errAt(cmd.chainTok, "chain name %q may not clash with target name", cmd.Chain)
		}
		if _, err := t.AddChain(cmd.Chain); err != nil {
			return errAt(cmd.chainTok, "%v", err)
		}
	case CmdRenameChain:
		return t.renameChain(cmd)
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
		return t.deleteChains(cmd)
	case CmdPolicy:
		c, err := t.chainFor(cmd)
		if err != nil {
			return err
		}
		if !c.Builtin {
			return errAt(cmd.chainTok, "cannot set policy on user-defined chain %q (bad built-in chain name)", c.Name)
		}
		switch cmd.Policy {
		case "ACCEPT":
			c.Policy = matchers.Accept
		case "DROP":
			c.Policy = matchers.Drop
		default:
			return errAt(cmd.targetTok, "bad policy name %q (ACCEPT or DROP)", cmd.Policy)
		}
		// iptables-nft 1.8.9 zeroes the chain's policy counters on -P, to
		// the same policy too, and ignores "-c P B" there (checked in a
		// namespace; iptables-restore --counters sets them).
		c.Counters.Set(0, 0)
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
			// iptables-nft zeroes nothing and succeeds when the rule
			// number is past the end of the chain.
			if cmd.RuleNum <= len(c.Rules) {
				c.Rules[cmd.RuleNum-1].Counters.Set(0, 0)
			}
			return nil
		}
		c.Counters.Set(0, 0)
		for _, r := range c.Rules {
			r.Counters.Set(0, 0)
		}
	case CmdList, CmdListRules:
		// A rule number past the end lists nothing and succeeds.
		if cmd.Chain != "" {
			if _, err := t.chainFor(cmd); err != nil {
				return err
			}
		}
	}
	return nil
}

// applyRule carries out the commands that take a rule specification.
func (t *Table) applyRule(cmd *Command) error {
	c, err := t.chainFor(cmd)
	if err != nil {
		return err
	}
	if err := t.resolveTargets(cmd); err != nil {
		return err
	}
	switch cmd.Kind {
	case CmdAppend, CmdInsert, CmdReplace:
		for _, r := range cmd.Rules {
			if err := checkKernelRule(cmd, r); err != nil {
				return err
			}
		}
	}
	switch cmd.Kind {
	case CmdAppend:
		c.Rules = append(c.Rules, cmd.Rules...)
	case CmdInsert:
		if cmd.RuleNum > len(c.Rules)+1 {
			return errAt(cmd.ruleNumTok, "index of insertion too big")
		}
		i := cmd.RuleNum - 1
		rules := make([]*Rule, 0, len(c.Rules)+len(cmd.Rules))
		rules = append(rules, c.Rules[:i]...)
		// Each expanded rule is inserted at the same position in turn, so
		// "-I CHAIN -s a,b" puts b before a.
		for k := len(cmd.Rules) - 1; k >= 0; k-- {
			rules = append(rules, cmd.Rules[k])
		}
		c.Rules = append(rules, c.Rules[i:]...)
	case CmdReplace:
		if len(cmd.Rules) != 1 {
			return errAt(cmd.cmdTok, "replacement rule does not specify a unique address")
		}
		if cmd.RuleNum > len(c.Rules) {
			return errAt(cmd.ruleNumTok, "index of replacement too big")
		}
		rules := append([]*Rule(nil), c.Rules...)
		rules[cmd.RuleNum-1] = cmd.Rules[0]
		c.Rules = rules
	case CmdDelete:
		if cmd.hasRuleNum {
			if cmd.RuleNum > len(c.Rules) {
				return errAt(cmd.ruleNumTok, "index of deletion too big")
			}
			c.Rules = append(c.Rules[:cmd.RuleNum-1:cmd.RuleNum-1], c.Rules[cmd.RuleNum:]...)
			return nil
		}
		// Each expanded rule deletes the first rule equal to it; one that
		// finds none fails the whole command.
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
	return nil
}

// renameChain carries out -E. It refuses what iptables-nft 1.8.9 lets
// through but cannot read back: renaming a built-in chain (iptables-save
// then reports "incompatible base-chains") and new names that -N refuses
// (whitespace, target names), which would make the saved file ambiguous or
// unloadable.
func (t *Table) renameChain(cmd *Command) error {
	c, err := t.chainFor(cmd)
	if err != nil {
		return err
	}
	if c.Builtin {
		return errAt(cmd.chainTok, "cannot rename built-in chain %q", c.Name)
	}
	if t.Chain(cmd.NewName) != nil {
		return errAt(cmd.chainTok, "cannot rename to %q: chain already exists (file exists)", cmd.NewName)
	}
	if err := validChainName(cmd.NewName); err != nil {
		return errAt(cmd.chainTok, "%v", err)
	}
	if clashesWithTarget(cmd.NewName) {
		return errAt(cmd.chainTok, "chain name %q may not clash with target name", cmd.NewName)
	}
	old := c.Name
	for _, ch := range t.Chains {
		var rules []*Rule // copied on the first edit: snapshots share the old slice
		for i, r := range ch.Rules {
			if (r.Target.Kind == TargetJump || r.Target.Kind == TargetGoto) && r.Target.Name == old {
				if rules == nil {
					rules = append([]*Rule(nil), ch.Rules...)
				}
				nr := r.clone()
				nr.Target.Name = cmd.NewName
				rules[i] = nr
			}
		}
		if rules != nil {
			ch.Rules = rules
		}
	}
	c.Name = cmd.NewName
	t.sortUserChains()
	return nil
}

// clone returns a copy of r that can be edited without changing r. The
// extension instances are shared: they are immutable once built.
func (r *Rule) clone() *Rule {
	nr := &Rule{
		Src: r.Src, Dst: r.Dst, In: r.In, Out: r.Out,
		Proto: r.Proto, InvProto: r.InvProto, Frag: r.Frag,
		Matches: r.Matches, Target: r.Target, Source: r.Source,
	}
	p, b := r.Counters.Get()
	nr.Counters.Set(p, b)
	return nr
}

// sortUserChains restores the order iptables-save prints: built-in chains
// first, then user chains by name.
func (t *Table) sortUserChains() {
	for i := 1; i < len(t.Chains); i++ {
		for j := i; j > 0 && !t.Chains[j-1].Builtin && t.Chains[j-1].Name > t.Chains[j].Name; j-- {
			t.Chains[j-1], t.Chains[j] = t.Chains[j], t.Chains[j-1]
		}
	}
}

// deleteChains carries out -X with or without a chain. A chain must be
// empty and unreferenced; without a chain every user chain goes, and one
// that cannot go fails the whole command (nf_tables applies the batch
// atomically).
func (t *Table) deleteChains(cmd *Command) error {
	check := func(c *Chain, tok token) error {
		if n := t.References(c.Name); n > 0 {
			return errAt(tok, "device or resource busy: chain %q is referenced by %d rule(s)", c.Name, n)
		}
		if len(c.Rules) > 0 {
			return errAt(tok, "device or resource busy: chain %q is not empty", c.Name)
		}
		return nil
	}
	if cmd.Chain == "" {
		var keep []*Chain
		for _, c := range t.Chains {
			if c.Builtin {
				keep = append(keep, c)
				continue
			}
			if err := check(c, cmd.cmdTok); err != nil {
				return err
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
	if err := check(c, cmd.chainTok); err != nil {
		return err
	}
	t.removeChain(c)
	return nil
}

// clashesWithTarget reports whether iptables refuses name for a new chain
// because a target is called so. CONTINUE is not one of them: iptables
// accepts -N CONTINUE.
func clashesWithTarget(name string) bool {
	switch name {
	case "ACCEPT", "DROP", "QUEUE", "RETURN", "standard":
		return true
	}
	if iptablesTargets[name] {
		return true
	}
	_, ok := matchers.LookupTarget(name)
	return ok
}

// find returns the index of the first rule equal to r, or -1. Rules are
// equal when they print the same (the same spec and options); counters
// do not count, as in iptables.
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
