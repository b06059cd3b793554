package engine

import (
	"fmt"
	"net/netip"
	"os"
	"unsafe"

	"github.com/qtables/qtables/matchers"
)

// Program is a rule set compiled for evaluation. It is immutable once built
// and safe for concurrent use; a reload builds a new Program and swaps it.
// Counters are shared with the Ruleset it was compiled from.
type Program struct {
	tables []*TableProgram
}

// TableProgram evaluates one table.
type TableProgram struct {
	Name    string
	chains  []progChain
	builtin [5]int32 // chain index per hook, -1 when the table lacks it
	// classified is set when a chain has a classifier; verify when every
	// evaluation is checked against linear evaluation (CompileOptions).
	classified, verify bool
	// stateful is set when a rule has a match that changes state when
	// evaluated, so the verifier cannot evaluate packets twice.
	stateful bool
}

type progChain struct {
	name     string
	builtin  bool
	policy   matchers.Verdict
	counters *Counters
	rules    []progRule
	// cls finds candidate rules; nil for chains evaluated linearly.
	cls *classifier
}

// progRule is a rule laid out for evaluation: the header fields the kernel
// compares first are copied inline so that walking a chain reads one
// contiguous array instead of chasing a pointer per rule.
type progRule struct {
	src, srcMask, dst, dstMask uint32
	invSrc, invDst             bool
	proto                      uint8
	invProto                   bool
	frag                       FragMode
	in, out                    Iface
	matches                    []matchers.Match
	target                     TargetKind
	verdict                    matchers.Verdict
	ext                        matchers.Target
	jump                       int32        // chain index of a jump or goto
	num                        int          // 1-based rule number in its chain
	counters                   *counterCell // the rule's dense cell (Counters.dense)
	rule                       *Rule
	// stop is the index of the first match the classifier does not index
	// (nor anything after it), for the verifier: a rule the classifier
	// skips must fail before it.
	stop int32
}

// CompileOptions tune Compile. The zero value is what Compile uses, except
// that Compile also reads QTABLES_VERIFY_CLASSIFIER from the environment.
type CompileOptions struct {
	// Linear disables the classifier: every chain is walked rule by rule.
	Linear bool
	// MinRules is the smallest chain that gets a classifier (0 means
	// DefaultMinRules); shorter chains are walked rule by rule, which is
	// faster for them.
	MinRules int
	// Verify evaluates every packet both through the classifier and
	// linearly and panics on any difference (a debugging aid, slow).
	Verify bool
}

// DefaultMinRules is the chain length from which a chain is classified
// (measured: see engine/design-classifier.md).
const DefaultMinRules = 16

// Compile builds the Program for rs. Chains of DefaultMinRules rules or
// more get a classifier; QTABLES_VERIFY_CLASSIFIER=1 in the environment
// turns on CompileOptions.Verify.
func Compile(rs *Ruleset) (*Program, error) {
	return CompileWith(rs, CompileOptions{Verify: os.Getenv("QTABLES_VERIFY_CLASSIFIER") == "1"})
}

// CompileWith builds the Program for rs with options opt.
func CompileWith(rs *Ruleset, opt CompileOptions) (*Program, error) {
	if opt.MinRules <= 0 {
		opt.MinRules = DefaultMinRules
	}
	p := &Program{}
	mcache := map[string]matchCons{}
	for _, t := range rs.Tables {
		tp := &TableProgram{Name: t.Name, builtin: [5]int32{-1, -1, -1, -1, -1}, verify: opt.Verify}
		index := map[string]int32{}
		for i, c := range t.Chains {
			index[c.Name] = int32(i)
		}
		for i, c := range t.Chains {
			pc := progChain{name: c.Name, builtin: c.Builtin, policy: c.Policy, counters: &c.Counters}
			if c.Builtin {
				tp.builtin[c.Hook] = int32(i)
			}
			// The rules count into dense cells (see Counters.dense): at
			// 10,000 rules each Rule's own counters are a cold cache
			// line of their own.
			cells := denseCells(c.Rules)
			for j, r := range c.Rules {
				pr := progRule{
					src: r.Src.Addr, srcMask: r.Src.Mask, invSrc: r.Src.Inv,
					dst: r.Dst.Addr, dstMask: r.Dst.Mask, invDst: r.Dst.Inv,
					proto: r.Proto, invProto: r.InvProto, frag: r.Frag, in: r.In, out: r.Out,
					target: r.Target.Kind, verdict: r.Target.Verdict, ext: r.Target.Ext,
					jump: -1, num: j + 1, counters: cells[j], rule: r,
				}
				for _, m := range r.Matches {
					pr.matches = append(pr.matches, m.Match)
				}
				if r.Target.Kind == TargetJump || r.Target.Kind == TargetGoto {
					idx, ok := index[r.Target.Name]
					if !ok {
						return nil, fmt.Errorf("table %s chain %s rule %d: target chain %q does not exist", t.Name, c.Name, j+1, r.Target.Name)
					}
					pr.jump = idx
				}
				pr.stop = int32(len(pr.matches))
				pc.rules = append(pc.rules, pr)
			}
			if !opt.Linear && len(c.Rules) >= opt.MinRules {
				pc.cls = buildClassifier(deriveChain(c.Rules, pc.rules, mcache), pc.rules)
				tp.classified = tp.classified || pc.cls != nil
			}
			for _, r := range c.Rules {
				for _, m := range r.Matches {
					tp.stateful = tp.stateful || !statelessMatches[m.Name]
				}
			}
			tp.chains = append(tp.chains, pc)
		}
		p.tables = append(p.tables, tp)
	}
	return p, nil
}

