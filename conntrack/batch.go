package conntrack

import (
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/qtables/qtables/packet"
)

// batchChunk is how many packets TrackBatch takes through each of its
// stages before the next stage: the stages' prefetches for the whole chunk
// are in flight together, which keeps the memory system busy (a core
// tracks 12 to 16 L1 misses at once and queues more behind them). Chunks
// of 32 did better than smaller ones, or than a pipeline moving groups of
// 8 or 16 through the stages in step (BenchmarkTrackBatch); it is also
// about an NFQUEUE read's worth of packets, and its scratch fits the stack.
const batchChunk = 32

// batchPkt is TrackBatch's per-packet scratch between stages.
type batchPkt struct {
	p    pkt
	h    uint64
	s    *shard
	si   uint32
	kind uint8
	// slots is the index array stage 1 saw (nil if none).
	slots *[]slot
	// hint is the index cell whose stored hash matched in stage 2 (0 if
	// none) and hintPos its position: stage 3 tries it before probing.
	hint    slot
	hintPos int
}

// What stage 3 must do with a packet.
const (
	batchDone    = iota // decided in stage 1 (INVALID before any lookup)
	batchTrack          // lookup, update or create
	batchRelated        // an ICMP error: resolved through the quoted flow
)

// TrackBatch tracks views[i] into results[i] for every i, exactly as
// calling TrackInto(&results[i], views[i], now) for i = 0, 1, ... in
// order would: state updates, counters and results are the same, packet
// by packet. It is what a worker that receives packets in batches (an
// NFQUEUE read) should call: on a table much larger than the CPU caches it
// is several times faster.
//
// One packet at a time, a lookup waits for two dependent memory loads (the
// index slot, then the entry), and the CPU has little else to do
// meanwhile. TrackBatch takes up to 32 packets at a time through three
// stages: (1) parse and hash each packet and prefetch its home index slot;
// (2) read the slots, which have mostly arrived by then, and prefetch the
// entries they name; (3) take each packet's shard lock in turn and do the
// real work, on data that is mostly in cache by then. So the cache misses
// of many packets are in flight at once. Stages 1 and 2 take no lock and
// change nothing: what they read is a hint. Stage 3, under the lock and in
// order, checks that the index cell stage 2 found still names an entry
// matching the packet (then it is the packet's connection, see resolve)
// and otherwise looks the packet up again.
//
// As with TrackInto one packet at a time, a packet that starts a
// connection gets an unconfirmed entry that a later packet of the same
// batch does not find (unconfirmed entries are not in the index): such a
// packet is NEW again with an entry of its own, and the second Confirm
// resolves the clash as the kernel does for two first packets in flight
// at once (UDP merges, TCP drops). Call Confirm or Discard for every
// result once the batch's verdicts are known.
//
// TrackBatch panics if len(results) < len(views). It does not allocate
// once the table's slabs have grown to the working set.
func (t *Table) TrackBatch(views []*packet.View, now time.Time, results []Result) {
	results = results[:len(views)]
	n := len(views)
	if n == 1 {
		t.TrackInto(&results[0], views[0], now) // nothing to overlap
		return
	}
	ns := now.UnixNano()
	var scratch [batchChunk]batchPkt
	for base := 0; base < n; base += batchChunk {
		m := min(batchChunk, n-base)
		sc := scratch[:m]
		t.stage1(sc, views[base:base+m], results[base:base+m])
		stage2(sc)
		t.stage3(sc, results[base:base+m], ns)
	}
}

// The stages loop over the chunk themselves: a call per packet and stage
// cost a few percent of a packet.

// stage1 parses and hashes each packet and prefetches its home index slot.
func (t *Table) stage1(sc []batchPkt, views []*packet.View, results []Result) {
	views, results = views[:len(sc)], results[:len(sc)]
	for i := range sc {
		b, r, v := &sc[i], &results[i], views[i]
		r.Info, r.Dir, r.Reason, r.Drop, r.Ref = CtInvalid, DirOriginal, ReasonNone, false, Ref{}
		b.hint = 0
		// No b.p = pkt{}: parse sets every field the trackers read
		// (zeroing the 144 bytes per packet cost more than the stores
		// it saves).
		if reason := b.p.parse(v, t.cfg.Checksum); reason != ReasonNone {
			t.invalid(r, reason, uint32(v.IPv4.ID))
			b.kind = batchDone
			continue
		}
		if b.p.icmpErr {
			b.kind = batchRelated
			continue
		}
		b.kind = batchTrack
		b.h = t.seed.hash4(&b.p.tuple) // parse makes IPv4 tuples only
		b.s, b.si = t.shardFor(b.h)
		b.slots = b.s.index.Load()
		if b.slots != nil {
			sl := *b.slots
			prefetch(uintptr(unsafe.Pointer(&sl[int(uint32(b.h))&(len(sl)-1)])))
		}
	}
}

// stage2 reads each packet's probe run in the index (atomically: no lock
// is held) and prefetches the cache lines of the first entry whose stored
// hash matches: the flow's two, and the TCP slot's for a TCP packet. It
// notes that cell as the packet's hint for stage 3.
func stage2(sc []batchPkt) {
	for i := range sc {
		b := &sc[i]
		if b.kind != batchTrack || b.slots == nil {
			continue
		}
		sl := *b.slots
		mask := len(sl) - 1
		tag := uint32(b.h)
		pos := int(tag) & mask
		for range 8 {
			c := slot(atomic.LoadUint64((*uint64)(&sl[pos])))
			if c == 0 {
				break
			}
			if c.hash() == tag {
				b.hint, b.hintPos = c, pos
				// b.s.peek(c.idx() - 1), spelled out.
				tab := b.s.chunkTab.Load()
				idx := c.idx() - 1
				if tab == nil || idx/chunkSize >= uint32(len(*tab)) {
					break
				}
				// Addresses only: no load from the chunk itself (see
				// shard.flow).
				a := uintptr(unsafe.Pointer((*tab)[idx/chunkSize]))
				f := a + flowOffset(idx%chunkSize)
				if b.p.tuple.Proto == protoTCP {
					prefetchEntry(f, a+tcpOffset(idx%chunkSize))
				} else {
					prefetchFlow(f)
				}
				break
			}
			pos = (pos + 1) & mask
		}
	}
}

// stage3 is the real work, under the shard locks, packet by packet in
// order.
func (t *Table) stage3(sc []batchPkt, results []Result, now int64) {
	results = results[:len(sc)]
	for i := range sc {
		b, r := &sc[i], &results[i]
		switch b.kind {
		case batchTrack:
			s := b.s
			if !s.mu.TryLock() { // s.lock, inlined
				s.lockSlow()
			}
			t.resolve(r, s, b.si, b.h, &b.p, now, b.hint, b.hintPos)
			s.mu.Unlock()
		case batchRelated:
			t.related(r, &b.p, now)
		}
		if r.Ref.t == nil {
			r.Entry = Entry{}
		}
	}
}

// peek returns the addresses of the flow and TCP slot at slab index idx
// without the lock, for a prefetch, or zeros if the slab published so far
// does not reach it.
func (s *shard) peek(idx uint32) (f, tc uintptr) {
	tab := s.chunkTab.Load()
	if tab == nil {
		return 0, 0
	}
	// Addresses only: no load from the chunk itself (see shard.flow).
	if c := idx / chunkSize; c < uint32(len(*tab)) {
		a := uintptr(unsafe.Pointer((*tab)[c]))
		j := idx % chunkSize
		return a + flowOffset(j), a + tcpOffset(j)
	}
	return 0, 0
}
