package conformance

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Hints are the values a generated rule set tests. The packet generator
// draws from them so that packets land on both sides of every edge: inside
// and just outside each address prefix and range, on and next to every port
// bound, length and TTL, with and without each TCP flag combination, ICMP
// type and code, and TCP option.
type Hints struct {
	// Nets are address/mask pairs from -s, -d (masks need not be
	// contiguous).
	Nets []MaskedAddr
	// Addrs are single addresses: iprange bounds.
	Addrs      []netip.Addr
	Protos     []uint8
	Ports      []uint16
	TCPFlags   []FlagTest
	TCPOptions []uint8
	ICMP       []ICMPTest
	// TTLs are the values in ttl matches (compared after the forwarding
	// decrement).
	TTLs    []uint8
	Lengths []int
	// Strings are the string matches' patterns, which packets not aimed
	// at them carry now and then too.
	Strings []*StringTest
	// Rules holds what each rule tests, so packets can be aimed at a rule
	// (and at the rules that lead to its chain).
	Rules []*RuleHint
}

// RuleHint is what one rule tests. Nil fields are untested.
type RuleHint struct {
	Chain string // the rule's chain
	Jump  string // the user chain it jumps (-j) or goes (-g) to, if any

	Src, Dst           *AddrTest
	SrcRange, DstRange *RangeTest
	Proto              uint8 // 0: any
	ProtoInv           bool
	// Frag is +1 for -f (later fragments only), -1 for ! -f, 0 otherwise.
	Frag         int8
	SPort, DPort *PortTest
	MultiPorts   *MultiTest
	Flags        *FlagTest
	TCPOption    uint8
	TCPOptionInv bool
	ICMP         *ICMPTest
	TTL          *TTLTest
	Length       *RangeInt
	// String is the rule's string match (gen_string.go).
	String *StringTest
}

// AddrTest is -s or -d.
type AddrTest struct {
	MaskedAddr
	Inv bool
}

// RangeTest is an iprange bound pair.
type RangeTest struct {
	Lo, Hi netip.Addr
	Inv    bool
}

// PortTest is a --sport or --dport range.
type PortTest struct {
	Lo, Hi uint16
	Inv    bool
}

// MultiTest is a multiport list; Which is 's', 'd' or 'b' (--ports).
type MultiTest struct {
	Ranges [][2]uint16
	Which  byte
	Inv    bool
}

// TTLTest is a ttl match: Op is '=', '!', '<' or '>'.
type TTLTest struct {
	Op byte
	V  uint8
}

// RangeInt is an inclusive integer range, possibly inverted.
type RangeInt struct {
	Min, Max int
	Inv      bool
}

// MaskedAddr is an address with an arbitrary 32-bit mask.
type MaskedAddr struct {
	Addr netip.Addr
	Mask uint32
}

// FlagTest is a --tcp-flags mask and comparison.
type FlagTest struct {
	Mask, Comp uint8
	Inv        bool
}

// ICMPTest is an icmp match's type and code range.
type ICMPTest struct {
	Type, CodeMin, CodeMax uint8
	Inv                    bool
}

// ruleGen builds one rule set. Everything random comes from r, so a seed
// reproduces the rule set.
type ruleGen struct {
	r *rand.Rand
	// x is the random stream of the string, time and limit matches
	// (gen_*.go), kept apart so that they leave the rest of a seed's
	// case as it was.
	x *rand.Rand
	// clock is the moment the time matches are built around.
	clock time.Time
	hints Hints
	// nets are the address blocks this rule set is about; most rule
	// addresses are drawn from them so that rules overlap.
	nets []MaskedAddr
	// marks are the mark values MARK rules set and mark rules test.
	marks []uint32
	// cur collects what the rule being generated tests.
	cur *RuleHint
	// protoMatchUsed records that the rule already has a tcp or udp match:
	// iptables-nft turns their ports and flags into native nftables
	// expressions and iptables-save prints two instances merged into one
	// (lossy), so a rule gets at most one.
	protoMatchUsed bool
	// markNext forces the next rule's target to MARK.
	markNext bool
}

func (g *ruleGen) chance(p float64) bool { return g.r.Float64() < p }

func (g *ruleGen) intn(n int) int { return g.r.IntN(n) }

func pick[T any](g *ruleGen, xs []T) T { return xs[g.r.IntN(len(xs))] }

// chainNames are candidate user chain names: mixed case, digits, dashes and
// underscores, one of the maximum length (28), so the sort order of
// iptables-save (byte-wise) and name handling are exercised.
var chainNames = []string{
	"web", "Zeta", "a-b", "LOGGING", "c_1", "ssh-in", "B2", "x", "mid",
	"chain-with-28-characters-xx", "ALLOWED", "t0", "drop_all", "Q",
}

