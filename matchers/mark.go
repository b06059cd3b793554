package matchers

import (
	"errors"
	"fmt"
	"strings"
)

// The mark match (kernel xt_mark.c mark_mt, iptables libxt_mark.c).

func init() {
	RegisterMatch(&MatchExt{
		Name:    "mark",
		Options: []Option{{Name: "mark", Args: 1, Invert: true}},
		New:     func() MatchBuilder { return &markBuilder{} },
	})
}

// markMatch tests (packet mark AND mask) == value. The value is not ANDed
// with the mask at parse time, so --mark 0x3/0x1 never matches.
type markMatch struct {
	value, mask uint32
	inv         bool
}

type markBuilder struct {
	m   markMatch
	set bool
}

func (b *markBuilder) Parse(name string, args []string, invert bool) error {
	if name != "mark" {
		return fmt.Errorf("unknown option --%s", name)
	}
	if b.set {
		return errors.New("only one --mark allowed")
	}
	v, m, err := ParseMark(args[0])
	if err != nil {
		return err
	}
	b.m = markMatch{value: v, mask: m, inv: invert}
	b.set = true
	return nil
}

func (b *markBuilder) Build(*Rule) (Match, error) {
	if !b.set {
		return nil, errors.New("option --mark must be specified")
	}
	m := b.m
	return &m, nil
}

// Match is mark_mt.
func (m *markMatch) Match(c *Context) bool {
	return (c.Mark&m.mask == m.value) != m.inv
}

// Save prints " [!] --mark 0xV[/0xM]", the mask only when not all ones.
func (m *markMatch) Save(b *strings.Builder) {
	writeInv(b, m.inv)
	b.WriteString(" --mark ")
	writeMarkMask(b, m.value, m.mask)
}

// List prints " mark match [!] 0xV[/0xM]".
func (m *markMatch) List(b *strings.Builder, _ bool) {
	b.WriteString(" mark match")
	writeInv(b, m.inv)
	b.WriteByte(' ')
	writeMarkMask(b, m.value, m.mask)
}

func writeMarkMask(b *strings.Builder, v, mask uint32) {
	WriteHex(b, v)
	if mask != 0xffffffff {
		b.WriteByte('/')
		WriteHex(b, mask)
	}
}
