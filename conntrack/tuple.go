package conntrack

import (
	"encoding/binary"
	"math/bits"
	"net/netip"
)

// IP protocol numbers the tracker distinguishes (packet defines the common
// three; the rest only matter here).
const (
	protoICMP    = 1
	protoTCP     = 6
	protoUDP     = 17
	protoDCCP    = 33
	protoGRE     = 47
	protoSCTP    = 132
	protoUDPLite = 136
)

// Tuple is one direction of a connection as nf_conntrack_tuple describes it:
// addresses, protocol and the protocol's "ports".
//
// Addresses are fixed 16-byte arrays, not netip.Addr: netip.Addr holds a
// pointer (its zone), which would make every entry something the garbage
// collector must scan. An IPv4 address is stored in its IPv4-mapped form
// (::ffff:a.b.c.d) with Family 4, so IPv6 support needs no layout change.
//
// For TCP, UDP and UDP-Lite SrcPort and DstPort are the ports. For ICMP they
// hold what the kernel keeps in the same place: SrcPort is the echo
// identifier (bytes 4-5 of the ICMP header, whatever the type) and DstPort
// is type<<8 | code. Other protocols have no ports (both zero).
type Tuple struct {
	Src, Dst         [16]byte
	SrcPort, DstPort uint16
	Proto            uint8
	Family           uint8 // 4 (6 reserved for IPv6)
}

// equal is t == u, spelled out so that the compiler compares words
// inline instead of calling memequal for the 38-byte struct.
func (t *Tuple) equal(u *Tuple) bool {
	return t.Src == u.Src && t.Dst == u.Dst && t.SrcPort == u.SrcPort &&
		t.DstPort == u.DstPort && t.Proto == u.Proto && t.Family == u.Family
}

// isInverseOf reports whether t is o's inverse (o.Invert() == t, ok),
// without building the inverse: the reply-direction test of a lookup.
func (t *Tuple) isInverseOf(o *Tuple) bool {
	if t.Src != o.Dst || t.Dst != o.Src || t.Proto != o.Proto || t.Family != o.Family {
		return false
	}
	if t.Proto != protoICMP {
		return t.SrcPort == o.DstPort && t.DstPort == o.SrcPort
	}
	inv, ok := o.Invert()
	return ok && t.SrcPort == inv.SrcPort && t.DstPort == inv.DstPort
}

// SrcAddr returns the source address.
func (t *Tuple) SrcAddr() netip.Addr { return t.addr(&t.Src) }

// DstAddr returns the destination address.
func (t *Tuple) DstAddr() netip.Addr { return t.addr(&t.Dst) }

func (t *Tuple) addr(a *[16]byte) netip.Addr {
	ad := netip.AddrFrom16(*a)
	if t.Family == 4 {
		return ad.Unmap()
	}
	return ad
}

// ICMPType and ICMPCode return the ICMP type and code of an ICMP tuple.
func (t *Tuple) ICMPType() uint8 { return uint8(t.DstPort >> 8) }
func (t *Tuple) ICMPCode() uint8 { return uint8(t.DstPort) }

// ICMPID returns the identifier of an ICMP tuple.
func (t *Tuple) ICMPID() uint16 { return t.SrcPort }

// HasPorts reports whether the protocol's tuple carries ports (TCP, UDP,
// UDP-Lite), the ones conntrack -L prints as sport= and dport=.
func (t *Tuple) HasPorts() bool { return hasPorts(t.Proto) }

func hasPorts(proto uint8) bool {
	return proto == protoTCP || proto == protoUDP || proto == protoUDPLite
}

// TupleFrom builds a tuple from addresses (both of one family), protocol and
// ports, for lookups that do not start from a packet (connlimit, the kernel
// bridge). For ICMP pass the identifier as sport and type<<8|code as dport.
func TupleFrom(src, dst netip.Addr, proto uint8, sport, dport uint16) Tuple {
	t := Tuple{Src: src.As16(), Dst: dst.As16(), Proto: proto, Family: 6}
	if src.Is4() || src.Is4In6() {
		t.Family = 4
	}
	if hasPorts(proto) || proto == protoICMP {
		t.SrcPort, t.DstPort = sport, dport
	}
	return t
}

// icmpInverse maps the ICMP query types to their answers and back, as the
// kernel's invmap does (echo, timestamp, information, address mask). A zero
// means the type cannot be inverted and so cannot form a connection.
var icmpInverse = [19]uint8{
	0: 8 + 1, 8: 0 + 1,
	13: 14 + 1, 14: 13 + 1,
	15: 16 + 1, 16: 15 + 1,
	17: 18 + 1, 18: 17 + 1,
}

