package conformance

import (
	"math/rand/v2"
	"net/netip"
)

// Forwardable reports whether a may appear as source or destination of a
// generated packet. It excludes exactly the addresses with which the kernel
// drops a packet before the FORWARD hook (see the package documentation),
// 0.0.0.0/8 as a whole (older kernels treat all of it as martian), and the
// topology's link network.
func Forwardable(a netip.Addr) bool {
	if !a.Is4() {
		return false
	}
	b := a.As4()
	switch {
	case b[0] == 0, b[0] == 127:
		return false
	case b[0] >= 224 && b[0] <= 239: // multicast
		return false
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return false
	case LinkNet.Contains(a):
		return false
	}
	return true
}

// randomAddr returns a random forwardable address, biased towards a few
// well-known blocks so that independently drawn addresses sometimes share
// prefixes.
func randomAddr(r *rand.Rand) netip.Addr {
	for {
		var u uint32
		switch r.IntN(6) {
		case 0:
			u = 10<<24 | r.Uint32()&0xffffff
		case 1:
			u = 192<<24 | 168<<16 | r.Uint32()&0xffff
		case 2:
			u = 172<<24 | 16<<16 | r.Uint32()&0xfffff
		case 3:
			u = 100<<24 | 64<<16 | r.Uint32()&0x3fffff // CGN space around (not in) the link /24
		default:
			u = r.Uint32()
		}
		if a := u32Addr(u); Forwardable(a) {
			return a
		}
	}
}

// pktGen draws packets from a rule set's hints.
type pktGen struct {
	r *rand.Rand
	// x is the random stream for payloads aimed at string matches
	// (gen_string.go).
	x *rand.Rand
	h *Hints
}

func (g *pktGen) chance(p float64) bool { return g.r.Float64() < p }

func (g *pktGen) intn(n int) int { return g.r.IntN(n) }

