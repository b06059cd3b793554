package conntrack

import (
	"sync"
	"sync/atomic"
)

// Slab geometry: entries live in fixed chunks that never move, so an index
// into a shard's slab stays valid for the entry's life. 141 entries of 232
// bytes are 32712 bytes, which the allocator's 32 KiB size class holds with
// 0.2% slack (a power of two would waste up to 10% to size-class or page
// rounding); the division by a constant compiles to a multiply.
const chunkSize = 141

// slot is one cell of a shard's open-addressing index: the low 32 bits of
// the flow's hash in the high half and its slab index plus one in the low
// half (0 marks an empty cell). One 8-byte word, so that TrackBatch's
// prefetch pass can read it atomically without the shard lock.
type slot uint64

func mkSlot(hash, idx1 uint32) slot { return slot(uint64(hash)<<32 | uint64(idx1)) }

// hash returns the stored low 32 bits of the flow's hash.
func (sl slot) hash() uint32 { return uint32(sl >> 32) }

// idx returns the slab index plus one; 0 for an empty slot.
func (sl slot) idx() uint32 { return uint32(sl) }

// shard is an independently locked part of the table: its own index, slab
// and free list. A flow lives in the shard its direction-free hash selects,
// so both directions of a flow take the same lock and no operation on the
// packet path takes more than one.
type shard struct {
	mu sync.Mutex

	// slots is a linear-probing hash index over confirmed entries, at
	// most 3/4 full, deleted from by backward shifting (no tombstones).
	slots  []slot
	filled int
	// index publishes slots (the current array) to TrackBatch's prefetch
	// pass, which reads it without mu; cells are therefore written with
	// atomic stores (setSlot) once the array is published.
	index atomic.Pointer[[]slot]

	chunks []*[chunkSize]Entry
	// chunkTab publishes a copy of chunks to the prefetch pass.
	chunkTab atomic.Pointer[[]*[chunkSize]Entry]
	used     uint32 // slab positions handed out so far (high-water mark)
	free     uint32 // head of the free list, index+1; 0 = empty
	cursor   uint32 // next slab position the sweeper examines

	// n counts events under mu: an atomic add per packet would cost more
	// than the rest of a cached lookup. invalidNoLock counts the invalid
	// packets rejected before any shard was chosen.
	n             counters
	invalidNoLock atomic.Uint64

	_ [64]byte // keep neighbouring shards' locks off this cache line
}

func (s *shard) entry(idx uint32) *Entry {
	return &s.chunks[idx/chunkSize][idx%chunkSize]
}

// setSlot stores v at pos: atomically, because the prefetch pass of
// TrackBatch reads cells without the lock (a hint only: it never acts on
// what it reads).
func (s *shard) setSlot(pos int, v slot) {
	atomic.StoreUint64((*uint64)(&s.slots[pos]), uint64(v))
}

// alloc returns a cleared entry's index, reusing a freed one when it can.
// It allocates memory only when the slab has to grow by a chunk.
func (s *shard) alloc() uint32 {
	if s.free != 0 {
		idx := s.free - 1
		e := s.entry(idx)
		s.free = e.next
		e.next = 0
		e.status = statusInUse
		return idx
	}
	if int(s.used)/chunkSize == len(s.chunks) {
		s.chunks = append(s.chunks, new([chunkSize]Entry))
		tab := s.chunks
		s.chunkTab.Store(&tab)
	}
	idx := s.used
	s.used++
	s.entry(idx).status = statusInUse
	return idx
}

// release clears the entry at idx and puts it on the free list. The
// generation survives and is bumped so that outstanding Refs go stale.
func (s *shard) release(idx uint32) {
	e := s.entry(idx)
	gen := e.gen + 1
	*e = Entry{gen: gen, next: s.free}
	s.free = idx + 1
}

// lookup finds the confirmed entry one of whose tuples equals tu. It
// returns the slot position, the entry's index and the direction tu has in
// it.
func (s *shard) lookup(h uint64, tu *Tuple) (pos int, idx uint32, dir Dir, ok bool) {
	if len(s.slots) == 0 {
		return 0, 0, 0, false
	}
	mask := len(s.slots) - 1
	tag := uint32(h)
	pos = int(tag) & mask
	for {
		sl := s.slots[pos]
		if sl == 0 {
			return pos, 0, 0, false
		}
		if sl.hash() == tag {
			e := s.entry(sl.idx() - 1)
			if e.orig.equal(tu) {
				return pos, sl.idx() - 1, DirOriginal, true
			}
			if e.reply.equal(tu) {
				return pos, sl.idx() - 1, DirReply, true
			}
		}
		pos = (pos + 1) & mask
	}
}

// insert adds idx under hash h to the index, growing it first if needed.
func (s *shard) insert(h uint64, idx uint32) {
	if (s.filled+1)*4 > len(s.slots)*3 {
		s.grow()
	}
	mask := len(s.slots) - 1
	pos := int(uint32(h)) & mask
	for s.slots[pos] != 0 {
		pos = (pos + 1) & mask
	}
	s.setSlot(pos, mkSlot(uint32(h), idx+1))
	s.filled++
}

// grow doubles the index (or creates it) and reinserts every slot. The
// stored hashes make this a pass over 8-byte cells that never touches an
// entry.
func (s *shard) grow() {
	n := len(s.slots) * 2
	if n == 0 {
		n = 64
	}
	s.resize(n)
}

func (s *shard) resize(n int) {
	old := s.slots
	// Fill the new array before publishing it: until then no reader can
	// see it, so plain stores suffice.
	slots := make([]slot, n)
	mask := n - 1
	for _, sl := range old {
		if sl == 0 {
			continue
		}
		pos := int(sl.hash()) & mask
		for slots[pos] != 0 {
			pos = (pos + 1) & mask
		}
		slots[pos] = sl
	}
	s.slots = slots
	s.index.Store(&slots)
}

// removeAt empties the slot at pos and shifts later members of its probe
// run back so that every remaining slot stays reachable from its home.
func (s *shard) removeAt(pos int) {
	mask := len(s.slots) - 1
	s.filled--
	for {
		s.setSlot(pos, 0)
		j := pos
		for {
			j = (j + 1) & mask
			sl := s.slots[j]
			if sl == 0 {
				return
			}
			home := int(sl.hash()) & mask
			// sl may fill the hole unless its home lies cyclically in
			// (pos, j]: then moving it would put it before its home.
			var stays bool
			if pos <= j {
				stays = pos < home && home <= j
			} else {
				stays = pos < home || home <= j
			}
			if !stays {
				s.setSlot(pos, sl)
				pos = j
				break
			}
		}
	}
}

// unindex removes the confirmed entry idx, whose hash is h, from the index.
func (s *shard) unindex(h uint64, idx uint32) {
	mask := len(s.slots) - 1
	pos := int(uint32(h)) & mask
	for {
		sl := s.slots[pos]
		if sl == 0 {
			return // not indexed (cannot happen for a confirmed entry)
		}
		if sl.idx() == idx+1 {
			s.removeAt(pos)
			return
		}
		pos = (pos + 1) & mask
	}
}

// counters are a shard's event counts (see Stats).
type counters struct {
	searched, found, created, inserted, insertFailed, invalid,
	drop, earlyDrop, expired, deleted, clashResolved, abandoned uint64
}
