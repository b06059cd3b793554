package conntrack

import (
	"encoding/binary"
	"net/netip"

	"github.com/qtables/qtables/packet"
)

// pkt is what the trackers need from one packet, extracted once.
type pkt struct {
	tuple Tuple
	// l4 is the captured transport header and payload; l4len is the
	// transport length the IP header declares (skb->len - dataoff), which
	// is longer than l4 when the capture was cut.
	l4    []byte
	l4len int
	// ipLen is what accounting counts: the IP total length.
	ipLen int
	// reason is the protocol's validity verdict (tcp_error, udp_error),
	// which the kernel applies after the lookup.
	reason Reason
	// icmpErr marks an ICMP error message: it is resolved through the
	// connection it quotes, never creates one.
	icmpErr bool
	tcp     tcpSeg
}

// ICMP error types (icmp_is_err) and the highest known type (NR_ICMP_TYPES).
func icmpIsError(typ uint8) bool {
	return typ == 3 || typ == 4 || typ == 5 || typ == 11 || typ == 12
}

const icmpMaxType = 18

// parse fills p from v, overwriting what p held before (TrackBatch reuses
// its pkts without clearing them): every field the trackers read is set
// (those of tcp only for TCP). A non-zero result means the packet cannot
// even be looked up (no tuple) and is INVALID.
func (p *pkt) parse(v *packet.View, checksum bool) Reason {
	if v.Family != 4 || (v.Class != packet.ClassOK && v.Class != packet.ClassTruncated) ||
		len(v.Network) < 20 {
		return ReasonNotIPv4
	}
	hl := int(v.IPv4.IHL) * 4
	if len(v.Network) < hl {
		return ReasonTruncated
	}
	if v.FragOff() != 0 {
		return ReasonFragment
	}
	p.l4 = v.Network[hl:]
	p.l4len = v.Len - hl
	p.ipLen = v.Len
	p.reason, p.icmpErr = ReasonNone, false
	full := len(v.Network) == v.Len
	t := &p.tuple
	// The IPv4-mapped form, straight from the header (v.Src and v.Dst are
	// the same bytes; netip's As16 costs more than the rest of parse).
	// Whole-word stores, so that the hash's word loads can forward them:
	// bytes 8-15 are 00 00 ff ff and the address, which as a
	// little-endian word is the address's bytes (read the same way) above
	// 0xffff0000. (Written as a big-endian word with a constant half, the
	// compiler splits the store into five, and the hash's load then waits
	// for them to drain: BenchmarkTrackBatch measured that stall as a
	// tenth of an in-cache packet's cost.)
	n := v.Network
	binary.LittleEndian.PutUint64(t.Src[0:8], 0)
	binary.LittleEndian.PutUint64(t.Dst[0:8], 0)
	binary.LittleEndian.PutUint64(t.Src[8:16], uint64(binary.LittleEndian.Uint32(n[12:16]))<<32|0xffff0000)
	binary.LittleEndian.PutUint64(t.Dst[8:16], uint64(binary.LittleEndian.Uint32(n[16:20]))<<32|0xffff0000)
	t.Proto, t.Family = v.Proto, 4
	t.SrcPort, t.DstPort = 0, 0 // other protocols have none

	switch v.Proto {
	case protoTCP:
		if len(p.l4) < 4 {
			return ReasonTruncated
		}
		t.SrcPort = binary.BigEndian.Uint16(p.l4[0:2])
		t.DstPort = binary.BigEndian.Uint16(p.l4[2:4])
		p.reason = p.tcp.parse(p.l4, p.l4len)
		if p.reason == ReasonNone && checksum && full && !l4ChecksumOK(v, p.l4, protoTCP) {
			p.reason = ReasonChecksum
		}
	case protoUDP, protoUDPLite:
		if len(p.l4) < 4 {
			return ReasonTruncated
		}
		t.SrcPort = binary.BigEndian.Uint16(p.l4[0:2])
		t.DstPort = binary.BigEndian.Uint16(p.l4[2:4])
		p.reason = p.udpError(v, checksum && full)
	case protoICMP:
		// nf_conntrack_icmpv4_error runs before any lookup.
		if len(p.l4) < 8 {
			return ReasonTruncated
		}
		if checksum && full && internetChecksum(0, p.l4) != 0xffff {
			return ReasonChecksum
		}
		typ, code := p.l4[0], p.l4[1]
		if typ > icmpMaxType {
			return ReasonICMPType
		}
		if icmpIsError(typ) {
			p.icmpErr = true
			return ReasonNone
		}
		t.SrcPort = binary.BigEndian.Uint16(p.l4[4:6])
		t.DstPort = uint16(typ)<<8 | uint16(code)
	}
	return ReasonNone
}

// udpError is udp_error / udplite_error.
func (p *pkt) udpError(v *packet.View, checksum bool) Reason {
	if len(p.l4) < 8 {
		return ReasonTruncated
	}
	ulen := int(binary.BigEndian.Uint16(p.l4[4:6]))
	sum := binary.BigEndian.Uint16(p.l4[6:8])
	if p.tuple.Proto == protoUDPLite {
		// The length field is the checksum coverage; 0 means all.
		if ulen != 0 && (ulen < 8 || ulen > p.l4len) {
			return ReasonUDPHeader
		}
		if sum == 0 {
			return ReasonChecksum // UDP-Lite mandates a checksum
		}
		if checksum {
			cov := p.l4
			if ulen != 0 {
				cov = p.l4[:ulen]
			}
			if !pseudoChecksumOK(v, cov, len(p.l4), protoUDPLite) {
				return ReasonChecksum
			}
		}
		return ReasonNone
	}
	if ulen > p.l4len || ulen < 8 {
		return ReasonUDPHeader
	}
	if sum == 0 {
		return ReasonNone
	}
	if checksum && !l4ChecksumOK(v, p.l4, protoUDP) {
		return ReasonChecksum
	}
	return ReasonNone
}