func pickOf[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

// GeneratePackets returns n packets that probe the rules described by h:
// addresses inside, on the edges of and just outside each prefix and range,
// ports on and next to every bound, the tested TCP flag combinations with
// and without extra flags, present and absent (and malformed) TCP options,
// ICMP types and codes around each test, TTLs and lengths around each
// bound, IP options, first and later fragments, truncated transport headers
// and protocols no rule names. Every packet reaches the FORWARD hook of the
// test topology (see the package documentation for what is avoided).
func GeneratePackets(r *rand.Rand, h *Hints, n int) []Packet {
	return generatePackets(r, rand.New(rand.NewPCG(3, 4)), h, n)
}

// generatePackets is GeneratePackets with the second random stream.
func generatePackets(r, x *rand.Rand, h *Hints, n int) []Packet {
	g := &pktGen{r: r, x: x, h: h}
	out := make([]Packet, 0, n)
	for range n {
		out = append(out, g.packet())
	}
	return out
}

// addr returns an address related to the hints, or a random one.
func (g *pktGen) addr() netip.Addr {
	for range 20 {
		var a netip.Addr
		switch k := g.intn(10); {
		case k < 6 && len(g.h.Nets) > 0:
			n := pickOf(g.r, g.h.Nets)
			base := addrU32(n.Addr) & n.Mask
			switch g.intn(6) {
			case 0:
				a = u32Addr(base) // lowest inside
			case 1:
				a = u32Addr(base | ^n.Mask) // highest inside
			case 2, 3:
				a = u32Addr(base | g.r.Uint32()&^n.Mask) // anywhere inside
			default:
				// just outside: flip one masked bit
				if n.Mask == 0 {
					a = randomAddr(g.r)
					break
				}
				bits := []int{}
				for i := range 32 {
					if n.Mask&(1<<i) != 0 {
						bits = append(bits, i)
					}
				}
				b := pickOf(g.r, bits)
				if g.chance(0.5) {
					b = bits[0] // the lowest masked bit: the neighbouring block
				}
				a = u32Addr((base | g.r.Uint32()&^n.Mask) ^ 1<<b)
			}
		case k < 8 && len(g.h.Addrs) > 0:
			u := addrU32(pickOf(g.r, g.h.Addrs))
			a = u32Addr(u + uint32(g.intn(3)) - 1) // the bound or a neighbour
		default:
			a = randomAddr(g.r)
		}
		if Forwardable(a) {
			return a
		}
	}
	return randomAddr(g.r)
}

func (g *pktGen) port() uint16 {
	if len(g.h.Ports) > 0 && g.chance(0.75) {
		p := int(pickOf(g.r, g.h.Ports)) + g.intn(3) - 1
		return uint16(min(max(p, 0), 65535))
	}
	if g.chance(0.2) {
		return pickOf(g.r, []uint16{0, 1, 65535})
	}
	return uint16(g.r.UintN(65536))
}

// protocol chooses the packet's IP protocol.
func (g *pktGen) protocol() uint8 {
	switch k := g.intn(100); {
	case k < 30 && len(g.h.Protos) > 0:
		p := pickOf(g.r, g.h.Protos)
		if p != 0 {
			return p
		}
		return 6
	case k < 55:
		return 6
	case k < 72:
		return 17
	case k < 87:
		return 1
	default:
		return pickOf(g.r, []uint8{0, 2, 4, 33, 41, 47, 50, 51, 58, 103, 108, 132, 136, 253, 255, uint8(g.intn(256))})
	}
}

func (g *pktGen) ttl() uint8 {
	if len(g.h.TTLs) > 0 && g.chance(0.6) {
		// The kernel decrements the TTL before FORWARD: a rule value v is
		// met by an arriving TTL of v+1.
		t := int(pickOf(g.r, g.h.TTLs)) + g.intn(3)
		return uint8(min(max(t, 2), 255))
	}
	return pickOf(g.r, []uint8{2, 3, 32, 63, 64, 65, 128, 255, uint8(2 + g.intn(254))})
}

// options returns IPv4 option bytes (all forwarded by the kernel).
func (g *pktGen) options() []byte {
	switch g.intn(8) {
	case 0:
		return []byte{1, 1, 1, 1} // NOPs
	case 1:
		return []byte{1, 0, 0, 0} // NOP then end of list
	case 2:
		return []byte{7, 7, 4, 0, 0, 0, 0} // record route, one free slot
	case 3:
		return []byte{7, 11, 12, 1, 2, 3, 4, 5, 6, 7, 8} // record route, full
	case 4:
		return []byte{68, 12, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0} // timestamps only
	case 5:
		return []byte{148, 4, 0, 0} // router alert
	case 6:
		return []byte{136, 4, 0x12, 0x34} // stream id
	default:
		o := make([]byte, 4*(1+g.intn(10)))
		for i := range o {
			o[i] = 1
		}
		return o // up to the 40-byte maximum of NOPs
	}
}

// tcpOptions returns TCP option bytes: well-formed options (often the kinds
// the rules test), or a malformed list (zero or overlong length bytes)
// whose walk the kernel's --tcp-option lookup still performs.
func (g *pktGen) tcpOptions(must uint8) []byte {
	var o []byte
	if must != 0 {
		o = append(o, g.tcpOption(must)...)
	}
	for range 1 + g.intn(4) {
		kind := uint8(pickOf(g.r, []uint8{2, 3, 4, 8, 30, uint8(g.intn(256))}))
		if len(g.h.TCPOptions) > 0 && g.chance(0.5) {
			kind = pickOf(g.r, g.h.TCPOptions)
		}
		if g.chance(0.5) {
			o = append(g.tcpOption(kind), o...) // before the aimed one
		} else {
			o = append(o, g.tcpOption(kind)...)
		}
		if g.chance(0.2) {
			o = append(o, 1)
		}
	}
	if g.chance(0.15) {
		// malformed: a length byte of 0 or 1, or one running past the end
		o = append(o, uint8(2+g.intn(250)), uint8(g.intn(2)))
		if g.chance(0.5) {
			o = append(o, 9, 40)
		}
	}
	if len(o) > 40 {
		o = o[:40]
	}
	return o
}

// tcpOption returns one well-formed option of the given kind.
func (g *pktGen) tcpOption(kind uint8) []byte {
	switch kind {
	case 0, 1:
		return []byte{kind}
	case 2:
		return []byte{2, 4, 5, 0xb4}
	case 3:
		return []byte{3, 3, 7}
	case 4:
		return []byte{4, 2}
	case 8:
		return []byte{8, 10, 0, 0, 0, 1, 0, 0, 0, 0}
	}
	l := 2 + g.intn(5)
	return append([]byte{kind, uint8(l)}, make([]byte, l-2)...)
}

func (g *pktGen) tcpFlags() uint8 {
	if len(g.h.TCPFlags) > 0 && g.chance(0.6) {
		f := pickOf(g.r, g.h.TCPFlags)
		v := f.Comp
		if g.chance(0.4) {
			v |= uint8(g.r.UintN(256)) &^ f.Mask // extra flags outside the mask
		}
		if g.chance(0.3) {
			v ^= 1 << g.intn(6) // one flag different
		}
		return v
	}
	return pickOf(g.r, []uint8{flagSYN, flagSYN | flagACK, flagACK, flagACK | flagPSH, flagFIN | flagACK, flagRST, flagRST | flagACK, 0, 0x3f, 0xff, flagSYN | flagECE | flagCWR, uint8(g.r.UintN(256))})
}

func (g *pktGen) payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(g.r.UintN(256))
	}
	return b
}

