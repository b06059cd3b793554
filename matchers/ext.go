// Package matchers holds qtables' match and target extensions, one file per
// extension, and the registry through which the rule parser finds them.
//
// An extension parses its own options (the iptables spellings), matches or
// acts on a packet through a Context, and prints itself back in the exact
// form iptables-save prints (Save) and iptables -L prints (List). The
// evaluator in package engine never names an extension: it loads them by
// name from this registry, so later extensions (state, string, time, limit,
// L7) plug in by adding a file here.
package matchers

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/qtables/qtables/conntrack"
	"github.com/qtables/qtables/packet"
)

// Hook is a netfilter hook (NF_INET_*), the point where a built-in chain runs.
type Hook uint8

const (
	HookPrerouting Hook = iota
	HookInput
	HookForward
	HookOutput
	HookPostrouting
	HookNone Hook = 0xff // a packet evaluated outside any hook (tests)
)

var hookNames = [...]string{"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}

func (h Hook) String() string {
	if int(h) < len(hookNames) {
		return hookNames[h]
	}
	return "NONE"
}

// HookMask is a set of hooks, bit h for Hook h.
type HookMask uint8

// Has reports whether h is in m.
func (m HookMask) Has(h Hook) bool { return h < 8 && m&(1<<h) != 0 }

// HookByName returns the hook whose built-in chain is called name.
func HookByName(name string) (Hook, bool) {
	for i, n := range hookNames {
		if n == name {
			return Hook(i), true
		}
	}
	return HookNone, false
}

// Verdict is a netfilter verdict as the kernel encodes it: the low byte is
// NF_DROP, NF_ACCEPT, ... and, for NF_QUEUE, the high 16 bits carry the queue
// number. Continue (XT_CONTINUE) means "go on with the next rule".
type Verdict uint32

const (
	Drop     Verdict = 0
	Accept   Verdict = 1
	Stolen   Verdict = 2
	Queue    Verdict = 3
	Continue Verdict = 0xffffffff

	// QueueBypass is the flag the NFQUEUE target sets for --queue-bypass.
	QueueBypass Verdict = 0x8000
)

// QueueVerdict returns the NF_QUEUE verdict for queue num.
func QueueVerdict(num uint16, bypass bool) Verdict {
	v := Verdict(num)<<16 | Queue
	if bypass {
		v |= QueueBypass
	}
	return v
}

// Base returns the verdict without queue number and flags.
func (v Verdict) Base() Verdict {
	if v == Continue {
		return v
	}
	return v & 0xff
}

func (v Verdict) String() string {
	switch v.Base() {
	case Drop:
		return "DROP"
	case Accept:
		return "ACCEPT"
	case Stolen:
		return "STOLEN"
	case Queue:
		return fmt.Sprintf("QUEUE %d", v>>16)
	case Continue:
		return "CONTINUE"
	}
	return fmt.Sprintf("VERDICT(%d)", uint32(v))
}

// EventKind says what a target asked to happen outside evaluation.
type EventKind uint8

const (
	// EventLog carries the line the kernel's LOG target would write.
	EventLog EventKind = iota + 1
	// EventReject asks for a reject packet (ICMP error or TCP RST).
	EventReject
)

// Event is a side effect requested by a target. Evaluation only records it;
// sinks (a log writer, the live daemon's reject sender) act on it later, so
// offline, benchmark and live runs share one evaluator.
type Event struct {
	Kind EventKind
	// Level is the syslog level of a LOG event (0..7).
	Level uint8
	// Reject is the --reject-with type of a REJECT event.
	Reject RejectType
	// Text is a LOG event's line (without trailing newline). It aliases the
	// Context's scratch space and is valid until the Context is reset.
	Text []byte
	// Chain and Rule name the rule whose target raised the event (Rule
	// counts from 1); the evaluator fills them in.
	Chain string
	Rule  int
}

// Context is what a match reads and a target edits while one packet
// traverses a table. The evaluator owns it and reuses it across packets, so
// nothing here allocates in steady state.
type Context struct {
	Pkt *packet.View
	// Hook is the hook at which the table is traversed.
	Hook Hook
	// Table is the table being traversed ("filter", "mangle").
	Table string
	// In and Out are the input and output interface names; empty where the
	// hook has no such device (the kernel compares against an empty name).
	In, Out string
	// Mark is the packet mark (skb->mark); MARK edits it.
	Mark uint32
	// CtMark is the conntrack mark; HasCt reports whether the packet has a
	// conntrack entry at all (connmark matches fail without one, even
	// negated). SetConntrack keeps both consistent with Ct; a caller that
	// only knows the kernel's mark (the live daemon) may set them alone.
	CtMark uint32
	HasCt  bool
	// CtMarkSet records that a target (CONNMARK) changed CtMark, so that a
	// caller whose connection lives elsewhere (the kernel's table) can
	// write the new mark back. With Ct set the change is already in the
	// table.
	CtMarkSet bool
	// Ct is what connection tracking decided for the packet before the
	// rules ran (conntrack.Table.Track at PREROUTING or OUTPUT): its
	// state, direction, a copy of its connection and a Ref through which
	// CONNMARK writes the mark. nil when nothing tracked the packet; the
	// stateful matches then see INVALID (no connection). The pointee is
	// the caller's and is reused from packet to packet.
	Ct *conntrack.Result
	// CtTable is the table Ct came from: connlimit looks up the other
	// connections it counts there. nil with Ct nil.
	CtTable *conntrack.Table
	// Now is the time rules see: the capture timestamp offline, the clock live.
	Now time.Time
	// Hotdrop is set by a match that finds the packet so broken that the
	// kernel drops it at once (e.g. a TCP header shorter than 20 bytes).
	Hotdrop bool
	// Events are appended by targets.
	Events []Event
	// scratch backs Event.Text.
	scratch []byte
	// strings caches the packet's scan by the rule set's string automaton
	// (multipattern.go), shared by all string matches of one traversal.
	strings stringScans
}

// Reset prepares c for the next packet, keeping its buffers.
func (c *Context) Reset() {
	ev, sc, ss := c.Events[:0], c.scratch[:0], c.strings
	ss.reset()
	*c = Context{Events: ev, scratch: sc, strings: ss}
}

// SetConntrack attaches the tracking result r (from table t) to the
// packet and sets HasCt and CtMark from it. r may be nil (not tracked).
func (c *Context) SetConntrack(t *conntrack.Table, r *conntrack.Result) {
	c.Ct, c.CtTable = r, t
	c.HasCt = r != nil && r.HasEntry()
	c.CtMark = 0
	if c.HasCt {
		c.CtMark = r.Entry.Mark()
	}
}

// CtState returns the packet's conntrack state, its direction and its
// connection (nil when it has none: INVALID or UNTRACKED), as
// nf_ct_get reports them to a match.
func (c *Context) CtState() (conntrack.CtInfo, conntrack.Dir, *conntrack.Entry) {
	r := c.Ct
	switch {
	case r == nil:
		return conntrack.CtInvalid, conntrack.DirOriginal, nil
	case !r.HasEntry():
		if r.Info == conntrack.CtUntracked {
			return conntrack.CtUntracked, conntrack.DirOriginal, nil
		}
		return conntrack.CtInvalid, conntrack.DirOriginal, nil
	}
	return r.Info, r.Dir, &r.Entry
}

// AppendScratch copies b into the Context's scratch space and returns the
// copy, which stays valid until Reset.
func (c *Context) AppendScratch(b []byte) []byte {
	start := len(c.scratch)
	c.scratch = append(c.scratch, b...)
	return c.scratch[start:len(c.scratch):len(c.scratch)]
}

// Match is one instance of a match extension in a rule.
type Match interface {
	// Match reports whether the packet matches. It may set c.Hotdrop.
	Match(c *Context) bool
	// Save appends the options as iptables-save prints them, each token
	// preceded by one space (" --dport 22"); the engine prints " -m NAME".
	Save(b *strings.Builder)
	// List appends what `iptables -L` prints for the match, including the
	// leading space iptables prints; numeric is -n.
	List(b *strings.Builder, numeric bool)
}

// Target is an extension target (MARK, LOG, REJECT, ...). The evaluator's
// own targets (ACCEPT, DROP, RETURN, jumps, gotos) are not extensions.
type Target interface {
	// Apply acts on the packet and returns a verdict, or Continue.
	Apply(c *Context) Verdict
	// Save appends the target's options as iptables-save prints them; the
	// engine prints " -j NAME" before them.
	Save(b *strings.Builder)
	// List appends the target's options as `iptables -L` prints them.
	List(b *strings.Builder, numeric bool)
}

// Option describes one command-line option of an extension.
type Option struct {
	// Name is the canonical long name without dashes ("dport").
	Name string
	// Aliases are other accepted long names ("destination-port").
	Aliases []string
	// Args is the number of arguments the option takes (0, 1 or 2).
	Args int
	// Invert reports whether "! --name" is allowed.
	Invert bool
	// Repeat allows the option more than once in one instance.
	Repeat bool
}

// Rule describes the rule an extension instance is built into, for the
// checks iptables and the kernel make (e.g. "-m tcp needs -p tcp").
type Rule struct {
	Table string
	Chain string
	// Proto is the rule's -p protocol (0 = any); InvProto its negation.
	Proto    uint8
	InvProto bool
}

// MatchBuilder collects the options of one match instance.
type MatchBuilder interface {
	// Parse handles one occurrence of the option called name (Option.Name).
	Parse(name string, args []string, invert bool) error
	// Build checks the options as a whole against the rule. A nil Match
	// with a nil error means the instance constrains nothing and is left
	// out of the rule (iptables-nft emits nothing for it and prints
	// nothing back).
	Build(r *Rule) (Match, error)
}

// TargetBuilder collects the options of one target.
type TargetBuilder interface {
	Parse(name string, args []string, invert bool) error
	Build(r *Rule) (Target, error)
}

// MatchExt registers a match extension.
type MatchExt struct {
	Name    string
	Options []Option
	New     func() MatchBuilder
}

// TargetExt registers a target extension.
type TargetExt struct {
	Name    string
	Options []Option
	New     func() TargetBuilder
	// Tables lists the tables the target may be used in (nil = any).
	Tables []string
	// Hooks restricts the hooks from which the target may be reached
	// (0 = any), checked when a table is loaded, as the kernel does.
	Hooks HookMask
}

var (
	matchExts  = map[string]*MatchExt{}
	targetExts = map[string]*TargetExt{}
)

// RegisterMatch adds a match extension. It is called from init functions only.
func RegisterMatch(e *MatchExt) {
	if _, dup := matchExts[e.Name]; dup {
		panic("matchers: duplicate match " + e.Name)
	}
	matchExts[e.Name] = e
}

// RegisterTarget adds a target extension. It is called from init functions only.
func RegisterTarget(e *TargetExt) {
	if _, dup := targetExts[e.Name]; dup {
		panic("matchers: duplicate target " + e.Name)
	}
	targetExts[e.Name] = e
}

// LookupMatch returns the match extension called name.
func LookupMatch(name string) (*MatchExt, bool) { e, ok := matchExts[name]; return e, ok }

// LookupTarget returns the target extension called name.
func LookupTarget(name string) (*TargetExt, bool) { e, ok := targetExts[name]; return e, ok }

// MatchNames lists the registered match extensions, sorted.
func MatchNames() []string { return sortedKeys(matchExts) }

// TargetNames lists the registered target extensions, sorted.
func TargetNames() []string { return sortedKeys(targetExts) }

func sortedKeys[T any](m map[string]T) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// FindOption returns the option of opts called name (canonical or alias).
func FindOption(opts []Option, name string) (*Option, bool) {
	for i := range opts {
		if opts[i].Name == name {
			return &opts[i], true
		}
		for _, a := range opts[i].Aliases {
			if a == name {
				return &opts[i], true
			}
		}
	}
	return nil, false
}

// RejectType is the --reject-with type of a REJECT target, in the order of
// iptables' table (which is also the order its prefix matching tries).
type RejectType uint8

const (
	RejectNetUnreachable RejectType = iota
	RejectHostUnreachable
	RejectProtoUnreachable
	RejectPortUnreachable
	RejectNetProhibited
	RejectHostProhibited
	RejectTCPReset
	RejectAdminProhibited
)
