package engine

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/qtables/qtables/matchers"
	"github.com/qtables/qtables/packet"
)

// Expectations are what `qtables test --expect FILE` checks after a
// capture has been evaluated: the verdicts of single frames and of whole
// flows, and the final counters of rules and policies. The file format is
// line based; each line is one expectation, and # starts a comment that
// runs to the end of the line. Words are separated by spaces or tabs.
//
//	# per frame (frame numbers count from 1, as in Wireshark)
//	frame 3 DROP
//	frame 4 ACCEPT mark 0x1
//	frame 5-7,9 ACCEPT rule FORWARD:2
//	frame 8 REJECT tcp-reset
//	frame 10 SKIPPED non-ip
//
//	# per flow: every evaluated packet from 10.0.0.1:1234 to 10.0.0.2:80
//	flow tcp 10.0.0.1:1234 -> 10.0.0.2:80 ACCEPT
//	# <-> also covers the packets in the other direction (the replies)
//	flow tcp 10.0.0.1:1234 <-> 10.0.0.2:80 ACCEPT
//	flow udp 10.0.0.0/24 -> 192.0.2.53:53 DROP
//	flow icmp 10.0.0.1 <-> 10.0.0.2 ACCEPT
//
//	# counters after the run
//	rule filter FORWARD 2 packets 3
//	rule filter FORWARD 2 bytes 180 packets 3
//	policy filter FORWARD packets 1
//
// A frame or flow line ends in an outcome: a verdict, then qualifiers.
//
//	ACCEPT | DROP           the verdict (DROP includes REJECT and hotdrop)
//	REJECT [TYPE]           DROP by a REJECT target (of --reject-with TYPE)
//	QUEUE [N]               NFQUEUE / QUEUE verdict (to queue N)
//	SKIPPED [REASON]        not evaluated: non-ip, truncated, malformed,
//	                        unsupported-link, ttl-expired
//	mark VALUE[/MASK]       the packet mark after the traversal
//	ctmark VALUE[/MASK]     the conntrack mark after the traversal
//	rule CHAIN:N            decided by rule N of CHAIN
//	rule CHAIN:policy       decided by the policy of built-in CHAIN
//
// A flow is PROTO HOST[:PORT] -> HOST[:PORT], where PROTO is a protocol name
// or number as in -p ("all" for any), HOST an address or prefix and PORT a
// number or * (any; the default). "->" means the packets sent as written;
// "<->" the packets of both directions. A flow expectation holds when at
// least one evaluated packet belongs to the flow and every such packet has
// the outcome; skipped packets belong to no flow.
//
// A rule or policy line compares the final packet and/or byte counters of
// rule N of CHAIN (or of the policy of built-in CHAIN) in TABLE; counters
// start at zero. Frame lines whose frames are not in the capture fail.
//
// Errors in the file are reported as FILE:LINE:COL: message.
type Expectations struct {
	// Items are the expectations in file order.
	Items []*Expectation

	frames map[int][]*Expectation // single-frame expectations by frame
	ranges []*Expectation         // frame expectations with ranges or lists
	flows  []*Expectation
	read   int // frames observed
}

// ExpectKind says what an Expectation is about.
type ExpectKind uint8

const (
	ExpectFrame  ExpectKind = iota + 1 // frame N OUTCOME
	ExpectFlow                         // flow PROTO A -> B OUTCOME
	ExpectRule                         // rule TABLE CHAIN N COUNTS
	ExpectPolicy                       // policy TABLE CHAIN COUNTS
)

// Expectation is one line of an expectations file.
type Expectation struct {
	Pos Pos
	// Text is the line as written, without comment and surrounding space.
	Text string
	Kind ExpectKind

	frames []frameRange
	flow   flowSpec
	want   outcome

	table, chain string
	num          int   // rule number (ExpectRule)
	packets      int64 // -1 when not checked
	bytes        int64

	// Observations.
	seen int      // packets that the expectation applied to
	bad  int      // of which did not have the outcome
	got  []string // descriptions of the first maxGot bad ones
	// ruleTok and similar positions point validation errors at the word.
	ruleTok token
}