// GenerateRules returns a random filter-table rule set in iptables-restore
// form and the values its rules test. The same r state gives the same
// output.
//
// Shape: the built-in chains INPUT, FORWARD (policy ACCEPT or DROP) and
// OUTPUT; up to five user chains; rules in FORWARD and the user chains. A
// user chain only jumps (-j) or goes (-g) to chains created after it, so the
// chain graph has no loops, and chains may be reached from FORWARD, from
// other user chains, or not at all.
func GenerateRules(r *rand.Rand) (string, *Hints) {
	return generateRules(r, rand.New(rand.NewPCG(1, 2)), DefaultClock())
}

// generateRules is GenerateRules with the second random stream and the
// clock of the string, time and limit matches.
func generateRules(r, x *rand.Rand, clock time.Time) (string, *Hints) {
	g := &ruleGen{r: r, x: x, clock: clock}
	g.setup()
	nUser := g.intn(6)
	names := slices.Clone(chainNames)
	r.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	users := names[:nUser]

	var perChain [][]string
	// chain index -1 is FORWARD; user chain i may reach users[i+1:].
	for ci := -1; ci < nUser; ci++ {
		var reach []string
		name := "FORWARD"
		n := 4 + g.intn(18)
		if ci >= 0 {
			reach = users[ci+1:]
			name = users[ci]
			n = 1 + g.intn(8)
		} else {
			reach = users
		}
		var rules []string
		for j := range n {
			// Packets enter FORWARD with mark 0: a MARK rule or two at
			// its top give the mark matches further down different
			// marks to see.
			g.markNext = ci < 0 && j < 2 && g.chance(0.5)
			g.cur = &RuleHint{Chain: name}
			rules = append(rules, "-A "+name+g.rule(ci >= 0, reach))
			g.hints.Rules = append(g.hints.Rules, g.cur)
		}
		perChain = append(perChain, rules)
	}

	var b strings.Builder
	b.WriteString("*filter\n:INPUT ACCEPT [0:0]\n")
	policy := "ACCEPT"
	if g.chance(0.5) {
		policy = "DROP"
	}
	fmt.Fprintf(&b, ":FORWARD %s [0:0]\n:OUTPUT ACCEPT [0:0]\n", policy)
	decl := slices.Clone(users)
	r.Shuffle(len(decl), func(i, j int) { decl[i], decl[j] = decl[j], decl[i] })
	for _, u := range decl {
		fmt.Fprintf(&b, ":%s - [0:0]\n", u)
	}
	// Interleave the chains' rules (order within a chain is kept): the
	// restore file need not group them.
	pos := make([]int, len(perChain))
	for {
		var open []int
		for i := range perChain {
			if pos[i] < len(perChain[i]) {
				open = append(open, i)
			}
		}
		if len(open) == 0 {
			break
		}
		i := pick(g, open)
		b.WriteString(perChain[i][pos[i]])
		b.WriteByte('\n')
		pos[i]++
	}
	b.WriteString("COMMIT\n")
	g.finishHints()
	return b.String(), &g.hints
}

// setup chooses the address blocks and marks the rule set revolves around.
func (g *ruleGen) setup() {
	for range 2 + g.intn(4) {
		a := randomAddr(g.r)
		bits := pick(g, []int{8, 12, 16, 20, 24, 24, 28, 30, 32})
		g.nets = append(g.nets, MaskedAddr{a, prefixMask(bits)})
	}
	g.marks = []uint32{0, 1, 2, 3}
	for range 2 {
		g.marks = append(g.marks, pick(g, []uint32{0x10, 0xff, 0x100, 0xffffffff, 0x80000000, g.r.Uint32()}))
	}
}

func (g *ruleGen) finishHints() {
	h := &g.hints
	h.Nets = append(h.Nets, g.nets...)
	slices.Sort(h.Protos)
	h.Protos = slices.Compact(h.Protos)
}

func prefixMask(bits int) uint32 {
	if bits == 0 {
		return 0
	}
	return ^uint32(0) << (32 - bits)
}

func addrU32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func u32Addr(u uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(u >> 24), byte(u >> 16), byte(u >> 8), byte(u)})
}

func dotted(m uint32) string { return u32Addr(m).String() }

