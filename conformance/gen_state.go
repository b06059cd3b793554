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

// StateCase is one stateful conformance case: a rule set using the
// stateful matches and targets, and the packets of a few connections in
// both directions, interleaved as they cross the router. It is a pure
// function of its seed.
//
// The stateful cases run apart from the stateless ones (their own test,
// TestKernelStateConformance, and topology, StateTopology): once a rule
// uses connection tracking, FW tracks every packet and reassembles
// fragments before FORWARD. Clients (ClientNet) inject on SRC's side,
// servers and routers on SINK's, so the kernel sees both directions of
// every connection; FW's connection table is emptied (conntrack -F)
// before each case, as qtables test starts empty. qtables runs over the
// same frames in the order sent, stamped with the times they were sent,
// with the interfaces chosen by address (StateQtablesArgs), and its
// counters and connection table (--flows, against conntrack -L without
// the timeouts) must be the kernel's.
//
// What the generator avoids, and why:
//
//   - Fragments (reassembled by the kernel, tracked one by one by
//     qtables), bad checksums (the kernel checks them at PREROUTING;
//     qtables test only with --ct-checksum), SCTP, DCCP and GRE (tracked
//     as generic protocols by qtables) and NAT states.
//   - --ctexpire ranges whose ends could fall between a timeout T and T-1
//     seconds (ctExpireRanges): the kernel counts jiffies, qtables the
//     capture's nanoseconds.
//   - Bursts through connlimit rules: the kernel cleans a rule's list at
//     most once per jiffy, so a case with connlimit paces its packets
//     (Pace), and a connlimit rule with more than one key (address) only
//     sees connections not confirmed yet (a "! --ctstatus CONFIRMED"
//     before it), because inserting a new key also cleans the lists of
//     other keys in the same of 256 randomly seeded slots.
type StateCase struct {
	Seed    uint64
	Rules   string
	Packets []StatePacket
	// Pace is the pause between packets the kernel needs to count as
	// qtables does: connlimit cleans a rule's lists at most once per
	// jiffy, so a case with connlimit rules sends a packet per 6 ms
	// (more than one jiffy at HZ 250; qtables sees the same gaps in the
	// capture's timestamps).
	Pace time.Duration
}

// statePace is StateCase.Pace for cases with connlimit rules.
const statePace = 6 * time.Millisecond

// stateGen draws one stateful case.
type stateGen struct {
	r *rand.Rand
	// clients are on the SRC side (in ClientNet), servers and routers on
	// the sink side.
	clients, servers, routers []netip.Addr
	marks                     []uint32
	flows                     [][]StatePacket
	usedPorts                 map[uint16]bool
	connlimit                 bool
	// stateful records that a rule uses connection tracking: without one
	// the kernel would not track at all (conntrack is on in a namespace
	// only while a loaded rule needs it).
	stateful bool
	// noCtExpire leaves --ctexpire out (see GenerateState).
	noCtExpire bool
}

func (g *stateGen) chance(p float64) bool { return g.r.Float64() < p }
func (g *stateGen) intn(n int) int        { return g.r.IntN(n) }

// GenerateState returns the stateful case for seed. noCtExpire leaves out
// --ctexpire, whose value for a connection whose first packet is still
// traversing the rules depends on the kernel's uptime (see
// TestKernelStateFacts).
func GenerateState(seed uint64, noCtExpire bool) *StateCase {
	r := rand.New(rand.NewPCG(seed^0x5747e, seed*0x9e3779b97f4a7c15+1))
	g := &stateGen{r: r, usedPorts: map[uint16]bool{}, noCtExpire: noCtExpire}
	a := netip.MustParseAddr
	g.clients = pickN(r, []netip.Addr{a("10.1.0.5"), a("10.1.0.9"), a("10.1.3.7"), a("10.2.0.5")}, 2+r.IntN(2))
	g.servers = pickN(r, []netip.Addr{a("198.51.100.10"), a("198.51.100.20"), a("203.0.113.5")}, 1+r.IntN(2))
	g.routers = []netip.Addr{a("192.0.2.1"), a("192.0.2.254")}
	g.marks = []uint32{0, 1, 2, 3, 0x10}
	for range 3 + g.intn(5) {
		g.flow()
	}
	rules := g.ruleSet()
	c := &StateCase{Seed: seed, Rules: rules, Packets: g.interleave()}
	if g.connlimit {
		c.Pace = statePace
	}
	return c
}

