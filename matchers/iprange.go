package matchers

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// The iprange match, revision 1 (kernel xt_iprange.c iprange_mt4,
// iptables libxt_iprange.c).

func init() {
	RegisterMatch(&MatchExt{
		Name: "iprange",
		Options: []Option{
			{Name: "src-range", Args: 1, Invert: true},
			{Name: "dst-range", Args: 1, Invert: true},
		},
		New: func() MatchBuilder { return &iprangeBuilder{} },
	})
}

// addrRange is an inclusive IPv4 range in host byte order. A reversed
// range (min > max) is allowed and never matches, as in the kernel.
type addrRange struct {
	min, max uint32
	set, inv bool
}

// matchAddr reports whether a is in r, XOR the inversion; an address that
// is not IPv4 never matches.
func (r *addrRange) matchAddr(a netip.Addr) bool {
	if !a.Is4() {
		return false
	}
	b := a.As4()
	v := binary.BigEndian.Uint32(b[:])
	return (v >= r.min && v <= r.max) != r.inv
}

// iprangeMatch is one -m iprange instance.
type iprangeMatch struct {
	src, dst addrRange
}

type iprangeBuilder struct {
	m iprangeMatch
}

func (b *iprangeBuilder) Parse(name string, args []string, invert bool) error {
	var r *addrRange
	switch name {
	case "src-range":
		r = &b.m.src
	case "dst-range":
		r = &b.m.dst
	default:
		return fmt.Errorf("unknown option --%s", name)
	}
	if r.set {
		return fmt.Errorf("only one --%s allowed", name)
	}
	lo, hi, isRange := strings.Cut(args[0], "-")
	if !isRange {
		hi = lo
	}
	var err error
	if r.min, err = parseIPRangeAddr(lo); err != nil {
		return err
	}
	if r.max, err = parseIPRangeAddr(hi); err != nil {
		return err
	}
	r.set, r.inv = true, invert
	return nil
}

func (b *iprangeBuilder) Build(*Rule) (Match, error) {
	if !b.m.src.set && !b.m.dst.set {
		return nil, errors.New("you must specify --src-range or --dst-range")
	}
	m := b.m
	return &m, nil
}

// parseIPRangeAddr parses a dotted IPv4 address as iptables'
// xtables_numeric_to_ipaddr does (no host names, no masks): each part is
// a base-0 number 0..255 ("010" is 8, "0x10" is 16), and missing trailing
// parts are zero ("10.1" is 10.1.0.0). Like iptables, only the first 19
// bytes are read.
func parseIPRangeAddr(s string) (uint32, error) {
	t := s
	if len(t) > 19 {
		t = t[:19]
	}
	var a uint32
	parts := strings.SplitN(t, ".", 4)
	for i, p := range parts {
		v, err := ParseUint(p, 0xff)
		if err != nil {
			return 0, fmt.Errorf("invalid address %q", s)
		}
		a |= uint32(v) << (24 - 8*i)
	}
	return a, nil
}

// Match is iprange_mt4: each given side must hold (or, inverted, not hold)
// its address, compared as a host-order integer.
func (m *iprangeMatch) Match(c *Context) bool {
	return (!m.src.set || m.src.matchAddr(c.Pkt.Src)) && (!m.dst.set || m.dst.matchAddr(c.Pkt.Dst))
}

// Save prints " [!] --src-range A-B [!] --dst-range C-D", always both ends.
func (m *iprangeMatch) Save(b *strings.Builder) {
	if m.src.set {
		writeInv(b, m.src.inv)
		b.WriteString(" --src-range ")
		writeAddrRange(b, &m.src)
	}
	if m.dst.set {
		writeInv(b, m.dst.inv)
		b.WriteString(" --dst-range ")
		writeAddrRange(b, &m.dst)
	}
}

// List prints " source IP range [!] A-B destination IP range [!] C-D".
func (m *iprangeMatch) List(b *strings.Builder, _ bool) {
	if m.src.set {
		b.WriteString(" source IP range")
		writeInv(b, m.src.inv)
		b.WriteByte(' ')
		writeAddrRange(b, &m.src)
	}
	if m.dst.set {
		b.WriteString(" destination IP range")
		writeInv(b, m.dst.inv)
		b.WriteByte(' ')
		writeAddrRange(b, &m.dst)
	}
}

func writeAddrRange(b *strings.Builder, r *addrRange) {
	writeIPv4(b, r.min)
	b.WriteByte('-')
	writeIPv4(b, r.max)
}

func writeIPv4(b *strings.Builder, a uint32) {
	for i := 0; i < 4; i++ {
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(strconv.Itoa(int(a >> (24 - 8*i) & 0xff)))
	}
}