// spec is a packet before it is built: the header values rules test.
type spec struct {
	src, dst     netip.Addr
	proto        uint8
	ttl          uint8
	sport, dport uint16
	flags        uint8
	// tcpOpt is an option kind to include (0: as chance has it);
	// noTCPOpt asks for a header without options.
	tcpOpt   uint8
	noTCPOpt bool
	icmpType uint8
	icmpCode uint8
	// length is the wanted total length (0: any).
	length int
	// frag is +1 for a later fragment, -1 for a first fragment or whole
	// datagram, 0 for chance.
	frag int8
	// strings are patterns to write into the datagram (gen_string.go).
	strings []stringPlacement
}

// packet draws one packet: from the global pools, and most of the time
// aimed at one rule (and the rules leading to its chain).
func (g *pktGen) packet() Packet {
	s := spec{
		src:   g.addr(),
		dst:   g.addr(),
		proto: g.protocol(),
		ttl:   g.ttl(),
		sport: g.port(),
		dport: g.port(),
		flags: g.tcpFlags(),
	}
	s.icmpType, s.icmpCode = g.icmpTypeCode()
	if len(g.h.Rules) > 0 && g.chance(0.7) {
		g.aim(&s)
	}
	return g.build(&s)
}

// aim changes s so that it meets (or, now and then, just misses) the tests
// of a random rule and of one chain of rules jumping to that rule's chain.
func (g *pktGen) aim(s *spec) {
	h := pickOf(g.r, g.h.Rules)
	path := []*RuleHint{h}
	for chain := h.Chain; chain != "FORWARD" && len(path) < 8; {
		var callers []*RuleHint
		for _, c := range g.h.Rules {
			if c.Jump == chain {
				callers = append(callers, c)
			}
		}
		if len(callers) == 0 {
			break
		}
		c := pickOf(g.r, callers)
		path = append(path, c)
		chain = c.Chain
	}
	for i := len(path) - 1; i >= 0; i-- {
		g.apply(s, path[i])
	}
}

// want returns whether a field should meet a test that is inverted or not:
// mostly it should, sometimes it should just miss.
func (g *pktGen) want(inv bool) bool {
	hit := g.chance(0.8)
	return hit != inv
}

func (g *pktGen) apply(s *spec, h *RuleHint) {
	if h.Proto != 0 {
		if g.want(h.ProtoInv) {
			s.proto = h.Proto
		} else {
			for s.proto == h.Proto {
				s.proto = g.protocol()
			}
		}
	}
	if h.Src != nil {
		s.src = g.maskedAddr(h.Src.MaskedAddr, g.want(h.Src.Inv), s.src)
	}
	if h.Dst != nil {
		s.dst = g.maskedAddr(h.Dst.MaskedAddr, g.want(h.Dst.Inv), s.dst)
	}
	if h.SrcRange != nil {
		s.src = g.rangeAddr(h.SrcRange, s.src)
	}
	if h.DstRange != nil {
		s.dst = g.rangeAddr(h.DstRange, s.dst)
	}
	if h.Frag != 0 && g.chance(0.8) {
		s.frag = h.Frag
	}
	if h.SPort != nil {
		s.sport = g.rangeValue(int(h.SPort.Lo), int(h.SPort.Hi), 65535, g.want(h.SPort.Inv))
	}
	if h.DPort != nil {
		s.dport = g.rangeValue(int(h.DPort.Lo), int(h.DPort.Hi), 65535, g.want(h.DPort.Inv))
	}
	if m := h.MultiPorts; m != nil {
		r := pickOf(g.r, m.Ranges)
		v := g.rangeValue(int(r[0]), int(r[1]), 65535, g.want(m.Inv))
		switch which := m.Which; {
		case which == 's' || which == 'b' && g.chance(0.5):
			s.sport = v
		default:
			s.dport = v
		}
	}
	if f := h.Flags; f != nil {
		v := f.Comp | uint8(g.r.UintN(256))&^f.Mask
		if !g.want(f.Inv) && f.Mask != 0 {
			v ^= lowestBit(f.Mask, g.r)
		}
		s.flags = v
	}
	if h.TCPOption != 0 {
		if g.want(h.TCPOptionInv) {
			s.tcpOpt, s.noTCPOpt = h.TCPOption, false
		} else {
			s.tcpOpt, s.noTCPOpt = 0, true
		}
	}
	if t := h.ICMP; t != nil {
		if t.Type != 255 {
			s.icmpType = t.Type
		}
		s.icmpCode = uint8(g.rangeValue(int(t.CodeMin), int(t.CodeMax), 255, g.want(t.Inv)))
		if !g.want(t.Inv) && g.chance(0.3) {
			s.icmpType = t.Type + 1
		}
	}
	if t := h.TTL; t != nil {
		// FORWARD sees the TTL already decremented: arriving TTL - 1.
		v := int(t.V) + 1
		switch t.Op {
		case '<':
			v = pickOf(g.r, []int{v - 1, v - 2, v})
		case '>':
			v = pickOf(g.r, []int{v + 1, v + 2, v})
		default:
			v += g.intn(3) - 1
		}
		s.ttl = uint8(min(max(v, 2), 255))
	}
	if t := h.Length; t != nil {
		s.length = int(g.rangeValue(t.Min, t.Max, IngressMTU, g.want(t.Inv)))
	}
	if h.String != nil {
		g.aimString(s, h.String)
	}
}

