package matchers

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/qtables/qtables/conntrack"
)

// The conntrack match (kernel xt_conntrack.c conntrack_mt revision 3,
// iptables libxt_conntrack.c). iptables 1.8.9 loads it as the xt match
// (`nft list ruleset` only displays it as "ct state ...", "ct original
// saddr ...", which is a translation for display, not what runs).

func init() {
	RegisterMatch(&MatchExt{
		Name: "conntrack",
		Options: []Option{
			{Name: "ctstate", Args: 1, Invert: true},
			{Name: "ctproto", Args: 1, Invert: true},
			{Name: "ctorigsrc", Args: 1, Invert: true},
			{Name: "ctorigdst", Args: 1, Invert: true},
			{Name: "ctreplsrc", Args: 1, Invert: true},
			{Name: "ctrepldst", Args: 1, Invert: true},
			{Name: "ctorigsrcport", Args: 1, Invert: true},
			{Name: "ctorigdstport", Args: 1, Invert: true},
			{Name: "ctreplsrcport", Args: 1, Invert: true},
			{Name: "ctrepldstport", Args: 1, Invert: true},
			{Name: "ctstatus", Args: 1, Invert: true},
			{Name: "ctexpire", Args: 1, Invert: true},
			{Name: "ctdir", Args: 1},
		},
		New: func() MatchBuilder { return &conntrackBuilder{} },
	})
}

// ctOpt is one option of the conntrack match, also its bit in the
// match's flag words. The order is the order iptables prints them.
type ctOpt uint16

const (
	ctoState ctOpt = 1 << iota
	ctoProto
	ctoOrigSrc
	ctoOrigDst
	ctoReplSrc
	ctoReplDst
	ctoOrigSrcPort
	ctoOrigDstPort
	ctoReplSrcPort
	ctoReplDstPort
	ctoStatus
	ctoExpire
	ctoDir
)

var ctOptNames = map[string]ctOpt{
	"ctstate": ctoState, "ctproto": ctoProto,
	"ctorigsrc": ctoOrigSrc, "ctorigdst": ctoOrigDst, "ctreplsrc": ctoReplSrc, "ctrepldst": ctoReplDst,
	"ctorigsrcport": ctoOrigSrcPort, "ctorigdstport": ctoOrigDstPort,
	"ctreplsrcport": ctoReplSrcPort, "ctrepldstport": ctoReplDstPort,
	"ctstatus": ctoStatus, "ctexpire": ctoExpire, "ctdir": ctoDir,
}

// ctAddr is an address option: the kernel compares (addr XOR a) AND mask.
// iptables keeps the host bits (--ctorigsrc 10.1.2.3/8 prints as such).
type ctAddr struct{ addr, mask uint32 }

// matches reports whether the IPv4-mapped address a is in the network.
func (n ctAddr) matches(a *[16]byte) bool {
	return (binary.BigEndian.Uint32(a[12:16])^n.addr)&n.mask == 0
}

// Status bits --ctstatus names (the kernel's IPS_* values).
const (
	ctStatusExpected  = uint32(conntrack.StatusExpected)
	ctStatusSeenReply = uint32(conntrack.StatusSeenReply)
	ctStatusAssured   = uint32(conntrack.StatusAssured)
	ctStatusConfirmed = uint32(conntrack.StatusConfirmed)
)

// conntrackMatch is one -m conntrack instance (xt_conntrack_mtinfo3).
type conntrackMatch struct {
	flags, inv                         ctOpt
	states                             ctStates
	proto                              uint8
	origSrc, origDst, replSrc, replDst ctAddr
	// ports are origsrc, origdst, replsrc, repldst.
	ports          [4]PortRange
	status         uint32
	expMin, expMax uint32
	// reply is --ctdir REPLY (iptables stores it as an inverted
	// direction flag).
	reply bool
}

func (m *conntrackMatch) has(o ctOpt) bool            { return m.flags&o != 0 }
func (m *conntrackMatch) invOf(o ctOpt) bool          { return m.inv&o != 0 }
func (m *conntrackMatch) pass(o ctOpt, hit bool) bool { return hit != m.invOf(o) }

