package conntrack

import (
	"bytes"
	"context"
	"io"
	"slices"
	"time"
)

// sweepBatch is how many slab positions one locked step of Sweep examines:
// small enough that a packet waiting for the shard lock waits microseconds
// (each removal is an index probe and a backward shift, a few cache misses).
const sweepBatch = 64

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
// entries. It takes one shard lock at a time for at most sweepBatch
// entries, so packets are never held up by a whole-table scan. The table's
// correctness does not depend on it (lookups ignore expired entries); it
// returns memory and keeps Len honest. Run calls it periodically; offline
// callers may call it with the capture clock.
func (t *Table) Sweep(now time.Time) SweepStats {
	return t.sweep(now, nil)
}

// holdProbe lets a benchmark time every lock hold of a sweep with its own
// clock (e.g. the thread's CPU time, which excludes the OS descheduling
// the sweeper).
type holdProbe struct {
	clock  func() time.Duration
	onHold func(wall, clock time.Duration)
}

// sweep is Sweep, reporting every lock hold to probe if it is not nil.
func (t *Table) sweep(now time.Time, probe *holdProbe) SweepStats {
	ns := now.UnixNano()
	var total SweepStats
	for i := range t.shards {
		s := &t.shards[i]
		for done := 0; ; {
			var c0 time.Duration
			s.mu.Lock()
			start := time.Now()
			if probe != nil {
				c0 = probe.clock()
			}
			used := int(s.used)
			st := t.sweepLocked(s, ns, min(sweepBatch, used-done))
			if probe != nil {
				c0 = probe.clock() - c0
			}
			hold := time.Since(start)
			s.mu.Unlock()
			if probe != nil {
				probe.onHold(hold, c0)
			}
			total.Examined += st.Examined
			total.Expired += st.Expired
			total.EarlyDrop += st.EarlyDrop
			total.Abandoned += st.Abandoned
			total.MaxHold = max(total.MaxHold, hold)
			done += st.Examined
			if st.Examined == 0 || done >= used {
				break
			}
		}
	}
	if t.pressure.Load() && t.count.Load() < t.max/100*95 {
		t.pressure.Store(false)
	}
	return total
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