// maxGot bounds how many mismatching packets an expectation describes.
const maxGot = 5

type frameRange struct{ lo, hi int }

type flowSpec struct {
	proto uint8 // 0 = any
	a, b  endpoint
	both  bool
}

type endpoint struct {
	pfx  netip.Prefix
	port int // -1 = any
}

func (e endpoint) matches(a netip.Addr, port uint16, hasPorts bool) bool {
	if !e.pfx.Contains(a) {
		return false
	}
	return e.port < 0 || hasPorts && int(port) == e.port
}

func (e endpoint) String() string {
	s := e.pfx.String()
	if e.pfx.IsSingleIP() {
		s = e.pfx.Addr().String()
	}
	if e.port >= 0 {
		s += ":" + strconv.Itoa(e.port)
	}
	return s
}

// verdictWant is the verdict word of an outcome.
type verdictWant uint8

const (
	wantAccept verdictWant = iota + 1
	wantDrop
	wantReject
	wantQueue
	wantSkipped
)

type outcome struct {
	verdict verdictWant
	queue   int // -1 = any
	reject  int // -1 = any, else a matchers.RejectType
	skip    string

	hasMark, hasCtMark bool
	mark, markMask     uint32
	ctmark, ctmarkMask uint32
	ruleChain          string // "" = any
	ruleNum            int    // 0 = policy
	ruleTok            token
	hasRule            bool
}

// LoadExpectations reads an expectations file.
func LoadExpectations(path string) (*Expectations, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseExpectations(path, f)
}

