package queue

import "encoding/binary"

// FlowHash hashes the canonical 5-tuple of a raw IPv4 datagram: the same
// value for both directions of a flow, so that every packet of a
// connection, whichever queue the kernel put it in, is judged by the same
// worker and keeps its order. Ports count for TCP, UDP, UDP-Lite, SCTP and
// DCCP when the datagram is not fragmented; fragments hash by addresses
// and protocol only. Anything that is not IPv4 hashes to 0. FlowHash reads
// only the headers, before the full decode, and does not allocate.
func FlowHash(b []byte) uint64 {
	if len(b) < 20 || b[0]>>4 != 4 {
		return 0
	}
	ihl := int(b[0]&0x0f) * 4
	proto := b[9]
	a := binary.BigEndian.Uint32(b[12:16])
	d := binary.BigEndian.Uint32(b[16:20])
	var pa, pd uint16
	frag := binary.BigEndian.Uint16(b[6:8])&0x3fff != 0 // MF or an offset
	switch proto {
	case 6, 17, 33, 132, 136:
		if !frag && ihl >= 20 && len(b) >= ihl+4 {
			pa = binary.BigEndian.Uint16(b[ihl:])
			pd = binary.BigEndian.Uint16(b[ihl+2:])
		}
	}
	// Canonical order: the lower (address, port) end first.
	if a > d || (a == d && pa > pd) {
		a, d, pa, pd = d, a, pd, pa
	}
	h := mix64(uint64(a)<<32|uint64(d)) ^ (uint64(pa)<<24 | uint64(pd)<<8 | uint64(proto))
	return mix64(h)
}

// mix64 is the MurmurHash3 finalizer: every input bit affects every
// output bit, so the low bits used to pick a worker are well spread.
func mix64(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}