// lowestBit returns one set bit of m, usually the lowest.
func lowestBit(m uint8, r *rand.Rand) uint8 {
	var bits []uint8
	for i := range 8 {
		if m&(1<<i) != 0 {
			bits = append(bits, 1<<i)
		}
	}
	if r.IntN(2) == 0 {
		return bits[0]
	}
	return pickOf(r, bits)
}

// rangeValue returns a value in [lo, hi] (an edge, or anywhere) when in is
// true, otherwise a value just outside it; values are clamped to [0, top].
func (g *pktGen) rangeValue(lo, hi, top int, in bool) uint16 {
	if lo > hi {
		lo, hi = hi, lo
	}
	var v int
	if in {
		switch g.intn(4) {
		case 0:
			v = lo
		case 1:
			v = hi
		default:
			v = lo + g.intn(hi-lo+1)
		}
	} else {
		v = pickOf(g.r, []int{lo - 1, hi + 1})
		if v < 0 || v > top {
			v = lo + hi + 1 - v // the other side
		}
	}
	return uint16(min(max(v, 0), top))
}

// maskedAddr returns an address that matches m (in) or just misses it,
// keeping old if no forwardable address is found.
func (g *pktGen) maskedAddr(m MaskedAddr, in bool, old netip.Addr) netip.Addr {
	base := addrU32(m.Addr) & m.Mask
	for range 10 {
		u := base | g.r.Uint32()&^m.Mask
		switch g.intn(4) {
		case 0:
			u = base
		case 1:
			u = base | ^m.Mask
		}
		if !in {
			if m.Mask == 0 {
				return old
			}
			var bits []uint32
			for i := range 32 {
				if m.Mask&(1<<i) != 0 {
					bits = append(bits, 1<<i)
				}
			}
			b := bits[0]
			if g.chance(0.4) {
				b = pickOf(g.r, bits)
			}
			u ^= b
		}
		if a := u32Addr(u); Forwardable(a) {
			return a
		}
	}
	return old
}

// rangeAddr returns an address on or next to an iprange bound.
func (g *pktGen) rangeAddr(t *RangeTest, old netip.Addr) netip.Addr {
	lo, hi := addrU32(t.Lo), addrU32(t.Hi)
	var u uint32
	switch g.intn(6) {
	case 0:
		u = lo
	case 1:
		u = hi
	case 2:
		u = lo - 1
	case 3:
		u = hi + 1
	default:
		if lo <= hi {
			u = lo + uint32(g.r.Uint64N(uint64(hi-lo)+1))
		} else {
			u = lo
		}
	}
	if a := u32Addr(u); Forwardable(a) {
		return a
	}
	return old
}

