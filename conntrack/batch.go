package conntrack

import (
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/qtables/qtables/packet"
)

// batchChunk is how many packets TrackBatch takes through its passes at a
// time. It bounds the scratch space (on the stack) and is about as many
// independent cache misses as a core keeps in flight: more would only
// queue behind the first ones and let the earliest prefetched lines be
// evicted before they are used.
const batchChunk = 32

// batchPkt is TrackBatch's per-packet scratch between passes.
type batchPkt struct {
	p    pkt
	h    uint64
	s    *shard
	si   uint32
	kind uint8
	// slots is the index array the prefetch pass saw (nil if none).
	slots *[]slot
}

// What pass 3 must do with a packet.
const (
	batchDone    = iota // decided in pass 1 (INVALID before any lookup)
	batchTrack          // lookup, update or create
	batchRelated        // an ICMP error: resolved through the quoted flow
)

// TrackBatch tracks views[i] into results[i] for every i, exactly as
// calling TrackInto(&results[i], views[i], now) for i = 0, 1, ... in
// order would: state updates, counters and results are the same, packet
// by packet. It is faster on a large table because it overlaps the cache
// misses of several packets. A lookup in a table much larger than the
// CPU caches waits for two dependent memory loads (the index slot, then
// the entry); one packet at a time, the CPU has little else to do
// meanwhile. TrackBatch works in passes over up to 32 packets: it parses
// and hashes all of them and prefetches their index slots, then reads the
// slots (mostly arrived by then) and prefetches the entries they name,
// and only then takes each shard lock in turn and does the real work,
// which by then mostly finds its data in cache. The prefetch passes take
// no lock and change nothing: what they read is a hint, and pass 3 looks
// everything up again under the lock.
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
	ns := now.UnixNano()
	var sc [batchChunk]batchPkt
	var addrs [batchChunk * 5]uintptr
	for base := 0; base < len(views); base += batchChunk {
		vs := views[base:min(base+batchChunk, len(views))]
		rs := results[base : base+len(vs)]
		t.trackChunk(vs, rs, ns, sc[:len(vs)], addrs[:])
	}
}

// trackChunk is one round of TrackBatch's passes over at most batchChunk
// packets.
func (t *Table) trackChunk(vs []*packet.View, rs []Result, now int64, sc []batchPkt, addrs []uintptr) {
	// Pass 1: parse, hash, and prefetch each packet's home index slot.
	n := 0
	for i, v := range vs {
		b, r := &sc[i], &rs[i]
		r.Info, r.Dir, r.Reason, r.Drop, r.Ref = CtInvalid, DirOriginal, ReasonNone, false, Ref{}
		b.p = pkt{}
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
		b.h = t.seed.hash(&b.p.tuple)
		b.s, b.si = t.shardFor(b.h)
		b.slots = b.s.index.Load()
		if b.slots != nil {
			sl := *b.slots
			addrs[n] = uintptr(unsafe.Pointer(&sl[int(uint32(b.h))&(len(sl)-1)]))
			n++
		}
	}
	prefetch(addrs[:n])

	// Pass 2: read each home slot's probe run (atomically: no lock is
	// held) and prefetch the cache lines of the first entry whose stored
	// hash matches.
	n = 0
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
				if e := b.s.peekEntry(c.idx() - 1); e != 0 {
					for a := e &^ 63; a < e+entryBytes; a += 64 {
						addrs[n] = a
						n++
					}
				}
				break
			}
			pos = (pos + 1) & mask
		}
	}
	prefetch(addrs[:n])

	// Pass 3: the real work, in order, each packet under its shard lock.
	for i := range sc {
		b, r := &sc[i], &rs[i]
		switch b.kind {
		case batchTrack:
			b.s.mu.Lock()
			t.resolve(r, b.s, b.si, b.h, &b.p, now)
			b.s.mu.Unlock()
		case batchRelated:
			t.related(r, &b.p, now)
		}
		if r.Ref.t == nil {
			r.Entry = Entry{}
		}
	}
}

const entryBytes = unsafe.Sizeof(Entry{})

// peekEntry returns the address of slab entry idx without the lock, for a
// prefetch, or 0 if the slab published so far does not reach it.
func (s *shard) peekEntry(idx uint32) uintptr {
	tab := s.chunkTab.Load()
	if tab == nil {
		return 0
	}
	ci := idx / chunkSize
	if int(ci) >= len(*tab) {
		return 0
	}
	return uintptr(unsafe.Pointer(&(*tab)[ci][idx%chunkSize]))
}
