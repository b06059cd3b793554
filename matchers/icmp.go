package matchers

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/qtables/qtables/packet"
)

// The icmp match (kernel icmp_match in ip_tables.c, iptables libipt_icmp.c
// and the name table of libxt_icmp.h).

func init() {
	RegisterMatch(&MatchExt{
		Name:    "icmp",
		Options: []Option{{Name: "icmp-type", Args: 1, Invert: true}},
		New:     func() MatchBuilder { return &icmpBuilder{} },
	})
}

// icmpAny is the type that matches every ICMP message ("any").
const icmpAny = 0xff

// icmpMatch is one -m icmp instance: a type and an inclusive code range.
type icmpMatch struct {
	typ, codeMin, codeMax uint8
	inv                   bool
}

type icmpBuilder struct {
	m   icmpMatch
	set bool
}

func (b *icmpBuilder) Parse(name string, args []string, invert bool) error {
	if name != "icmp-type" {
		return fmt.Errorf("unknown option --%s", name)
	}
	if b.set {
		return errors.New("only one --icmp-type allowed")
	}
	t, lo, hi, err := parseICMPType(args[0])
	if err != nil {
		return err
	}
	b.m = icmpMatch{typ: t, codeMin: lo, codeMax: hi, inv: invert}
	b.set = true
	return nil
}

func (b *icmpBuilder) Build(r *Rule) (Match, error) {
	if !b.set {
		return nil, errors.New("option --icmp-type must be specified")
	}
	if r.Proto != packet.ProtoICMP || r.InvProto {
		return nil, errors.New("ICMP match requires '-p icmp'")
	}
	m := b.m
	return &m, nil
}

// Match is icmp_match: fragments never match, fewer than 8 bytes of ICMP
// header are dropped; type 255 matches every message.
func (m *icmpMatch) Match(c *Context) bool {
	if c.Pkt.FragOff() != 0 {
		return false
	}
	ic := c.Pkt.L4
	if len(ic) < 8 {
		c.Hotdrop = true
		return false
	}
	hit := m.typ == icmpAny || ic[0] == m.typ && ic[1] >= m.codeMin && ic[1] <= m.codeMax
	return hit != m.inv
}

// Save prints " --icmp-type any" for type 255 whatever the codes (iptables
// 1.8.9; both mean "every message" to the kernel), else the type and, when
// the codes are not 0..255, only the lower code: "3/1" for 3/1:4.
func (m *icmpMatch) Save(b *strings.Builder) {
	writeInv(b, m.inv)
	b.WriteString(" --icmp-type ")
	if m.typ == icmpAny {
		b.WriteString("any")
		return
	}
	b.WriteString(strconv.Itoa(int(m.typ)))
	if m.codeMin != 0 || m.codeMax != 0xff {
		b.WriteByte('/')
		b.WriteString(strconv.Itoa(int(m.codeMin)))
	}
}

// List prints " icmp echo-request" (names, when the exact type and code
// range has one) or " icmptype 3 code 3" / " icmp !type 3 codes 1-4"; the
// missing space after "icmp" is iptables' own.
func (m *icmpMatch) List(b *strings.Builder, numeric bool) {
	b.WriteString(" icmp")
	if !numeric {
		for _, e := range icmpNames {
			if e.typ == m.typ && e.lo == m.codeMin && e.hi == m.codeMax {
				b.WriteByte(' ')
				if m.inv {
					b.WriteByte('!')
				}
				b.WriteString(e.name)
				return
			}
		}
	}
	if m.inv {
		b.WriteString(" !")
	}
	b.WriteString("type ")
	b.WriteString(strconv.Itoa(int(m.typ)))
	switch {
	case m.codeMin == m.codeMax:
		b.WriteString(" code ")
		b.WriteString(strconv.Itoa(int(m.codeMin)))
	case m.codeMin != 0 || m.codeMax != 0xff:
		fmt.Fprintf(b, " codes %d-%d", m.codeMin, m.codeMax)
	}
}