// Table returns the program of table name, or nil.
func (p *Program) Table(name string) *TableProgram {
	for _, t := range p.tables {
		if t.Name == name {
			return t
		}
	}
	return nil
}

// CompiledBytes returns the memory the Program's evaluation structures
// hold: every rule's evaluation record and every classifier's bitmaps and
// lookup tables. The match and target extensions, which the Program
// shares with its Ruleset, are not counted.
func (p *Program) CompiledBytes() int {
	n := 0
	for _, t := range p.tables {
		n += t.CompiledBytes()
	}
	return n
}

// CompiledBytes returns the memory table tp's evaluation structures hold
// (see Program.CompiledBytes).
func (tp *TableProgram) CompiledBytes() int {
	n := int(unsafe.Sizeof(*tp))
	for i := range tp.chains {
		ch := &tp.chains[i]
		n += int(unsafe.Sizeof(*ch)) + len(ch.rules)*int(unsafe.Sizeof(progRule{}))
		for j := range ch.rules {
			n += len(ch.rules[j].matches) * int(unsafe.Sizeof(matchers.Match(nil)))
		}
		if ch.cls != nil {
			n += ch.cls.size()
		}
	}
	return n
}

// Result is the outcome of one table traversal.
type Result struct {
	Verdict matchers.Verdict
	// Chain and Rule name the rule that decided (Rule counts from 1); Rule
	// is 0 when the built-in chain's policy decided.
	Chain string
	Rule  int
	// Hotdrop reports that a match dropped the packet as malformed.
	Hotdrop bool
}

// StepKind classifies a trace step as iptables' TRACE does.
type StepKind uint8

const (
	StepRule   StepKind = iota // an ordinary rule was evaluated
	StepReturn                 // the implicit RETURN at the end of a user chain
	StepPolicy                 // a built-in chain's policy
)

// Step is one entry of a packet's path through a table, for --trace.
type Step struct {
	Kind    StepKind
	Chain   string
	Num     int // rule number (number of rules + 1 for return/policy)
	Rule    *Rule
	Matched bool
	// Failed names the part of the rule that did not match ("-s", "-p",
	// "-m tcp", ...) when Matched is false; "hotdrop" if a match dropped.
	Failed string
}

// Tracer receives every step of a traversal when tracing.
type Tracer func(Step)

type frame struct {
	chain int32
	rule  int32
}

// HasHook reports whether the table has a built-in chain at hook h.
func (tp *TableProgram) HasHook(h matchers.Hook) bool {
	return h < 5 && tp.builtin[h] >= 0
}

// Eval traverses the table from the built-in chain of c.Hook, as the
// kernel's ipt_do_table does, updating counters, c.Mark and c.Events.
// tr may be nil. The packet must be IPv4 (c.Pkt.Class == ClassOK).
//
// Classified chains are searched through their classifier, which skips
// only rules that would fail without effect; a tracer sees every rule,
// so tracing walks every chain linearly.
func (tp *TableProgram) Eval(c *matchers.Context, tr Tracer) Result {
	switch {
	case tr != nil || !tp.classified:
		return tp.eval(c, tr, evalCount)
	case tp.verify:
		return tp.evalVerify(c)
	}
	return tp.eval(c, nil, evalCount|evalClassify)
}

// evalMode selects how eval runs.
type evalMode uint8

const (
	evalCount    evalMode = 1 << iota // update counters
	evalClassify                      // use the chains' classifiers
	evalVerify                        // check every rule the classifiers skip
)