// rule returns one rule's text after "-A CHAIN" (with a leading space).
func (g *ruleGen) rule(inUser bool, reach []string) string {
	var base []string
	if g.chance(0.3) {
		base = append(base, g.addrOpt(pick(g, []string{"-s", "-s", "--source", "--src"})))
	}
	if g.chance(0.3) {
		base = append(base, g.addrOpt(pick(g, []string{"-d", "-d", "--destination", "--dst"})))
	}
	if g.chance(0.15) {
		base = append(base, g.ifaceOpt(pick(g, []string{"-i", "-i", "--in-interface"}), InIface))
	}
	if g.chance(0.15) {
		base = append(base, g.ifaceOpt(pick(g, []string{"-o", "-o", "--out-interface"}), OutIface))
	}
	proto, protoInv, protoText := g.protoOpt()
	if protoText != "" {
		base = append(base, protoText)
	}
	if g.chance(0.08) {
		f := pick(g, []string{"-f", "--fragment"})
		g.cur.Frag = 1
		if g.chance(0.4) {
			f = "! " + f
			g.cur.Frag = -1
		}
		base = append(base, f)
	}
	g.r.Shuffle(len(base), func(i, j int) { base[i], base[j] = base[j], base[i] })

	var matches []string
	g.protoMatchUsed = false
	for i := range pick(g, []int{0, 1, 1, 1, 2, 2, 3}) {
		// Only the first match may be implicit (its options right after
		// the base options, no -m): behind another match, getopt would
		// hand an abbreviation like --dport to multiport's --dports.
		if m := g.match(proto, protoInv, i == 0); m != "" {
			matches = append(matches, m)
		}
	}
	target := g.target(inUser, reach, proto, protoInv)
	if conds := len(base) + len(matches); conds <= 1 {
		// An unconditional verdict hides every later rule of the chain,
		// a one-condition verdict most of them; keep some, but mostly
		// turn them into non-terminating rules.
		p := 0.8 - 0.3*float64(conds)
		for i := 0; i < 3 && terminating(target) && g.chance(p); i++ {
			target = g.target(inUser, reach, proto, protoInv)
		}
	}
	if f := strings.Fields(target); len(f) == 2 && slices.Contains(chainNames, f[1]) {
		g.cur.Jump = f[1]
	}
	// Added last, from their own random stream, so that the rest of the
	// rule is what it would be without them.
	matches = g.extMatches(matches)

	var b strings.Builder
	for _, s := range base {
		b.WriteString(" " + s)
	}
	for _, m := range matches {
		b.WriteString(" " + m)
	}
	if target != "" {
		b.WriteString(" " + target)
	}
	return b.String()
}

// addrOpt returns "[!] -s ADDR[/MASK]" with a prefix length, a contiguous
// dotted mask or a non-contiguous one; host bits are often set (iptables
// clears them).
func (g *ruleGen) addrOpt(flag string) (opt string) {
	t := &AddrTest{}
	if flag == "-s" || strings.HasPrefix(flag, "--s") {
		g.cur.Src = t
	} else {
		g.cur.Dst = t
	}
	defer func() { t.Inv = strings.HasPrefix(opt, "!") }()
	var a netip.Addr
	var mask uint32
	if g.chance(0.75) {
		n := pick(g, g.nets)
		inside := addrU32(n.Addr)&n.Mask | g.r.Uint32()&^n.Mask
		a = u32Addr(inside)
	} else {
		a = randomAddr(g.r)
	}
	var text string
	switch k := g.intn(10); {
	case k < 2: // host
		mask = ^uint32(0)
		text = a.String()
	case k < 6:
		bits := g.intn(33)
		mask = prefixMask(bits)
		text = a.String() + "/" + strconv.Itoa(bits)
	case k < 8:
		bits := g.intn(33)
		mask = prefixMask(bits)
		text = a.String() + "/" + dotted(mask)
	default: // non-contiguous
		mask = g.r.Uint32() | 0x80000000
		if g.chance(0.5) {
			mask = pick(g, []uint32{0xff00ff00, 0xffff00ff, 0x00ffffff, 0xff0000ff, 0xfffffffe ^ 0x100})
		}
		text = a.String() + "/" + dotted(mask)
	}
	g.hints.Nets = append(g.hints.Nets, MaskedAddr{a, mask})
	t.MaskedAddr = MaskedAddr{a, mask}
	// iptables-nft refuses an inverted address with mask 0 (the kernel
	// rejects the nft expression with EINVAL), unlike the legacy backend.
	if mask != 0 && g.chance(0.2) {
		return "! " + flag + " " + text
	}
	return flag + " " + text
}

// ifaceOpt returns "[!] -i NAME": the real interface (exactly, or through
// a + wildcard), or names that never match it.
func (g *ruleGen) ifaceOpt(flag, real string) string {
	names := []string{real, real, real + "+", real[:1] + "+", "+", "eth0", "a0", "c1", "veth+", real[:1], real + "0", "lo", "B0"}
	if real == InIface {
		names = append(names, OutIface)
	} else {
		names = append(names, InIface)
	}
	name := pick(g, names)
	if g.chance(0.25) {
		return "! " + flag + " " + name
	}
	return flag + " " + name
}

// protoChoice is a protocol and the spellings iptables accepts for it.
type protoChoice struct {
	num   uint8
	names []string
}

