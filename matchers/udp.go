package matchers

import (
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

func (b *udpBuilder) Parse(name string, args []string, invert bool) error {
	if err := once(&b.seen, name); err != nil {
		return err
	}
	r, err := parseUDPPortRange(args[0])
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
	return m.src.Contains(be16(uh[0:])) != m.invSrc &&
		m.dst.Contains(be16(uh[2:])) != m.invDst
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

// parseUDPPortRange parses the udp match's port argument as iptables 1.8.9
// does, which differs from tcp: the guided parser splits at ':' into at most
// two parts, an empty part is 0 (first) or 65535 (second), and min > max is
// accepted ("4:3" never matches; iptables saves it as is). Each part goes
// through getaddrinfo: decimal only ("0x50" is refused), and a service name
// of any protocol ("-p udp --dport http" is 80 although http is tcp-only in
// /etc/services). iptables 1.8.9 silently wraps numbers above 65535
// (65536 becomes 0); qtables refuses them instead, as tcp does.
func parseUDPPortRange(s string) (PortRange, error) {
	parts := strings.Split(s, ":")
	if len(parts) > 2 {
		return PortRange{}, fmt.Errorf("too many components in port range %q (max: 2)", s)
	}
	r := anyPort
	for i, p := range parts {
		if p == "" {
			continue // already 0 or 65535
		}
		v, err := parseUDPPort(p)
		if err != nil {
			return r, err
		}
		if i == 0 {
			r.Min = v
		} else {
			r.Max = v
		}
	}
	if len(parts) == 1 {
		r.Max = r.Min
	}
	return r, nil
}

// gaiProtos is the order in which getaddrinfo tries protocols when
// resolving a service name without hints; the first hit wins.
var gaiProtos = [...]string{"tcp", "udp", "dccp", "udplite", "sctp"}

func parseUDPPort(s string) (uint16, error) {
	if v, rest, ok := strtoul(s, 10); ok && rest == "" {
		if v > 0xffff {
			return 0, fmt.Errorf("invalid port %q (must be 0..65535)", s)
		}
		return uint16(v), nil
	}
	for _, proto := range gaiProtos {
		if p, ok := lookupService(s, proto); ok {
			return p, nil
		}
	}
	return 0, fmt.Errorf("port %q does not resolve to anything", s)
}