// ParseExpectations reads expectations from r; name is used in positions.
// It reports every erroneous line, not only the first (errors.Join of
// *Error values).
func ParseExpectations(name string, r io.Reader) (*Expectations, error) {
	ex := &Expectations{frames: map[int][]*Expectation{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	var errs []error
	for line := 1; sc.Scan(); line++ {
		toks, text := splitExpectLine(sc.Text(), Pos{File: name, Line: line, Col: 1})
		if len(toks) == 0 {
			continue
		}
		e, err := parseExpectation(toks)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		e.Pos, e.Text = toks[0].pos, text
		ex.add(e)
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", name, err))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return ex, nil
}

func (ex *Expectations) add(e *Expectation) {
	ex.Items = append(ex.Items, e)
	switch e.Kind {
	case ExpectFrame:
		if len(e.frames) == 1 && e.frames[0].lo == e.frames[0].hi {
			n := e.frames[0].lo
			ex.frames[n] = append(ex.frames[n], e)
		} else {
			ex.ranges = append(ex.ranges, e)
		}
	case ExpectFlow:
		ex.flows = append(ex.flows, e)
	}
}

// splitExpectLine splits a line into words with their columns, dropping a
// comment (a word starting with #), and returns the words joined by single
// spaces for messages.
func splitExpectLine(line string, at Pos) ([]token, string) {
	var toks []token
	for i := 0; i < len(line); {
		c := line[i]
		if c == ' ' || c == '\t' || c == '\r' {
			i++
			continue
		}
		if c == '#' {
			break
		}
		j := i
		for j < len(line) && line[j] != ' ' && line[j] != '\t' && line[j] != '\r' {
			j++
		}
		toks = append(toks, token{line[i:j], Pos{at.File, at.Line, at.Col + i}})
		i = j
	}
	words := make([]string, len(toks))
	for i, t := range toks {
		words[i] = t.text
	}
	return toks, strings.Join(words, " ")
}

func parseExpectation(toks []token) (*Expectation, error) {
	e := &Expectation{packets: -1, bytes: -1}
	kw := toks[0]
	rest := toks[1:]
	need := func(what string) (token, error) {
		if len(rest) == 0 {
			last := toks[len(toks)-1]
			p := last.pos
			p.Col += len(last.text) + 1
			return token{}, &Error{Pos: p, Msg: fmt.Sprintf("%s expected after %q", what, last.text)}
		}
		t := rest[0]
		rest = rest[1:]
		return t, nil
	}
	switch kw.text {
	case "frame":
		e.Kind = ExpectFrame
		t, err := need("frame number")
		if err != nil {
			return nil, err
		}
		if e.frames, err = parseFrames(t); err != nil {
			return nil, err
		}
		if e.want, err = parseOutcome(t, rest); err != nil {
			return nil, err
		}
	case "flow":
		e.Kind = ExpectFlow
		t, err := need("protocol")
		if err != nil {
			return nil, err
		}
		if e.flow.proto, err = parseProto(t.text); err != nil {
			return nil, errAt(t, "unknown protocol (a name or number as for -p, or \"all\")")
		}
		ports := e.flow.proto == packet.ProtoTCP || e.flow.proto == packet.ProtoUDP || e.flow.proto == 0
		if t, err = need("source HOST[:PORT]"); err != nil {
			return nil, err
		}
		if e.flow.a, err = parseEndpoint(t, ports); err != nil {
			return nil, err
		}
		if t, err = need(`"->" or "<->"`); err != nil {
			return nil, err
		}
		switch t.text {
		case "->":
		case "<->":
			e.flow.both = true
		default:
			return nil, errAt(t, `"->" (as written) or "<->" (both directions) expected`)
		}
		if t, err = need("destination HOST[:PORT]"); err != nil {
			return nil, err
		}
		if e.flow.b, err = parseEndpoint(t, ports); err != nil {
			return nil, err
		}
		if e.want, err = parseOutcome(t, rest); err != nil {
			return nil, err
		}
	case "rule", "policy":
		e.Kind = ExpectRule
		if kw.text == "policy" {
			e.Kind = ExpectPolicy
		}
		t, err := need("table")
		if err != nil {
			return nil, err
		}
		e.table = t.text
		if e.ruleTok, err = need("chain"); err != nil {
			return nil, err
		}
		e.chain = e.ruleTok.text
		if e.Kind == ExpectRule {
			if t, err = need("rule number"); err != nil {
				return nil, err
			}
			n, err := strconv.Atoi(t.text)
			if err != nil || n < 1 {
				return nil, errAt(t, "rule number (1 or more) expected")
			}
			e.num, e.ruleTok = n, t
		}
		if len(rest) == 0 {
			_, err := need(`"packets N" or "bytes N"`)
			return nil, err
		}
		for len(rest) > 0 {
			k, _ := need("")
			v, err := need(fmt.Sprintf("a count after %q", k.text))
			if err != nil {
				return nil, err
			}
			n, perr := strconv.ParseUint(v.text, 10, 63)
			switch {
			case k.text != "packets" && k.text != "bytes":
				return nil, errAt(k, `"packets" or "bytes" expected`)
			case perr != nil:
				return nil, errAt(v, "a count (a decimal number) expected")
			case k.text == "packets" && e.packets >= 0, k.text == "bytes" && e.bytes >= 0:
				return nil, errAt(k, "%q given twice", k.text)
			case k.text == "packets":
				e.packets = int64(n)
			default:
				e.bytes = int64(n)
			}
		}
	default:
		return nil, errAt(kw, `unknown expectation (want "frame", "flow", "rule" or "policy")`)
	}
	return e, nil
}

// parseFrames parses "3", "3-5" or a comma list of those.
func parseFrames(t token) ([]frameRange, error) {
	var out []frameRange
	for part := range strings.SplitSeq(t.text, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err1 := strconv.Atoi(lo)
		b := a
		var err2 error
		if isRange {
			b, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || a < 1 || b < a {
			return nil, errAt(t, "frame number N, range N-M or comma list expected (frames count from 1)")
		}
		out = append(out, frameRange{a, b})
	}
	return out, nil
}

// parseEndpoint parses HOST[:PORT] with HOST an IPv4 address or prefix.
func parseEndpoint(t token, ports bool) (endpoint, error) {
	ep := endpoint{port: -1}
	host, port, hasPort := t.text, "", false
	if i := strings.LastIndexByte(t.text, ':'); i >= 0 {
		host, port, hasPort = t.text[:i], t.text[i+1:], true
	}
	var err error
	if strings.Contains(host, "/") {
		ep.pfx, err = netip.ParsePrefix(host)
		ep.pfx = ep.pfx.Masked()
	} else {
		var a netip.Addr
		a, err = netip.ParseAddr(host)
		if err == nil {
			ep.pfx = netip.PrefixFrom(a, a.BitLen())
		}
	}
	if err != nil || !ep.pfx.Addr().Is4() {
		return ep, errAt(t, "IPv4 address or prefix expected, optionally with :PORT")
	}
	if !hasPort {
		return ep, nil
	}
	if !ports {
		return ep, errAt(t, "a port is only allowed for tcp and udp")
	}
	if port != "*" {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil {
			return ep, errAt(t, "port (0-65535 or *) expected after %q", host+":")
		}
		ep.port = int(n)
	}
	return ep, nil
}

// parseOutcome parses VERDICT [QUALIFIER...] from rest; after is the word
// before it, for the position of a missing verdict.
func parseOutcome(after token, rest []token) (outcome, error) {
	o := outcome{queue: -1, reject: -1}
	if len(rest) == 0 {
		p := after.pos
		p.Col += len(after.text) + 1
		return o, &Error{Pos: p, Msg: "verdict expected (ACCEPT, DROP, REJECT, QUEUE or SKIPPED)"}
	}
	vt := rest[0]
	rest = rest[1:]
	// peek returns the next word if it is not a qualifier keyword.
	peek := func() (token, bool) {
		if len(rest) == 0 {
			return token{}, false
		}
		switch rest[0].text {
		case "mark", "ctmark", "rule":
			return token{}, false
		}
		return rest[0], true
	}
	switch vt.text {
	case "ACCEPT":
		o.verdict = wantAccept
	case "DROP":
		o.verdict = wantDrop
	case "REJECT":
		o.verdict = wantReject
		if t, ok := peek(); ok {
			typ, err := matchers.ParseRejectType(t.text)
			if err != nil {
				return o, errAt(t, "unknown REJECT type (e.g. icmp-port-unreachable, tcp-reset)")
			}
			o.reject = int(typ)
			rest = rest[1:]
		}
	case "QUEUE":
		o.verdict = wantQueue
		if t, ok := peek(); ok {
			n, err := strconv.ParseUint(t.text, 10, 16)
			if err != nil {
				return o, errAt(t, "queue number (0-65535) expected")
			}
			o.queue = int(n)
			rest = rest[1:]
		}
	case "SKIPPED":
		o.verdict = wantSkipped
		if t, ok := peek(); ok {
			switch t.text {
			case "non-ip", "truncated", "malformed", "unsupported-link", "ttl-expired":
			default:
				return o, errAt(t, "skip reason expected (non-ip, truncated, malformed, unsupported-link, ttl-expired)")
			}
			o.skip = t.text
			rest = rest[1:]
		}
	default:
		msg := "verdict expected (ACCEPT, DROP, REJECT, QUEUE or SKIPPED)"
		if up := strings.ToUpper(vt.text); up != vt.text && (up == "ACCEPT" || up == "DROP" || up == "REJECT" || up == "QUEUE" || up == "SKIPPED") {
			msg = "verdicts are written in upper case, as in iptables: " + up
		}
		return o, errAt(vt, "%s", msg)
	}
	for len(rest) > 0 {
		k := rest[0]
		if len(rest) < 2 {
			if k.text == "mark" || k.text == "ctmark" || k.text == "rule" {
				p := k.pos
				p.Col += len(k.text) + 1
				return o, &Error{Pos: p, Msg: fmt.Sprintf("value expected after %q", k.text)}
			}
			return o, errAt(k, "unexpected word (qualifiers are mark, ctmark and rule)")
		}
		v := rest[1]
		rest = rest[2:]
		switch k.text {
		case "mark", "ctmark":
			if o.verdict == wantSkipped {
				return o, errAt(k, "a skipped packet has no %s", k.text)
			}
			val, mask, err := parseMarkValue(v.text)
			if err != nil {
				return o, errAt(v, "mark value VALUE[/MASK] expected (0x1, 0x10/0xf0, 5)")
			}
			if k.text == "mark" {
				if o.hasMark {
					return o, errAt(k, "mark given twice")
				}
				o.hasMark, o.mark, o.markMask = true, val, mask
			} else {
				if o.hasCtMark {
					return o, errAt(k, "ctmark given twice")
				}
				o.hasCtMark, o.ctmark, o.ctmarkMask = true, val, mask
			}
		case "rule":
			if o.verdict == wantSkipped {
				return o, errAt(k, "a skipped packet is decided by no rule")
			}
			if o.hasRule {
				return o, errAt(k, "rule given twice")
			}
			chain, num, ok := strings.Cut(v.text, ":")
			if !ok || chain == "" {
				return o, errAt(v, "CHAIN:N or CHAIN:policy expected")
			}
			n := 0
			if num != "policy" {
				var err error
				if n, err = strconv.Atoi(num); err != nil || n < 1 {
					return o, errAt(v, "CHAIN:N (N from 1) or CHAIN:policy expected")
				}
			}
			o.hasRule, o.ruleChain, o.ruleNum, o.ruleTok = true, chain, n, v
		default:
			return o, errAt(k, "unexpected word (qualifiers are mark, ctmark and rule)")
		}
	}
	return o, nil
}

// parseMarkValue parses VALUE[/MASK] as the mark match writes it: numbers
// in C notation (decimal, 0x hex, 0 octal). As with -m mark, a mark m
// satisfies it when m&MASK == VALUE.
func parseMarkValue(s string) (val, mask uint32, err error) {
	vs, ms, hasMask := strings.Cut(s, "/")
	v, err := strconv.ParseUint(vs, 0, 32)
	if err != nil {
		return 0, 0, err
	}
	mask = 0xffffffff
	if hasMask {
		m, err := strconv.ParseUint(ms, 0, 32)
		if err != nil {
			return 0, 0, err
		}
		mask = uint32(m)
	}
	return uint32(v), mask, nil
}

// Validate checks the expectations against the rule set and the table
// under test: counter lines name existing tables, chains and rules, and
// "rule CHAIN:N" qualifiers existing rules of the table under test.
func (ex *Expectations) Validate(rs *Ruleset, table string) error {
	var errs []error
	for _, e := range ex.Items {
		switch e.Kind {
		case ExpectFrame, ExpectFlow:
			o := &e.want
			if !o.hasRule {
				continue
			}
			t := rs.Table(table)
			if err := checkRuleRef(t, o.ruleChain, o.ruleNum); err != nil {
				errs = append(errs, errAt(o.ruleTok, "%v", err))
			}
		case ExpectRule, ExpectPolicy:
			t := rs.Table(e.table)
			if t == nil {
				errs = append(errs, &Error{Pos: e.Pos, Msg: fmt.Sprintf("the rules define no %s table", e.table)})
				continue
			}
			if err := checkRuleRef(t, e.chain, e.num); err != nil {
				errs = append(errs, errAt(e.ruleTok, "%v", err))
			}
		}
	}
	return errors.Join(errs...)
}

func checkRuleRef(t *Table, chain string, num int) error {
	if t == nil {
		return fmt.Errorf("no such table")
	}
	c := t.Chain(chain)
	switch {
	case c == nil:
		return fmt.Errorf("table %s has no chain %q", t.Name, chain)
	case num == 0 && !c.Builtin:
		return fmt.Errorf("%s is a user-defined chain, which has no policy", chain)
	case num > len(c.Rules):
		return fmt.Errorf("chain %s of table %s has %d rules, not %d", chain, t.Name, len(c.Rules), num)
	}
	return nil
}

// Observe checks v against the frame and flow expectations it concerns.
// It is called for every packet of the run, in order; rep describes the
// deciding rules in messages.
func (ex *Expectations) Observe(v *Verdict, rep *Report) {
	ex.read = max(ex.read, v.Frame)
	for _, e := range ex.frames[v.Frame] {
		e.observe(v, rep)
	}
	for _, e := range ex.ranges {
		for _, r := range e.frames {
			if r.lo <= v.Frame && v.Frame <= r.hi {
				e.observe(v, rep)
				break
			}
		}
	}
	if v.Skipped {
		return
	}
	p := v.View
	for _, e := range ex.flows {
		if e.flow.matches(p) {
			e.observe(v, rep)
		}
	}
}

// matches reports whether p belongs to the flow: in the direction written
// or, with both, in either direction.
func (f *flowSpec) matches(p *packet.View) bool {
	if f.proto != 0 && p.Proto != f.proto {
		return false
	}
	if f.a.matches(p.Src, p.SrcPort, p.HasPorts) && f.b.matches(p.Dst, p.DstPort, p.HasPorts) {
		return true
	}
	return f.both && f.b.matches(p.Src, p.SrcPort, p.HasPorts) && f.a.matches(p.Dst, p.DstPort, p.HasPorts)
}

func (e *Expectation) observe(v *Verdict, rep *Report) {
	e.seen++
	if e.want.holds(v) {
		return
	}
	e.bad++
	if len(e.got) < maxGot {
		e.got = append(e.got, "frame "+strconv.Itoa(v.Frame)+": "+e.want.describe(v, rep))
	}
}

// holds reports whether v has the outcome o.
func (o *outcome) holds(v *Verdict) bool {
	if o.verdict == wantSkipped {
		return v.Skipped && (o.skip == "" || o.skip == v.SkipReason)
	}
	if v.Skipped {
		return false
	}
	res := v.Result
	switch o.verdict {
	case wantAccept:
		if res.Verdict.Base() != matchers.Accept {
			return false
		}
	case wantDrop:
		if res.Verdict.Base() != matchers.Drop {
			return false
		}
	case wantReject:
		if res.Verdict.Base() != matchers.Drop || !o.rejected(v) {
			return false
		}
	case wantQueue:
		if res.Verdict.Base() != matchers.Queue || o.queue >= 0 && int(res.Verdict>>16) != o.queue {
			return false
		}
	}
	if o.hasMark && v.Ctx.Mark&o.markMask != o.mark {
		return false
	}
	if o.hasCtMark && v.Ctx.CtMark&o.ctmarkMask != o.ctmark {
		return false
	}
	if o.hasRule && (res.Chain != o.ruleChain || res.Rule != o.ruleNum) {
		return false
	}
	return true
}

// rejected reports whether the deciding rule raised a REJECT event of the
// wanted type.
func (o *outcome) rejected(v *Verdict) bool {
	for _, e := range v.Ctx.Events {
		if e.Kind == matchers.EventReject && e.Chain == v.Result.Chain && e.Rule == v.Result.Rule &&
			(o.reject < 0 || int(e.Reject) == o.reject) {
			return true
		}
	}
	return false
}

// describe says what happened to v, in the terms o asks about.
func (o *outcome) describe(v *Verdict, rep *Report) string {
	if v.Skipped {
		return "skipped (" + v.SkipReason + ")"
	}
	res := v.Result
	var b strings.Builder
	b.WriteString(res.Verdict.String())
	for _, e := range v.Ctx.Events {
		if e.Kind == matchers.EventReject && e.Chain == res.Chain && e.Rule == res.Rule {
			b.WriteString(" (REJECT " + e.Reject.String() + ")")
		}
	}
	if res.Hotdrop {
		b.WriteString(" (hotdrop)")
	}
	b.WriteString(" by " + RuleRef(res))
	if t := rep.RuleText(res.Chain, res.Rule); t != "" {
		b.WriteString(" (" + t + ")")
	}
	if o.hasMark {
		b.WriteString(", mark 0x" + strconv.FormatUint(uint64(v.Ctx.Mark), 16))
	}
	if o.hasCtMark {
		b.WriteString(", ctmark 0x" + strconv.FormatUint(uint64(v.Ctx.CtMark), 16))
	}
	return b.String()
}

// ExpectResult is the outcome of one expectation.
type ExpectResult struct {
	Expectation *Expectation
	Passed      bool
	// Got says what happened instead, one line per mismatch, when the
	// expectation failed.
	Got []string
}

// Summary is a one-line account of a failure: what was expected, what
// happened first.
func (r ExpectResult) Summary() string {
	if r.Passed {
		return "ok"
	}
	if len(r.Got) == 0 {
		return "expected " + r.Expectation.Text
	}
	return "expected " + r.Expectation.Text + "; got " + r.Got[0]
}

// Results checks every expectation once the run is over, reading the final
// counters from rs. All expectations are checked; the results are in file
// order.
func (ex *Expectations) Results(rs *Ruleset) []ExpectResult {
	out := make([]ExpectResult, 0, len(ex.Items))
	for _, e := range ex.Items {
		r := ExpectResult{Expectation: e}
		switch e.Kind {
		case ExpectFrame:
			r.Got = append(r.Got, e.got...)
			if e.bad > len(e.got) {
				r.Got = append(r.Got, fmt.Sprintf("... and %d more", e.bad-len(e.got)))
			}
			var missing []string
			for _, fr := range e.frames {
				if fr.hi > ex.read {
					lo := max(fr.lo, ex.read+1)
					s := strconv.Itoa(lo)
					if fr.hi > lo {
						s += "-" + strconv.Itoa(fr.hi)
					}
					missing = append(missing, s)
				}
			}
			if len(missing) > 0 {
				r.Got = append(r.Got, fmt.Sprintf("frame %s not in the capture (%d frames read)", strings.Join(missing, ","), ex.read))
			}
		case ExpectFlow:
			if e.seen == 0 {
				r.Got = append(r.Got, "no evaluated packet belongs to the flow")
				break
			}
			if e.bad == 0 {
				break
			}
			r.Got = append(r.Got, fmt.Sprintf("%d of %d packets of the flow differ", e.bad, e.seen))
			r.Got = append(r.Got, e.got...)
			if e.bad > len(e.got) {
				r.Got = append(r.Got, fmt.Sprintf("... and %d more", e.bad-len(e.got)))
			}
		case ExpectRule, ExpectPolicy:
			var c *Counters
			if t := rs.Table(e.table); t != nil {
				if ch := t.Chain(e.chain); ch != nil {
					switch {
					case e.Kind == ExpectPolicy:
						c = &ch.Counters
					case e.num <= len(ch.Rules):
						c = &ch.Rules[e.num-1].Counters
					}
				}
			}
			if c == nil {
				r.Got = append(r.Got, "no such rule")
				break
			}
			p, b := c.Get()
			if e.packets >= 0 && uint64(e.packets) != p || e.bytes >= 0 && uint64(e.bytes) != b {
				r.Got = append(r.Got, fmt.Sprintf("packets %d bytes %d", p, b))
			}
		}
		r.Passed = len(r.Got) == 0
		out = append(out, r)
	}
	return out
}
