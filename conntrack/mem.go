package conntrack

import (
	"math/bits"
	"sync"
	"unsafe"
)

// Memory for the table's large arrays.
//
// A lookup on a large table touches two random places (an index cell,
// then a flow), and on 4 KiB pages each costs a page walk as well as a
// cache miss: 1M flows span some 55,000 pages, far more than the TLB
// covers. The Go heap uses 4 KiB pages unless the system forces
// transparent huge pages on for every process, so a table whose arrays
// outgrow arenaThreshold takes them from an arena instead: anonymous
// private mappings, 2 MiB aligned, advised MADV_HUGEPAGE, which the
// kernel backs with 2 MiB pages in its usual "madvise" mode. The arrays
// hold no Go pointers (slab chunks and index cells are plain data), so
// the garbage collector need not see them. Everything is unmapped when
// the table is closed (Table.Close) or, failing that, when it becomes
// garbage.
//
// Where mapping or advising fails (or on systems without it, or with
// Config.HeapMemory) the arrays come from the Go heap as before.

// arenaThreshold is the size of a table's arrays beyond which they come
// from the arena: a TLB's second level covers about 6 MiB of 4 KiB pages,
// so below this huge pages save little, and small tables (tests, tables
// created and dropped by the thousand) stay on the Go heap, where the
// garbage collector sees their size.
const arenaThreshold = 8 << 20

// regionSize is how much address space the arena maps at a time. Only
// the pages that are touched take memory (in 2 MiB steps), so a large
// region costs nothing until it is used.
const regionSize = 64 << 20

// hugePage is the size of an x86-64 and arm64 (4 KiB granule) huge page.
const hugePage = 2 << 20

// arenaAlign is the alignment of every array the arena hands out: a page,
// so that a chunk (32 KiB, see chunkStride) starts a page and every flow
// in it a 128-byte aligned pair of cache lines, as on the Go heap.
const arenaAlign = 4096

// chunkStride is the arena's allocation for one slab chunk: the chunk
// rounded up to whole pages (1.1 % slack, as the Go allocator's 32 KiB
// size class has).
const chunkStride = (int(unsafe.Sizeof(chunk{})) + arenaAlign - 1) &^ (arenaAlign - 1)

// arena hands out a table's slab chunks and index arrays. It is shared by
// the table's shards (each calls it under its own lock; the arena has its
// own). A chunk stays with its shard (a slab never shrinks). Index arrays
// that a shard outgrew are reused: cut into chunks when they are at least
// a chunk large (as all are in a table large enough to map), else by
// another shard's growth. They are never unmapped before the table is
// released, because TrackBatch's prefetch stage may still read a cell of
// one that it loaded without the lock; that is a hint only, and whatever
// it reads there now is harmless.
type arena struct {
	mu sync.Mutex
	// off: allocate from the Go heap (HeapMemory, mapping failed, no
	// support, or released).
	off bool
	// regions are the mappings as made, for munmap.
	regions [][]byte
	// rest is the unused, aligned tail of the newest region.
	rest []byte
	// retired holds index arrays smaller than a chunk that a shard
	// outgrew, by log2 of length. spare holds chunks ready to hand out:
	// pieces of larger outgrown arrays, chunks that refill backed ahead
	// of need, and chunks a promotion did not use.
	retired [48][][]slot
	spare   [][]byte
	// heap and mapped count the bytes of arrays handed out from the Go
	// heap and from regions (mapped includes retired index arrays).
	heap, mapped int64
	// planned is memory about to be asked for (New's indexes), counted
	// towards the threshold so that a table sized up front to be large
	// maps all of it.
	planned int64
}

func newArena(heapOnly bool) *arena { return &arena{off: heapOnly || !canMap} }

// touch writes a zero to every page of b, which the caller owns and
// which is zero: the kernel then backs it (with a huge page where it can,
// zeroing 2 MiB at once, and perhaps compacting memory first) now, before
// it is handed to a shard, rather than at its first use under a shard
// lock.
func touch(b []byte) {
	for i := 0; i < len(b); i += arenaAlign {
		b[i] = 0
	}
}

// refill keeps a reserve of chunks that are backed by memory already (see
// touch), so that a shard growing its slab under its lock does not wait
// for the kernel to back a fresh huge page: 1/64 of the mapped memory,
// 2 to 8 MiB (room for 10,000 to 40,000 new connections until the next
// sweep). The sweeper calls it, holding no shard lock. It does nothing
// until the table is large enough for the arena.
func (a *arena) refill() {
	a.mu.Lock()
	want := min(max(a.mapped/64, 2<<20), 8<<20)/int64(chunkStride) - int64(len(a.spare))
	var b []byte
	if want > 0 {
		b = a.take(int(want) * chunkStride)
	}
	a.mu.Unlock()
	if b == nil {
		return
	}
	touch(b)
	a.mu.Lock()
	for ; len(b) >= chunkStride; b = b[chunkStride:] {
		a.spare = append(a.spare, b[:chunkStride:chunkStride])
	}
	a.mu.Unlock()
}