func (tp *TableProgram) eval(c *matchers.Context, tr Tracer, mode evalMode) Result {
	start := tp.builtin[c.Hook]
	var stackBuf [16]frame
	stack := stackBuf[:0]
	ci := start
	ri := int32(0)
	length := c.Pkt.Len
	src, dst := addrBits(c.Pkt.Src), addrBits(c.Pkt.Dst)
	count := mode&evalCount != 0
	// rows are the classifier lookups of chain rowsChain for this packet,
	// valid until a target may have changed it (-1: none).
	var rows rowSet
	rowsChain := int32(-1)
	for {
		ch := &tp.chains[ci]
		if cl := ch.cls; cl != nil && mode&evalClassify != 0 && int(ri) < len(ch.rules) {
			if rowsChain != ci {
				cl.lookup(c, src, dst, &rows)
				rowsChain = ci
			}
			n, h := cl.first(&rows, int(ri))
			next := int32(n)
			if mode&evalVerify != 0 {
				ch.verifySkip(c, src, dst, ri, next)
				if h != nil {
					ch.verifyExact(c, src, dst, next, h)
				}
			} else if h != nil {
				// The box test decided that the rule matches and that it
				// does nothing but count and return its verdict: finish
				// without reading the rule (cold at 10,000 rules).
				if count {
					h.counters.Add(length)
				}
				return Result{Verdict: h.verdict, Chain: ch.name, Rule: int(next) + 1}
			}
			ri = next
		}
		if int(ri) >= len(ch.rules) {
			// End of chain: policy of a built-in chain, implicit RETURN of
			// a user chain.
			if ch.builtin {
				return tp.policy(ci, length, tr, count)
			}
			if tr != nil {
				tr(Step{Kind: StepReturn, Chain: ch.name, Num: len(ch.rules) + 1, Matched: true})
			}
			if len(stack) == 0 {
				return tp.policy(start, length, tr, count)
			}
			f := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			ci, ri = f.chain, f.rule+1
			continue
		}
		r := &ch.rules[ri]
		failed := r.match(c, src, dst)
		if failed >= 0 {
			if c.Hotdrop {
				if tr != nil {
					tr(Step{Kind: StepRule, Chain: ch.name, Num: r.num, Rule: r.rule, Failed: "hotdrop"})
				}
				return Result{Verdict: matchers.Drop, Chain: ch.name, Rule: r.num, Hotdrop: true}
			}
			if tr != nil {
				tr(Step{Kind: StepRule, Chain: ch.name, Num: r.num, Rule: r.rule, Failed: r.partName(failed)})
			}
			ri++
			continue
		}
		if count {
			r.counters.Add(length)
		}
		if tr != nil {
			tr(Step{Kind: StepRule, Chain: ch.name, Num: r.num, Rule: r.rule, Matched: true})
		}
		switch r.target {
		case TargetNone:
			ri++
		case TargetVerdict:
			return Result{Verdict: r.verdict, Chain: ch.name, Rule: r.num}
		case TargetReturn:
			if ch.builtin {
				return tp.policy(ci, length, tr, count)
			}
			if len(stack) == 0 {
				return tp.policy(start, length, tr, count)
			}
			f := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			ci, ri = f.chain, f.rule+1
		case TargetJump:
			stack = append(stack, frame{ci, ri})
			ci, ri = r.jump, 0
		case TargetGoto:
			ci, ri = r.jump, 0
		case TargetExt:
			n := len(c.Events)
			v := r.ext.Apply(c)
			for i := n; i < len(c.Events); i++ {
				c.Events[i].Chain, c.Events[i].Rule = ch.name, r.num
			}
			if v != matchers.Continue {
				return Result{Verdict: v, Chain: ch.name, Rule: r.num}
			}
			// The target may have changed what later rules see (MARK
			// sets c.Mark): look the packet up again.
			rowsChain = -1
			ri++
		}
	}
}

func (tp *TableProgram) policy(ci int32, length int, tr Tracer, count bool) Result {
	ch := &tp.chains[ci]
	if count {
		ch.counters.Add(length)
	}
	if tr != nil {
		tr(Step{Kind: StepPolicy, Chain: ch.name, Num: len(ch.rules) + 1, Matched: true})
	}
	return Result{Verdict: ch.policy, Chain: ch.name}
}

// Parts of a rule, in the order the kernel checks them, for match()'s
// return value; extension matches follow as partMatch+i.
const (
	partSrc = iota
	partDst
	partIn
	partOut
	partProto
	partFrag
	partMatch
)

// match returns -1 when the rule matches, else the part that failed.
func (r *progRule) match(c *matchers.Context, src, dst uint32) int {
	p := c.Pkt
	if (src&r.srcMask == r.src) == r.invSrc {
		return partSrc
	}
	if (dst&r.dstMask == r.dst) == r.invDst {
		return partDst
	}
	if ifaceMatch(&r.in, c.In) == r.in.Inv {
		return partIn
	}
	if ifaceMatch(&r.out, c.Out) == r.out.Inv {
		return partOut
	}
	if r.proto != 0 && (p.Proto == r.proto) == r.invProto {
		return partProto
	}
	switch r.frag {
	case FragNonFirst:
		if p.FragOff() == 0 {
			return partFrag
		}
	case FragNotFrag:
		if p.FragOff() != 0 {
			return partFrag
		}
	}
	for i, m := range r.matches {
		if !m.Match(c) {
			return partMatch + i
		}
	}
	return -1
}

func (r *progRule) partName(part int) string {
	switch part {
	case partSrc:
		return "-s"
	case partDst:
		return "-d"
	case partIn:
		return "-i"
	case partOut:
		return "-o"
	case partProto:
		return "-p"
	case partFrag:
		return "-f"
	}
	return "-m " + r.rule.Matches[part-partMatch].Name
}

func addrBits(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// ifaceMatch compares a device name with an -i/-o pattern as the kernel
// does: exact (name and terminating NUL) or, with a wildcard, a prefix.
func ifaceMatch(i *Iface, dev string) bool {
	if i.Wild {
		return len(dev) >= len(i.Name) && dev[:len(i.Name)] == i.Name
	}
	if i.Name == "" {
		return true // no -i/-o given
	}
	return dev == i.Name
}