// icmpNames is iptables' table in its order, which decides both prefix
// ambiguity errors and the name -L prints (the first exact entry).
var icmpNames = [...]struct {
	name   string
	typ    uint8
	lo, hi uint8
}{
	{"any", 0xff, 0, 0xff},
	{"echo-reply", 0, 0, 0xff},
	{"pong", 0, 0, 0xff},
	{"destination-unreachable", 3, 0, 0xff},
	{"network-unreachable", 3, 0, 0},
	{"host-unreachable", 3, 1, 1},
	{"protocol-unreachable", 3, 2, 2},
	{"port-unreachable", 3, 3, 3},
	{"fragmentation-needed", 3, 4, 4},
	{"source-route-failed", 3, 5, 5},
	{"network-unknown", 3, 6, 6},
	{"host-unknown", 3, 7, 7},
	{"network-prohibited", 3, 9, 9},
	{"host-prohibited", 3, 10, 10},
	{"TOS-network-unreachable", 3, 11, 11},
	{"TOS-host-unreachable", 3, 12, 12},
	{"communication-prohibited", 3, 13, 13},
	{"host-precedence-violation", 3, 14, 14},
	{"precedence-cutoff", 3, 15, 15},
	{"source-quench", 4, 0, 0xff},
	{"redirect", 5, 0, 0xff},
	{"network-redirect", 5, 0, 0},
	{"host-redirect", 5, 1, 1},
	{"TOS-network-redirect", 5, 2, 2},
	{"TOS-host-redirect", 5, 3, 3},
	{"echo-request", 8, 0, 0xff},
	{"ping", 8, 0, 0xff},
	{"router-advertisement", 9, 0, 0xff},
	{"router-solicitation", 10, 0, 0xff},
	{"time-exceeded", 11, 0, 0xff},
	{"ttl-exceeded", 11, 0, 0xff},
	{"ttl-zero-during-transit", 11, 0, 0},
	{"ttl-zero-during-reassembly", 11, 1, 1},
	{"parameter-problem", 12, 0, 0xff},
	{"ip-header-bad", 12, 0, 0},
	{"required-option-missing", 12, 1, 1},
	{"timestamp-request", 13, 0, 0xff},
	{"timestamp-reply", 14, 0, 0xff},
	{"address-mask-request", 17, 0, 0xff},
	{"address-mask-reply", 18, 0, 0xff},
}

// parseICMPType parses {NAME | TYPE[/CODE[:CODE]]} as iptables 1.8.9 does.
// A name may be abbreviated to any unambiguous prefix, ASCII
// case-insensitively (the empty string is ambiguous). Numbers are base 0 ("0x8", "010" = 8);
// a reversed code range is accepted (it never matches).
func parseICMPType(s string) (typ, lo, hi uint8, err error) {
	match := -1
	for i, e := range icmpNames {
		if hasPrefixFold(e.name, s) {
			if match >= 0 {
				return 0, 0, 0, fmt.Errorf("ambiguous type name %q: %q or %q?", s, icmpNames[match].name, e.name)
			}
			match = i
		}
	}
	if match >= 0 {
		e := icmpNames[match]
		return e.typ, e.lo, e.hi, nil
	}
	t0, t1, rest, ok := parseByteRange(s)
	if !ok {
		if v, _, isNum := strtoul(s, 0); isNum && v > 0xff {
			return 0, 0, 0, fmt.Errorf("invalid type %q (must be 0..255)", s)
		}
		return 0, 0, 0, fmt.Errorf("unknown type name %q", s)
	}
	if t0 != t1 {
		return 0, 0, 0, errors.New("type range not supported")
	}
	switch {
	case rest == "":
		return t0, 0, 0xff, nil
	case rest[0] == '/':
		c0, c1, rest2, ok := parseByteRange(rest[1:])
		if !ok {
			return 0, 0, 0, fmt.Errorf("invalid code in %q", s)
		}
		if rest2 != "" {
			return 0, 0, 0, fmt.Errorf("unknown character %q in %q", rest2[0], s)
		}
		return t0, c0, c1, nil
	}
	return 0, 0, 0, fmt.Errorf("unknown character %q in %q", rest[0], s)
}

// parseByteRange reads N or N:M (each 0..255, base 0) at the start of s
// and returns the unread rest.
func parseByteRange(s string) (lo, hi uint8, rest string, ok bool) {
	v, rest, ok := strtoul(s, 0)
	if !ok || v > 0xff {
		return 0, 0, s, false
	}
	lo, hi = uint8(v), uint8(v)
	if rest != "" && rest[0] == ':' {
		v, rest, ok = strtoul(rest[1:], 0)
		if !ok || v > 0xff {
			return 0, 0, s, false
		}
		hi = uint8(v)
	}
	return lo, hi, rest, true
}