// icmpValidNew reports the ICMP types that may create a connection: the
// queries, never their answers.
func icmpValidNew(typ uint8) bool {
	return typ == 8 || typ == 13 || typ == 15 || typ == 17
}

// Invert returns the tuple of the other direction, as nf_ct_invert_tuple
// computes it. ok is false for ICMP types that have no answer type.
func (t Tuple) Invert() (inv Tuple, ok bool) {
	inv = Tuple{Src: t.Dst, Dst: t.Src, Proto: t.Proto, Family: t.Family}
	if t.Proto == protoICMP {
		typ := t.ICMPType()
		if int(typ) >= len(icmpInverse) || icmpInverse[typ] == 0 {
			return Tuple{}, false
		}
		inv.SrcPort = t.SrcPort
		inv.DstPort = uint16(icmpInverse[typ]-1)<<8 | uint16(t.ICMPCode())
		return inv, true
	}
	inv.SrcPort, inv.DstPort = t.DstPort, t.SrcPort
	return inv, true
}

// hashSeed keys the tuple hash so that an outsider cannot aim traffic at one
// shard or index run. Each Table draws its own.
type hashSeed [4]uint64

// hash returns a direction-free hash of t: a tuple and its inverse hash the
// same, so one index slot serves both directions of a flow. It orders the
// two endpoints (address, port) canonically and, for ICMP, folds the type
// to its query form and moves the identifier out of the endpoints.
func (s *hashSeed) hash(t *Tuple) uint64 {
	if t.Family == 4 {
		return s.hash4(t)
	}
	return s.hash6(t)
}

// hash6 is hash for other tuples (IPv6, which is not tracked yet).
func (s *hashSeed) hash6(t *Tuple) uint64 {
	// Native-order loads: the canonical order only has to be total, not
	// numeric.
	aHi := binary.LittleEndian.Uint64(t.Src[0:8])
	aLo := binary.LittleEndian.Uint64(t.Src[8:16])
	bHi := binary.LittleEndian.Uint64(t.Dst[0:8])
	bLo := binary.LittleEndian.Uint64(t.Dst[8:16])
	ap, bp := uint64(t.SrcPort), uint64(t.DstPort)
	extra := uint64(t.Proto)<<8 | uint64(t.Family)
	if t.Proto == protoICMP {
		typ := t.ICMPType()
		if int(typ) < len(icmpInverse) && icmpInverse[typ] != 0 && !icmpValidNew(typ) {
			typ = icmpInverse[typ] - 1
		}
		extra |= uint64(t.SrcPort)<<32 | uint64(typ)<<24 | uint64(t.ICMPCode())<<16
		ap, bp = 0, 0
	}
	// Canonical order: the smaller (address, port) endpoint first.
	if aHi > bHi || (aHi == bHi && (aLo > bLo || (aLo == bLo && ap > bp))) {
		aHi, aLo, ap, bHi, bLo, bp = bHi, bLo, bp, aHi, aLo, ap
	}
	h := mix(aHi^s[0], aLo^s[1])
	h = mix(h^bHi, bLo^s[2])
	h = mix(h^(ap<<16|bp), extra^s[3])
	return h
}

// hash4 is hash for IPv4 tuples, whose addresses are IPv4-mapped (only
// their last four bytes vary): each endpoint (address, port) fits in 48
// bits, so both fit two words with room for protocol, family and the ICMP
// fields, and two multiplications hash it all.
func (s *hashSeed) hash4(t *Tuple) uint64 {
	// Whole-word loads of the words parse stores (a narrower load from
	// the middle of a just-stored word may miss store forwarding).
	a := binary.LittleEndian.Uint64(t.Src[8:16])>>32<<16 | uint64(t.SrcPort)
	b := binary.LittleEndian.Uint64(t.Dst[8:16])>>32<<16 | uint64(t.DstPort)
	icmp := t.Proto == protoICMP
	if icmp {
		// The identifier and type are no endpoint's: order the addresses
		// alone and add them after.
		a, b = a&^0xffff, b&^0xffff
	}
	// Canonical order: the smaller endpoint first.
	if a > b {
		a, b = b, a
	}
	x := a<<16 | uint64(t.Proto)<<8 | 4
	y := b << 16
	if icmp {
		typ := t.ICMPType()
		if int(typ) < len(icmpInverse) && icmpInverse[typ] != 0 && !icmpValidNew(typ) {
			typ = icmpInverse[typ] - 1
		}
		x |= uint64(t.SrcPort) << 16
		y |= uint64(typ)<<8 | uint64(t.ICMPCode())
	}
	return mix(mix(x^s[0], y^s[1]), s[2])
}

// mix is the folded 128-bit product (the wyhash mixing step).
func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b^0x9e3779b97f4a7c15)
	return hi ^ lo
}
