package matchers

import (
	"errors"
	"fmt"
	"strings"
)

// The connmark match (kernel xt_connmark.c connmark_mt, iptables
// libxt_connmark.c revision 1). iptables 1.8.9 loads the xt match; `nft
// list ruleset` only displays it as "ct mark ...".

func init() {
	RegisterMatch(&MatchExt{
		Name:    "connmark",
		Options: []Option{{Name: "mark", Args: 1, Invert: true}},
		New:     func() MatchBuilder { return &connmarkBuilder{} },
	})
}

// connmarkMatch tests (ct mark AND mask) == value. The value is not ANDed
// with the mask at parse time, so --mark 0x3/0x1 never matches.
type connmarkMatch struct {
	value, mask uint32
	inv         bool
}

type connmarkBuilder struct {
	m   connmarkMatch
	set bool
}

func (b *connmarkBuilder) Parse(name string, args []string, invert bool) error {
	if name != "mark" {
		return fmt.Errorf("unknown option --%s", name)
	}
	if b.set {
		return errors.New(`connmark: option "--mark" can only be used once`)
	}
	v, m, err := ParseMark(args[0])
	if err != nil {
		return fmt.Errorf("connmark: %w", err)
	}
	b.m, b.set = connmarkMatch{value: v, mask: m, inv: invert}, true
	return nil
}

func (b *connmarkBuilder) Build(*Rule) (Match, error) {
	if !b.set {
		return nil, errors.New(`connmark: option "--mark" must be specified`)
	}
	m := b.m
	return &m, nil
}

// Match is connmark_mt: a packet without a connection never matches, even
// with "!".
func (m *connmarkMatch) Match(c *Context) bool {
	if !c.HasCt {
		return false
	}
	return (c.CtMark&m.mask == m.value) != m.inv
}

// Save prints " [!] --mark 0xV[/0xM]", the mask only when not all ones.
func (m *connmarkMatch) Save(b *strings.Builder) {
	writeInv(b, m.inv)
	b.WriteString(" --mark ")
	writeMarkMask(b, m.value, m.mask)
}

// List prints " connmark match [!] 0xV[/0xM]": iptables prints " !" or
// a space before the value, hence two spaces when not inverted.
func (m *connmarkMatch) List(b *strings.Builder, _ bool) {
	b.WriteString(" connmark match ")
	if m.inv {
		b.WriteString("!")
	}
	b.WriteByte(' ')
	writeMarkMask(b, m.value, m.mask)
}
