package engine

import (
	"net/netip"
	"slices"

	"github.com/qtables/qtables/matchers"
	"github.com/qtables/qtables/packet"
)

// probeMatch checks a match's derivation (deriveMatch reads it from the
// printed form) against the match itself on packets at the edges of the
// derived key sets, at fragment offsets 0, 1 and 2 and at transport
// lengths around every length a match tests. The derivation is sound when
// every probe the match accepts or hot-drops lies inside the sets and a
// match derived as pure never hot-drops. A derivation that fails is not
// used (the match is treated as stateful: unindexed, indexing stops).
// The probe guards against a matcher whose printed form no longer says
// what it does; the differential tests guard the rest.
func probeMatch(m matchers.Match, r *Rule, mc *matchCons) bool {
	var used []fieldID
	for f := range mc.sets {
		if !mc.sets[f].all {
			used = append(used, fieldID(f))
		}
	}
	// Values per field: the edges of each interval and of its complement.
	vals := map[fieldID][]uint32{}
	for _, f := range used {
		vals[f] = edgeValues(mc.sets[f], probeMax(f))
	}
	markVals := []uint32{0, 0xffffffff}
	for _, mk := range mc.marks {
		markVals = append(markVals, mk.value, mk.value^1, mk.value|^mk.mask, mk.value&mk.mask)
	}
	// The base point is inside every set where possible.
	base := probePoint{src: 0x0a000001, dst: 0x0a000002, flags: 0x02}
	for _, f := range used {
		if v, ok := firstInside(mc.sets[f], probeMax(f)); ok {
			base.set(f, v)
		}
	}
	if len(mc.marks) > 0 {
		base.mark = mc.marks[0].value
	}
	points := []probePoint{base}
	for _, f := range used {
		for _, v := range vals[f] {
			p := base
			p.set(f, v)
			points = append(points, p)
		}
	}
	for _, v := range markVals {
		p := base
		p.mark = v
		points = append(points, p)
	}
	var l4 [64]byte
	var view packet.View
	var c matchers.Context
	exact := mc.exact
	defer func() { mc.exact = exact }()
	for _, p := range points {
		for _, fo := range []uint16{0, 1, 2} {
			for _, n := range []int{0, 2, 3, 4, 7, 8, 13, 14, 20, 40} {
				p.fill(l4[:])
				view = packet.View{Class: packet.ClassOK, Family: 4, Proto: r.Proto, Len: 20 + n, TTL: 64, VLAN: -1,
					Src: addrFrom(p.src), Dst: addrFrom(p.dst), L4: l4[:n]}
				view.IPv4.IHL = 5
				view.IPv4.FragWord = fo
				c.Reset()
				c.Pkt, c.Hook, c.Mark = &view, matchers.HookForward, p.mark
				got := m.Match(&c)
				if c.Hotdrop && mc.class == classPure {
					return false
				}
				inside := true
				for f := range mc.sets {
					if !mc.sets[f].contains(fieldKey(fieldID(f), &c, p.src, p.dst, 0)) {
						inside = false
					}
				}
				if mc.exact && (got != inside || c.Hotdrop) {
					exact = false
				}
				if !got && !c.Hotdrop {
					continue
				}
				if !inside {
					return false
				}
				for _, mk := range mc.marks {
					if (p.mark&mk.mask == mk.value) == mk.inv {
						return false
					}
				}
			}
		}
	}
	return true
}

// probeMax is the largest key a probe sets directly; the short keys come
// from the transport lengths probed.
func probeMax(f fieldID) uint32 {
	switch f {
	case fSport, fDport, fICMP:
		return 0xffff
	case fFlags:
		return 0xff
	}
	return fieldMax[f]
}

// edgeValues returns the keys at and next to each interval end of s, up
// to maxKey, at most 64 of them.
func edgeValues(s keySet, maxKey uint32) []uint32 {
	out := []uint32{0, maxKey}
	for _, x := range s.iv {
		for _, v := range []uint32{x.lo - 1, x.lo, x.hi, x.hi + 1} {
			if v <= maxKey && !(v == ^uint32(0) && x.lo == 0) {
				out = append(out, v)
			}
		}
		if len(out) >= 64 {
			break
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// firstInside returns the smallest key of s that a probe can set.
func firstInside(s keySet, maxKey uint32) (uint32, bool) {
	if s.all {
		return 0, true
	}
	for _, x := range s.iv {
		if x.lo <= maxKey {
			return x.lo, true
		}
	}
	return 0, false
}

// probePoint is the header values of one probe.
type probePoint struct {
	src, dst, mark uint32
	sport, dport   uint16
	flags          uint8
	icmp           uint16
	useICMP        bool
}

func (p *probePoint) set(f fieldID, v uint32) {
	switch f {
	case fSrc:
		p.src = v
	case fDst:
		p.dst = v
	case fSport:
		p.sport = uint16(v)
	case fDport:
		p.dport = uint16(v)
	case fFlags:
		p.flags = uint8(v)
	case fICMP:
		p.icmp, p.useICMP = uint16(v), true
	case fMark:
		p.mark = v
	}
}

// fill writes the transport bytes: ports (or ICMP type and code) first,
// the TCP data offset and flags at 12 and 13.
func (p *probePoint) fill(l4 []byte) {
	clear(l4)
	if p.useICMP {
		l4[0], l4[1] = byte(p.icmp>>8), byte(p.icmp)
	} else {
		l4[0], l4[1] = byte(p.sport>>8), byte(p.sport)
	}
	l4[2], l4[3] = byte(p.dport>>8), byte(p.dport)
	l4[12] = 5 << 4
	l4[13] = p.flags
}

func addrFrom(a uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)})
}
