package matchers

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/qtables/qtables/packet"
)

// The tcp match (kernel xt_tcpudp.c tcp_mt, iptables libxt_tcp.c).

func init() {
	RegisterMatch(&MatchExt{
		Name: "tcp",
		Options: []Option{
			{Name: "sport", Aliases: []string{"source-port"}, Args: 1, Invert: true},
			{Name: "dport", Aliases: []string{"destination-port"}, Args: 1, Invert: true},
			{Name: "syn", Args: 0, Invert: true},
			{Name: "tcp-flags", Args: 2, Invert: true},
			{Name: "tcp-option", Args: 1, Invert: true},
		},
		New: func() MatchBuilder { return &tcpBuilder{m: tcpMatch{src: anyPort, dst: anyPort}} },
	})
}

// tcpMatch is one -m tcp instance. Zero flagMask and option mean "no
// constraint", as in struct xt_tcp.
type tcpMatch struct {
	src, dst          PortRange
	flagMask, flagCmp uint8
	option            uint8
	invSrc, invDst    bool
	invFlags, invOpt  bool
}

type tcpBuilder struct {
	m        tcpMatch
	seen     map[string]bool
	hasFlags bool // --syn or --tcp-flags given
}

func (b *tcpBuilder) Parse(name string, args []string, invert bool) error {
	if err := once(&b.seen, name); err != nil {
		return err
	}
	switch name {
	case "sport", "dport":
		r, err := ParsePortRange(args[0], "tcp")
		if err != nil {
			return err
		}
		if name == "sport" {
			b.m.src, b.m.invSrc = r, invert
		} else {
			b.m.dst, b.m.invDst = r, invert
		}
	case "syn", "tcp-flags":
		if b.hasFlags {
			return errors.New("only one of --syn or --tcp-flags allowed")
		}
		b.hasFlags = true
		b.m.invFlags = invert
		if name == "syn" {
			b.m.flagMask = packet.TCPSyn | packet.TCPRst | packet.TCPAck | packet.TCPFin
			b.m.flagCmp = packet.TCPSyn
			return nil
		}
		if strings.HasPrefix(args[1], "-") || strings.HasPrefix(args[1], "!") {
			return errors.New("--tcp-flags requires two args")
		}
		var err error
		if b.m.flagMask, err = parseTCPFlags(args[0]); err != nil {
			return err
		}
		if b.m.flagCmp, err = parseTCPFlags(args[1]); err != nil {
			return err
		}
	case "tcp-option":
		v, err := ParseUint(args[0], 255)
		if err != nil || v == 0 {
			return fmt.Errorf("invalid TCP option %q (must be 1..255)", args[0])
		}
		b.m.option, b.m.invOpt = uint8(v), invert
	default:
		return fmt.Errorf("unknown option --%s", name)
	}
	return nil
}

func (b *tcpBuilder) Build(r *Rule) (Match, error) {
	if r.Proto != packet.ProtoTCP || r.InvProto {
		return nil, errors.New("TCP match requires '-p tcp'")
	}
	m := b.m
	return &m, nil
}

// Match is tcp_mt: non-first fragments never match (offset 1 is dropped as
// an attack), a header shorter than 20 bytes is dropped.
func (m *tcpMatch) Match(c *Context) bool {
	if fo := c.Pkt.FragOff(); fo != 0 {
		if fo == 1 {
			c.Hotdrop = true
		}
		return false
	}
	th := c.Pkt.L4
	if len(th) < 20 {
		c.Hotdrop = true
		return false
	}
	if m.src.Contains(binary.BigEndian.Uint16(th[0:])) == m.invSrc {
		return false
	}
	if m.dst.Contains(binary.BigEndian.Uint16(th[2:])) == m.invDst {
		return false
	}
	if (th[13]&m.flagMask == m.flagCmp) == m.invFlags {
		return false
	}
	if m.option != 0 {
		doff := int(th[12]>>4) * 4
		if doff < 20 || len(th) < doff {
			c.Hotdrop = true
			return false
		}
		if findTCPOption(th[20:doff], m.option) == m.invOpt {
			return false
		}
	}
	return true
}