var protoChoices = []protoChoice{
	{6, []string{"tcp", "tcp", "TCP", "6"}},
	{17, []string{"udp", "udp", "Udp", "17"}},
	{1, []string{"icmp", "icmp", "ICMP", "1"}},
	{132, []string{"sctp", "132"}},
	{136, []string{"udplite", "136"}},
	{33, []string{"dccp", "33"}},
	{50, []string{"esp", "50"}},
	{51, []string{"ah", "51"}},
	{108, []string{"ipcomp"}},
	{47, []string{"47"}},
	{2, []string{"2"}},
	{4, []string{"4"}},
	{255, []string{"255"}},
	{253, []string{"253"}},
	{0, []string{"all", "0", "ALL"}},
}

// protoOpt picks the rule's protocol: none most often, then tcp, udp, icmp
// and some others. It returns the number, inversion and option text.
func (g *ruleGen) protoOpt() (uint8, bool, string) {
	var c protoChoice
	switch k := g.intn(100); {
	case k < 30:
		return 0, false, ""
	case k < 55:
		c = protoChoices[0]
	case k < 72:
		c = protoChoices[1]
	case k < 85:
		c = protoChoices[2]
	default:
		c = pick(g, protoChoices[3:])
	}
	g.hints.Protos = append(g.hints.Protos, c.num)
	flag := pick(g, []string{"-p", "-p", "--protocol"})
	text := flag + " " + pick(g, c.names)
	inv := c.num != 0 && g.chance(0.15)
	if inv {
		text = "! " + text
	}
	g.cur.Proto, g.cur.ProtoInv = c.num, inv
	return c.num, inv, text
}

// match returns one match ("-m NAME options"). Protocol matches are only
// chosen when the rule's protocol allows them; if implicitOK, one may be
// written implicitly (options without -m, loaded through -p), as iptables
// allows.
func (g *ruleGen) match(proto uint8, protoInv, implicitOK bool) string {
	kinds := []string{"iprange", "length", "length", "mark", "mark", "ttl", "ttl", "pkttype", "comment"}
	if !protoInv {
		switch proto {
		case 6:
			kinds = append(kinds, "multiport", "multiport")
			if !g.protoMatchUsed {
				kinds = append(kinds, "tcp", "tcp", "tcp", "tcp", "tcp")
			}
		case 17:
			kinds = append(kinds, "multiport", "multiport")
			if !g.protoMatchUsed {
				kinds = append(kinds, "udp", "udp", "udp", "udp")
			}
		case 1:
			kinds = append(kinds, "icmp", "icmp", "icmp")
		case 132, 136, 33:
			kinds = append(kinds, "multiport", "multiport")
		}
	}
	k := pick(g, kinds)
	if k == "tcp" || k == "udp" {
		g.protoMatchUsed = true
	}
	switch k {
	case "tcp":
		opts := g.tcpOpts()
		if implicitOK && g.chance(0.4) {
			return opts
		}
		return "-m tcp " + opts
	case "udp":
		opts := g.portOpts("udp")
		if implicitOK && g.chance(0.4) {
			return opts
		}
		return "-m udp " + opts
	case "icmp":
		opts := g.icmpOpt()
		if implicitOK && g.chance(0.4) {
			return opts
		}
		return "-m icmp " + opts
	case "multiport":
		return "-m multiport " + g.multiportOpt()
	case "iprange":
		return "-m iprange " + g.iprangeOpt()
	case "length":
		return "-m length " + g.lengthOpt()
	case "mark":
		return "-m mark " + g.markMatchOpt()
	case "ttl":
		return "-m ttl " + g.ttlOpt()
	case "pkttype":
		t := pick(g, []string{"unicast", "unicast", "host", "broadcast", "bcast", "multicast", "mcast", "otherhost"})
		return "-m pkttype " + g.maybeNot("--pkt-type "+t, 0.3)
	case "comment":
		return "-m comment --comment " + quote(pick(g, []string{
			"foo", "allow ssh", "x-1_y", "quote\"inside", `back\slash`, "it's", "tab\there", "ümlaut", "a",
			strings.Repeat("long", 30),
		}))
	}
	return ""
}

func (g *ruleGen) maybeNot(opt string, p float64) string {
	if g.chance(p) {
		return "! " + opt
	}
	return opt
}

// port returns a port number worth testing.
func (g *ruleGen) port() uint16 {
	if g.chance(0.5) {
		return pick(g, []uint16{0, 1, 7, 22, 53, 80, 443, 1023, 1024, 8080, 32768, 65534, 65535})
	}
	return uint16(g.r.UintN(65536))
}

