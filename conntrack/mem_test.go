package conntrack

import (
	"runtime"
	"testing"
	"time"
	"unsafe"

	"github.com/qtables/qtables/packet"
)

// fillFlows tracks and confirms UDP flows 0..n-1 of fs at now.
func fillFlows(tb testing.TB, tab *Table, fs *flowSet, n int, now time.Time) {
	tb.Helper()
	var v benchView
	for i := range n {
		fs.fill(&v, i, false)
		r := tab.Track(&v.View, now)
		if r.Info != CtNew || !r.Confirm(now) {
			tb.Fatalf("flow %d: %v", i, r)
		}
	}
}

// TestArena: a table whose arrays outgrow arenaThreshold takes its index
// and slab chunks from mapped memory (where the system can map it), keeps
// the layout the packet path relies on, and stays consistent through
// growth, expiry and Close; a table with HeapMemory never maps.
func TestArena(t *testing.T) {
	const n = 60000 // about 9.5 MiB of slab: past the threshold
	fs := newUDPFlows(n)
	tab := New(Config{MaxEntries: -1, Shards: 8})
	fillFlows(t, tab, fs, n, t0)
	checkInvariants(t, tab)
	mapped := 0
	for i := range tab.shards {
		s := &tab.shards[i]
		for _, c := range s.chunks {
			if tab.mem.contains(unsafe.Pointer(c)) {
				mapped++
				if uintptr(unsafe.Pointer(c))%arenaAlign != 0 {
					t.Fatalf("mapped chunk at %p not page-aligned", c)
				}
			}
		}
		if s.slotsMapped != tab.mem.contains(unsafe.Pointer(unsafe.SliceData(s.slots))) {
			t.Fatalf("shard %d: slotsMapped %v disagrees with the index's address", i, s.slotsMapped)
		}
		for idx := uint32(0); idx < s.used; idx++ {
			if f, tc := uintptr(unsafe.Pointer(s.flow(idx))), uintptr(unsafe.Pointer(s.tcp(idx))); f%128 != 0 || tc%64 != 0 {
				t.Fatalf("entry %d: flow at %#x, TCP slot at %#x", idx, f, tc)
			}
		}
	}
	if canMap && (mapped == 0 || tab.mem.mappedBytes() == 0) {
		t.Fatalf("%d of the chunks mapped, %d bytes: the arena was not used", mapped, tab.mem.mappedBytes())
	}
	t.Logf("%d chunks mapped, arena %d KiB", mapped, tab.mem.mappedBytes()>>10)

	// A sweep moves the chunks and indexes still on the heap (those from
	// before the table crossed the threshold) into mapped memory.
	if st := tab.Sweep(t0); st.Expired != 0 {
		t.Fatalf("sweep expired %d", st.Expired)
	}
	checkInvariants(t, tab)
	if canMap {
		for i := range tab.shards {
			s := &tab.shards[i]
			for j, c := range s.chunks {
				if !tab.mem.contains(unsafe.Pointer(c)) {
					t.Fatalf("shard %d chunk %d still on the heap after a sweep", i, j)
				}
			}
			if !s.slotsMapped || len(*s.chunkTab.Load()) != len(s.chunks) || (*s.chunkTab.Load())[0] != s.chunks[0] {
				t.Fatalf("shard %d: index mapped %v, published chunks stale", i, s.slotsMapped)
			}
		}
	}

	// Every flow is found, in mapped memory or not.
	var v benchView
	later := t0.Add(time.Second)
	for i := range n {
		fs.fill(&v, i, true)
		if r := tab.Track(&v.View, later); r.Info != CtEstablished {
			t.Fatalf("reply of flow %d: %v", i, r)
		}
	}
	ref := func() Ref {
		fs.fill(&v, 0, false)
		return tab.Track(&v.View, later).Ref
	}()

	// Expire them all and refill: freed slots are reused, nothing breaks.
	tab.Sweep(t0.Add(time.Hour))
	if tab.Len() != 0 {
		t.Fatalf("%d entries left after expiry", tab.Len())
	}
	fillFlows(t, tab, fs, n, t0.Add(time.Hour))
	checkInvariants(t, tab)

	if err := tab.Close(); err != nil {
		t.Fatal(err)
	}
	if tab.Len() != 0 || tab.mem.mappedBytes() != 0 || ref.Valid() {
		t.Fatalf("after Close: %d entries, %d bytes mapped, old ref valid %v", tab.Len(), tab.mem.mappedBytes(), ref.Valid())
	}
	// A closed table is an empty heap table.
	fillFlows(t, tab, fs, 1000, t0.Add(2*time.Hour))
	checkInvariants(t, tab)
	tab.Close()

	heap := New(Config{MaxEntries: -1, Shards: 8, HeapMemory: true})
	fillFlows(t, heap, fs, n, t0)
	if heap.mem.mappedBytes() != 0 {
		t.Fatalf("HeapMemory table mapped %d bytes", heap.mem.mappedBytes())
	}
}