// Match is conntrack_mt: the state test first; a packet without a
// connection (INVALID, UNTRACKED) then matches exactly when --ctstate was
// given (it passed), whatever the other options say; with a connection
// every given option must hold, each XOR its own "!".
func (m *conntrackMatch) Match(c *Context) bool {
	states, dir, e := packetStates(c)
	if m.has(ctoState) && !m.pass(ctoState, states&m.states != 0) {
		return false
	}
	if e == nil {
		return m.has(ctoState)
	}
	if m.has(ctoDir) && (dir == conntrack.DirReply) != m.reply {
		return false
	}
	orig, reply := e.Orig(), e.Reply()
	if m.has(ctoOrigSrc) && !m.pass(ctoOrigSrc, m.origSrc.matches(&orig.Src)) ||
		m.has(ctoOrigDst) && !m.pass(ctoOrigDst, m.origDst.matches(&orig.Dst)) ||
		m.has(ctoReplSrc) && !m.pass(ctoReplSrc, m.replSrc.matches(&reply.Src)) ||
		m.has(ctoReplDst) && !m.pass(ctoReplDst, m.replDst.matches(&reply.Dst)) {
		return false
	}
	if m.has(ctoProto) && !m.pass(ctoProto, e.Proto() == m.proto) {
		return false
	}
	// The ports are the tuples' protocol words whatever the protocol
	// (src.u.all / dst.u.all): for ICMP the identifier and type<<8|code,
	// for protocols without ports 0.
	ports := [4]uint16{orig.SrcPort, orig.DstPort, reply.SrcPort, reply.DstPort}
	for i, o := range [4]ctOpt{ctoOrigSrcPort, ctoOrigDstPort, ctoReplSrcPort, ctoReplDstPort} {
		if m.has(o) && !m.pass(o, m.ports[i].Contains(ports[i])) {
			return false
		}
	}
	if m.has(ctoStatus) && !m.pass(ctoStatus, uint32(e.Status())&m.status != 0) {
		return false
	}
	if m.has(ctoExpire) {
		// nf_ct_expires(ct) / HZ: whole seconds left, 0 while the
		// connection is unconfirmed.
		left := uint64(e.Timeout(c.Now) / time.Second)
		if !m.pass(ctoExpire, left >= uint64(m.expMin) && left <= uint64(m.expMax)) {
			return false
		}
	}
	return true
}

type conntrackBuilder struct{ m conntrackMatch }

func (b *conntrackBuilder) Parse(name string, args []string, invert bool) error {
	o, ok := ctOptNames[name]
	if !ok {
		return fmt.Errorf("unknown option --%s", name)
	}
	if b.m.flags&o != 0 {
		return fmt.Errorf("conntrack: option \"--%s\" can only be used once", name)
	}
	if invert && o == ctoDir {
		return fmt.Errorf("conntrack: option \"--ctdir\" %w", ErrInvert)
	}
	m := &b.m
	arg := args[0]
	var err error
	switch o {
	case ctoState:
		m.states, err = parseCtStates(arg, true)
	case ctoProto:
		m.proto, err = parseProtocol(arg)
	case ctoOrigSrc:
		m.origSrc, err = parseCtAddr(name, arg)
	case ctoOrigDst:
		m.origDst, err = parseCtAddr(name, arg)
	case ctoReplSrc:
		m.replSrc, err = parseCtAddr(name, arg)
	case ctoReplDst:
		m.replDst, err = parseCtAddr(name, arg)
	case ctoOrigSrcPort, ctoOrigDstPort, ctoReplSrcPort, ctoReplDstPort:
		i := bits.TrailingZeros16(uint16(o)) - bits.TrailingZeros16(uint16(ctoOrigSrcPort))
		m.ports[i], err = parsePortRC(arg)
	case ctoStatus:
		m.status, err = parseCtStatus(arg)
	case ctoExpire:
		var v [2]uint64
		var n int
		if v, n, err = parseUintRange(arg, 0xffffffff); err == nil {
			if n == 1 {
				v[1] = v[0]
			}
			m.expMin, m.expMax = uint32(v[0]), uint32(v[1])
		} else {
			err = fmt.Errorf("conntrack: bad value for option \"--ctexpire\": %w", err)
		}
	case ctoDir:
		switch {
		case equalFold(arg, "ORIGINAL"):
			m.reply = false
		case equalFold(arg, "REPLY"):
			m.reply = true
		default:
			err = fmt.Errorf("conntrack: Bad value for \"--ctdir\" option: %q", arg)
		}
	}
	if err != nil {
		return err
	}
	m.flags |= o
	if invert {
		m.inv |= o
	}
	return nil
}