// pickN returns n distinct elements of xs in random order.
func pickN[T any](r *rand.Rand, xs []T, n int) []T {
	ys := slices.Clone(xs)
	r.Shuffle(len(ys), func(i, j int) { ys[i], ys[j] = ys[j], ys[i] })
	return ys[:n]
}

func pickFrom[T any](g *stateGen, xs []T) T { return xs[g.intn(len(xs))] }

// interleave merges the flows' packet sequences at random, keeping each
// flow's own order.
func (g *stateGen) interleave() []StatePacket {
	var out []StatePacket
	pos := make([]int, len(g.flows))
	for {
		var open []int
		for i, f := range g.flows {
			if pos[i] < len(f) {
				open = append(open, i)
			}
		}
		if len(open) == 0 {
			return out
		}
		i := pickFrom(g, open)
		out = append(out, g.flows[i][pos[i]])
		pos[i]++
	}
}

// port returns a client port not used by another flow of the case.
func (g *stateGen) port() uint16 {
	for {
		p := uint16(32768 + g.intn(28000))
		if !g.usedPorts[p] {
			g.usedPorts[p] = true
			return p
		}
	}
}

// ---- flows ----

// flow adds one connection's (or one stray packet's) sequence.
func (g *stateGen) flow() {
	switch n := g.intn(100); {
	case n < 45:
		g.tcpFlow()
	case n < 65:
		g.udpFlow()
	case n < 80:
		g.icmpFlow()
	case n < 92:
		g.strayFlow()
	default:
		g.genericFlow()
	}
}

// conv is one TCP connection between a client and a server: the next
// sequence number of each side, their windows and options.
type conv struct {
	g            *stateGen
	c, s         netip.Addr
	cp, sp       uint16
	cNxt, sNxt   uint32
	cWin, sWin   uint16
	opts         bool
	pkts         []StatePacket
	first, reply *Packet // for ICMP errors quoting them
}

func (g *stateGen) newConv() *conv {
	return &conv{g: g, c: pickFrom(g, g.clients), s: pickFrom(g, g.servers), cp: g.port(),
		sp:   pickFrom(g, []uint16{22, 80, 443, 8080}),
		cNxt: g.r.Uint32(), sNxt: g.r.Uint32(),
		cWin: uint16(1000 + g.intn(64000)), sWin: uint16(1000 + g.intn(64000)),
		opts: g.chance(0.5)}
}

// seg sends a segment from the client (or the server) with the current
// sequence numbers, acknowledging everything the other side sent; SYN and
// FIN take a sequence number, data its length.
func (f *conv) seg(fromClient bool, flags uint8, data int, note string) *Packet {
	src, dst, sp, dp := f.c, f.s, f.cp, f.sp
	seq, ack, win := &f.cNxt, f.sNxt, f.cWin
	if !fromClient {
		src, dst, sp, dp = f.s, f.c, f.sp, f.cp
		seq, ack, win = &f.sNxt, f.cNxt, f.sWin
	}
	var opts []byte
	if flags&flagSYN != 0 && f.opts {
		opts = []byte{tcpOptMSS, 4, 0x05, 0xb4, tcpOptSACKOK, 2, tcpOptWScale, 3, byte(f.g.intn(8))}
	}
	if flags&flagACK == 0 {
		ack = 0
	}
	p := Packet{Src: src, Dst: dst, Proto: 6, TTL: 64, ID: uint16(f.g.intn(65536)),
		L4: tcpSegment(src, dst, sp, dp, *seq, ack, flags, win, opts, make([]byte, data))}
	*seq += uint32(data)
	if flags&(flagSYN|flagFIN) != 0 {
		*seq++
	}
	f.pkts = append(f.pkts, StatePacket{Packet: p, FromSink: !fromClient, Note: note})
	return &f.pkts[len(f.pkts)-1].Packet
}

