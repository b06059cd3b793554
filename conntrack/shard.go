package conntrack

import (
	"sync"
	"sync/atomic"
	"unsafe"
)

// Slab geometry: entries live in fixed chunks that never move, so an index
// into a shard's slab stays valid for the entry's life. A chunk holds
// chunkSize connections in pairs (a group): two 128-byte flows, then their
// two TCP slots, 384 bytes, so that a TCP packet's three cache lines share
// one page; the L7 slots follow the groups. 81 groups and 162 L7 slots are
// 32400 bytes, which the allocator's 32 KiB size class holds with 1%
// slack, in a span of its own, so a chunk starts page-aligned and every
// flow 128-byte aligned (TestSlabAlignment checks). The division by a
// constant compiles to a multiply.
const chunkSize = 162

type group struct {
	flows [2]flow
	tcp   [2]tcpSlot
}

type chunk struct {
	groups [chunkSize / 2]group
	l7     [chunkSize]L7
}

// slabBytes is the slab's memory per connection.
const slabBytes = float64(unsafe.Sizeof(chunk{})) / chunkSize

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
	// slotsMapped says slots came from mem (and go back to it when the
	// index grows).
	slotsMapped bool
	// index publishes slots (the current array) to TrackBatch's prefetch
	// pass, which reads it without mu; cells are therefore written with
	// atomic stores (setSlot) once the array is published.
	index atomic.Pointer[[]slot]

	// mem supplies chunks and index arrays (nil: the Go heap).
	mem *arena

	chunks []*chunk
	// chunkTab publishes a copy of chunks to the prefetch pass.
	chunkTab atomic.Pointer[[]*chunk]
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

// packetSpins is how many times a packet retries a held shard lock
// before it sleeps on it: some tens of microseconds of retrying. The
// holds a packet can meet (another packet's, a sweeper step's) are much
// shorter than the wake-up of a sleeping thread can be on a busy machine,
// where it may wait for the OS's next scheduling tick, milliseconds.
const packetSpins = 20000

// lock takes s.mu on the packet path: as s.mu.Lock, but retrying a while
// before sleeping (see packetSpins). Uncontended it is one TryLock, the
// same compare-and-swap as Lock's fast path. (The per-packet paths, track
// and stage3, spell out `if !s.mu.TryLock() { s.lockSlow() }` to save
// the call.)
func (s *shard) lock() {
	if !s.mu.TryLock() {
		s.lockSlow()
	}
}

// lockSlow is lock once a TryLock failed.
func (s *shard) lockSlow() {
	for range packetSpins {
		if s.mu.TryLock() {
			return
		}
	}
	s.mu.Lock()
}

// flow, tcp and l7 return the parts of the connection at slab index idx.
// They compute the address from the chunk's: indexing through the *chunk
// would make the compiler check it for nil with a load from the chunk's
// first cache line, which is not the entry's, so every packet would wait
// for a second cache line (a miss of its own on a large table).
func (s *shard) flow(idx uint32) *flow {
	return (*flow)(unsafe.Add(s.chunkAt(idx), flowOffset(idx%chunkSize)))
}

func (s *shard) tcp(idx uint32) *tcpConn {
	return (*tcpConn)(unsafe.Add(s.chunkAt(idx), tcpOffset(idx%chunkSize)))
}

func (s *shard) l7(idx uint32) *L7 {
	return (*L7)(unsafe.Add(s.chunkAt(idx), l7Offset+uintptr(idx%chunkSize)*unsafe.Sizeof(L7{})))
}

// chunkAt returns the chunk holding slab index idx, which must be below
// s.used.
func (s *shard) chunkAt(idx uint32) unsafe.Pointer {
	return unsafe.Pointer(s.chunks[idx/chunkSize])
}

// Offsets of a connection's parts in its chunk, for the j-th connection
// of the chunk (j < chunkSize).
const l7Offset = unsafe.Offsetof(chunk{}.l7)

func flowOffset(j uint32) uintptr {
	return uintptr(j/2)*unsafe.Sizeof(group{}) + uintptr(j%2)*unsafe.Sizeof(flow{})
}