func (b *conntrackBuilder) Build(*Rule) (Match, error) {
	if b.m.flags == 0 {
		return nil, errors.New("conntrack: At least one option is required")
	}
	m := b.m
	return &m, nil
}

// Save prints the options in iptables' fixed order with "--" names.
func (m *conntrackMatch) Save(b *strings.Builder) { m.dump(b, "--", true) }

// List prints the same without dashes; addresses get names unless numeric.
func (m *conntrackMatch) List(b *strings.Builder, numeric bool) { m.dump(b, "", numeric) }

// dump is libxt_conntrack's conntrack_dump for revision 3.
func (m *conntrackMatch) dump(b *strings.Builder, prefix string, numeric bool) {
	opt := func(o ctOpt, name string) bool {
		if !m.has(o) {
			return false
		}
		writeInv(b, m.invOf(o))
		b.WriteByte(' ')
		b.WriteString(prefix)
		b.WriteString(name)
		return true
	}
	if opt(ctoState, "ctstate") {
		writeCtStates(b, m.states)
	}
	if opt(ctoProto, "ctproto") {
		b.WriteByte(' ')
		b.WriteString(strconv.Itoa(int(m.proto)))
	}
	for _, a := range [...]struct {
		o    ctOpt
		name string
		v    ctAddr
	}{{ctoOrigSrc, "ctorigsrc", m.origSrc}, {ctoOrigDst, "ctorigdst", m.origDst},
		{ctoReplSrc, "ctreplsrc", m.replSrc}, {ctoReplDst, "ctrepldst", m.replDst}} {
		if opt(a.o, a.name) {
			writeCtAddr(b, a.v, numeric)
		}
	}
	for i, name := range [...]string{"ctorigsrcport", "ctorigdstport", "ctreplsrcport", "ctrepldstport"} {
		if opt(ctoOrigSrcPort<<i, name) {
			// conntrack_dump_ports: a range whose upper end is 0 prints
			// as its lower end alone.
			r := m.ports[i]
			b.WriteByte(' ')
			b.WriteString(strconv.Itoa(int(r.Min)))
			if r.Max != 0 && r.Min != r.Max {
				b.WriteByte(':')
				b.WriteString(strconv.Itoa(int(r.Max)))
			}
		}
	}
	if opt(ctoStatus, "ctstatus") {
		writeCtStatus(b, m.status)
	}
	if opt(ctoExpire, "ctexpire") {
		b.WriteByte(' ')
		b.WriteString(strconv.FormatUint(uint64(m.expMin), 10))
		if m.expMax != m.expMin {
			b.WriteByte(':')
			b.WriteString(strconv.FormatUint(uint64(m.expMax), 10))
		}
	}
	if m.has(ctoDir) {
		b.WriteByte(' ')
		b.WriteString(prefix)
		if m.reply {
			b.WriteString("ctdir REPLY")
		} else {
			b.WriteString("ctdir ORIGINAL")
		}
	}
}

// ---- --ctstatus ----

var ctStatusNames = [...]struct {
	name string
	bit  uint32
}{{"NONE", 0}, {"EXPECTED", ctStatusExpected}, {"SEEN_REPLY", ctStatusSeenReply},
	{"ASSURED", ctStatusAssured}, {"CONFIRMED", ctStatusConfirmed}}

// parseCtStatus parses a comma list of status names, each any
// case-insensitive prefix of a name, tried in the order NONE, EXPECTED,
// SEEN_REPLY, ASSURED, CONFIRMED (conntrack_ps_statuses).
func parseCtStatus(arg string) (uint32, error) {
	var mask uint32
	for rest := arg; ; {
		part, tail, more := strings.Cut(rest, ",")
		found := false
		if part != "" {
			for _, s := range ctStatusNames {
				if hasPrefixFold(s.name, part) {
					mask |= s.bit
					found = true
					break
				}
			}
		}
		if !found {
			return 0, fmt.Errorf("Bad ctstatus %q", rest)
		}
		if !more {
			return mask, nil
		}
		rest = tail
	}
}

