package matchers

import (
	"errors"
	"fmt"
	"strings"

	"github.com/qtables/qtables/packet"
)

// The udp match, as the installed iptables (1.8.9, nf_tables backend) puts
// it into this kernel, which with those tools is qtables' reference. As for
// tcp (see tcp.go), iptables-nft 1.8.9 (add_nft_udp in iptables/nft.c)
// translates the match into native payload comparisons unless it is "all
// zero" (udp_all_zero: both ranges 0:65535, no inversion):
//
//   - native: no fragment check (a non-first fragment's data is read as
//     if it were the UDP header), no hotdrop, a port whose bytes are
//     missing fails; an inverted full range is not emitted, so
//     "! --dport :" leaves no match at all (Build returns nil, and
//     iptables-save prints a plain "-p udp"); "! --dport 0:N" reads back
//     as "--dport N+1:65535".
//   - compat ("-m udp" alone, or with only "--sport :"/"--dport :"): the
//     xt udp module (spec §5.2): non-first fragments never match, a header
//     shorter than 8 bytes is hot-dropped. The kernel refuses it after
//     "! -p udp".

func init() {
	RegisterMatch(&MatchExt{
		Name: "udp",
		Options: []Option{
			{Name: "sport", Aliases: []string{"source-port"}, Args: 1, Invert: true},
			{Name: "dport", Aliases: []string{"destination-port"}, Args: 1, Invert: true},
		},
		New: func() MatchBuilder { return &udpBuilder{m: udpMatch{ports: portSpec{src: anyPort, dst: anyPort}}} },
	})
}

// udpMatch is one -m udp instance; a native one holds the ports as
// iptables-nft reads them back (portSpec.nft).
type udpMatch struct {
	ports  portSpec
	native bool
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
		b.m.ports.src, b.m.ports.invSrc = r, invert
	case "dport":
		b.m.ports.dst, b.m.ports.invDst = r, invert
	default:
		return fmt.Errorf("unknown option --%s", name)
	}
	return nil
}

// Build chooses the mode as add_nft_udp does (see the file comment).
func (b *udpBuilder) Build(r *Rule) (Match, error) {
	if r.Proto != packet.ProtoUDP {
		return nil, errors.New("UDP match requires '-p udp'")
	}
	if b.m.ports == (portSpec{src: anyPort, dst: anyPort}) {
		if r.InvProto {
			// xt_check_match refuses a udp match for a negated protocol.
			return nil, errors.New("the xt udp match cannot be used with '! -p udp' (the kernel refuses the rule: Invalid argument)")
		}
		m := b.m
		return &m, nil
	}
	m := udpMatch{ports: b.m.ports.nft(), native: true}
	if m.ports.empty() {
		return nil, nil
	}
	return &m, nil
}

// Match runs the instance in its mode. In compat mode it is udp_mt with
// no port constraint: fragments never match, a header shorter than 8
// bytes is dropped.
func (m *udpMatch) Match(c *Context) bool {
	uh := c.Pkt.L4
	if m.native {
		return m.ports.matchNFT(uh)
	}
	if c.Pkt.FragOff() != 0 {
		return false
	}
	if len(uh) < 8 {
		c.Hotdrop = true
		return false
	}
	return m.ports.matchXT(uh)
}

// Save prints like tcp: " --sport 53 --dport 1024:65535".
func (m *udpMatch) Save(b *strings.Builder) { m.ports.save(b) }

// List prints " udp spt:53 dpts:1024:65535".
func (m *udpMatch) List(b *strings.Builder, numeric bool) {
	b.WriteString(" udp")
	m.ports.list(b, numeric, "udp")
}
