package matchers

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/qtables/qtables/packet"
)

// The multiport match, revision 1 (kernel xt_multiport.c ports_match_v1,
// iptables libxt_multiport.c).

func init() {
	RegisterMatch(&MatchExt{
		Name: "multiport",
		Options: []Option{
			{Name: "sports", Aliases: []string{"source-ports"}, Args: 1, Invert: true},
			{Name: "dports", Aliases: []string{"destination-ports"}, Args: 1, Invert: true},
			{Name: "ports", Args: 1, Invert: true},
		},
		New: func() MatchBuilder { return &multiportBuilder{} },
	})
}

// multiportSlots is XT_MULTI_PORTS: a port takes one slot, a range two.
const multiportSlots = 15

// Which port(s) of the packet a multiport instance tests.
const (
	mpSource uint8 = iota
	mpDest
	mpEither
)

var mpOptNames = [...]string{mpSource: "sports", mpDest: "dports", mpEither: "ports"}

// IP protocol numbers multiport accepts besides tcp and udp.
const (
	protoDCCP    = 33
	protoSCTP    = 132
	protoUDPLite = 136
)

// multiportMatch is struct xt_multiport_v1: ports[i] with range[i] set
// starts a range that ends at ports[i+1].
type multiportMatch struct {
	dir   uint8
	count uint8
	inv   bool
	proto uint8 // the rule's protocol, for service names in List
	ports [multiportSlots]uint16
	rng   [multiportSlots]bool
}

type multiportBuilder struct {
	set  bool
	dir  uint8
	list string
	inv  bool
}

func (b *multiportBuilder) Parse(name string, args []string, invert bool) error {
	var dir uint8
	switch name {
	case "sports":
		dir = mpSource
	case "dports":
		dir = mpDest
	case "ports":
		dir = mpEither
	default:
		return fmt.Errorf("unknown option --%s", name)
	}
	if b.set {
		if b.dir == dir {
			return fmt.Errorf("only one --%s allowed", name)
		}
		return fmt.Errorf("--%s cannot be used together with --%s", name, mpOptNames[b.dir])
	}
	// Check the list now, so that errors point at it; service names are
	// resolved again in Build, once the rule's protocol is known.
	var m multiportMatch
	if err := parseMultiportList(&m, args[0], ""); err != nil {
		return err
	}
	b.set, b.dir, b.list, b.inv = true, dir, args[0], invert
	return nil
}

func (b *multiportBuilder) Build(r *Rule) (Match, error) {
	if !b.set {
		return nil, errors.New("one of --sports, --dports or --ports is required")
	}
	proto := multiportProtoName(r.Proto)
	if r.Proto == 0 {
		return nil, errors.New("multiport needs '-p tcp', '-p udp', '-p udplite', '-p sctp' or '-p dccp'")
	}
	if proto == "" || r.InvProto {
		return nil, errors.New("multiport only works with TCP, UDP, UDPLITE, SCTP and DCCP")
	}
	m := &multiportMatch{dir: b.dir, inv: b.inv, proto: r.Proto}
	if err := parseMultiportList(m, b.list, proto); err != nil {
		return nil, err
	}
	return m, nil
}

func multiportProtoName(p uint8) string {
	switch p {
	case packet.ProtoTCP:
		return "tcp"
	case packet.ProtoUDP:
		return "udp"
	case protoUDPLite:
		return "udplite"
	case protoSCTP:
		return "sctp"
	case protoDCCP:
		return "dccp"
	}
	return ""
}

// parseMultiportList fills m's slots from a comma list of ports and a:b
// ranges (a < b strictly), each port read by ParsePort. With proto "" a
// service name of any protocol is accepted (a syntax check before the
// protocol is known).
func parseMultiportList(m *multiportMatch, s, proto string) error {
	n := 0
	for _, e := range strings.Split(s, ",") {
		if n == multiportSlots {
			return errors.New("too many ports specified")
		}
		lo, hi, isRange := strings.Cut(e, ":")
		if isRange && n == multiportSlots-1 {
			return errors.New("too many ports specified")
		}
		a, err := ParsePort(lo, proto)
		if err != nil {
			return err
		}
		m.ports[n], m.rng[n] = a, isRange
		n++
		if isRange {
			z, err := ParsePort(hi, proto)
			if err != nil {
				return err
			}
			if a >= z {
				return fmt.Errorf("invalid portrange %q specified (min must be less than max)", e)
			}
			m.ports[n] = z
			n++
		}
	}
	m.count = uint8(n)
	return nil
}

// Match is multiport_mt: fragments never match, fewer than 4 transport
// bytes are dropped, then the first entry that covers the selected port(s)
// decides; no hit is a miss. The inversion applies to the result.
func (m *multiportMatch) Match(c *Context) bool {
	if c.Pkt.FragOff() != 0 {
		return false
	}
	h := c.Pkt.L4
	if len(h) < 4 {
		c.Hotdrop = true
		return false
	}
	src, dst := binary.BigEndian.Uint16(h[0:]), binary.BigEndian.Uint16(h[2:])
	n := int(m.count)
	for i := 0; i < n; i++ {
		lo, hi := m.ports[i], m.ports[i]
		if m.rng[i] && i+1 < n {
			i++
			hi = m.ports[i]
		}
		switch m.dir {
		case mpSource:
			if src >= lo && src <= hi {
				return !m.inv
			}
		case mpDest:
			if dst >= lo && dst <= hi {
				return !m.inv
			}
		default:
			if src >= lo && src <= hi || dst >= lo && dst <= hi {
				return !m.inv
			}
		}
	}
	return m.inv
}

// Save prints " [!] --dports 53,1024:65535", always numeric.
func (m *multiportMatch) Save(b *strings.Builder) {
	writeInv(b, m.inv)
	b.WriteString(" --")
	b.WriteString(mpOptNames[m.dir])
	b.WriteByte(' ')
	m.writeList(b, true)
}

// List prints " multiport dports 53,1024:65535"; an inversion comes out
// as " multiport dports  !53" (two spaces), as iptables prints it.
func (m *multiportMatch) List(b *strings.Builder, numeric bool) {
	b.WriteString(" multiport ")
	b.WriteString(mpOptNames[m.dir])
	b.WriteByte(' ')
	if m.inv {
		b.WriteString(" !")
	}
	m.writeList(b, numeric)
}

func (m *multiportMatch) writeList(b *strings.Builder, numeric bool) {
	proto := multiportProtoName(m.proto)
	n := int(m.count)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		writePortName(b, m.ports[i], numeric, proto)
		if m.rng[i] && i+1 < n {
			i++
			b.WriteByte(':')
			writePortName(b, m.ports[i], numeric, proto)
		}
	}
}