func (g *stateGen) tcpFlow() {
	f := g.newConv()
	first := *f.seg(true, flagSYN, 0, "SYN")
	f.first = &first
	switch n := g.intn(100); {
	case n < 12: // unanswered, retransmitted
		for range g.intn(3) {
			f.cNxt--
			f.seg(true, flagSYN, 0, "SYN retransmitted")
		}
		g.addFlow(f.pkts, f.first, nil, f.c, f.s)
		return
	case n < 22: // refused
		f.sNxt = 0
		f.seg(false, flagRST|flagACK, 0, "RST/ACK: refused")
		g.addFlow(f.pkts, f.first, nil, f.c, f.s)
		return
	}
	if g.chance(0.15) {
		f.cNxt--
		f.seg(true, flagSYN, 0, "SYN retransmitted")
	}
	reply := *f.seg(false, flagSYN|flagACK, 0, "SYN/ACK")
	f.reply = &reply
	if g.chance(0.1) {
		f.sNxt--
		f.seg(false, flagSYN|flagACK, 0, "SYN/ACK retransmitted")
	}
	f.seg(true, flagACK, 0, "ACK")
	for range g.intn(4) {
		fromClient := g.chance(0.6)
		n := 1 + g.intn(400)
		f.seg(fromClient, flagPSH|flagACK, n, "data")
		switch {
		case g.chance(0.15): // retransmission: the same segment again
			if fromClient {
				f.cNxt -= uint32(n)
			} else {
				f.sNxt -= uint32(n)
			}
			f.seg(fromClient, flagPSH|flagACK, n, "data retransmitted")
		case g.chance(0.1): // far outside the window: INVALID
			if fromClient {
				f.cNxt += 1 << 30
				f.seg(true, flagPSH|flagACK, n, "data out of window")
				f.cNxt -= 1<<30 + uint32(n)
			} else {
				f.sNxt += 1 << 30
				f.seg(false, flagPSH|flagACK, n, "data out of window")
				f.sNxt -= 1<<30 + uint32(n)
			}
		}
		f.seg(!fromClient, flagACK, 0, "ACK")
	}
	switch n := g.intn(100); {
	case n < 45: // FIN from one side, then the other
		closer := g.chance(0.6)
		f.seg(closer, flagFIN|flagACK, 0, "FIN")
		f.seg(!closer, flagACK, 0, "ACK of FIN")
		f.seg(!closer, flagFIN|flagACK, 0, "FIN")
		f.seg(closer, flagACK, 0, "last ACK")
		if g.chance(0.2) { // the port is used again: the SYN reopens it
			f.cNxt += 100000
			f.seg(true, flagSYN, 0, "SYN reopening")
		}
	case n < 60: // FIN/ACK crossing
		f.seg(true, flagFIN|flagACK, 0, "FIN")
		f.seg(false, flagFIN|flagACK, 0, "FIN")
		f.seg(true, flagACK, 0, "last ACK")
	case n < 80: // reset
		f.seg(g.chance(0.5), flagRST|flagACK, 0, "RST")
		if g.chance(0.3) {
			f.seg(true, flagACK, 0, "ACK after RST")
		}
	}
	g.addFlow(f.pkts, f.first, f.reply, f.c, f.s)
}

// addFlow adds a flow's packets and, now and then, ICMP errors quoting
// its first packet (from a router or the server, to the client) or its
// first reply (from the client, to the server), placed after the packet
// they quote.
func (g *stateGen) addFlow(pkts []StatePacket, first, reply *Packet, client, server netip.Addr) {
	if first != nil && g.chance(0.3) {
		src := pickFrom(g, append(slices.Clone(g.routers), server))
		dst := client
		note := "ICMP error quoting the first packet"
		if g.chance(0.15) { // to someone else: INVALID
			dst = pickFrom(g, g.clients)
			note = "ICMP error quoting the first packet, to another host"
		}
		if e, ok := g.icmpError(src, dst, first, false, note); ok {
			at := 1 + g.intn(len(pkts))
			pkts = slices.Insert(pkts, at, e)
		}
	}
	if reply != nil && g.chance(0.2) {
		if e, ok := g.icmpError(client, server, reply, true, "ICMP error quoting the reply"); ok {
			i := slices.IndexFunc(pkts, func(p StatePacket) bool { return p.FromSink })
			at := i + 1 + g.intn(len(pkts)-i)
			pkts = slices.Insert(pkts, at, e)
		}
	}
	g.flows = append(g.flows, pkts)
}