// portSpec returns a tcp/udp port spec: p, a:b, :b, a:, a:a or :.
func (g *ruleGen) portSpec(t *PortTest) string {
	a, b := g.port(), g.port()
	if a > b {
		a, b = b, a
	}
	if g.chance(0.3) {
		b = a + uint16(g.intn(int(65535-a)+1)%64)
	}
	g.hints.Ports = append(g.hints.Ports, a, b)
	switch k := g.intn(20); {
	case k < 8:
		*t = PortTest{Lo: a, Hi: a}
		return strconv.Itoa(int(a))
	case k < 14:
		*t = PortTest{Lo: a, Hi: b}
		return fmt.Sprintf("%d:%d", a, b)
	case k < 16:
		*t = PortTest{Lo: 0, Hi: b}
		return fmt.Sprintf(":%d", b)
	case k < 18:
		*t = PortTest{Lo: a, Hi: 65535}
		return fmt.Sprintf("%d:", a)
	case k < 19:
		*t = PortTest{Lo: a, Hi: a}
		return fmt.Sprintf("%d:%d", a, a)
	default:
		*t = PortTest{Lo: 0, Hi: 65535}
		return ":"
	}
}

// maybeNotPorts inverts a port option sometimes, but never the full range
// 0:65535: iptables-nft drops such a test from the rule instead of making
// it "never matches", and iptables-save no longer shows it.
func (g *ruleGen) maybeNotPorts(opt string, t *PortTest) string {
	if t.Lo == 0 && t.Hi == 65535 {
		return opt
	}
	return g.maybeNot(opt, 0.2)
}

// portOpts returns --sport and/or --dport options (udp, and the port part
// of tcp).
func (g *ruleGen) portOpts(proto string) string {
	var opts []string
	if g.chance(0.5) {
		t := &PortTest{}
		opt := pick(g, []string{"--sport", "--sport", "--source-port"}) + " " + g.portSpec(t)
		opt = g.maybeNotPorts(opt, t)
		t.Inv = opt[0] == '!'
		g.cur.SPort = t
		opts = append(opts, opt)
	}
	if len(opts) == 0 || g.chance(0.5) {
		t := &PortTest{}
		opt := pick(g, []string{"--dport", "--dport", "--destination-port"}) + " " + g.portSpec(t)
		opt = g.maybeNotPorts(opt, t)
		t.Inv = opt[0] == '!'
		g.cur.DPort = t
		opts = append(opts, opt)
	}
	g.r.Shuffle(len(opts), func(i, j int) { opts[i], opts[j] = opts[j], opts[i] })
	return strings.Join(opts, " ")
}

var tcpFlagNames = []string{"FIN", "SYN", "RST", "PSH", "ACK", "URG"}

func flagList(g *ruleGen, f uint8) string {
	if f == 0 {
		return "NONE"
	}
	if f == 0x3f && g.chance(0.5) {
		return "ALL"
	}
	var names []string
	for i, n := range tcpFlagNames {
		if f&(1<<i) != 0 {
			if g.chance(0.2) {
				n = strings.ToLower(n)
			}
			names = append(names, n)
		}
	}
	g.r.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	return strings.Join(names, ",")
}

// tcpOpts returns options of the tcp match: ports, flags (or --syn) and
// --tcp-option, in random order.
func (g *ruleGen) tcpOpts() string {
	var opts []string
	if g.chance(0.6) {
		opts = append(opts, g.portOpts("tcp"))
	}
	switch k := g.intn(10); {
	case k < 3:
		mask := uint8(g.r.UintN(64))
		comp := mask & uint8(g.r.UintN(64))
		if g.chance(0.1) {
			comp = uint8(g.r.UintN(64)) // may lie outside the mask: never matches
		}
		if mask == 0 {
			// iptables-nft drops a zero mask from the rule (and from
			// iptables-save), changing its meaning: avoided.
			mask = 1 << g.intn(6)
		}
		opt := g.maybeNot("--tcp-flags "+flagList(g, mask)+" "+flagList(g, comp), 0.2)
		g.cur.Flags = &FlagTest{mask, comp, opt[0] == '!'}
		g.hints.TCPFlags = append(g.hints.TCPFlags, *g.cur.Flags)
		opts = append(opts, opt)
	case k < 5:
		opt := g.maybeNot("--syn", 0.3)
		g.cur.Flags = &FlagTest{0x17, 0x02, opt[0] == '!'}
		g.hints.TCPFlags = append(g.hints.TCPFlags, *g.cur.Flags)
		opts = append(opts, opt)
	}
	if g.chance(0.3) {
		o := pick(g, []uint8{1, 2, 3, 4, 5, 8, 19, 28, 30, 34, 253, 254, 255, uint8(1 + g.intn(255))})
		g.hints.TCPOptions = append(g.hints.TCPOptions, o)
		opt := g.maybeNot("--tcp-option "+strconv.Itoa(int(o)), 0.3)
		g.cur.TCPOption, g.cur.TCPOptionInv = o, opt[0] == '!'
		opts = append(opts, opt)
	}
	if len(opts) == 0 {
		opts = append(opts, g.portOpts("tcp"))
	}
	g.r.Shuffle(len(opts), func(i, j int) { opts[i], opts[j] = opts[j], opts[i] })
	return strings.Join(opts, " ")
}

