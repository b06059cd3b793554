package matchers

import (
	"errors"
	"fmt"
	"strings"
)

// MARK sets the packet mark (skb->mark). Every option form is reduced, as
// iptables does, to one (value, mask) pair applied as
// mark = (mark AND NOT mask) XOR value; that pair is also what the kernel
// stores and what iptables-save prints.
func init() {
	RegisterTarget(&TargetExt{
		Name: "MARK",
		Options: []Option{
			{Name: "set-xmark", Args: 1},
			{Name: "set-mark", Args: 1},
			{Name: "and-mark", Args: 1},
			{Name: "or-mark", Args: 1},
			{Name: "xor-mark", Args: 1},
		},
		New: func() TargetBuilder { return &markTargetBuilder{} },
		// Any table: the kernel's MARK revision 2 has no table restriction
		// (the installed iptables loads it into nat and raw as well).
	})
}

// MarkTarget is a MARK target: mark = (mark AND NOT Mask) XOR Value.
type MarkTarget struct {
	Value, Mask uint32
}

// Apply edits c.Mark and continues with the next rule.
func (t *MarkTarget) Apply(c *Context) Verdict {
	c.Mark = c.Mark&^t.Mask ^ t.Value
	return Continue
}

// Save prints the canonical form, always " --set-xmark 0xV/0xM".
func (t *MarkTarget) Save(b *strings.Builder) {
	b.WriteString(" --set-xmark ")
	WriteHex(b, t.Value)
	b.WriteByte('/')
	WriteHex(b, t.Mask)
}

// List prints what libxt_MARK prints for -L: the simplest of and/or/xor/set
// that describes (Value, Mask), tried in that order, else xset.
func (t *MarkTarget) List(b *strings.Builder, numeric bool) {
	listXmark(b, " MARK ", t.Value, t.Mask)
}

// listXmark prints a (value, mask) mark operation as libxt_MARK and
// libxt_CONNMARK print it for -L: the simplest of and/or/xor/set that
// describes it, tried in that order, else xset; name is " MARK " or
// " CONNMARK ".
func listXmark(b *strings.Builder, name string, value, mask uint32) {
	b.WriteString(name)
	switch {
	case value == 0:
		b.WriteString("and ")
		WriteHex(b, ^mask)
	case value == mask:
		b.WriteString("or ")
		WriteHex(b, value)
	case mask == 0:
		b.WriteString("xor ")
		WriteHex(b, value)
	case mask == 0xffffffff:
		b.WriteString("set ")
		WriteHex(b, value)
	default:
		b.WriteString("xset ")
		WriteHex(b, value)
		b.WriteByte('/')
		WriteHex(b, mask)
	}
}

type markTargetBuilder struct {
	opt string // the one option given, "" if none yet
	t   MarkTarget
}

func (mb *markTargetBuilder) Parse(name string, args []string, invert bool) error {
	if invert {
		return fmt.Errorf("option \"--%s\" %w", name, ErrInvert)
	}
	if len(args) != 1 {
		return fmt.Errorf("option \"--%s\" requires an argument", name)
	}
	if mb.opt != "" {
		if mb.opt == name {
			return fmt.Errorf("option \"--%s\" can only be used once", name)
		}
		return fmt.Errorf("option \"--%s\" cannot be used together with \"--%s\"", mb.opt, name)
	}
	arg := args[0]
	switch name {
	case "set-xmark", "set-mark":
		v, m, err := ParseMark(arg)
		if err != nil {
			return fmt.Errorf("option \"--%s\": %w", name, err)
		}
		if name == "set-mark" {
			// Clear the bits of the mask and of the value, then set the value.
			m |= v
		}
		mb.t = MarkTarget{Value: v, Mask: m}
	case "and-mark", "or-mark", "xor-mark":
		v, err := ParseUint(arg, 0xffffffff)
		if err != nil {
			return fmt.Errorf("option \"--%s\": %w", name, err)
		}
		b := uint32(v)
		switch name {
		case "and-mark":
			mb.t = MarkTarget{Value: 0, Mask: ^b}
		case "or-mark":
			mb.t = MarkTarget{Value: b, Mask: b}
		default:
			mb.t = MarkTarget{Value: b, Mask: 0}
		}
	default:
		return fmt.Errorf("unknown option \"--%s\"", name)
	}
	mb.opt = name
	return nil
}

var errMarkNoOption = errors.New("one of the --set-xmark, --{and,or,xor,set}-mark options is required")

func (mb *markTargetBuilder) Build(r *Rule) (Target, error) {
	if mb.opt == "" {
		return nil, errMarkNoOption
	}
	t := mb.t
	return &t, nil
}
