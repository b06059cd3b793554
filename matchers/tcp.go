package matchers

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/qtables/qtables/packet"
)

// The tcp match, as the installed iptables (1.8.9, nf_tables backend) puts
// it into this kernel. The kernel and the installed tools are qtables'
// reference, not xt_tcpudp.c alone: iptables-nft 1.8.9 (add_nft_tcp in
// iptables/nft.c) translates most tcp matches into native nftables payload
// expressions, which behave differently from the xt module, and prints
// them back from what it reads out of the kernel, which is not always what
// was written. So each instance is built in one of two modes:
//
//   - native, for every match without --tcp-option that constrains
//     something or carries an inversion: each field is a payload load from
//     the transport header and a comparison. There is no fragment check
//     (a non-first fragment's data is read as if it were a TCP header),
//     nothing is ever hot-dropped, and a field whose bytes are missing
//     simply fails, inverted or not. Parts that would compare nothing are
//     not emitted at all: a full port range even when inverted, a zero
//     --tcp-flags mask. When nothing is left the match disappears from the
//     rule (Build returns nil) and matches every packet. Two single
//     non-zero ports of the same inversion are compared as one 32-bit
//     word, so "! --sport 22 ! --dport 80" fails only when both are equal
//     (later iptables releases stopped pairing inverted ports; 1.8.9 is
//     what this kernel gets).
//   - compat, for --tcp-option and for a match with no constraint at all
//     ("-m tcp", "--sport :", "--tcp-flags NONE NONE"): the xt tcp module
//     itself, with its semantics (spec §5.1): non-first fragments never
//     match, fragment offset 1 and a header shorter than 20 bytes are
//     hot-dropped. The kernel refuses it after "! -p tcp".
//
// Save and List print what iptables-save and iptables -L print for the
// rule as the kernel holds it: e.g. "! --dport 0:20" was emitted as "dport
// > 20" and reads back as "--dport 21:65535", and an inverted full range
// vanishes (in compat mode it stays in the -L output only). Every form is
// pinned in tcp_test.go and checked against the installed iptables; the
// packet behaviour is checked against the kernel by the conformance
// package's TestKernelEdgeCases.

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
		New: func() MatchBuilder { return &tcpBuilder{m: tcpMatch{ports: portSpec{src: anyPort, dst: anyPort}}} },
	})
}