func writeCtStatus(b *strings.Builder, mask uint32) {
	sep := byte(' ')
	for _, s := range ctStatusNames[1:] {
		if mask&s.bit != 0 {
			b.WriteByte(sep)
			b.WriteString(s.name)
			sep = ','
		}
	}
	if mask == 0 {
		b.WriteString(" NONE")
	}
}

// ---- addresses ----

// parseCtAddr parses ADDR[/MASK] as iptables' XTTYPE_HOSTMASK does. The
// address is resolved as getaddrinfo would for IPv4: inet_aton's numeric
// forms ("10.1" is 10.0.0.1) or a name from /etc/hosts (qtables asks no
// DNS server). The mask is a prefix length (a base-0 number up to 32) or
// a dotted mask; a dotted mask that is not contiguous, and a number above
// 32 read as a dotted mask, become /32, as xtopt_parse_plenmask makes
// them (its prefix length of -1 sets no bit to zero).
func parseCtAddr(opt, s string) (ctAddr, error) {
	host, ms, hasMask := strings.Cut(s, "/")
	n := ctAddr{mask: 0xffffffff}
	if hasMask {
		m, ok := parsePlenMask(ms)
		if !ok {
			return n, fmt.Errorf("conntrack: bad value for option \"--%s\", neither a valid network mask nor valid CIDR (0-32)", opt)
		}
		n.mask = m
	}
	a, ok := inetAton(host)
	if !ok {
		if a, ok = lookupHostV4(host); !ok {
			return n, fmt.Errorf("host/network %q not found (numeric addresses and /etc/hosts names only)", host)
		}
	}
	n.addr = a
	return n, nil
}

// parsePlenMask is xtopt_parse_plen followed by xtopt_parse_plenmask.
func parsePlenMask(s string) (uint32, bool) {
	if v, err := ParseUint(s, 32); err == nil {
		return prefixMask32(int(v)), true
	}
	m, err := parseIPRangeAddr(s)
	if err != nil {
		return 0, false
	}
	if l := bits.LeadingZeros32(^m); m<<l == 0 {
		return m, true // contiguous
	}
	return 0xffffffff, true
}

func prefixMask32(n int) uint32 {
	if n <= 0 {
		return 0
	}
	return ^uint32(0) << (32 - n)
}

// inetAton parses the numeric IPv4 forms of inet_aton: a, a.b, a.b.c and
// a.b.c.d, each part a C number (0x hex, leading 0 octal), the last part
// filling the remaining bytes.
func inetAton(s string) (uint32, bool) {
	parts := strings.Split(s, ".")
	if len(parts) > 4 {
		return 0, false
	}
	var v [4]uint64
	for i, p := range parts {
		x, rest, ok := strtoul(p, 0)
		if !ok || rest != "" || p[0] == ' ' || p[0] == '+' {
			return 0, false
		}
		v[i] = x
	}
	last := len(parts) - 1
	var a uint64
	for i := 0; i < last; i++ {
		if v[i] > 0xff {
			return 0, false
		}
		a |= v[i] << (24 - 8*i)
	}
	if v[last] >= 1<<(32-8*last) {
		return 0, false
	}
	return uint32(a | v[last]), true
}

// writeCtAddr is conntrack_dump_addr: " anywhere" for the address 0
// unless numeric (whatever the mask), else the address (its /etc/hosts
// or /etc/networks name unless numeric) and the mask as "" for /32, "/N"
// or "/a.b.c.d".
func writeCtAddr(b *strings.Builder, n ctAddr, numeric bool) {
	if !numeric && n.addr == 0 {
		b.WriteString(" anywhere")
		return
	}
	b.WriteByte(' ')
	name := ""
	if !numeric {
		name = hostNameV4(n.addr)
	}
	if name != "" {
		b.WriteString(name)
	} else {
		writeIPv4(b, n.addr)
	}
	writeMask(b, n.mask)
}

// writeMask appends xtables_ipmask_to_numeric's form of m.
func writeMask(b *strings.Builder, m uint32) {
	switch l := bits.LeadingZeros32(^m); {
	case m == 0xffffffff:
	case m<<l == 0:
		b.WriteByte('/')
		b.WriteString(strconv.Itoa(l))
	default:
		b.WriteByte('/')
		writeIPv4(b, m)
	}
}

// ---- name databases: /etc/hosts, /etc/networks, /etc/protocols ----

