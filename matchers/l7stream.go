package matchers

// The first bytes of one direction of a TCP connection, in sequence order.
//
// The application-layer matches (tls, http, dns over TCP, string --stream)
// read a flow's opening bytes, which a sender may split over several
// segments (a ClientHello larger than the MSS, a request written in
// pieces, a path MTU of 300 bytes) and the network may reorder. l7Stream
// puts them back in order in a buffer of a fixed depth: bytes beyond the
// depth are never kept, so a flow costs at most depth bytes per direction
// however much it sends, and nothing grows once the buffer exists.
//
// Overlaps are resolved "first copy wins": a byte already placed is never
// overwritten by a retransmission carrying different data. This is the
// choice that cannot be steered after the fact; the kernel's receiver, the
// one whose view matters, also keeps the data it queued first for in-order
// delivery. Out-of-order data is kept in up to l7MaxRanges disjoint ranges;
// a segment that would need more is dropped (its retransmission will fit
// once the hole before it closes).

// l7MaxRanges bounds the disjoint byte ranges one direction keeps, the
// in-order prefix included.
const l7MaxRanges = 8

// l7Range is a half-open byte range [lo, hi) of stream offsets.
type l7Range struct{ lo, hi int32 }

// l7Stream reassembles the first len(buf) bytes of one direction.
type l7Stream struct {
	// buf holds the bytes at stream offsets [0, len(buf)); nil until the
	// owner gives it one (see setBuffer).
	buf []byte
	// base is the sequence number of stream offset 0; haveBase reports
	// that it is known (from the SYN, or the first data segment seen).
	base     uint32
	haveBase bool
	// synBase records that base came from a SYN: data before it is then
	// impossible, while a base guessed from mid-stream data may be late.
	synBase bool
	// ranges are the filled byte ranges, sorted and disjoint; ranges[0]
	// starts at 0 when the in-order prefix is non-empty.
	ranges [l7MaxRanges]l7Range
	n      int
}

// reset forgets everything but the buffer.
func (s *l7Stream) reset() {
	buf := s.buf
	*s = l7Stream{buf: buf}
}

// contiguous returns the length of the in-order prefix: the bytes from
// offset 0 with no hole.
func (s *l7Stream) contiguous() int {
	if s.n == 0 || s.ranges[0].lo != 0 {
		return 0
	}
	return int(s.ranges[0].hi)
}

// prefix returns the in-order bytes.
func (s *l7Stream) prefix() []byte { return s.buf[:s.contiguous()] }

// full reports whether the in-order prefix fills the whole depth.
func (s *l7Stream) full() bool { return s.buf != nil && s.contiguous() == len(s.buf) }

// syn records the sequence number of a SYN: the stream starts right after
// it. A SYN with another sequence number than the one recorded (a new
// connection on the same addresses, or a SYN seen after mid-stream data)
// restarts the stream.
func (s *l7Stream) syn(seq uint32) {
	if s.haveBase && s.synBase && s.base == seq+1 {
		return // a retransmitted SYN
	}
	s.reset()
	s.base, s.haveBase, s.synBase = seq+1, true, true
}

// add places a segment's data, which starts at sequence number seq, and
// returns the growth of the in-order prefix in bytes (0 when the segment
// brought nothing new in order). The buffer must be set.
func (s *l7Stream) add(seq uint32, data []byte) int {
	if len(data) == 0 {
		return 0
	}
	if !s.haveBase {
		s.base, s.haveBase = seq, true
	}
	depth := int64(len(s.buf))
	// The offset in sequence space, modulo 2^32, read as signed so that
	// a retransmission of bytes before base comes out negative.
	off := int64(int32(seq - s.base))
	lo, hi := off, off+int64(len(data))
	if lo < 0 {
		lo = 0
	}
	if hi > depth {
		hi = depth
	}
	if lo >= hi {
		return 0
	}
	before := s.contiguous()
	if !s.insert(int32(lo), int32(hi), data[lo-off:hi-off]) {
		return 0
	}
	return s.contiguous() - before
}

// insert copies the parts of b (the bytes of [lo, hi)) that no range
// holds yet and merges [lo, hi) into the ranges. It returns false, leaving
// everything unchanged, when the merge would need more than l7MaxRanges
// ranges.
func (s *l7Stream) insert(lo, hi int32, b []byte) bool {
	// i is the first range that ends at or after lo; j the first that
	// starts after hi. Ranges i..j-1 touch or overlap [lo, hi).
	i := 0
	for i < s.n && s.ranges[i].hi < lo {
		i++
	}
	j := i
	for j < s.n && s.ranges[j].lo <= hi {
		j++
	}
	if i == j && s.n == l7MaxRanges {
		return false // a new disjoint range and no room for it
	}
	// Copy the gaps between the touching ranges (first copy wins).
	at := lo
	for k := i; k < j; k++ {
		r := s.ranges[k]
		if r.lo > at {
			copy(s.buf[at:r.lo], b[at-lo:r.lo-lo])
		}
		at = max(at, r.hi)
	}
	if at < hi {
		copy(s.buf[at:hi], b[at-lo:])
	}
	merged := l7Range{lo, hi}
	if i < j {
		merged.lo = min(lo, s.ranges[i].lo)
		merged.hi = max(hi, s.ranges[j-1].hi)
	}
	// Replace ranges i..j-1 by merged.
	removed := j - i
	if removed == 0 {
		copy(s.ranges[i+1:s.n+1], s.ranges[i:s.n])
		s.n++
	} else if removed > 1 {
		copy(s.ranges[i+1:], s.ranges[j:s.n])
		s.n -= removed - 1
	}
	s.ranges[i] = merged
	return true
}