// giveBack returns a chunk from newChunk that was not used.
func (a *arena) giveBack(c *chunk) {
	if !a.contains(unsafe.Pointer(c)) {
		return // the Go heap's: the collector takes it
	}
	a.mu.Lock()
	a.spare = append(a.spare, unsafe.Slice((*byte)(unsafe.Pointer(c)), chunkStride))
	a.mu.Unlock()
}

// active reports whether new arrays come from mapped memory.
func (a *arena) active() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return !a.off && a.heap+a.mapped+a.planned >= arenaThreshold
}

// contains reports whether p lies in one of a's mappings.
func (a *arena) contains(p unsafe.Pointer) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range a.regions {
		lo := uintptr(unsafe.Pointer(unsafe.SliceData(r)))
		if u := uintptr(p); u >= lo && u-lo < uintptr(len(r)) {
			return true
		}
	}
	return false
}

// take returns n bytes of mapped memory (zeroed, page-aligned), or nil
// when the table is still small or mapping is off or failed. a.mu is held.
func (a *arena) take(n int) []byte {
	if a.off || a.heap+a.mapped+a.planned+int64(n) < arenaThreshold {
		return nil
	}
	n = (n + arenaAlign - 1) &^ (arenaAlign - 1)
	if len(a.rest) < n {
		raw, usable, err := mapRegion(max(n, regionSize))
		if err != nil {
			a.off = true // from now on the Go heap
			return nil
		}
		a.regions = append(a.regions, raw)
		a.rest = usable
	}
	b := a.rest[:n:n]
	a.rest = a.rest[n:]
	a.mapped += int64(n)
	return b
}

// newChunk returns a zeroed slab chunk. a may be nil (a shard outside a
// table, in tests): then it is the Go heap's.
func (a *arena) newChunk() *chunk {
	if a != nil {
		a.mu.Lock()
		defer a.mu.Unlock()
		if n := len(a.spare); n > 0 {
			b := a.spare[n-1]
			a.spare = a.spare[:n-1]
			clear(b)
			return (*chunk)(unsafe.Pointer(unsafe.SliceData(b)))
		}
		if b := a.take(chunkStride); b != nil {
			return (*chunk)(unsafe.Pointer(unsafe.SliceData(b)))
		}
		a.heap += int64(unsafe.Sizeof(chunk{}))
	}
	return new(chunk)
}

// newSlots returns a zeroed index array of n cells (n a power of two) and
// whether it is the arena's (to be handed back with retire when a larger
// one replaces it).
func (a *arena) newSlots(n int) (_ []slot, mapped bool) {
	if a != nil {
		a.mu.Lock()
		defer a.mu.Unlock()
		k := bits.Len(uint(n)) - 1
		if r := a.retired[k]; len(r) > 0 {
			s := r[len(r)-1]
			a.retired[k] = r[:len(r)-1]
			clear(s)
			return s, true
		}
		if b := a.take(n * int(unsafe.Sizeof(slot(0)))); b != nil {
			return unsafe.Slice((*slot)(unsafe.Pointer(unsafe.SliceData(b))), n), true
		}
		a.heap += int64(n) * int64(unsafe.Sizeof(slot(0)))
	}
	return make([]slot, n), false
}

// retire takes back a mapped index array from newSlots that its shard
// replaced.
func (a *arena) retire(s []slot) {
	a.mu.Lock()
	defer a.mu.Unlock()
	b := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(s))), len(s)*int(unsafe.Sizeof(slot(0))))
	if len(b) >= chunkStride {
		// Mapped arrays start pages; one of at least a chunk's size is a
		// power of two, so a whole number of chunk strides.
		for ; len(b) >= chunkStride; b = b[chunkStride:] {
			a.spare = append(a.spare, b[:chunkStride:chunkStride])
		}
		return
	}
	k := bits.Len(uint(len(s))) - 1
	a.retired[k] = append(a.retired[k], s)
}

// mappedBytes is how much arena memory the table's arrays took.
func (a *arena) mappedBytes() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.mapped
}

// release unmaps every region: nothing may refer to them any longer. The
// arena then hands out Go heap memory only.
func (a *arena) release() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range a.regions {
		unmapRegion(r)
	}
	a.regions, a.rest, a.retired, a.spare = nil, nil, [48][][]slot{}, nil
	a.mapped = 0
	a.off = true
}
