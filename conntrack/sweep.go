package conntrack

import (
	"bytes"
	"context"
	"io"
	"runtime"
	"slices"
	"time"
	"unsafe"
)

// A Sweep pass holds a shard lock only for short steps that touch memory
// already in cache, so that a packet waiting for the lock waits for little
// work, and a sweeper descheduled by the OS while holding it is unlikely
// (its holds are a small part of its time). Per step of the scan:
// prefetch the next sweepBatch flows without the lock; lock, examine them,
// note which have expired (with their tuple and generation), unlock; hash
// sweepUnlink victims' tuples and prefetch their index cells without the
// lock, then lock, recheck and unlink them, unlock; and so on. A victim
// that a packet refreshed, or that was freed and reused (its generation
// changed), in between is left alone.
const (
	sweepBatch  = 64
	sweepUnlink = 16
	// yieldEvery is how many steps the sweeper takes between offering
	// its P to other goroutines (some hundreds of microseconds).
	yieldEvery = 16
)

// SweepStats describe one Sweep pass.
type SweepStats struct {
	Examined  int // slab positions looked at
	Expired   int // entries removed because they timed out
	EarlyDrop int // entries evicted under pressure
	Abandoned int // unconfirmed entries reclaimed
	// MaxHold is the longest time the pass held one shard lock, the
	// longest a packet could have waited on it.
	MaxHold time.Duration
}

// sweepLocked examines up to n slab positions of s from its cursor,
// removing expired entries (and, under pressure, what the kernel's gc
// worker would evict). s.mu is held.
func (t *Table) sweepLocked(s *shard, now int64, n int) (st SweepStats) {
	squeeze := t.pressure.Load() && t.max > 0 && t.count.Load() >= t.max/100*95
	for ; n > 0 && s.used > 0; n-- {
		if s.cursor >= s.used {
			s.cursor = 0
		}
		idx := s.cursor
		s.cursor++
		st.Examined++
		e := s.flow(idx)
		if !e.inUse() {
			continue
		}
		if e.status&StatusConfirmed == 0 {
			if now-e.created > abandonAfter {
				s.release(idx)
				t.count.Add(-1)
				s.n.abandoned++
				st.Abandoned++
			}
			continue
		}
		switch {
		case e.expires <= now:
			t.removeConfirmed(s, t.seed.hash(&e.orig), idx)
			s.n.expired++
			st.Expired++
		case squeeze && (e.status&StatusAssured == 0 ||
			(e.orig.Proto == protoTCP && tcpCanEarlyDrop(s.tcp(idx).state))):
			t.removeConfirmed(s, t.seed.hash(&e.orig), idx)
			s.n.earlyDrop++
			st.EarlyDrop++
		}
	}
	return st
}

// Sweep makes one pass over the whole table at time now, removing expired
// entries. It takes one shard lock at a time for short steps (see
// sweepBatch), so packets are never held up by a whole-shard scan. The
// table's correctness does not depend on it (lookups ignore expired
// entries); it returns memory and keeps Len honest. Run calls it
// periodically; offline callers may call it with the capture clock.
func (t *Table) Sweep(now time.Time) SweepStats {
	return t.sweep(now, nil)
}

// holdProbe lets a benchmark see every lock hold of a sweep, timed by the
// wall clock and, if clock is not nil, by its own clock (e.g. the
// thread's CPU time, which excludes the OS descheduling the sweeper, but
// costs a system call at each end of the hold).
type holdProbe struct {
	clock  func() time.Duration
	onHold func(wall, clock time.Duration)
}

// sweeper is one Sweep pass's state.
type sweeper struct {
	t   *Table
	now int64
	// squeeze: the table is under pressure (see Table.pressure); this
	// step also evicts what the kernel's gc worker would.
	squeeze bool
	probe   *holdProbe
	st      SweepStats
	// victims are the current step's expired (or, squeezing, evictable)
	// entries, found under the lock and unlinked under it again.
	victims [sweepBatch]victim
}

// victim is an entry the scan found removable: its slab index and
// generation (to recognise it under the lock again), its tuple (to hash
// without the lock) and its hash.
type victim struct {
	idx, gen uint32
	h        uint64
	orig     Tuple
}

// lock and unlock take s.mu, timing the hold between them.
func (w *sweeper) lock(s *shard) (start time.Time, c0 time.Duration) {
	s.mu.Lock()
	if w.probe != nil && w.probe.clock != nil {
		c0 = w.probe.clock()
	}
	return time.Now(), c0
}

func (w *sweeper) unlock(s *shard, start time.Time, c0 time.Duration) {
	var c time.Duration
	if w.probe != nil && w.probe.clock != nil {
		c = w.probe.clock() - c0
	}
	hold := time.Since(start)
	s.mu.Unlock()
	w.st.MaxHold = max(w.st.MaxHold, hold)
	if w.probe != nil {
		w.probe.onHold(hold, c)
	}
}

