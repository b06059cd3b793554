package matchers

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/qtables/qtables/packet"
)

// The tcp match (kernel xt_tcpudp.c tcp_mt, iptables libxt_tcp.c).
//
// This file also holds the small parsing and printing helpers that the
// basic matches share (numbers as xtables_strtoul reads them, port and
// service-name handling).

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

// anyPort is the unconstrained port range, the default of every port option.
var anyPort = PortRange{0, 0xffff}

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
		r, err := parseTCPPortRange(args[0], "tcp")
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
		v, ok := parseXUint(args[0], 255)
		if !ok || v == 0 {
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
	if m.src.Contains(be16(th[0:])) == m.invSrc {
		return false
	}
	if m.dst.Contains(be16(th[2:])) == m.invDst {
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
			if strings.EqualFold(f, n.name) {
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

// ---- helpers shared by the basic matches ----

// once records that option name was seen and fails on a repeat. The engine
// normally refuses repeats first; builders check too so that they are
// correct on their own.
func once(seen *map[string]bool, name string) error {
	if *seen == nil {
		*seen = map[string]bool{}
	}
	if (*seen)[name] {
		return fmt.Errorf("only one --%s allowed", name)
	}
	(*seen)[name] = true
	return nil
}

func writeInv(b *strings.Builder, inv bool) {
	if inv {
		b.WriteString(" !")
	}
}

func be16(b []byte) uint16 { return uint16(b[0])<<8 | uint16(b[1]) }

// strtoul reads an unsigned number at the start of s the way iptables'
// xtables_strtoul_base does with base 0 (or 10): leading white space and a
// '+' are skipped, a '-' is refused, "0x" selects hex and a leading 0
// octal. It returns the value and the unread rest; ok is false when no
// digit was read or the value overflows 64 bits.
func strtoul(s string, base int) (v uint64, rest string, ok bool) {
	i := 0
	for i < len(s) && isCSpace(s[i]) {
		i++
	}
	if i < len(s) && s[i] == '-' {
		return 0, s, false
	}
	if i < len(s) && s[i] == '+' {
		i++
	}
	if base == 0 {
		switch {
		case i+2 < len(s) && s[i] == '0' && (s[i+1] == 'x' || s[i+1] == 'X') && digitVal(s[i+2]) < 16:
			base, i = 16, i+2
		case i < len(s) && s[i] == '0':
			base = 8
		default:
			base = 10
		}
	}
	start := i
	for i < len(s) {
		d := digitVal(s[i])
		if d >= base {
			break
		}
		if v > (1<<64-1-uint64(d))/uint64(base) {
			return 0, s, false // ERANGE
		}
		v = v*uint64(base) + uint64(d)
		i++
	}
	if i == start {
		return 0, s, false
	}
	return v, s[i:], true
}

func isCSpace(c byte) bool { return c == ' ' || c >= '\t' && c <= '\r' }

func digitVal(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'z':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'Z':
		return int(c-'A') + 10
	}
	return 99
}

// parseXUint parses all of s as xtables_strtoui(s, NULL, ..., 0, max) does
// (base 0, nothing may follow). ParseUint in parse.go differs: it accepts
// Go's digit separators ("1_0") and refuses white space and '+'.
func parseXUint(s string, max uint64) (uint64, bool) {
	v, rest, ok := strtoul(s, 0)
	if !ok || rest != "" || v > max {
		return 0, false
	}
	return v, true
}

// parsePort parses one port as xtables_parse_port(s, proto) does: a number
// (base 0, so "0x50" is 80) and otherwise a service name of proto. ParsePort
// in parse.go only reads decimal.
func parsePort(s, proto string) (uint16, error) {
	if v, ok := parseXUint(s, 0xffff); ok {
		return uint16(v), nil
	}
	if p, ok := lookupService(s, proto); ok {
		return p, nil
	}
	return 0, fmt.Errorf("invalid port/service %q specified", s)
}

// parseTCPPortRange parses p, a:b, :b, a: or : as libxt_tcp does; a > b
// is an error.
func parseTCPPortRange(s, proto string) (PortRange, error) {
	lo, hi, isRange := strings.Cut(s, ":")
	if !isRange {
		p, err := parsePort(s, proto)
		return PortRange{p, p}, err
	}
	r := anyPort
	var err error
	if lo != "" {
		if r.Min, err = parsePort(lo, proto); err != nil {
			return r, err
		}
	}
	if hi != "" {
		if r.Max, err = parsePort(hi, proto); err != nil {
			return r, err
		}
	}
	if r.Min > r.Max {
		return r, fmt.Errorf("invalid portrange (min > max) %q", s)
	}
	return r, nil
}

// savePortOpt prints " [!] --sport N[:M]" unless the range is the
// unconstrained default.
func savePortOpt(b *strings.Builder, opt string, r PortRange, inv bool) {
	if r.Full() && !inv {
		return
	}
	writeInv(b, inv)
	b.WriteByte(' ')
	b.WriteString(opt)
	SavePortRange(b, r)
}

// listPortOpt prints " spt:[!]P" or " spts:[!]A:B" (print_ports of tcp and
// udp), with service names of proto unless numeric.
func listPortOpt(b *strings.Builder, name string, r PortRange, inv, numeric bool, proto string) {
	if r.Full() && !inv {
		return
	}
	b.WriteByte(' ')
	b.WriteString(name)
	if r.Min != r.Max {
		b.WriteByte('s')
	}
	b.WriteByte(':')
	if inv {
		b.WriteByte('!')
	}
	writePortName(b, r.Min, numeric, proto)
	if r.Min != r.Max {
		b.WriteByte(':')
		writePortName(b, r.Max, numeric, proto)
	}
}

// writePortName prints port by its service name for proto (getservbyport)
// unless numeric or there is none.
func writePortName(b *strings.Builder, port uint16, numeric bool, proto string) {
	if !numeric && proto != "" {
		if n, ok := serviceByPort(port, proto); ok {
			b.WriteString(n)
			return
		}
	}
	b.WriteString(strconv.Itoa(int(port)))
}

type servKey struct {
	port  uint16
	proto string
}

var servByPort struct {
	once  sync.Once
	names map[servKey]string
}

// serviceByPort returns the official name of the first /etc/services entry
// for port/proto, as getservbyport does. (ServiceName in parse.go picks the
// alphabetically first of all names and aliases, which is not what
// iptables prints: port 25 is "smtp", not its alias "mail".)
func serviceByPort(port uint16, proto string) (string, bool) {
	servByPort.once.Do(func() {
		servByPort.names = map[servKey]string{}
		f, err := os.Open("/etc/services")
		if err != nil {
			return
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line, _, _ := strings.Cut(sc.Text(), "#")
			fields := strings.Fields(line)
			if len(fields) < 2 {
				continue
			}
			ps, pr, ok := strings.Cut(fields[1], "/")
			if !ok {
				continue
			}
			p, err := strconv.ParseUint(ps, 10, 16)
			if err != nil {
				continue
			}
			k := servKey{uint16(p), pr}
			if _, dup := servByPort.names[k]; !dup {
				servByPort.names[k] = fields[0]
			}
		}
	})
	n, ok := servByPort.names[servKey{port, proto}]
	return n, ok
}