// icmpError builds an ICMP error from src to dst quoting q's IP header
// and first 8 (or more) transport bytes.
func (g *stateGen) icmpError(src, dst netip.Addr, q *Packet, fromClient bool, note string) (StatePacket, bool) {
	d, err := ipDatagram(q)
	if err != nil {
		return StatePacket{}, false
	}
	n := 28
	if g.chance(0.3) {
		n = len(d)
	}
	typ, code := pickFrom(g, []struct{ t, c uint8 }{{3, 3}, {3, 1}, {3, 4}, {11, 0}, {3, 13}, {12, 0}}).t, uint8(0)
	switch typ {
	case 3:
		code = pickFrom(g, []uint8{1, 3, 4, 13})
	}
	var rest uint32
	if typ == 3 && code == 4 {
		rest = 1400 // next-hop MTU
	}
	l4 := icmpMessage(typ, code, rest, d[:min(n, len(d))])
	return StatePacket{Packet: Packet{Src: src, Dst: dst, Proto: 1, TTL: 64, ID: uint16(g.intn(65536)), L4: l4},
		FromSink: !fromClient, Note: note}, true
}

func (g *stateGen) udpFlow() {
	c, s := pickFrom(g, g.clients), pickFrom(g, g.servers)
	cp, sp := g.port(), pickFrom(g, []uint16{53, 123, 5353, 4500})
	var pkts []StatePacket
	udp := func(fromClient bool, n int, note string) *Packet {
		src, dst, a, b := c, s, cp, sp
		if !fromClient {
			src, dst, a, b = s, c, sp, cp
		}
		pkts = append(pkts, StatePacket{Packet: Packet{Src: src, Dst: dst, Proto: 17, TTL: 64, ID: uint16(g.intn(65536)),
			L4: udpDatagram(src, dst, a, b, make([]byte, n))}, FromSink: !fromClient, Note: note})
		return &pkts[len(pkts)-1].Packet
	}
	var first, reply *Packet
	switch n := g.intn(100); {
	case n < 15: // the server speaks first: its datagram creates the connection
		f := *udp(false, 10+g.intn(200), "UDP from the server side first")
		first = &f
		if g.chance(0.5) {
			udp(true, 10+g.intn(100), "UDP answer")
		}
		g.flows = append(g.flows, pkts)
		return
	case n < 35: // unanswered
		f := *udp(true, 10+g.intn(100), "UDP request")
		first = &f
		for range g.intn(3) {
			udp(true, 10+g.intn(100), "UDP request repeated")
		}
	default:
		f := *udp(true, 10+g.intn(100), "UDP request")
		first = &f
		for i := range 1 + g.intn(3) {
			if i > 0 {
				udp(true, 10+g.intn(100), "UDP request")
			}
			rp := *udp(false, 10+g.intn(500), "UDP response")
			if reply == nil {
				reply = &rp
			}
			if g.chance(0.2) {
				udp(false, 10+g.intn(500), "UDP response duplicated")
			}
		}
	}
	g.addFlow(pkts, first, reply, c, s)
}

func (g *stateGen) icmpFlow() {
	c, s := pickFrom(g, g.clients), pickFrom(g, g.servers)
	id := uint16(g.intn(65536))
	var pkts []StatePacket
	icmp := func(fromClient bool, typ uint8, seq uint16, n int, note string) *Packet {
		src, dst := c, s
		if !fromClient {
			src, dst = s, c
		}
		pkts = append(pkts, StatePacket{Packet: Packet{Src: src, Dst: dst, Proto: 1, TTL: 64, ID: uint16(g.intn(65536)),
			L4: icmpMessage(typ, 0, uint32(id)<<16|uint32(seq), make([]byte, n))}, FromSink: !fromClient, Note: note})
		return &pkts[len(pkts)-1].Packet
	}
	var first, reply *Packet
	switch n := g.intn(100); {
	case n < 12: // a reply nobody asked for
		icmp(false, 0, 1, 56, "echo reply without request")
		g.flows = append(g.flows, pkts)
		return
	case n < 20: // timestamp request and reply
		f := *icmp(true, 13, 1, 12, "timestamp request")
		first = &f
		if g.chance(0.7) {
			icmp(false, 14, 1, 12, "timestamp reply")
		}
	case n < 26: // a type that cannot start a connection
		icmp(g.chance(0.5), pickFrom(g, []uint8{9, 10, 19, 42}), 0, 8, "ICMP type without a connection")
		g.flows = append(g.flows, pkts)
		return
	default:
		for seq := range uint16(1 + g.intn(3)) {
			f := *icmp(true, 8, seq, 56, "echo request")
			if first == nil {
				first = &f
			}
			if g.chance(0.8) {
				rp := *icmp(false, 0, seq, 56, "echo reply")
				if reply == nil {
					reply = &rp
				}
				if g.chance(0.15) {
					icmp(false, 0, seq, 56, "echo reply duplicated")
				}
			}
		}
	}
	g.addFlow(pkts, first, reply, c, s)
}

