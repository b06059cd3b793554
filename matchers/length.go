package matchers

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The length match (kernel xt_length.c length_mt, iptables libxt_length.c).

func init() {
	RegisterMatch(&MatchExt{
		Name:    "length",
		Options: []Option{{Name: "length", Args: 1, Invert: true}},
		New:     func() MatchBuilder { return &lengthBuilder{} },
	})
}

// lengthMatch tests the IPv4 total length (header and payload).
type lengthMatch struct {
	min, max uint16
	inv      bool
}

type lengthBuilder struct {
	m   lengthMatch
	set bool
}

func (b *lengthBuilder) Parse(name string, args []string, invert bool) error {
	if name != "length" {
		return fmt.Errorf("unknown option --%s", name)
	}
	if b.set {
		return errors.New("only one --length allowed")
	}
	// A reversed range is accepted (iptables 1.8.9 does; it never
	// matches), and a single N is N:N.
	v, n, err := parseUintRange(args[0], 0xffff)
	if err != nil {
		return err
	}
	if n == 1 {
		v[1] = v[0]
	}
	b.m = lengthMatch{min: uint16(v[0]), max: uint16(v[1]), inv: invert}
	b.set = true
	return nil
}

func (b *lengthBuilder) Build(*Rule) (Match, error) {
	if !b.set {
		return nil, errors.New("option --length must be specified")
	}
	m := b.m
	return &m, nil
}

// Match is length_mt: min <= total length <= max, XOR the inversion.
func (m *lengthMatch) Match(c *Context) bool {
	l := c.Pkt.Len
	return (l >= int(m.min) && l <= int(m.max)) != m.inv
}

// Save prints " [!] --length N" or " [!] --length A:B".
func (m *lengthMatch) Save(b *strings.Builder) {
	writeInv(b, m.inv)
	b.WriteString(" --length")
	SavePortRange(b, PortRange{m.min, m.max})
}

// List prints " length N", " length A:B" or " length !A:B".
func (m *lengthMatch) List(b *strings.Builder, _ bool) {
	b.WriteString(" length ")
	if m.inv {
		b.WriteByte('!')
	}
	b.WriteString(strconv.Itoa(int(m.min)))
	if m.min != m.max {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(int(m.max)))
	}
}