// sweep is Sweep, reporting every lock hold to probe if it is not nil.
func (t *Table) sweep(now time.Time, probe *holdProbe) SweepStats {
	w := &sweeper{t: t, now: now.UnixNano(), probe: probe}
	t.mem.refill()
	for i := range t.shards {
		w.shard(&t.shards[i])
	}
	if t.pressure.Load() && t.count.Load() < t.max/100*95 {
		t.pressure.Store(false)
	}
	return w.st
}

// shard sweeps s, sweepBatch slab positions per step, after moving what
// of it is still on the Go heap to mapped memory if the table has grown
// large enough (see promote).
func (w *sweeper) shard(s *shard) {
	w.promote(s)
	for pos := uint32(0); ; pos += sweepBatch {
		if pos%(yieldEvery*sweepBatch) == 0 && pos > 0 {
			// A pass over a large table runs for a while: let the
			// goroutines waiting for this P (packet workers) have it, as
			// the scheduler would only after 10 ms.
			runtime.Gosched()
		}
		for i := range sweepBatch {
			if f, _ := s.peek(pos + uint32(i)); f != 0 {
				prefetch(f)
			}
		}
		start, c0 := w.lock(s)
		if pos >= s.used {
			w.unlock(s, start, c0)
			return
		}
		// Under pressure, evict only while above 95 % (checked per step,
		// as evictions bring the count down).
		t := w.t
		w.squeeze = t.pressure.Load() && t.max > 0 && t.count.Load() >= t.max/100*95
		n := w.scan(s, pos, min(sweepBatch, s.used-pos))
		w.unlock(s, start, c0)
		if n == 0 {
			continue
		}
		// Unlink in groups, hashing and prefetching each group's index
		// cells just before its hold: the work between holds also gives
		// a waiting packet its turn at the lock.
		tab := s.index.Load()
		for vs := w.victims[:n]; len(vs) > 0; {
			k := min(sweepUnlink, len(vs))
			for i := range vs[:k] {
				vs[i].h = w.t.seed.hash(&vs[i].orig)
				if tab != nil {
					sl := *tab
					prefetch(uintptr(unsafe.Pointer(&sl[int(uint32(vs[i].h))&(len(sl)-1)])))
				}
			}
			start, c0 := w.lock(s)
			w.unlink(s, vs[:k])
			w.unlock(s, start, c0)
			vs = vs[k:]
		}
	}
}

// promoteChunks bounds the chunks one promotion step copies under the
// lock (32 KiB each: a few microseconds).
const promoteChunks = 4

// promote moves s's index and slab chunks that are still on the Go heap
// (allocated before the table outgrew arenaThreshold) into mapped memory:
// otherwise a table that grew past the threshold would keep them on
// 4 KiB pages for good. The new memory is obtained and backed without
// the lock; under it, promote only copies, a bounded step at a time (the
// index, or promoteChunks chunks), and gives the memory back if the shard
// changed meanwhile.
//
// Moving is safe because nothing keeps a pointer into a chunk or an index
// across lock holds except TrackBatch's prefetch stages, which only take
// hints from what they read, and whose references keep a heap array alive
// for as long as they hold them. The chunk table is copied on write, as
// the prefetch stage reads the published one without the lock.
func (w *sweeper) promote(s *shard) {
	a := s.mem
	if a == nil || !a.active() {
		return
	}
	if tab := s.index.Load(); tab != nil && !a.contains(unsafe.Pointer(unsafe.SliceData(*tab))) {
		n := len(*tab)
		if slots, mapped := a.newSlots(n); mapped {
			touch(unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(slots))), n*int(unsafe.Sizeof(slot(0)))))
			start, c0 := w.lock(s)
			if len(s.slots) == n && !s.slotsMapped {
				s.resizeInto(slots, true)
				slots = nil
			}
			w.unlock(s, start, c0)
			if slots != nil {
				a.retire(slots)
			}
		}
	}
	var (
		at  [promoteChunks]int
		old [promoteChunks]*chunk
		nc  [promoteChunks]*chunk
	)
	for next := 0; ; {
		tab := s.chunkTab.Load()
		if tab == nil {
			return
		}
		k := 0
		for ; next < len(*tab) && k < promoteChunks; next++ {
			if c := (*tab)[next]; !a.contains(unsafe.Pointer(c)) {
				at[k], old[k] = next, c
				k++
			}
		}
		if k == 0 {
			return
		}
		for i := range k {
			nc[i] = a.newChunk()
			if !a.contains(unsafe.Pointer(nc[i])) {
				return // mapping failed: the arena is off now
			}
			touch(unsafe.Slice((*byte)(unsafe.Pointer(nc[i])), chunkStride))
		}
		start, c0 := w.lock(s)
		var chunks []*chunk
		for i := range k {
			if at[i] < len(s.chunks) && s.chunks[at[i]] == old[i] {
				if chunks == nil {
					chunks = slices.Clone(s.chunks)
				}
				*nc[i] = *old[i]
				chunks[at[i]] = nc[i]
				nc[i] = nil
			}
		}
		if chunks != nil {
			s.chunks = chunks
			tab := chunks
			s.chunkTab.Store(&tab)
		}
		w.unlock(s, start, c0)
		for i := range k {
			if nc[i] != nil {
				a.giveBack(nc[i])
			}
		}
	}
}