// strayFlow is a packet of no connection: TCP segments that cannot start
// one (or, an ACK, that is picked up mid-stream), an RST, an ICMP error
// quoting a connection that never was.
func (g *stateGen) strayFlow() {
	f := g.newConv()
	fromClient := g.chance(0.6)
	switch n := g.intn(8); n {
	case 0:
		f.seg(fromClient, flagACK, g.intn(2)*100, "ACK of no connection (picked up)")
		if g.chance(0.5) {
			f.seg(!fromClient, flagACK, 0, "its answer")
		}
	case 1:
		f.seg(fromClient, flagFIN, 0, "lone FIN")
	case 2:
		f.seg(fromClient, flagSYN|flagFIN, 0, "SYN+FIN")
	case 3:
		f.seg(fromClient, 0, 0, "no flags")
	case 4:
		f.seg(fromClient, flagFIN|flagPSH|flagURG, 0, "XMAS")
	case 5:
		f.seg(fromClient, flagSYN|flagACK, 0, "SYN/ACK of no connection")
	case 6:
		f.seg(fromClient, flagRST, 0, "RST of no connection")
	case 7:
		// An error quoting a datagram that was never sent.
		q := Packet{Src: f.c, Dst: f.s, Proto: 17, TTL: 64, L4: udpDatagram(f.c, f.s, f.cp, 9, nil)}
		if e, ok := g.icmpError(pickFrom(g, g.routers), f.c, &q, false, "ICMP error quoting nothing tracked"); ok {
			f.pkts = append(f.pkts, e)
		}
	}
	g.flows = append(g.flows, f.pkts)
}

// genericFlow is a protocol conntrack tracks by addresses alone.
func (g *stateGen) genericFlow() {
	c, s := pickFrom(g, g.clients), pickFrom(g, g.servers)
	var pkts []StatePacket
	for range 1 + g.intn(2) {
		pkts = append(pkts, StatePacket{Packet: Packet{Src: c, Dst: s, Proto: 253, TTL: 64, L4: make([]byte, 8+g.intn(60))},
			Note: "protocol 253"})
	}
	if g.chance(0.6) {
		pkts = append(pkts, StatePacket{Packet: Packet{Src: s, Dst: c, Proto: 253, TTL: 64, L4: make([]byte, 8+g.intn(60))},
			FromSink: true, Note: "protocol 253 back"})
	}
	g.flows = append(g.flows, pkts)
}

// ---- rules ----

