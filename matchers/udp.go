package matchers

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/qtables/qtables/packet"
)

// The udp match (kernel xt_tcpudp.c udp_mt, iptables libxt_udp.c).

func init() {
	RegisterMatch(&MatchExt{
		Name: "udp",
		Options: []Option{
			{Name: "sport", Aliases: []string{"source-port"}, Args: 1, Invert: true},
			{Name: "dport", Aliases: []string{"destination-port"}, Args: 1, Invert: true},
		},
		New: func() MatchBuilder { return &udpBuilder{m: udpMatch{src: anyPort, dst: anyPort}} },
	})
}

// udpMatch is one -m udp instance.
type udpMatch struct {
	src, dst       PortRange
	invSrc, invDst bool
}

type udpBuilder struct {
	m    udpMatch
	seen map[string]bool
}

// Parse reads ports as iptables 1.8.9's udp match does (parsePortRC),
// which differs from tcp: decimal numbers only, service names of any
// protocol ("-p udp --dport http" is 80 although http is tcp-only in
// /etc/services), and a reversed range such as "4:3" is accepted (it never
// matches, and is saved as is).
func (b *udpBuilder) Parse(name string, args []string, invert bool) error {
	if err := once(&b.seen, name); err != nil {
		return err
	}
	r, err := parsePortRC(args[0])
	if err != nil {
		return err
	}
	switch name {
	case "sport":
		b.m.src, b.m.invSrc = r, invert
	case "dport":
		b.m.dst, b.m.invDst = r, invert
	default:
		return fmt.Errorf("unknown option --%s", name)
	}
	return nil
}

func (b *udpBuilder) Build(r *Rule) (Match, error) {
	if r.Proto != packet.ProtoUDP || r.InvProto {
		return nil, errors.New("UDP match requires '-p udp'")
	}
	m := b.m
	return &m, nil
}

// Match is udp_mt: fragments never match, a header shorter than 8 bytes is
// dropped, then both port ranges must match.
func (m *udpMatch) Match(c *Context) bool {
	if c.Pkt.FragOff() != 0 {
		return false
	}
	uh := c.Pkt.L4
	if len(uh) < 8 {
		c.Hotdrop = true
		return false
	}
	return m.src.Contains(binary.BigEndian.Uint16(uh[0:])) != m.invSrc &&
		m.dst.Contains(binary.BigEndian.Uint16(uh[2:])) != m.invDst
}

// Save prints like tcp: " --sport 53 --dport 1024:65535".
func (m *udpMatch) Save(b *strings.Builder) {
	savePortOpt(b, "--sport", m.src, m.invSrc)
	savePortOpt(b, "--dport", m.dst, m.invDst)
}

// List prints " udp spt:53 dpts:1024:65535".
func (m *udpMatch) List(b *strings.Builder, numeric bool) {
	b.WriteString(" udp")
	listPortOpt(b, "spt", m.src, m.invSrc, numeric, "udp")
	listPortOpt(b, "dpt", m.dst, m.invDst, numeric, "udp")
}