// nameFiles holds what the C library's resolver functions that iptables
// calls find in the local files. qtables asks no DNS server, so where a
// resolver knows more names, iptables may print or accept a name that
// qtables does not.
type nameFiles struct {
	hostByName map[string]uint32
	hostByAddr map[uint32]string
	netByAddr  map[uint32]string
	protoByNm  map[string]uint8
}

var systemNameFiles = sync.OnceValue(func() *nameFiles {
	read := func(path string) io.Reader {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil
		}
		return bytes.NewReader(b)
	}
	return readNameFiles(read("/etc/hosts"), read("/etc/networks"), read("/etc/protocols"))
})

// readNameFiles parses the three files; the first entry for a name or an
// address wins, as the files are scanned from the top.
func readNameFiles(hosts, networks, protocols io.Reader) *nameFiles {
	f := &nameFiles{hostByName: map[string]uint32{}, hostByAddr: map[uint32]string{},
		netByAddr: map[uint32]string{}, protoByNm: map[string]uint8{}}
	fields(hosts, func(w []string) {
		if len(w) < 2 || strings.Count(w[0], ".") != 3 {
			return
		}
		a, ok := inetAton(w[0])
		if !ok {
			return
		}
		if _, dup := f.hostByAddr[a]; !dup {
			f.hostByAddr[a] = w[1]
		}
		for _, n := range w[1:] {
			if _, dup := f.hostByName[n]; !dup {
				f.hostByName[n] = a
			}
		}
	})
	fields(networks, func(w []string) {
		if len(w) < 2 {
			return
		}
		// getnetbyaddr's numbers: missing trailing parts are zero.
		parts := strings.Split(w[1], ".")
		if len(parts) > 4 {
			return
		}
		var a uint32
		for i := 0; i < 4; i++ {
			var p uint64
			if i < len(parts) {
				var err error
				if p, err = strconv.ParseUint(parts[i], 10, 8); err != nil {
					return
				}
			}
			a = a<<8 | uint32(p)
		}
		if _, dup := f.netByAddr[a]; !dup {
			f.netByAddr[a] = w[0]
		}
	})
	fields(protocols, func(w []string) {
		if len(w) < 2 {
			return
		}
		p, err := strconv.ParseUint(w[1], 10, 8)
		if err != nil {
			return
		}
		for _, n := range append(w[:1:1], w[2:]...) {
			if _, dup := f.protoByNm[n]; !dup {
				f.protoByNm[n] = uint8(p)
			}
		}
	})
	return f
}

func fields(r io.Reader, fn func([]string)) {
	if r == nil {
		return
	}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		if w := strings.Fields(line); len(w) > 0 {
			fn(w)
		}
	}
}

// lookupHostV4 resolves a name through /etc/hosts.
func lookupHostV4(name string) (uint32, bool) {
	a, ok := systemNameFiles().hostByName[name]
	return a, ok
}

// hostNameV4 is xtables_ipaddr_to_anyname's name for a: the first
// /etc/hosts name, else the /etc/networks name; "" for none.
func hostNameV4(a uint32) string {
	f := systemNameFiles()
	if n, ok := f.hostByAddr[a]; ok {
		return n
	}
	return f.netByAddr[a]
}

// iptablesProtos is xtables_chain_protos, consulted after /etc/protocols.
var iptablesProtos = map[string]uint8{
	"tcp": 6, "sctp": 132, "udp": 17, "udplite": 136, "icmp": 1, "icmpv6": 58,
	"ipv6-icmp": 58, "esp": 50, "ah": 51, "ipv6-mh": 135, "mh": 135, "all": 0,
}

// parseProtocol is xtables_parse_protocol: a base-0 number up to 255,
// "all", an /etc/protocols name or alias (case-sensitive, as
// getprotobyname), then iptables' built-in names.
func parseProtocol(s string) (uint8, error) {
	if v, err := ParseUint(s, 0xff); err == nil {
		return uint8(v), nil
	}
	if s == "all" {
		return 0, nil
	}
	if p, ok := systemNameFiles().protoByNm[s]; ok {
		return p, nil
	}
	if p, ok := iptablesProtos[s]; ok {
		return p, nil
	}
	return 0, fmt.Errorf("unknown protocol %q specified", s)
}