// ruleSet returns the case's filter table: FORWARD and up to two user
// chains reached from it.
func (g *stateGen) ruleSet() string {
	users := pickN(g.r, []string{"track", "Marks", "ct_in"}, g.intn(3))
	var b strings.Builder
	b.WriteString("*filter\n:INPUT ACCEPT [0:0]\n")
	fmt.Fprintf(&b, ":FORWARD %s [0:0]\n:OUTPUT ACCEPT [0:0]\n", pickFrom(g, []string{"ACCEPT", "DROP"}))
	for _, u := range users {
		fmt.Fprintf(&b, ":%s - [0:0]\n", u)
	}
	n := 3 + g.intn(9)
	for i := range n {
		if i == 0 && g.chance(0.35) {
			g.stateful = true
			b.WriteString(pickFrom(g, []string{
				"-A FORWARD -m state --state ESTABLISHED,RELATED -j ACCEPT\n",
				"-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n",
				"-A FORWARD -m conntrack --ctstate INVALID -j DROP\n",
			}))
			continue
		}
		b.WriteString("-A FORWARD" + g.rule(users, false) + "\n")
	}
	for _, u := range users {
		for range 1 + g.intn(4) {
			b.WriteString("-A " + u + g.rule(nil, true) + "\n")
		}
	}
	if !g.stateful {
		b.WriteString("-A FORWARD -m state --state INVALID\n")
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// rule returns one rule after "-A CHAIN" (leading space included).
func (g *stateGen) rule(jumps []string, inUser bool) string {
	var parts []string
	proto := ""
	if g.chance(0.3) {
		proto = pickFrom(g, []string{"tcp", "udp", "icmp"})
		parts = append(parts, "-p "+proto)
	}
	if g.chance(0.15) {
		parts = append(parts, g.not(0.3)+"-s "+g.clientNet())
	}
	if g.chance(0.12) {
		parts = append(parts, "-d "+pickFrom(g, g.servers).String())
	}
	if g.chance(0.12) {
		parts = append(parts, "-i "+pickFrom(g, []string{InIface, OutIface}))
	}
	if g.chance(0.08) {
		parts = append(parts, "-o "+pickFrom(g, []string{InIface, OutIface}))
	}
	if proto == "tcp" && g.chance(0.3) {
		parts = append(parts, "-m tcp "+pickFrom(g, []string{"--syn", "! --syn", "--dport 80", "--sport 80", "--tcp-flags RST RST"}))
	}
	for range 1 + g.intn(2) {
		parts = append(parts, g.match())
	}
	if t := g.target(jumps, inUser); t != "" {
		parts = append(parts, t)
	}
	return " " + strings.Join(parts, " ")
}

func (g *stateGen) not(p float64) string {
	if g.chance(p) {
		return "! "
	}
	return ""
}

func (g *stateGen) clientNet() string {
	a := pickFrom(g, g.clients)
	return a.String() + pickFrom(g, []string{"", "/24", "/16", "/8"})
}

func (g *stateGen) anyAddrNet() string {
	switch g.intn(3) {
	case 0:
		return g.clientNet()
	case 1:
		return pickFrom(g, g.servers).String() + pickFrom(g, []string{"", "/24", "/8", "/0"})
	}
	// Host bits set under the mask: iptables keeps them, the kernel
	// masks at compare time.
	return pickFrom(g, g.servers).String() + "/" + pickFrom(g, []string{"255.255.0.0", "16"})
}

func (g *stateGen) match() string {
	n := g.intn(100)
	g.stateful = g.stateful || n < 90
	switch {
	case n < 18:
		return "-m state " + g.not(0.2) + "--state " + g.states(false)
	case n < 55:
		return "-m conntrack " + g.conntrackOpts()
	case n < 67:
		return "-m connmark " + g.not(0.2) + "--mark " + g.markMask()
	case n < 80:
		return g.connbytesOpts()
	case n < 90:
		return g.connlimitOpts()
	default:
		return "-m mark " + g.not(0.2) + "--mark " + g.markMask()
	}
}

func (g *stateGen) states(nat bool) string {
	names := []string{"INVALID", "NEW", "ESTABLISHED", "RELATED", "UNTRACKED"}
	if nat && g.chance(0.1) {
		names = append(names, "SNAT", "DNAT")
	}
	return strings.Join(pickN(g.r, names, 1+g.intn(3)), ",")
}

func (g *stateGen) markMask() string {
	v := pickFrom(g, g.marks)
	switch g.intn(4) {
	case 0:
		return fmt.Sprintf("%#x", v)
	case 1:
		return strconv.Itoa(int(v))
	}
	return fmt.Sprintf("%#x/%#x", v, pickFrom(g, []uint32{0xff, 0x3, 0x1, 0xf0, 0xffffffff}))
}

// ctExpireRanges are --ctexpire ranges whose ends never separate a
// timeout T (10, 30, 60, 120, 300, 600 s, 5 days) from T-1: a connection
// refreshed by this very packet has T seconds left in both, one refreshed
// a moment earlier T-1 in qtables (which counts nanoseconds) and T or T-1
// in the kernel (which counts jiffies).
var ctExpireRanges = []string{"0", "0:8", "11:28", "31:58", "61:118", "121:298", "301:431990",
	"431990:432000", "0:500", "5:70", "100:700"}

func (g *stateGen) conntrackOpts() string {
	opts := []string{"ctstate", "ctproto", "ctorigsrc", "ctorigdst", "ctreplsrc", "ctrepldst",
		"ctorigsrcport", "ctorigdstport", "ctreplsrcport", "ctrepldstport", "ctstatus", "ctexpire", "ctdir"}
	if g.noCtExpire {
		opts = slices.DeleteFunc(opts, func(s string) bool { return s == "ctexpire" })
	}
	var out []string
	for _, o := range pickN(g.r, opts, 1+g.intn(3)) {
		inv := g.not(0.2)
		var arg string
		switch o {
		case "ctstate":
			arg = g.states(true)
		case "ctproto":
			arg = pickFrom(g, []string{"tcp", "udp", "icmp", "6", "17", "253"})
		case "ctorigsrc", "ctorigdst", "ctreplsrc", "ctrepldst":
			arg = g.anyAddrNet()
		case "ctorigsrcport", "ctorigdstport", "ctreplsrcport", "ctrepldstport":
			// Server ports, the clients' range, ICMP echo's type word
			// (8<<8) and its reply's (0).
			arg = pickFrom(g, []string{"80", "53", "22:443", "32768:65535", ":1023", "2048", "0", "1024:"})
		case "ctstatus":
			arg = strings.Join(pickN(g.r, []string{"EXPECTED", "SEEN_REPLY", "ASSURED", "CONFIRMED"}, 1+g.intn(2)), ",")
			if g.chance(0.1) {
				arg = "NONE"
			}
		case "ctexpire":
			arg = pickFrom(g, ctExpireRanges)
		case "ctdir":
			inv = ""
			arg = pickFrom(g, []string{"ORIGINAL", "REPLY"})
		}
		out = append(out, inv+"--"+o+" "+arg)
	}
	return strings.Join(out, " ")
}

func (g *stateGen) connbytesOpts() string {
	mode := pickFrom(g, []string{"packets", "bytes", "avgpkt"})
	var r string
	switch mode {
	case "packets":
		r = pickFrom(g, []string{"2", "1:1", "3:5", ":2", "4"})
	case "bytes":
		r = pickFrom(g, []string{"100", "0:80", "200:1000", "500"})
	default:
		r = pickFrom(g, []string{"50", "40:60", "100:", ":45"})
	}
	return "-m connbytes " + g.not(0.25) + "--connbytes " + r + " --connbytes-dir " +
		pickFrom(g, []string{"original", "reply", "both"}) + " --connbytes-mode " + mode
}

// connlimitOpts returns a connlimit match. A rule counting per address
// (more than one key) runs it only for connections not yet confirmed:
// while the kernel inserts a new key it also cleans other keys' lists
// that hash to the same one of 256 slots (a random seed decides which),
// which changes what a later packet of a listed connection counts
// (the cleaning stops where it finds the connection). The first packet
// of a connection is never listed yet, so it cleans its list completely
// either way. With mask 0 there is one key and nothing to guard.
func (g *stateGen) connlimitOpts() string {
	g.connlimit = true
	limit := pickFrom(g, []string{"--connlimit-above ", "--connlimit-upto ", "! --connlimit-above "}) + strconv.Itoa(g.intn(4))
	if g.chance(0.5) {
		return "-m connlimit " + limit + " --connlimit-mask 0" + pickFrom(g, []string{"", " --connlimit-daddr"})
	}
	return "-m conntrack ! --ctstatus CONFIRMED -m connlimit " + limit +
		pickFrom(g, []string{"", " --connlimit-mask 24", " --connlimit-mask 16"}) +
		pickFrom(g, []string{"", " --connlimit-saddr", " --connlimit-daddr"})
}

func (g *stateGen) target(jumps []string, inUser bool) string {
	switch n := g.intn(100); {
	case n < 14:
		return "-j ACCEPT"
	case n < 26:
		return "-j DROP"
	case n < 30:
		return "-j REJECT"
	case n < 48:
		return "-j CONNMARK " + g.connmarkTarget()
	case n < 58:
		return "-j MARK " + pickFrom(g, []string{"--set-mark ", "--or-mark ", "--xor-mark "}) + strconv.Itoa(int(pickFrom(g, g.marks)))
	case n < 68 && len(jumps) > 0:
		return "-j " + pickFrom(g, jumps)
	case n < 74 && inUser:
		return "-j RETURN"
	}
	return ""
}

func (g *stateGen) connmarkTarget() string {
	m := strconv.Itoa(int(pickFrom(g, g.marks)))
	switch g.intn(9) {
	case 0:
		return "--set-mark " + m
	case 1:
		return "--set-mark " + m + "/0x3"
	case 2:
		return "--set-xmark " + m + "/0xff"
	case 3:
		return pickFrom(g, []string{"--and-mark ", "--or-mark ", "--xor-mark "}) + m
	case 4:
		return "--save-mark"
	case 5:
		return "--save-mark --mask 0x3"
	case 6:
		return "--restore-mark"
	case 7:
		return "--restore-mark --nfmask 0xf --ctmask 0x1"
	}
	return pickFrom(g, []string{"--save-mark --left-shift-mark 1", "--restore-mark --right-shift-mark 1", "--set-mark 1 --left-shift-mark 2"})
}