func tcpOffset(j uint32) uintptr {
	return uintptr(j/2)*unsafe.Sizeof(group{}) + unsafe.Offsetof(group{}.tcp) + uintptr(j%2)*unsafe.Sizeof(tcpSlot{})
}

// load copies the connection at idx into e.
func (s *shard) load(idx uint32, e *Entry) {
	f := s.flow(idx)
	copyFlow(&e.flow, f)
	e.l7, e.tcpState = L7{}, TCPNone
	if f.status&statusL7 != 0 {
		e.l7 = *s.l7(idx)
	}
	if f.orig.Proto == protoTCP {
		e.tcpState = s.tcp(idx).state
	}
}

// copyFlow is *dst = *src, eight bytes at a time and the status word four
// at a time, so that each load matches a store the packet's update just
// made to the field (packets[d]++, status |= ...): a load wider than the
// store that wrote its bytes cannot take them from the store buffer and
// waits until the store reaches the cache. The compiler copies a struct
// sixteen bytes at a time, and merges the loads of status and mark into
// one, which made the copy out to the Entry in resolve its slowest step.
// (The atomic load is a plain load that the compiler does not merge; the
// shard lock orders it like any other access.)
func copyFlow(dst, src *flow) {
	d := (*[16]uint64)(unsafe.Pointer(dst))
	s := (*[16]uint64)(unsafe.Pointer(src))
	for i := range 12 {
		d[i] = s[i]
	}
	dst.status = Status(atomic.LoadUint32((*uint32)(&src.status)))
	dst.mark = src.mark
	for i := 13; i < 16; i++ {
		d[i] = s[i]
	}
}

// The word copy above rests on this layout.
var (
	_ [unsafe.Offsetof(flow{}.status) - 12*8]struct{}
	_ [12*8 - unsafe.Offsetof(flow{}.status)]struct{}
	_ [unsafe.Offsetof(flow{}.mark) - 12*8 - 4]struct{}
	_ [12*8 + 4 - unsafe.Offsetof(flow{}.mark)]struct{}
)

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
		e := s.flow(idx)
		s.free = e.next
		e.next = 0
		e.status = statusInUse
		return idx
	}
	if int(s.used)/chunkSize == len(s.chunks) {
		s.chunks = append(s.chunks, s.mem.newChunk())
		tab := s.chunks
		s.chunkTab.Store(&tab)
	}
	idx := s.used
	s.used++
	s.flow(idx).status = statusInUse
	return idx
}

// release clears the entry at idx and puts it on the free list. The
// generation survives and is bumped so that outstanding Refs go stale.
// The TCP and L7 slots are left as they are: a TCP connection's is reset
// when it is created (tcpNew), an L7 slot is only read under statusL7.
func (s *shard) release(idx uint32) {
	e := s.flow(idx)
	gen := e.gen + 1
	*e = flow{gen: gen, next: s.free}
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
			e := s.flow(sl.idx() - 1)
			if e.orig.equal(tu) {
				return pos, sl.idx() - 1, DirOriginal, true
			}
			if tu.isInverseOf(&e.orig) {
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
	s.resizeInto(s.mem.newSlots(n))
}

// resizeInto rehashes the index into slots, a zeroed array from
// s.mem.newSlots (mapped says whether it is mapped memory).
func (s *shard) resizeInto(slots []slot, mapped bool) {
	old, oldMapped := s.slots, s.slotsMapped
	// Fill the new array before publishing it: until then no reader can
	// see it, so plain stores suffice. (A reused array may still be read
	// by a prefetch stage that loaded it while it served another shard;
	// that reader only takes hints from it.)
	n := len(slots)
	mask := n - 1
	if n == len(old) {
		copy(slots, old) // a move (see sweeper.promote): same places
	} else {
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
	}
	s.slots, s.slotsMapped = slots, mapped
	s.index.Store(&slots)
	if oldMapped {
		s.mem.retire(old)
	}
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