// tcpMatch is one -m tcp instance. Zero flagMask and option mean "no
// constraint", as in struct xt_tcp. A native instance holds the fields as
// iptables-nft reads them back from the kernel (see portSpec.nft).
type tcpMatch struct {
	ports             portSpec
	flagMask, flagCmp uint8
	option            uint8
	invFlags, invOpt  bool
	native            bool
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
			b.m.ports.src, b.m.ports.invSrc = r, invert
		} else {
			b.m.ports.dst, b.m.ports.invDst = r, invert
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

// Build chooses the mode as add_nft_tcp does: compat for --tcp-option and
// for a match that is "all zero" (tcp_all_zero: full port ranges, no flag
// mask or comparison, no inversion), native otherwise. A native match
// whose expressions all vanish is no match at all (nil).
func (b *tcpBuilder) Build(r *Rule) (Match, error) {
	if r.Proto != packet.ProtoTCP {
		return nil, errors.New("TCP match requires '-p tcp'")
	}
	m := b.m
	if m.option != 0 || m.invOpt || m.allZero() {
		if r.InvProto {
			// The rule reaches the kernel, whose xt_check_match refuses
			// a tcp match for a negated protocol (EINVAL).
			return nil, errors.New("the xt tcp match cannot be used with '! -p tcp' (the kernel refuses the rule: Invalid argument)")
		}
		return &m, nil
	}
	n := tcpMatch{ports: m.ports.nft(), native: true}
	if m.flagMask != 0 {
		n.flagMask, n.flagCmp, n.invFlags = m.flagMask, m.flagCmp, m.invFlags
	}
	if n.flagMask == 0 && n.ports.empty() {
		return nil, nil
	}
	return &n, nil
}

// allZero is tcp_all_zero: the instance has the values of an empty struct
// xt_tcp (ports 0:65535, everything else zero).
func (m *tcpMatch) allZero() bool {
	return m.ports == portSpec{src: anyPort, dst: anyPort} &&
		m.flagMask == 0 && m.flagCmp == 0 && m.option == 0 && !m.invFlags && !m.invOpt
}

// Match runs the instance in its mode (see the file comment).
func (m *tcpMatch) Match(c *Context) bool {
	th := c.Pkt.L4
	if m.native {
		// add_nft_tcpflags: load byte 13, AND the mask, compare.
		if m.flagMask != 0 && (len(th) < 14 || (th[13]&m.flagMask == m.flagCmp) == m.invFlags) {
			return false
		}
		return m.ports.matchNFT(th)
	}
	return m.matchXT(c, th)
}

// matchXT is tcp_mt: non-first fragments never match (offset 1 is dropped
// as an attack), a header shorter than 20 bytes is dropped.
func (m *tcpMatch) matchXT(c *Context, th []byte) bool {
	if fo := c.Pkt.FragOff(); fo != 0 {
		if fo == 1 {
			c.Hotdrop = true
		}
		return false
	}
	if len(th) < 20 {
		c.Hotdrop = true
		return false
	}
	if !m.ports.matchXT(th) {
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

// Save prints sport, dport, option, flags, as iptables 1.8.9's tcp_save
// does: an inverted full port range is left out (only a compat instance
// can hold one), so iptables-save turns "--tcp-option 8 ! --dport :" into
// "--tcp-option 8".
func (m *tcpMatch) Save(b *strings.Builder) {
	m.ports.save(b)
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

// List prints " tcp spt:22 dpts:1024:65535 option=8 flags:0x17/0x02"
// (tcp_print, which, unlike tcp_save, shows an inverted full range).
func (m *tcpMatch) List(b *strings.Builder, numeric bool) {
	b.WriteString(" tcp")
	m.ports.list(b, numeric, "tcp")
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

// portSpec is the port part of a tcp or udp match.
type portSpec struct {
	src, dst       PortRange
	invSrc, invDst bool
	// pair (native only) says that iptables-nft compares both ports as
	// one 32-bit word, which add_nft_tcpudp does for two single non-zero
	// ports of the same inversion. Inverted, that word comparison is "not
	// both equal" ("! --sport 22 ! --dport 80" matches sport 22 with dport
	// 81), where the xt match requires neither to be equal.
	pair bool
}

// nft returns the ports as add_nft_tcpudp emits them and iptables-nft
// reads them back: a full range is not emitted (so an inverted one is
// lost); "! 0:N" is emitted as "> N" and read back as N+1:65535; the rest
// is kept.
func (p portSpec) nft() portSpec {
	q := portSpec{
		pair: p.src.Min == p.src.Max && p.src.Min != 0 &&
			p.dst.Min == p.dst.Max && p.dst.Min != 0 && p.invSrc == p.invDst,
	}
	q.src, q.invSrc = nftRange(p.src, p.invSrc)
	q.dst, q.invDst = nftRange(p.dst, p.invDst)
	return q
}

func nftRange(r PortRange, inv bool) (PortRange, bool) {
	switch {
	case r.Full():
		return anyPort, false
	case inv && r.Min == 0 && r.Max != 0:
		return PortRange{r.Max + 1, 0xffff}, false
	}
	return r, inv
}

// empty reports whether no port is constrained.
func (p *portSpec) empty() bool { return p.src.Full() && p.dst.Full() && !p.invSrc && !p.invDst }

// matchNFT runs the payload comparisons of a native instance: a port side
// is only read when it was emitted, and missing bytes fail the match
// whatever its inversion (NFT_BREAK).
func (p *portSpec) matchNFT(th []byte) bool {
	if p.pair {
		if len(th) < 4 {
			return false
		}
		both := binary.BigEndian.Uint16(th) == p.src.Min && binary.BigEndian.Uint16(th[2:]) == p.dst.Min
		return both != p.invSrc
	}
	if !p.src.Full() && (len(th) < 2 || p.src.Contains(binary.BigEndian.Uint16(th)) == p.invSrc) {
		return false
	}
	if !p.dst.Full() && (len(th) < 4 || p.dst.Contains(binary.BigEndian.Uint16(th[2:])) == p.invDst) {
		return false
	}
	return true
}

// matchXT is port_match for both sides, on a header known to be complete.
func (p *portSpec) matchXT(th []byte) bool {
	return p.src.Contains(binary.BigEndian.Uint16(th)) != p.invSrc &&
		p.dst.Contains(binary.BigEndian.Uint16(th[2:])) != p.invDst
}

// save prints " [!] --sport A[:B] [!] --dport C[:D]", leaving out full
// ranges even when inverted (iptables 1.8.9's tcp_save and udp_save).
func (p *portSpec) save(b *strings.Builder) {
	if !p.src.Full() {
		savePortOpt(b, "--sport", p.src, p.invSrc)
	}
	if !p.dst.Full() {
		savePortOpt(b, "--dport", p.dst, p.invDst)
	}
}

// list prints " spt:..." and " dpt:..." (print_ports; an inverted full
// range is shown).
func (p *portSpec) list(b *strings.Builder, numeric bool, proto string) {
	listPortOpt(b, "spt", p.src, p.invSrc, numeric, proto)
	listPortOpt(b, "dpt", p.dst, p.invDst, numeric, proto)
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