// icmpNames are the ICMP type names iptables accepts, with their type and
// code range.
var icmpNames = []struct {
	name       string
	typ        uint8
	cmin, cmax uint8
}{
	{"echo-reply", 0, 0, 255}, {"pong", 0, 0, 255},
	{"destination-unreachable", 3, 0, 255},
	{"network-unreachable", 3, 0, 0}, {"host-unreachable", 3, 1, 1},
	{"protocol-unreachable", 3, 2, 2}, {"port-unreachable", 3, 3, 3},
	{"fragmentation-needed", 3, 4, 4}, {"source-route-failed", 3, 5, 5},
	{"network-unknown", 3, 6, 6}, {"host-unknown", 3, 7, 7},
	{"network-prohibited", 3, 9, 9}, {"host-prohibited", 3, 10, 10},
	{"TOS-network-unreachable", 3, 11, 11}, {"TOS-host-unreachable", 3, 12, 12},
	{"communication-prohibited", 3, 13, 13}, {"host-precedence-violation", 3, 14, 14},
	{"precedence-cutoff", 3, 15, 15},
	{"source-quench", 4, 0, 255}, {"redirect", 5, 0, 255},
	{"network-redirect", 5, 0, 0}, {"host-redirect", 5, 1, 1},
	{"TOS-network-redirect", 5, 2, 2}, {"TOS-host-redirect", 5, 3, 3},
	{"echo-request", 8, 0, 255}, {"ping", 8, 0, 255},
	{"router-advertisement", 9, 0, 255}, {"router-solicitation", 10, 0, 255},
	{"time-exceeded", 11, 0, 255}, {"ttl-exceeded", 11, 0, 255},
	{"ttl-zero-during-transit", 11, 0, 0}, {"ttl-zero-during-reassembly", 11, 1, 1},
	{"parameter-problem", 12, 0, 255}, {"ip-header-bad", 12, 0, 0},
	{"required-option-missing", 12, 1, 1},
	{"timestamp-request", 13, 0, 255}, {"timestamp-reply", 14, 0, 255},
	{"address-mask-request", 17, 0, 255}, {"address-mask-reply", 18, 0, 255},
	{"any", 255, 0, 255},
}

// icmpOpt returns "[!] --icmp-type X": a name, a type, type/code or
// type/code:code.
func (g *ruleGen) icmpOpt() string {
	var text string
	var t ICMPTest
	switch k := g.intn(10); {
	case k < 4:
		n := pick(g, icmpNames)
		text, t = n.name, ICMPTest{Type: n.typ, CodeMin: n.cmin, CodeMax: n.cmax}
	case k < 6:
		typ := pick(g, []uint8{0, 3, 5, 8, 11, 12, 13, 255, uint8(g.intn(256))})
		text, t = strconv.Itoa(int(typ)), ICMPTest{Type: typ, CodeMin: 0, CodeMax: 255}
	case k < 9:
		typ := pick(g, []uint8{0, 3, 5, 8, 11, 255, uint8(g.intn(256))})
		code := pick(g, []uint8{0, 1, 3, 13, 255, uint8(g.intn(256))})
		text, t = fmt.Sprintf("%d/%d", typ, code), ICMPTest{Type: typ, CodeMin: code, CodeMax: code}
	default:
		typ := pick(g, []uint8{3, 5, 11, 8, uint8(g.intn(256))})
		lo := uint8(g.intn(16))
		hi := lo + uint8(g.intn(8))
		text, t = fmt.Sprintf("%d/%d:%d", typ, lo, hi), ICMPTest{Type: typ, CodeMin: lo, CodeMax: hi}
	}
	g.hints.ICMP = append(g.hints.ICMP, t)
	opt := g.maybeNot("--icmp-type "+text, 0.2)
	t.Inv = opt[0] == '!'
	g.cur.ICMP = &t
	return opt
}