// build turns a spec into a packet.
func (g *pktGen) build(s *spec) Packet {
	p := Packet{
		Src:   s.src,
		Dst:   s.dst,
		Proto: s.proto,
		TTL:   s.ttl,
		ID:    uint16(g.r.UintN(65536)),
	}
	if g.chance(0.2) {
		p.TOS = uint8(g.r.UintN(256))
	}
	if g.chance(0.3) {
		p.DF = true
	}
	if g.chance(0.02) {
		p.Evil = true
	}
	if g.chance(0.1) {
		p.Options = g.options()
	}
	later := s.frag > 0 || s.frag == 0 && g.chance(0.1)
	switch {
	case later: // a later fragment: no transport header
		p.FragOff = pickOf(g.r, []uint16{1, 1, 2, 3, 185, uint16(1 + g.intn(8191))})
		p.MF = g.chance(0.5)
		p.L4 = g.payload(pickOf(g.r, []int{0, 1, 8, 20, 64, g.intn(300)}))
	case g.chance(0.06): // a first fragment
		p.MF = true
		p.DF = false
		g.transport(&p, s)
	default:
		g.transport(&p, s)
	}
	g.fitLength(&p, s.length)
	if g.chance(0.05) {
		// Link-layer padding after the datagram; the frame must still fit
		// the ingress MTU.
		p.Trailer = g.payload(min(1+g.intn(20), IngressMTU-p.IPLen()))
	}
	g.placeStrings(&p, s)
	return p
}

// transport fills p.L4 with a transport header and payload for p.Proto,
// sometimes truncated.
func (g *pktGen) transport(p *Packet, s *spec) {
	payload := g.payload(pickOf(g.r, []int{0, 0, 1, 4, 16, 100, g.intn(600)}))
	var l4 []byte
	var err error
	switch p.Proto {
	case 6:
		var opts []byte
		if !s.noTCPOpt && (s.tcpOpt != 0 || g.chance(0.3)) {
			opts = g.tcpOptions(s.tcpOpt)
		}
		var doff uint8
		if g.chance(0.04) {
			doff = uint8(1 + g.intn(15)) // any data offset, even < 5 or past the end
		}
		l4, err = TCPSegment(p.Src, p.Dst, s.sport, s.dport, s.flags, opts, doff, payload)
	case 17:
		l4, err = UDPDatagram(p.Src, p.Dst, s.sport, s.dport, payload)
	case 1:
		l4, err = ICMPMessage(s.icmpType, s.icmpCode, uint16(g.r.UintN(65536)), uint16(g.intn(100)), payload)
	case 132, 136, 33:
		// SCTP, UDP-Lite, DCCP: ports first, as multiport reads them
		l4 = append([]byte{byte(s.sport >> 8), byte(s.sport), byte(s.dport >> 8), byte(s.dport)}, g.payload(8+g.intn(20))...)
	default:
		l4 = payload
	}
	if err != nil {
		panic(err) // builders fail only on programming errors
	}
	if g.chance(0.05) && len(l4) > 0 {
		l4 = l4[:g.intn(min(len(l4), 24))] // truncated transport header
	}
	p.L4 = l4
}

func (g *pktGen) icmpTypeCode() (uint8, uint8) {
	if len(g.h.ICMP) > 0 && g.chance(0.7) {
		t := pickOf(g.r, g.h.ICMP)
		typ := t.Type
		if typ == 255 || g.chance(0.15) {
			typ = uint8(g.r.UintN(256))
		}
		code := pickOf(g.r, []uint8{t.CodeMin, t.CodeMax, t.CodeMin - 1, t.CodeMax + 1, uint8(g.r.UintN(256))})
		return typ, code
	}
	return pickOf(g.r, []uint8{0, 3, 5, 8, 11, 12, 13, 14, 17, 255, uint8(g.r.UintN(256))}), pickOf(g.r, []uint8{0, 0, 1, 3, 4, 13, uint8(g.r.UintN(256))})
}

// fitLength pads the payload so the total length reaches want (when it
// can: a datagram never shrinks below its headers), and keeps every packet
// within what the ingress link carries and what FORWARD sees (DF only when
// the datagram fits the egress MTU).
func (g *pktGen) fitLength(p *Packet, want int) {
	if want == 0 && len(g.h.Lengths) > 0 && g.chance(0.2) {
		want = pickOf(g.r, g.h.Lengths) + g.intn(3) - 1
	}
	if have := p.IPLen(); want > have && want <= IngressMTU {
		p.L4 = append(p.L4, g.payload(want-have)...)
	}
	if max := IngressMTU; p.IPLen() > max {
		p.L4 = p.L4[:len(p.L4)-(p.IPLen()-max)]
	}
	if p.IPLen() > EgressMTU {
		p.DF = false
	}
}
