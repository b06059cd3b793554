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
	switch {
	case t.Value == 0:
		b.WriteString(" MARK and ")
		WriteHex(b, ^t.Mask)
	case t.Value == t.Mask:
		b.WriteString(" MARK or ")
		WriteHex(b, t.Value)
	case t.Mask == 0:
		b.WriteString(" MARK xor ")
		WriteHex(b, t.Value)
	case t.Mask == 0xffffffff:
		b.WriteString(" MARK set ")
		WriteHex(b, t.Value)
	default:
		b.WriteString(" MARK xset ")
		WriteHex(b, t.Value)
		b.WriteByte('/')
		WriteHex(b, t.Mask)
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
		v, m, err := tgtParseMarkMask(arg)
		if err != nil {
			return fmt.Errorf("option \"--%s\": %w", name, err)
		}
		if name == "set-mark" {
			// Clear the bits of the mask and of the value, then set the value.
			m |= v
		}
		mb.t = MarkTarget{Value: v, Mask: m}
	case "and-mark", "or-mark", "xor-mark":
		v, ok := tgtParseUint(arg, 0xffffffff)
		if !ok {
			return fmt.Errorf("bad value for option \"--%s\", or out of range (0-4294967295)", name)
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

// tgtParseMarkMask parses VALUE[/MASK] as xtables' markmask option type does
// (strtoul rules for both parts, mask default 0xffffffff).
func tgtParseMarkMask(s string) (value, mask uint32, err error) {
	v, rest, ok := tgtStrtoul(s, 0xffffffff)
	if !ok {
		return 0, 0, fmt.Errorf("bad mark value %q, or out of range", s)
	}
	mask = 0xffffffff
	if strings.HasPrefix(rest, "/") {
		m, r, ok := tgtStrtoul(rest[1:], 0xffffffff)
		if !ok {
			return 0, 0, fmt.Errorf("bad mask value %q, or out of range", s)
		}
		mask, rest = uint32(m), r
	}
	if rest != "" {
		return 0, 0, fmt.Errorf("trailing garbage after value %q", s)
	}
	return uint32(v), mask, nil
}

// tgtParseUint parses all of s as xtables_strtoul does, with 0 <= v <= max.
func tgtParseUint(s string, max uint64) (uint64, bool) {
	v, rest, ok := tgtStrtoul(s, max)
	return v, ok && rest == ""
}

// tgtStrtoul reads a number at the start of s the way xtables_strtoul (that
// is, strtoumax with base 0) reads it: optional leading white space, an
// optional '+' (a '-' is refused), then 0x/0X hex, leading-0 octal or
// decimal. It returns the value and the unread rest of s; ok is false when
// no digit was read or the value exceeds max. Go's strconv is not used
// because base 0 there also accepts "0b", "0o" and '_' separators, which
// iptables refuses.
func tgtStrtoul(s string, max uint64) (v uint64, rest string, ok bool) {
	i := 0
	for i < len(s) && (s[i] == ' ' || s[i] >= '\t' && s[i] <= '\r') {
		i++
	}
	if i < len(s) && s[i] == '-' {
		return 0, s, false
	}
	if i < len(s) && s[i] == '+' {
		i++
	}
	base := uint64(10)
	if i+2 < len(s) && s[i] == '0' && s[i+1]|0x20 == 'x' && tgtDigit(s[i+2], 16) >= 0 {
		base, i = 16, i+2
	} else if i < len(s) && s[i] == '0' {
		base = 8
	}
	start := i
	overflow := false
	for ; i < len(s); i++ {
		d := tgtDigit(s[i], base)
		if d < 0 {
			break
		}
		if v > (^uint64(0)-uint64(d))/base {
			overflow = true
		}
		v = v*base + uint64(d)
	}
	if i == start {
		return 0, s, false
	}
	if overflow || v > max {
		return 0, s[i:], false
	}
	return v, s[i:], true
}

func tgtDigit(c byte, base uint64) int {
	var d int
	switch {
	case c >= '0' && c <= '9':
		d = int(c - '0')
	case c >= 'a' && c <= 'f':
		d = int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		d = int(c-'A') + 10
	default:
		return -1
	}
	if uint64(d) >= base {
		return -1
	}
	return d
}