// multiportOpt returns "[!] --ports|--sports|--dports LIST" within the 15
// slot limit (a range takes two; ranges need a < b).
func (g *ruleGen) multiportOpt() string {
	slots := 1 + g.intn(15)
	var items []string
	t := &MultiTest{}
	for used := 0; used < slots; {
		if used+2 <= slots && used+1 < 15 && g.chance(0.3) {
			a := g.port()
			if a == 65535 {
				a = 65534
			}
			b := a + 1 + uint16(g.intn(int(65535-a)))%200
			g.hints.Ports = append(g.hints.Ports, a, b)
			t.Ranges = append(t.Ranges, [2]uint16{a, b})
			items = append(items, fmt.Sprintf("%d:%d", a, b))
			used += 2
			continue
		}
		p := g.port()
		g.hints.Ports = append(g.hints.Ports, p)
		t.Ranges = append(t.Ranges, [2]uint16{p, p})
		items = append(items, strconv.Itoa(int(p)))
		used++
	}
	flag := pick(g, []string{"--ports", "--sports", "--dports", "--dports", "--source-ports", "--destination-ports"})
	t.Which = 'b'
	if strings.HasPrefix(flag, "--s") {
		t.Which = 's'
	} else if strings.HasPrefix(flag, "--d") {
		t.Which = 'd'
	}
	opt := g.maybeNot(flag+" "+strings.Join(items, ","), 0.2)
	t.Inv = opt[0] == '!'
	g.cur.MultiPorts = t
	return opt
}

// iprangeOpt returns --src-range and/or --dst-range, usually around the
// rule set's address blocks; a reversed range (never matches) now and then.
func (g *ruleGen) iprangeOpt() string {
	one := func(flag string) string {
		var lo, hi uint32
		if g.chance(0.7) {
			n := pick(g, g.nets)
			base := addrU32(n.Addr) & n.Mask
			lo = base + uint32(g.intn(64))
			hi = lo + uint32(g.intn(1<<uint(g.intn(20))))
		} else {
			lo = addrU32(randomAddr(g.r))
			hi = lo + uint32(g.intn(1000))
		}
		if hi < lo {
			hi = ^uint32(0)
		}
		if g.chance(0.05) {
			lo, hi = hi, lo
		}
		g.hints.Addrs = append(g.hints.Addrs, u32Addr(lo), u32Addr(hi))
		text := u32Addr(lo).String() + "-" + u32Addr(hi).String()
		if lo == hi && g.chance(0.5) {
			text = u32Addr(lo).String()
		}
		opt := g.maybeNot(flag+" "+text, 0.2)
		t := &RangeTest{u32Addr(lo), u32Addr(hi), opt[0] == '!'}
		if flag == "--src-range" {
			g.cur.SrcRange = t
		} else {
			g.cur.DstRange = t
		}
		return opt
	}
	switch g.intn(3) {
	case 0:
		return one("--src-range")
	case 1:
		return one("--dst-range")
	}
	return one("--src-range") + " " + one("--dst-range")
}

// lengthOpt returns "[!] --length N[:M]" over the IP total length.
func (g *ruleGen) lengthOpt() string {
	l := func() int {
		return pick(g, []int{0, 20, 28, 40, 41, 60, 64, 100, 576, 1000, 1499, 1500, 1501, 2000, 3999, 4000, 65535, 20 + g.intn(200)})
	}
	a, b := l(), l()
	if a > b {
		a, b = b, a
	}
	g.hints.Lengths = append(g.hints.Lengths, a, b)
	var text string
	t := &RangeInt{Min: a, Max: b}
	switch g.intn(6) {
	case 0:
		text = strconv.Itoa(a)
		t.Max = a
	case 1:
		text = fmt.Sprintf(":%d", b)
		t.Min = 0
	case 2:
		text = fmt.Sprintf("%d:", a)
		t.Max = 65535
	default:
		text = fmt.Sprintf("%d:%d", a, b)
	}
	opt := g.maybeNot("--length "+text, 0.2)
	t.Inv = opt[0] == '!'
	g.cur.Length = t
	return opt
}

// number prints v in decimal or hex, both of which iptables accepts.
func (g *ruleGen) number(v uint32) string {
	if g.chance(0.5) {
		return "0x" + strconv.FormatUint(uint64(v), 16)
	}
	return strconv.FormatUint(uint64(v), 10)
}

func (g *ruleGen) markMatchOpt() string {
	v := pick(g, g.marks)
	text := g.number(v)
	if g.chance(0.4) {
		m := pick(g, []uint32{0xff, 0x1, 0x3, 0xf0, 0xffffffff, 0, v | 1})
		text += "/" + g.number(m)
	}
	return g.maybeNot("--mark "+text, 0.25)
}

func (g *ruleGen) ttlOpt() string {
	n := pick(g, []uint8{0, 1, 2, 30, 63, 64, 65, 127, 128, 254, 255, uint8(g.intn(256))})
	g.hints.TTLs = append(g.hints.TTLs, n)
	op := "=!<>"[g.intn(4)]
	g.cur.TTL = &TTLTest{op, n}
	switch op {
	case '=':
		return "--ttl-eq " + strconv.Itoa(int(n))
	case '!':
		return "! --ttl-eq " + strconv.Itoa(int(n))
	case '<':
		return "--ttl-lt " + strconv.Itoa(int(n))
	}
	return "--ttl-gt " + strconv.Itoa(int(n))
}