// scan examines n slab positions from pos under s.mu, reclaims abandoned
// unconfirmed entries (no index to update) and notes the removable
// confirmed ones in w.victims; it returns how many it noted.
func (w *sweeper) scan(s *shard, pos, n uint32) int {
	t := w.t
	nv, freed := 0, 0
	for idx := pos; idx < pos+n; idx++ {
		w.st.Examined++
		e := s.flow(idx)
		if !e.inUse() {
			continue
		}
		if e.status&StatusConfirmed == 0 {
			if w.now-e.created > abandonAfter {
				s.release(idx)
				freed++
				s.n.abandoned++
				w.st.Abandoned++
			}
			continue
		}
		if w.removable(s, idx, e) {
			w.victims[nv] = victim{idx: idx, gen: e.gen, orig: e.orig}
			nv++
		}
	}
	if freed > 0 {
		t.count.Add(int64(-freed))
	}
	return nv
}

// removable reports whether the confirmed entry e at idx has expired or,
// when squeezing, may be evicted as the kernel's gc worker would.
func (w *sweeper) removable(s *shard, idx uint32, e *flow) bool {
	return e.expires <= w.now || w.squeeze && (e.status&StatusAssured == 0 ||
		(e.orig.Proto == protoTCP && tcpCanEarlyDrop(s.tcp(idx).state)))
}

// unlink removes the victims that are still what the scan saw, under s.mu.
func (w *sweeper) unlink(s *shard, vs []victim) {
	removed := 0
	for i := range vs {
		v := &vs[i]
		e := s.flow(v.idx)
		if !e.inUse() || e.gen != v.gen || e.status&StatusConfirmed == 0 || !w.removable(s, v.idx, e) {
			continue
		}
		if e.expires <= w.now {
			s.n.expired++
			w.st.Expired++
		} else {
			s.n.earlyDrop++
			w.st.EarlyDrop++
		}
		s.unindex(v.h, v.idx)
		s.release(v.idx)
		removed++
	}
	if removed > 0 {
		w.t.count.Add(int64(-removed))
	}
}

// Run sweeps the table every Config.SweepInterval, reading the time from
// clock (time.Now when nil), until ctx is done.
func (t *Table) Run(ctx context.Context, clock func() time.Time) {
	if clock == nil {
		clock = time.Now
	}
	interval := t.cfg.SweepInterval
	if interval <= 0 {
		interval = DefaultSweepInterval
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			t.Sweep(clock())
		}
	}
}

// Range calls fn with a copy of every confirmed, unexpired entry at now,
// shard by shard, until fn returns false. Copies are taken a batch at a
// time under the shard lock and fn runs without any lock held, so a slow
// fn does not hold up packets; the view is per batch, not a snapshot of
// the whole table at one instant.
func (t *Table) Range(now time.Time, fn func(e *Entry) bool) {
	ns := now.UnixNano()
	buf := make([]Entry, 0, 128)
	for i := range t.shards {
		s := &t.shards[i]
		for pos := uint32(0); ; {
			buf = buf[:0]
			s.mu.Lock()
			for ; pos < s.used && len(buf) < cap(buf); pos++ {
				e := s.flow(pos)
				if e.inUse() && e.status&StatusConfirmed != 0 && e.expires > ns {
					buf = append(buf, Entry{})
					s.load(pos, &buf[len(buf)-1])
				}
			}
			more := pos < s.used
			s.mu.Unlock()
			for j := range buf {
				if !fn(&buf[j]) {
					return
				}
			}
			if !more {
				break
			}
		}
	}
}

// Snapshot returns copies of all confirmed, unexpired entries at now.
func (t *Table) Snapshot(now time.Time) []Entry {
	var out []Entry
	t.Range(now, func(e *Entry) bool {
		out = append(out, *e)
		return true
	})
	return out
}

// WriteConntrackL writes the table as `conntrack -L` lists it, one line per
// entry (see Entry.AppendConntrackL), ordered by creation time and then by
// tuple so that offline runs print reproducibly. It returns the number of
// entries written.
func (t *Table) WriteConntrackL(w io.Writer, now time.Time) (int, error) {
	es := t.Snapshot(now)
	slices.SortFunc(es, func(a, b Entry) int {
		if a.created != b.created {
			if a.created < b.created {
				return -1
			}
			return 1
		}
		return compareTuple(&a.orig, &b.orig)
	})
	var line []byte
	for i := range es {
		line = es[i].AppendConntrackL(line[:0], now)
		line = append(line, '\n')
		if _, err := w.Write(line); err != nil {
			return i, err
		}
	}
	return len(es), nil
}

func compareTuple(a, b *Tuple) int {
	if c := bytes.Compare(a.Src[:], b.Src[:]); c != 0 {
		return c
	}
	if c := bytes.Compare(a.Dst[:], b.Dst[:]); c != 0 {
		return c
	}
	if a.Proto != b.Proto {
		return int(a.Proto) - int(b.Proto)
	}
	if a.SrcPort != b.SrcPort {
		return int(a.SrcPort) - int(b.SrcPort)
	}
	return int(a.DstPort) - int(b.DstPort)
}