// TestArenaIndexUpFront: a table whose limit sizes its index beyond the
// threshold maps the index at New; growing past the limit recycles the
// outgrown arrays as slab chunks rather than leaking them.
func TestArenaIndexUpFront(t *testing.T) {
	if !canMap {
		t.Skip("no mapped memory here")
	}
	tab := New(Config{MaxEntries: 1 << 20, Shards: 4})
	defer tab.Close()
	for i := range tab.shards {
		if !tab.shards[i].slotsMapped {
			t.Fatalf("shard %d: index of %d cells on the heap", i, len(tab.shards[i].slots))
		}
	}
	before := tab.mem.mappedBytes()
	s := &tab.shards[0]
	s.mu.Lock()
	old := len(s.slots)
	s.grow()
	s.mu.Unlock()
	if got := tab.mem.mappedBytes() - before; got != int64(old*2)*8 {
		t.Fatalf("doubling an index of %d cells mapped %d bytes", old, got)
	}
	spare := old * 8 / chunkStride
	if len(tab.mem.spare) != spare {
		t.Fatalf("%d spare chunks from the outgrown array, want %d", len(tab.mem.spare), spare)
	}
	// New flows take their chunks from the spares, mapping nothing more.
	before = tab.mem.mappedBytes()
	fillFlows(t, tab, newUDPFlows(2000), 2000, t0)
	if got := tab.mem.mappedBytes() - before; got != 0 || len(tab.mem.spare) >= spare {
		t.Fatalf("chunks mapped %d bytes, %d spares left of %d", got, len(tab.mem.spare), spare)
	}
	checkInvariants(t, tab)
}

// TestArenaCleanup: a large table dropped without Close has its mappings
// released once the garbage collector finds it unreachable.
func TestArenaCleanup(t *testing.T) {
	if !canMap {
		t.Skip("no mapped memory here")
	}
	mem := func() *arena {
		tab := New(Config{MaxEntries: 1 << 20, Shards: 4})
		if tab.mem.mappedBytes() == 0 {
			t.Fatal("nothing mapped")
		}
		return tab.mem
	}()
	for range 500 { // the cleanup runs soon after a collection; allow 5 s
		runtime.GC()
		if mem.mappedBytes() == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("mappings of an unreachable table not released")
}

// TestArenaPromoteConcurrent: the sweeper moves chunks and indexes into
// mapped memory while TrackBatch and Track run on the same flows; every
// packet still finds its flow and the table stays consistent.
func TestArenaPromoteConcurrent(t *testing.T) {
	const n = 60000
	fs := newUDPFlows(n)
	tab := New(Config{MaxEntries: -1, Shards: 8})
	defer tab.Close()
	fillFlows(t, tab, fs, n, t0)
	now := t0.Add(time.Second)
	done := make(chan struct{})
	errs := make(chan string, 1)
	go func() {
		defer close(done)
		bvs := make([]benchView, 32)
		views := make([]*packet.View, 32)
		for j := range bvs {
			views[j] = &bvs[j].View
		}
		results := make([]Result, 32)
		for i := 0; i < 4*n; i += 32 {
			for j := range 32 {
				fs.fill(&bvs[j], (i+j*1877)%n, j&1 == 1)
			}
			tab.TrackBatch(views, now, results)
			for j := range results {
				if results[j].Info != CtEstablished && results[j].Info != CtNew {
					select {
					case errs <- results[j].String():
					default:
					}
					return
				}
			}
		}
	}()
	for {
		tab.Sweep(now)
		select {
		case <-done:
			select {
			case e := <-errs:
				t.Fatal(e)
			default:
			}
			checkInvariants(t, tab)
			if tab.Len() != n {
				t.Fatalf("%d flows, want %d", tab.Len(), n)
			}
			return
		default:
		}
	}
}