// rejectTypes are the --reject-with spellings: full names, aliases and
// unambiguous prefixes (iptables matches prefixes, first table entry wins).
var rejectTypes = []string{
	"icmp-net-unreachable", "net-unreach", "icmp-host-unreachable", "host-unreach",
	"icmp-proto-unreachable", "proto-unreach", "icmp-port-unreachable", "port-unreach",
	"icmp-net-prohibited", "net-prohib", "icmp-host-prohibited", "host-prohib",
	"icmp-admin-prohibited", "admin-prohib", "icmp-host", "icmp-net-p", "ICMP-PORT-UNREACHABLE",
}

// target returns "-j ..." / "-g ..." or "" (no target).
func (g *ruleGen) target(inUser bool, reach []string, proto uint8, protoInv bool) string {
	type choice struct {
		w int
		f func() string
	}
	jump := pick(g, []string{"-j", "-j", "--jump"})
	if g.markNext {
		g.markNext = false
		return jump + " MARK " + g.markTargetOpt()
	}
	choices := []choice{
		{12, func() string { return "" }},
		{12, func() string { return jump + " ACCEPT" }},
		{12, func() string { return jump + " DROP" }},
		{4, func() string { return jump + " RETURN" }},
		{10, func() string { return jump + " MARK " + g.markTargetOpt() }},
		{6, func() string { return jump + " LOG" + g.logOpts() }},
		{7, func() string { return jump + " REJECT" + g.rejectOpt(proto, protoInv) }},
	}
	if inUser {
		choices = append(choices, choice{8, func() string { return jump + " RETURN" }})
	}
	if len(reach) > 0 {
		choices = append(choices,
			choice{14, func() string { return jump + " " + pick(g, reach) }},
			choice{6, func() string { return pick(g, []string{"-g", "-g", "--goto"}) + " " + pick(g, reach) }})
	}
	total := 0
	for _, c := range choices {
		total += c.w
	}
	k := g.intn(total)
	for _, c := range choices {
		if k < c.w {
			return c.f()
		}
		k -= c.w
	}
	panic("unreachable")
}

// terminating reports whether a target ends the chain for every packet
// that reaches it.
func terminating(target string) bool {
	f := strings.Fields(target)
	if len(f) < 2 {
		return false
	}
	switch f[1] {
	case "MARK", "LOG":
		return false
	}
	return f[0] != "-j" && f[0] != "--jump" || !slices.Contains(chainNames, f[1])
}

func (g *ruleGen) markTargetOpt() string {
	v := pick(g, g.marks)
	switch g.intn(6) {
	case 0:
		return "--set-mark " + g.number(v)
	case 1:
		return "--set-mark " + g.number(v) + "/" + g.number(pick(g, []uint32{0xff, 0x3, 0xffff0000, v}))
	case 2:
		return "--set-xmark " + g.number(v) + "/" + g.number(pick(g, []uint32{0xffffffff, 0x1, 0xf, 0}))
	case 3:
		return "--and-mark " + g.number(pick(g, []uint32{0, 1, 0xfe, 0xffffffff}))
	case 4:
		return "--or-mark " + g.number(v)
	}
	return "--xor-mark " + g.number(v)
}

func (g *ruleGen) logOpts() string {
	var opts []string
	if g.chance(0.7) {
		opts = append(opts, "--log-prefix "+quote(pick(g, []string{
			"FW ", "drop:", "x", "FORWARD-DROP ", "a\"b", "with space ", "exactly-twenty-nine-chars-ab",
			"this prefix is longer than twenty-nine bytes ",
		})))
	}
	if g.chance(0.4) {
		opts = append(opts, "--log-level "+pick(g, []string{"0", "4", "7", "emerg", "alert", "crit", "error", "warning", "notice", "info", "debug", "panic"}))
	}
	for _, f := range []string{"--log-tcp-sequence", "--log-tcp-options", "--log-ip-options", "--log-uid", "--log-macdecode"} {
		if g.chance(0.1) {
			opts = append(opts, f)
		}
	}
	g.r.Shuffle(len(opts), func(i, j int) { opts[i], opts[j] = opts[j], opts[i] })
	if len(opts) == 0 {
		return ""
	}
	return " " + strings.Join(opts, " ")
}

func (g *ruleGen) rejectOpt(proto uint8, protoInv bool) string {
	if proto == 6 && !protoInv && g.chance(0.4) {
		return " --reject-with " + pick(g, []string{"tcp-reset", "tcp-rst"})
	}
	if g.chance(0.2) {
		return ""
	}
	return " --reject-with " + pick(g, rejectTypes)
}

// quote writes s as one iptables-restore token: bare when it is plain,
// otherwise in double quotes with " and \ escaped.
func quote(s string) string {
	plain := s != ""
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == ':') {
			plain = false
		}
	}
	if plain {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range s {
		if c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	b.WriteByte('"')
	return b.String()
}
