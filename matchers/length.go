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
	lo, hi, err := parseUint16Range(args[0])
	if err != nil {
		return err
	}
	b.m = lengthMatch{min: lo, max: hi, inv: invert}
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

// parseUint16Range parses N, A:B, :B, A: or : as iptables' guided parser
// does for u16 ranges: base-0 numbers, a missing lower end is 0 and a
// missing upper end 65535, a single N is N:N. A reversed range is
// accepted (iptables 1.8.9 does; it never matches).
func parseUint16Range(s string) (lo, hi uint16, err error) {
	parts := strings.Split(s, ":")
	if len(parts) > 2 {
		return 0, 0, fmt.Errorf("too many components in %q (max: 2)", s)
	}
	v := [2]uint16{0, 0xffff}
	for i, p := range parts {
		if p == "" {
			continue
		}
		n, ok := parseXUint(p, 0xffff)
		if !ok {
			return 0, 0, fmt.Errorf("bad value %q, or out of range (0-65535)", p)
		}
		v[i] = uint16(n)
	}
	if len(parts) == 1 {
		v[1] = v[0]
	}
	return v[0], v[1], nil
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