// findTCPOption walks the option area as tcp_find_option does: kinds 0
// (end of list) and 1 (no-op) are one byte; any other kind advances by its
// length byte, a zero length by one. The walk does not stop at kind 0.
func findTCPOption(opts []byte, kind uint8) bool {
	for i := 0; i < len(opts); {
		if opts[i] == kind {
			return true
		}
		if opts[i] < 2 || i+1 >= len(opts) {
			// A length byte past the area can only end the walk.
			i++
			continue
		}
		if l := int(opts[i+1]); l > 0 {
			i += l
		} else {
			i++
		}
	}
	return false
}

// Save prints sport, dport, option, flags, as tcp_save does. An inverted
// full port range is kept (iptables 1.8.11; 1.8.9 drops it, which changes
// the rule's meaning on restore).
func (m *tcpMatch) Save(b *strings.Builder) {
	savePortOpt(b, "--sport", m.src, m.invSrc)
	savePortOpt(b, "--dport", m.dst, m.invDst)
	if m.option != 0 || m.invOpt {
		writeInv(b, m.invOpt)
		b.WriteString(" --tcp-option ")
		b.WriteString(strconv.Itoa(int(m.option)))
	}
	if m.flagMask != 0 || m.invFlags {
		writeInv(b, m.invFlags)
		b.WriteString(" --tcp-flags ")
		writeTCPFlags(b, m.flagMask)
		b.WriteByte(' ')
		writeTCPFlags(b, m.flagCmp)
	}
}

// List prints " tcp spt:22 dpts:1024:65535 option=8 flags:0x17/0x02".
func (m *tcpMatch) List(b *strings.Builder, numeric bool) {
	b.WriteString(" tcp")
	listPortOpt(b, "spt", m.src, m.invSrc, numeric, "tcp")
	listPortOpt(b, "dpt", m.dst, m.invDst, numeric, "tcp")
	if m.option != 0 || m.invOpt {
		b.WriteString(" option=")
		if m.invOpt {
			b.WriteByte('!')
		}
		b.WriteString(strconv.Itoa(int(m.option)))
	}
	if m.flagMask != 0 || m.invFlags {
		b.WriteString(" flags:")
		if m.invFlags {
			b.WriteByte('!')
		}
		if numeric {
			fmt.Fprintf(b, "0x%02X/0x%02X", m.flagMask, m.flagCmp)
		} else {
			writeTCPFlags(b, m.flagMask)
			b.WriteByte('/')
			writeTCPFlags(b, m.flagCmp)
		}
	}
}

// tcpFlagNames is libxt_tcp's table; printing walks it in this order.
var tcpFlagNames = [...]struct {
	name string
	bits uint8
}{
	{"FIN", packet.TCPFin}, {"SYN", packet.TCPSyn}, {"RST", packet.TCPRst},
	{"PSH", packet.TCPPsh}, {"ACK", packet.TCPAck}, {"URG", packet.TCPUrg},
	{"ALL", 0x3f}, {"NONE", 0},
}

// parseTCPFlags parses a comma list of flag names, case-insensitively.
// Empty elements are skipped (strtok), so "" is NONE.
func parseTCPFlags(s string) (uint8, error) {
	var v uint8
	for _, f := range strings.Split(s, ",") {
		if f == "" {
			continue
		}
		found := false
		for _, n := range tcpFlagNames {
			if equalFold(f, n.name) {
				v |= n.bits
				found = true
				break
			}
		}
		if !found {
			return 0, fmt.Errorf("unknown TCP flag %q", f)
		}
	}
	return v, nil
}

// writeTCPFlags prints flags as comma-separated names in bit order, NONE
// for zero (print_tcpf). CWR and ECE cannot be set through the parser.
func writeTCPFlags(b *strings.Builder, flags uint8) {
	if flags == 0 {
		b.WriteString("NONE")
		return
	}
	first := true
	for _, n := range tcpFlagNames[:6] {
		if flags&n.bits != 0 {
			if !first {
				b.WriteByte(',')
			}
			b.WriteString(n.name)
			first = false
		}
	}
}
