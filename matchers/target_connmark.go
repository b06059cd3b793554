package matchers

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The CONNMARK target (kernel xt_connmark.c connmark_tg revision 2,
// iptables libxt_CONNMARK.c). iptables 1.8.9 loads the xt target; `nft
// list ruleset` only displays it as "ct mark set ...", and for
// --restore-mark --mask M even as "meta mark set ct mark and M", which is
// not what runs: the kernel keeps the packet mark's bits outside M.
func init() {
	RegisterTarget(&TargetExt{
		Name: "CONNMARK",
		Options: []Option{
			{Name: "set-xmark", Args: 1},
			{Name: "set-mark", Args: 1},
			{Name: "and-mark", Args: 1},
			{Name: "or-mark", Args: 1},
			{Name: "xor-mark", Args: 1},
			{Name: "save-mark"},
			{Name: "restore-mark"},
			{Name: "left-shift-mark", Args: 1},
			{Name: "right-shift-mark", Args: 1},
			{Name: "ctmask", Args: 1},
			{Name: "nfmask", Args: 1},
			{Name: "mask", Args: 1},
		},
		New: func() TargetBuilder {
			return &connmarkTargetBuilder{t: ConnmarkTarget{CtMask: ^uint32(0), NfMask: ^uint32(0)}}
		},
	})
}

// ConnmarkMode is what a CONNMARK target does (XT_CONNMARK_*).
type ConnmarkMode uint8

const (
	// ConnmarkSet: ct mark = ((ct mark AND NOT CtMask) XOR CtMark) shifted.
	ConnmarkSet ConnmarkMode = iota
	// ConnmarkSave: ct mark = (ct mark AND NOT CtMask) XOR ((packet mark AND NfMask) shifted).
	ConnmarkSave
	// ConnmarkRestore: packet mark = (packet mark AND NOT NfMask) XOR ((ct mark AND CtMask) shifted).
	ConnmarkRestore
)

// ConnmarkTarget is the kernel's xt_connmark_tginfo2. Every --set-mark,
// --and-mark, ... form is reduced to (CtMark, CtMask) at parse time, as
// iptables does; that pair is also what iptables-save prints.
type ConnmarkTarget struct {
	Mode           ConnmarkMode
	CtMark, CtMask uint32
	NfMask         uint32
	// ShiftRight selects the direction of a non-zero Shift.
	ShiftRight bool
	Shift      uint8
}

func (t *ConnmarkTarget) shift(v uint32) uint32 {
	if t.ShiftRight {
		return v >> t.Shift
	}
	return v << t.Shift
}

// newCtMark is the connection mark the target computes from old.
func (t *ConnmarkTarget) newCtMark(old, pktMark uint32) uint32 {
	if t.Mode == ConnmarkSave {
		return old&^t.CtMask ^ t.shift(pktMark&t.NfMask)
	}
	return t.shift(old&^t.CtMask ^ t.CtMark)
}

// Apply is connmark_tg_shift. A packet without a connection is left
// alone. The new connection mark goes into the table through the Ref
// (under the entry's lock, so concurrent workers do not lose updates) and
// into c.CtMark for the rest of the traversal.
func (t *ConnmarkTarget) Apply(c *Context) Verdict {
	if !c.HasCt {
		return Continue
	}
	if t.Mode == ConnmarkRestore {
		c.Mark = c.Mark&^t.NfMask ^ t.shift(c.CtMark&t.CtMask)
		return Continue
	}
	pkt := c.Mark
	if c.Ct != nil && c.Ct.HasEntry() {
		if m, ok := c.Ct.Ref.UpdateMarkWith(func(old uint32) uint32 { return t.newCtMark(old, pkt) }); ok {
			c.CtMark = m
			return Continue
		}
	}
	// A connection that has just been deleted (a RST before any reply)
	// keeps its mark for the rest of this traversal; a connection that
	// lives elsewhere (the kernel's) is written back by the caller.
	if m := t.newCtMark(c.CtMark, pkt); m != c.CtMark {
		c.CtMark, c.CtMarkSet = m, true
	}
	return Continue
}

// Save prints " --set-xmark 0xV/0xM" or " --save-mark|--restore-mark
// --nfmask 0xN --ctmask 0xC", then a non-zero shift.
func (t *ConnmarkTarget) Save(b *strings.Builder) {
	switch t.Mode {
	case ConnmarkSet:
		b.WriteString(" --set-xmark ")
		WriteHex(b, t.CtMark)
		b.WriteByte('/')
		WriteHex(b, t.CtMask)
	case ConnmarkSave, ConnmarkRestore:
		if t.Mode == ConnmarkSave {
			b.WriteString(" --save-mark --nfmask ")
		} else {
			b.WriteString(" --restore-mark --nfmask ")
		}
		WriteHex(b, t.NfMask)
		b.WriteString(" --ctmask ")
		WriteHex(b, t.CtMask)
	}
	t.writeShift(b, "--")
}

func (t *ConnmarkTarget) writeShift(b *strings.Builder, prefix string) {
	if t.Shift == 0 {
		return
	}
	b.WriteByte(' ')
	b.WriteString(prefix)
	if t.ShiftRight {
		b.WriteString("right-shift-mark ")
	} else {
		b.WriteString("left-shift-mark ")
	}
	b.WriteString(strconv.Itoa(int(t.Shift)))
}

// List prints what libxt_CONNMARK's connmark_tg_print_v2 prints: the
// simplest of and/or/xor/set/xset that describes (CtMark, CtMask); "save"
// or "restore" with "mask M" when both masks are equal and not all ones,
// else "nfmask N ctmask ~C" (save) or "ctmask C nfmask ~N" (restore).
func (t *ConnmarkTarget) List(b *strings.Builder, _ bool) {
	switch t.Mode {
	case ConnmarkSet:
		listXmark(b, " CONNMARK ", t.CtMark, t.CtMask)
	case ConnmarkSave:
		b.WriteString(" CONNMARK save")
		t.listMasks(b, "nfmask ", t.NfMask, " ctmask ~", t.CtMask)
	case ConnmarkRestore:
		b.WriteString(" CONNMARK restore")
		t.listMasks(b, "ctmask ", t.CtMask, " nfmask ~", t.NfMask)
	}
	t.writeShift(b, "")
}

func (t *ConnmarkTarget) listMasks(b *strings.Builder, n1 string, m1 uint32, n2 string, m2 uint32) {
	switch {
	case t.NfMask == 0xffffffff && t.CtMask == 0xffffffff:
	case t.NfMask == t.CtMask:
		b.WriteString(" mask ")
		WriteHex(b, t.NfMask)
	default:
		b.WriteByte(' ')
		b.WriteString(n1)
		WriteHex(b, m1)
		b.WriteString(n2)
		WriteHex(b, m2)
	}
}

// connmarkTargetBuilder applies the options in the order given, as
// libxt_CONNMARK's parser writes them into one structure: an operation
// sets the mode (and, for the set forms, both CtMark and CtMask);
// --ctmask, --nfmask and --mask overwrite the masks whenever they come,
// so "--set-mark 1 --ctmask 0xff" is --set-xmark 0x1/0xff but
// "--ctmask 0xff --set-mark 1" is --set-xmark 0x1/0xffffffff, and both
// masks start as all ones.
type connmarkTargetBuilder struct {
	t    ConnmarkTarget
	op   string // the operation given, "" if none yet
	seen map[string]bool
}

// connmarkOptOrder is an option's place in libxt_CONNMARK's table.
func connmarkOptOrder(name string) int {
	for i, n := range [...]string{"set-xmark", "set-mark", "and-mark", "or-mark", "xor-mark",
		"save-mark", "restore-mark", "left-shift-mark", "right-shift-mark", "ctmask", "nfmask", "mask"} {
		if n == name {
			return i
		}
	}
	return -1
}

var connmarkOps = map[string]bool{"set-xmark": true, "set-mark": true, "and-mark": true,
	"or-mark": true, "xor-mark": true, "save-mark": true, "restore-mark": true}

func (mb *connmarkTargetBuilder) Parse(name string, args []string, invert bool) error {
	if invert {
		return fmt.Errorf("CONNMARK: option \"--%s\" %w", name, ErrInvert)
	}
	if mb.seen[name] {
		return fmt.Errorf("CONNMARK: option \"--%s\" can only be used once", name)
	}
	// Conflicts. iptables finds them after all options, naming the two
	// in the order of its option table.
	other := ""
	switch {
	case connmarkOps[name] && mb.op != "":
		other = mb.op
	case name == "mask" && mb.seen["ctmask"]:
		other = "ctmask"
	case name == "mask" && mb.seen["nfmask"]:
		other = "nfmask"
	case (name == "ctmask" || name == "nfmask") && mb.seen["mask"]:
		other = "mask"
	}
	if other != "" {
		a, b := other, name
		if connmarkOptOrder(b) < connmarkOptOrder(a) {
			a, b = b, a
		}
		return fmt.Errorf("CONNMARK: option \"--%s\" cannot be used together with \"--%s\"", a, b)
	}
	t := &mb.t
	arg := ""
	if len(args) > 0 {
		arg = args[0]
	}
	u32 := func() (uint32, error) {
		v, err := ParseUint(arg, 0xffffffff)
		if err != nil {
			return 0, fmt.Errorf("CONNMARK: bad value for option \"--%s\": %w", name, err)
		}
		return uint32(v), nil
	}
	switch name {
	case "set-xmark", "set-mark":
		v, m, err := ParseMark(arg)
		if err != nil {
			return fmt.Errorf("CONNMARK: option \"--%s\": %w", name, err)
		}
		if name == "set-mark" {
			m |= v
		}
		t.Mode, t.CtMark, t.CtMask = ConnmarkSet, v, m
	case "and-mark", "or-mark", "xor-mark":
		v, err := u32()
		if err != nil {
			return err
		}
		switch name {
		case "and-mark":
			t.CtMark, t.CtMask = 0, ^v
		case "or-mark":
			t.CtMark, t.CtMask = v, v
		default:
			t.CtMark, t.CtMask = v, 0
		}
		t.Mode = ConnmarkSet
	case "save-mark":
		t.Mode = ConnmarkSave
	case "restore-mark":
		t.Mode = ConnmarkRestore
	case "left-shift-mark", "right-shift-mark":
		v, err := ParseUint(arg, 32)
		if err != nil {
			return fmt.Errorf("CONNMARK: bad value for option \"--%s\", or out of range (0-32)", name)
		}
		t.Shift, t.ShiftRight = uint8(v), name == "right-shift-mark"
	case "ctmask", "nfmask", "mask":
		v, err := u32()
		if err != nil {
			return err
		}
		if name != "nfmask" {
			t.CtMask = v
		}
		if name != "ctmask" {
			t.NfMask = v
		}
	default:
		return fmt.Errorf("unknown option \"--%s\"", name)
	}
	if connmarkOps[name] {
		mb.op = name
	}
	if mb.seen == nil {
		mb.seen = map[string]bool{}
	}
	mb.seen[name] = true
	return nil
}

func (mb *connmarkTargetBuilder) Build(*Rule) (Target, error) {
	if mb.op == "" {
		return nil, errors.New("CONNMARK target: No operation specified")
	}
	// iptables accepts a shift of 32; the kernel's checkentry refuses
	// anything above 31 (EINVAL when the rule is loaded).
	if mb.t.Shift > 31 {
		return nil, fmt.Errorf("CONNMARK: shift of %d bits is refused by the kernel (at most 31)", mb.t.Shift)
	}
	t := mb.t
	return &t, nil
}