// l4ChecksumOK verifies a TCP or UDP checksum over the whole segment.
func l4ChecksumOK(v *packet.View, l4 []byte, proto uint8) bool {
	return pseudoChecksumOK(v, l4, len(l4), proto)
}

// pseudoChecksumOK checks the ones' complement sum of the IPv4 pseudo
// header (with length l4len) and data.
func pseudoChecksumOK(v *packet.View, data []byte, l4len int, proto uint8) bool {
	var ph [12]byte
	s4, d4 := v.Src.As4(), v.Dst.As4()
	copy(ph[0:4], s4[:])
	copy(ph[4:8], d4[:])
	ph[9] = proto
	binary.BigEndian.PutUint16(ph[10:12], uint16(l4len))
	sum := internetChecksum(0, ph[:])
	return internetChecksum(uint32(sum), data) == 0xffff
}

// internetChecksum returns the folded ones' complement sum of b added to
// initial (not complemented: a correct message sums to 0xffff).
func internetChecksum(initial uint32, b []byte) uint16 {
	sum := initial
	for len(b) >= 2 {
		sum += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return uint16(sum)
}

// udpPacket is nf_conntrack_udp_packet (and the UDP-Lite variant): 30 s
// until a reply; after a reply, a packet more than 2 s into the connection
// makes it a stream (ASSURED, 120 s). UDP-Lite assures at the first packet
// after a reply.
func (t *Table) udpPacket(e *flow, dir Dir, p *pkt, now int64) {
	timeout, stream := t.timeouts[toUDP], false
	if e.status&StatusSeenReply != 0 && (e.orig.Proto == protoUDPLite || now > e.created+udpStreamAfter) {
		timeout, stream = t.timeouts[toUDPStream], true
	}
	t.refresh(e, dir, p, now, timeout)
	if stream {
		e.status |= StatusAssured
	}
}

// udpStreamAfter is how old a replied UDP connection must be before its
// packets earn the stream timeout (stream_ts, 2 s).
const udpStreamAfter = 2e9

// related resolves an ICMP error (nf_conntrack_inet_error): the quoted
// header's tuple, inverted, must name a tracked connection whose
// destination in that direction is the error's destination. The packet is
// then RELATED to it (in the direction found) and nothing is accounted.
func (t *Table) related(r *Result, p *pkt, now int64) {
	inner, ok := quotedTuple(p.l4[8:])
	if !ok {
		t.invalid(r, ReasonICMPError, uint32(p.tuple.Src[15]))
		return
	}
	tu, ok := inner.Invert()
	if !ok {
		t.invalid(r, ReasonICMPError, uint32(p.tuple.Src[15]))
		return
	}
	h := t.seed.hash(&tu)
	s, si := t.shardFor(h)
	s.lock()
	defer s.mu.Unlock()
	idx, dir, found := t.find(s, h, &tu, now)
	if !found {
		r.Info, r.Reason = CtInvalid, ReasonICMPError
		s.n.invalid++
		return
	}
	e := s.flow(idx)
	ct := e.tuple(dir)
	if ct.Dst != p.tuple.Dst {
		r.Info, r.Reason = CtInvalid, ReasonICMPError
		s.n.invalid++
		return
	}
	r.Info, r.Dir = CtRelated, dir
	s.load(idx, &r.Entry)
	r.Ref = Ref{t: t, shard: si, idx: idx, gen: e.gen}
}

// quotedTuple extracts the tuple of the datagram an ICMP error quotes
// (nf_ct_get_tuplepr on the inner header). The kernel reads the inner
// header without validating it; this also rejects a version other than 4
// and a header length below 5 words, which can only name garbage.
func quotedTuple(b []byte) (Tuple, bool) {
	var t Tuple
	if len(b) < 20 || b[0]>>4 != 4 {
		return t, false
	}
	hl := int(b[0]&0x0f) * 4
	if hl < 20 || hl > len(b) {
		return t, false
	}
	if binary.BigEndian.Uint16(b[6:8])&packet.IPv4OffMask != 0 {
		return t, false // a non-first fragment has no transport header
	}
	src, dst := netip.AddrFrom4([4]byte(b[12:16])), netip.AddrFrom4([4]byte(b[16:20]))
	t.Src, t.Dst = src.As16(), dst.As16()
	t.Proto, t.Family = b[9], 4
	l4 := b[hl:]
	switch t.Proto {
	case protoTCP, protoUDP, protoUDPLite:
		if len(l4) < 4 {
			return t, false
		}
		t.SrcPort = binary.BigEndian.Uint16(l4[0:2])
		t.DstPort = binary.BigEndian.Uint16(l4[2:4])
	case protoICMP:
		if len(l4) < 8 {
			return t, false
		}
		t.SrcPort = binary.BigEndian.Uint16(l4[4:6])
		t.DstPort = uint16(l4[0])<<8 | uint16(l4[1])
	}
	return t, true
}
