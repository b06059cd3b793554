package engine

import (
	"fmt"

	"github.com/qtables/qtables/matchers"
)

// The verifier (CompileOptions.Verify, QTABLES_VERIFY_CLASSIFIER=1) checks
// the classifier two ways on every packet:
//
//   - every rule a classifier skips is evaluated, up to where its indexing
//     stopped, and must fail there without hot-dropping: that is exactly
//     the condition under which skipping it changes nothing, and it holds
//     for rule sets with stateful matches too, whose skipped parts are
//     never evaluated twice;
//   - when no rule of the table has a stateful match (limit, hashlimit, an
//     unknown extension), the packet is also evaluated linearly on a copy
//     of its Context, without counting, and the verdict, deciding rule,
//     hot-drop, mark and events must be the same.
//
// Either difference panics: it is a bug in the classifier.

// evalVerify evaluates c through the classifiers and checks the result.
func (tp *TableProgram) evalVerify(c *matchers.Context) Result {
	var lin Result
	var lc matchers.Context
	literal := !tp.stateful
	if literal {
		lc = *c
		// Events the linear run appends must not land in c's array.
		lc.Events = c.Events[:len(c.Events):len(c.Events)]
		lin = tp.eval(&lc, nil, 0)
	}
	n := len(c.Events)
	res := tp.eval(c, nil, evalCount|evalClassify|evalVerify)
	if !literal {
		return res
	}
	diff := ""
	switch {
	case res != lin:
		diff = fmt.Sprintf("result %+v, linear %+v", res, lin)
	case c.Mark != lc.Mark:
		diff = fmt.Sprintf("mark %#x, linear %#x", c.Mark, lc.Mark)
	case c.Hotdrop != lc.Hotdrop:
		diff = fmt.Sprintf("hotdrop %v, linear %v", c.Hotdrop, lc.Hotdrop)
	case len(c.Events) != len(lc.Events):
		diff = fmt.Sprintf("%d events, linear %d", len(c.Events)-n, len(lc.Events)-n)
	default:
		for i := n; i < len(c.Events); i++ {
			a, b := c.Events[i], lc.Events[i]
			if a.Kind != b.Kind || a.Level != b.Level || a.Reject != b.Reject || a.Chain != b.Chain || a.Rule != b.Rule {
				diff = fmt.Sprintf("event %d %+v, linear %+v", i-n, a, b)
				break
			}
		}
	}
	if diff != "" {
		panic(fmt.Sprintf("engine: classifier differs from linear evaluation in table %s for %s: %s", tp.Name, describePacket(c), diff))
	}
	return res
}

// verifySkip checks that every rule in [from, to) of ch, which the
// classifier skipped, fails before its indexing stopped without
// hot-dropping the packet.
func (ch *progChain) verifySkip(c *matchers.Context, src, dst uint32, from, to int32) {
	for i := from; i < to; i++ {
		r := &ch.rules[i]
		part := *r
		part.matches = r.matches[:r.stop]
		hd := c.Hotdrop
		failed := part.match(c, src, dst)
		hot := c.Hotdrop
		c.Hotdrop = hd
		if failed < 0 || hot {
			what := "match up to match " + fmt.Sprint(r.stop)
			if hot {
				what = "hot-drop"
			}
			panic(fmt.Sprintf("engine: classifier skipped chain %s rule %d, which linear evaluation would %s, for %s",
				ch.name, r.num, what, describePacket(c)))
		}
	}
}

// verifyExact checks that rule i of ch, which the classifier offered as
// an exact hit, matches without hot-dropping and has a plain verdict, as
// the exact path in eval assumes (the check evaluates it in full: the
// rule's matches are all pure).
func (ch *progChain) verifyExact(c *matchers.Context, src, dst uint32, i int32, h *ruleHit) {
	r := &ch.rules[i]
	hd := c.Hotdrop
	failed := r.match(c, src, dst)
	hot := c.Hotdrop
	c.Hotdrop = hd
	if failed >= 0 || hot || r.target != TargetVerdict || h.verdict != r.verdict || h.counters != r.counters {
		panic(fmt.Sprintf("engine: classifier offered chain %s rule %d as an exact hit, but it fails at %d (hot-drop %v) for %s",
			ch.name, r.num, failed, hot, describePacket(c)))
	}
}

func describePacket(c *matchers.Context) string {
	p := c.Pkt
	return fmt.Sprintf("packet %v -> %v proto %d len %d frag %d l4 % x in %q out %q mark %#x",
		p.Src, p.Dst, p.Proto, p.Len, p.FragOff(), p.L4[:min(len(p.L4), 20)], c.In, c.Out, c.Mark)
}
