package matchers

import (
	"fmt"
	"strings"

	"github.com/qtables/qtables/packet"
)

// REJECT drops the packet and asks for an error reply: an ICMP destination
// unreachable of some code, or a TCP RST. Evaluation only records the
// request as an EventReject; the live daemon builds and sends the reply
// (using RejectType.ICMP), so offline runs see the same verdicts.
func init() {
	RegisterTarget(&TargetExt{
		Name:    "REJECT",
		Options: []Option{{Name: "reject-with", Args: 1}},
		New:     func() TargetBuilder { return &rejectTargetBuilder{typ: RejectPortUnreachable} },
		// The kernel registers ipt_REJECT for the filter table and the
		// INPUT, FORWARD and OUTPUT hooks only.
		Tables: []string{"filter"},
		Hooks:  1<<HookInput | 1<<HookForward | 1<<HookOutput,
	})
}

// rejectNames is iptables' table of reject types, indexed by RejectType,
// in the order its prefix matching tries them.
var rejectNames = [...]struct {
	name, alias string
	icmpCode    uint8
}{
	RejectNetUnreachable:   {"icmp-net-unreachable", "net-unreach", 0},
	RejectHostUnreachable:  {"icmp-host-unreachable", "host-unreach", 1},
	RejectProtoUnreachable: {"icmp-proto-unreachable", "proto-unreach", 2},
	RejectPortUnreachable:  {"icmp-port-unreachable", "port-unreach", 3},
	RejectNetProhibited:    {"icmp-net-prohibited", "net-prohib", 9},
	RejectHostProhibited:   {"icmp-host-prohibited", "host-prohib", 10},
	RejectTCPReset:         {"tcp-reset", "tcp-rst", 0},
	RejectAdminProhibited:  {"icmp-admin-prohibited", "admin-prohib", 13},
}

// String returns the full iptables name ("icmp-port-unreachable").
func (t RejectType) String() string {
	if int(t) < len(rejectNames) {
		return rejectNames[t].name
	}
	return fmt.Sprintf("RejectType(%d)", uint8(t))
}

// ICMPDestUnreachable is the ICMP type of every ICMP reply REJECT sends.
const ICMPDestUnreachable = 3

// ICMP returns the ICMP type and code of the error reply for t. ok is false
// for RejectTCPReset (the reply is a TCP RST) and for unknown values.
func (t RejectType) ICMP() (typ, code uint8, ok bool) {
	if int(t) >= len(rejectNames) || t == RejectTCPReset {
		return 0, 0, false
	}
	return ICMPDestUnreachable, rejectNames[t].icmpCode, true
}

// ParseRejectType resolves a --reject-with argument as iptables does: the
// first entry of the table whose full name or alias starts with s, compared
// without regard to ASCII case. An empty s therefore selects the first entry.
func ParseRejectType(s string) (RejectType, error) {
	for i, n := range rejectNames {
		if hasPrefixFold(n.name, s) || hasPrefixFold(n.alias, s) {
			return RejectType(i), nil
		}
	}
	if hasPrefixFold("echo-reply", s) || hasPrefixFold("echoreply", s) {
		return 0, fmt.Errorf("--reject-with echo-reply no longer supported")
	}
	return 0, fmt.Errorf("unknown reject type %q", s)
}

// RejectTarget is a REJECT target.
type RejectTarget struct {
	With RejectType
}

// Apply records the reply to send and drops the packet. Whether a reply is
// actually sent (never for non-first fragments, ICMP errors, broadcasts...)
// is the sender's decision, as in the kernel, where the target always
// returns NF_DROP.
func (t *RejectTarget) Apply(c *Context) Verdict {
	c.Events = append(c.Events, Event{Kind: EventReject, Reject: t.With})
	return Drop
}

// Save prints " --reject-with FULLNAME", also for the default type.
func (t *RejectTarget) Save(b *strings.Builder) {
	b.WriteString(" --reject-with ")
	b.WriteString(t.With.String())
}

// List prints " reject-with FULLNAME" (the same with and without -n).
func (t *RejectTarget) List(b *strings.Builder, numeric bool) {
	b.WriteString(" reject-with ")
	b.WriteString(t.With.String())
}

type rejectTargetBuilder struct {
	seen bool
	typ  RejectType
}

func (rb *rejectTargetBuilder) Parse(name string, args []string, invert bool) error {
	if name != "reject-with" {
		return fmt.Errorf("unknown option \"--%s\"", name)
	}
	if invert {
		return fmt.Errorf("option \"--reject-with\" %w", ErrInvert)
	}
	if rb.seen {
		return fmt.Errorf("option \"--reject-with\" can only be used once")
	}
	if len(args) != 1 {
		return fmt.Errorf("option \"--reject-with\" requires an argument")
	}
	typ, err := ParseRejectType(args[0])
	if err != nil {
		return err
	}
	rb.seen, rb.typ = true, typ
	return nil
}

// Build makes the kernel's checkentry tests: tcp-reset needs the rule to
// match TCP only (-p tcp, not inverted).
func (rb *rejectTargetBuilder) Build(r *Rule) (Target, error) {
	if r.Table != "" && r.Table != "filter" {
		return nil, fmt.Errorf("only valid in the filter table, not %q", r.Table)
	}
	if rb.typ == RejectTCPReset && (r.Proto != packet.ProtoTCP || r.InvProto) {
		return nil, fmt.Errorf("--reject-with tcp-reset is only valid with -p tcp (kernel: TCP_RESET invalid for non-tcp)")
	}
	return &RejectTarget{With: rb.typ}, nil
}
