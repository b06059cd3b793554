package conntrack

import (
	"math/bits"
	"math/rand/v2"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/qtables/qtables/packet"
)

// Reason says why a packet got no connection (CtInvalid) or was dropped.
// It is diagnostic: rules only see the state.
type Reason uint8

const (
	ReasonNone      Reason = iota
	ReasonNotIPv4          // not a decoded IPv4 datagram (IPv6, ARP, malformed)
	ReasonFragment         // a non-first fragment: the kernel tracks the reassembled datagram
	ReasonTruncated        // the transport header is missing or shorter than the protocol needs
	ReasonChecksum         // bad transport checksum (Config.Checksum)
	ReasonTCPHeader        // TCP data offset below 5 words or beyond the segment
	ReasonTCPFlags         // a TCP flag combination the kernel rejects (SYN+FIN, none, ...)
	ReasonTCPNew           // a TCP packet that cannot start a connection (SYN/ACK, FIN, RST, no pickup)
	ReasonTCPState         // the TCP state table rejects the packet in the connection's state
	ReasonTCPWindow        // outside the tracked TCP window
	ReasonTCPRst           // a RST with a sequence number below the window
	ReasonUDPHeader        // UDP (UDP-Lite) length field inconsistent
	ReasonICMPType         // an ICMP type that is unknown or cannot start a connection
	ReasonICMPError        // an ICMP error that quotes no tracked connection, or garbage
	ReasonTableFull        // dropped: the table is full and nothing could be evicted
	ReasonClash            // dropped: another packet confirmed the same connection first
)

var reasonNames = [...]string{"", "not IPv4", "fragment", "truncated", "bad checksum",
	"bad TCP header", "invalid TCP flags", "TCP packet cannot create connection",
	"invalid in TCP state", "out of TCP window", "invalid TCP RST", "bad UDP header",
	"ICMP type cannot create connection", "unrelated ICMP error", "table full", "insert clash"}

func (r Reason) String() string {
	if int(r) < len(reasonNames) {
		return reasonNames[r]
	}
	return "unknown reason"
}

// Result is what Track decides for one packet.
type Result struct {
	// Info is the packet's conntrack state; Dir its direction.
	Info CtInfo
	Dir  Dir
	// Reason explains CtInvalid and Drop.
	Reason Reason
	// Drop reports that the kernel would drop the packet before any rule
	// sees it (NF_DROP from the conntrack hook): the table is full and no
	// unassured entry could be evicted.
	Drop bool
	// Entry is a copy of the connection after this packet was processed;
	// meaningful when Ref is valid. For a NEW packet on a connection that
	// is not confirmed yet, Entry.Confirmed() is false.
	Entry Entry
	// Ref names the connection in the table, for Confirm, Discard and the
	// targets that write to it (CONNMARK). Zero when there is none.
	Ref Ref
}

// HasEntry reports whether the packet is associated with a connection.
func (r *Result) HasEntry() bool { return r.Ref.t != nil }

// Confirm is called when the packet was accepted (it left the last hook):
// it makes a new connection permanent, as __nf_conntrack_confirm does. For
// a packet of an already confirmed connection it does nothing. It returns
// false when the packet must be dropped after all: another packet of the
// same connection was confirmed first and the protocol does not merge (TCP,
// ICMP, generic), or the unconfirmed entry was reclaimed as abandoned. On a
// merge (UDP) r.Ref and r.Entry move to the surviving entry.
func (r *Result) Confirm(now time.Time) bool {
	if r.Ref.t == nil || r.Entry.Confirmed() {
		return true
	}
	ref, ok := r.Ref.t.confirm(r.Ref, now.UnixNano(), &r.Entry)
	r.Ref = ref
	return ok
}

// Discard is called when the packet was dropped: an unconfirmed connection
// it created disappears, so the next packet of the flow is NEW again. For a
// confirmed connection it does nothing.
func (r *Result) Discard() {
	if r.Ref.t != nil && !r.Entry.Confirmed() {
		r.Ref.t.discard(r.Ref)
	}
}

// Ref is a handle on a table entry that detects reuse: once the entry is
// freed every operation through an old Ref fails. The zero Ref is valid
// and refers to nothing.
type Ref struct {
	t     *Table
	shard uint32
	idx   uint32
	gen   uint32
}

// Valid reports whether r refers to an entry that still exists.
func (r Ref) Valid() bool {
	ok := false
	r.do(func(*shard, *flow) { ok = true })
	return ok
}

// do runs f on the entry under its shard lock if r is still current.
func (r Ref) do(f func(s *shard, e *flow)) {
	if r.t == nil {
		return
	}
	s := &r.t.shards[r.shard]
	s.lock()
	if r.idx < s.used {
		if e := s.flow(r.idx); e.inUse() && e.gen == r.gen {
			f(s, e)
		}
	}
	s.mu.Unlock()
}

// Load returns a copy of the entry.
func (r Ref) Load() (e Entry, ok bool) {
	r.do(func(s *shard, _ *flow) { s.load(r.idx, &e); ok = true })
	return e, ok
}

// UpdateMark sets the connection mark to (mark &^ clear) ^ xor and returns
// the new mark: every CONNMARK form reduces to it (--set-xmark v/m is
// clear=m, xor=v; --set-mark v/m is clear=m, xor=v&m; --save-mark is
// clear=ctmask, xor=nfmark&nfmask).
func (r Ref) UpdateMark(clear, xor uint32) (mark uint32, ok bool) {
	r.do(func(_ *shard, e *flow) {
		e.mark = (e.mark &^ clear) ^ xor
		mark, ok = e.mark, true
	})
	return mark, ok
}

// UpdateMarkWith sets the connection mark to f(old mark) under the entry's
// lock and returns the new mark: for the CONNMARK forms that UpdateMark's
// formula cannot express (revision 2's --left-shift-mark and
// --right-shift-mark shift the whole new mark). f must not block.
func (r Ref) UpdateMarkWith(f func(old uint32) uint32) (mark uint32, ok bool) {
	r.do(func(_ *shard, e *flow) {
		e.mark = f(e.mark)
		mark, ok = e.mark, true
	})
	return mark, ok
}

// UpdateLabels sets the label bits to (labels &^ clear) | set.
func (r Ref) UpdateLabels(clear, set Labels) (l Labels, ok bool) {
	r.do(func(_ *shard, e *flow) {
		e.labels[0] = e.labels[0]&^clear[0] | set[0]
		e.labels[1] = e.labels[1]&^clear[1] | set[1]
		l, ok = e.labels, true
	})
	return l, ok
}

// SetL7 stores the application-layer slot.
func (r Ref) SetL7(v L7) bool {
	ok := false
	r.do(func(s *shard, e *flow) {
		*s.l7(r.idx) = v
		e.status |= statusL7
		ok = true
	})
	return ok
}

// Stats are the table's counters, cumulative since New except Entries.
type Stats struct {
	Entries       int    // entries now, confirmed or not
	Searched      uint64 // tuple lookups
	Found         uint64 // lookups that found a connection
	New           uint64 // entries created (unconfirmed)
	Inserted      uint64 // entries confirmed into the table
	InsertFailed  uint64 // confirmations that lost a clash
	ClashResolved uint64 // UDP confirmations merged into the winner
	Invalid       uint64 // packets declared INVALID
	Drop          uint64 // packets to drop: table full, or lost a clash
	EarlyDrop     uint64 // unassured entries evicted to make room
	Expired       uint64 // entries removed because they timed out
	Deleted       uint64 // entries removed otherwise (RST before a reply, reopened, Delete)
	Abandoned     uint64 // unconfirmed entries neither confirmed nor discarded, reclaimed
}

// Table is qtables' connection tracking table. All methods are safe for
// concurrent use.
type Table struct {
	shards     []shard
	shardShift uint
	seed       hashSeed
	count      atomic.Int64 // entries allocated, confirmed or not
	max        int64        // 0 = unlimited
	timeouts   [numTimeouts]int64
	cfg        Config
	maxRetrans uint8
	// pressure is set when a new connection found the table full and
	// nothing to evict; the sweeper then also evicts what the kernel's
	// gc_worker would (unassured or closing TCP) while above 95 %.
	pressure atomic.Bool
	// mem holds the slabs and indexes of a large table (see mem.go);
	// cleanup releases it if the table is dropped without Close.
	mem     *arena
	cleanup runtime.Cleanup
}

// abandonAfter is how long an unconfirmed entry may wait for Confirm or
// Discard before the sweeper reclaims it (a caller bug; the kernel frees
// an unconfirmed entry with its packet).
const abandonAfter = int64(60 * time.Second)

// New returns an empty table configured by cfg.
func New(cfg Config) *Table {
	n := cfg.shards()
	t := &Table{
		shards:     make([]shard, n),
		mem:        newArena(cfg.HeapMemory),
		shardShift: uint(64 - bits.TrailingZeros(uint(n))),
		timeouts:   cfg.Timeouts.resolve(),
		cfg:        cfg,
		maxRetrans: DefaultTCPMaxRetrans,
	}
	if cfg.TCPMaxRetrans > 0 {
		t.maxRetrans = uint8(min(cfg.TCPMaxRetrans, 255))
	}
	switch {
	case cfg.MaxEntries == 0:
		t.max = DefaultMaxEntries
	case cfg.MaxEntries > 0:
		t.max = int64(cfg.MaxEntries)
	}
	for i := range t.seed {
		t.seed[i] = rand.Uint64()
	}
	// Size each index for its share of the limit so that a table filling
	// up to it does not rehash on the packet path (capped, so that a huge
	// limit does not reserve memory up front; an unlimited table starts
	// small and grows).
	sz := 64
	if t.max > 0 {
		per := min(t.max, 1<<20)/int64(n) + 1
		for int64(sz)*3 < per*4 {
			sz <<= 1
		}
	}
	t.mem.planned = int64(n) * int64(sz) * int64(unsafe.Sizeof(slot(0)))
	for i := range t.shards {
		t.shards[i].mem = t.mem
		t.shards[i].resize(sz)
	}
	t.mem.planned = 0
	// Every access to the arena goes through a shard, so the arena may go
	// once the shards are unreachable (the cleanup's argument must not
	// reach them: the arena does not).
	t.cleanup = runtime.AddCleanup(&t.shards[0], (*arena).release, t.mem)
	return t
}

// Close releases the table's memory: its entries are gone and outstanding
// Refs go stale. A long-lived process should call it when it is done with
// a table, because a large table's slabs are mapped outside the Go heap
// (see Config.HeapMemory) and the garbage collector, which does not see
// their size, may take long to notice that a dropped table is garbage. No
// other call on the table may be in progress (stop Run, and the workers,
// first). The table stays usable, as an empty one on the Go heap, so a
// call made after Close does no harm. Close always returns nil.
func (t *Table) Close() error {
	for i := range t.shards {
		t.shards[i].mu.Lock()
	}
	t.cleanup.Stop()
	for i := range t.shards {
		s := &t.shards[i]
		s.chunks, s.used, s.free, s.cursor = nil, 0, 0, 0
		s.chunkTab.Store(nil)
		s.slots, s.slotsMapped, s.filled = nil, false, 0
		s.index.Store(nil)
	}
	t.count.Store(0)
	t.mem.release()
	for i := range t.shards {
		s := &t.shards[i]
		s.resize(64)
		s.mu.Unlock()
	}
	return nil
}

func (t *Table) shardFor(h uint64) (*shard, uint32) {
	i := uint32(h >> t.shardShift)
	if t.shardShift >= 64 {
		i = 0
	}
	return &t.shards[i], i
}

// Len returns the number of entries, confirmed or not.
func (t *Table) Len() int { return int(t.count.Load()) }

// Stats returns the counters.
func (t *Table) Stats() Stats {
	st := Stats{Entries: t.Len()}
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		n := s.n
		s.mu.Unlock()
		st.Searched += n.searched
		st.Found += n.found
		st.New += n.created
		st.Inserted += n.inserted
		st.InsertFailed += n.insertFailed
		st.ClashResolved += n.clashResolved
		st.Invalid += n.invalid + s.invalidNoLock.Load()
		st.Drop += n.drop
		st.EarlyDrop += n.earlyDrop
		st.Expired += n.expired
		st.Deleted += n.deleted
		st.Abandoned += n.abandoned
	}
	return st
}

// verdict is what a protocol handler decides for a packet on an entry.
type verdict uint8

const (
	vAccept   verdict = iota // accounted, timeout refreshed
	vNoUpdate                // associated with the entry, nothing accounted (the kernel's "ignore")
	vInvalid                 // INVALID; the entry stays as it is
	vRepeat                  // TCP reopen: delete the entry and look up again
	vKill                    // accounted, then the entry is deleted (RST before any reply)
)

// Track classifies one packet and updates its connection, as nf_conntrack_in
// does at PREROUTING or OUTPUT: an existing connection's state changes now,
// before the rules run. A packet that starts a connection gets a new,
// unconfirmed entry (Info CtNew, Entry.Confirmed() false) that only the
// caller's Result.Confirm after an accept makes permanent; Result.Discard
// (after a drop) forgets it. Track never allocates once the table's slabs
// have grown to the working set.
//
// now is the packet's time (the capture timestamp offline): the table
// reads no clock.
func (t *Table) Track(v *packet.View, now time.Time) Result {
	var r Result
	t.TrackInto(&r, v, now)
	return r
}

// TrackInto is Track writing into *r, which a worker can reuse from packet
// to packet: it saves copying the Result out.
func (t *Table) TrackInto(r *Result, v *packet.View, now time.Time) {
	r.Info, r.Dir, r.Reason, r.Drop, r.Ref = CtInvalid, DirOriginal, ReasonNone, false, Ref{}
	t.track(r, v, now.UnixNano())
	if r.Ref.t == nil {
		r.Entry = Entry{}
	}
}

func (t *Table) track(r *Result, v *packet.View, now int64) {
	var p pkt
	if reason := p.parse(v, t.cfg.Checksum); reason != ReasonNone {
		t.invalid(r, reason, uint32(v.IPv4.ID))
		return
	}
	if p.icmpErr {
		t.related(r, &p, now)
		return
	}
	h := t.seed.hash4(&p.tuple) // parse makes IPv4 tuples only
	s, si := t.shardFor(h)
	if !s.mu.TryLock() { // s.lock, inlined
		s.lockSlow()
	}
	t.resolve(r, s, si, h, &p, now, 0, 0)
	s.mu.Unlock()
}

func (t *Table) invalid(r *Result, reason Reason, spread uint32) {
	r.Info, r.Reason = CtInvalid, reason
	t.shards[spread&uint32(len(t.shards)-1)].invalidNoLock.Add(1)
}

// find looks tu up in s, removing an expired match on the way (the kernel
// reaps expired entries it meets during lookup).
func (t *Table) find(s *shard, h uint64, tu *Tuple, now int64) (idx uint32, dir Dir, ok bool) {
	s.n.searched++
	pos, idx, dir, ok := s.lookup(h, tu)
	if !ok {
		return 0, 0, false
	}
	if s.flow(idx).expires <= now {
		t.reap(s, pos, idx)
		return 0, 0, false
	}
	s.n.found++
	return idx, dir, true
}

// reap removes the expired entry idx, indexed at pos.
func (t *Table) reap(s *shard, pos int, idx uint32) {
	s.removeAt(pos)
	s.release(idx)
	t.count.Add(-1)
	s.n.expired++
}

// resolve runs under s.mu: lookup, the protocol handler, or creation.
//
// It is the per-packet path: find, handle's UDP case and load are spelled
// out in it, as calls cost a few percent of a packet each.
//
// hint, if not 0, is an index cell that TrackBatch's stage 2 read at
// hintPos without the lock, whose stored hash matched. If the cell still
// holds it and its entry matches the packet, that entry is the one lookup
// would find, and resolve skips the probe: no two entries in the index
// match one tuple (confirm refuses a connection that one of its tuples
// already names), so the first match in probe order is the only one.
func (t *Table) resolve(r *Result, s *shard, si uint32, h uint64, p *pkt, now int64, hint slot, hintPos int) {
	for {
		// t.find(s, h, &p.tuple, now)
		s.n.searched++
		var pos int
		var idx uint32
		var dir Dir
		ok := false
		if hint != 0 && uint(hintPos) < uint(len(s.slots)) && s.slots[hintPos] == hint {
			pos, idx = hintPos, hint.idx()-1
			if o := &s.flow(idx).orig; o.equal(&p.tuple) {
				dir, ok = DirOriginal, true
			} else if p.tuple.isInverseOf(o) {
				dir, ok = DirReply, true
			}
		}
		hint = 0
		if !ok {
			pos, idx, dir, ok = s.lookup(h, &p.tuple)
		}
		if !ok {
			break
		}
		e := s.flow(idx)
		if e.expires <= now {
			t.reap(s, pos, idx)
			break
		}
		s.n.found++
		info := CtNew
		if dir == DirReply || e.status&StatusSeenReply != 0 {
			info = CtEstablished
		}
		// t.handle; the tuple matched, so e's protocol is p's.
		v, reason := vAccept, ReasonNone
		if p.tuple.Proto == protoUDP && p.reason == ReasonNone {
			t.udpPacket(e, dir, p, now)
		} else {
			v, reason = t.handle(s, idx, e, dir, p, now, true)
		}
		switch v {
		case vInvalid:
			r.Info, r.Reason = CtInvalid, reason
			s.n.invalid++
			return
		case vRepeat:
			// A SYN reopening a closed connection: forget the old entry
			// and treat the packet as the first of a new one.
			t.removeConfirmed(s, h, idx)
			s.n.deleted++
			continue
		}
		if dir == DirReply {
			e.status |= StatusSeenReply
		}
		r.Info, r.Dir = info, dir
		// s.load(idx, &r.Entry)
		en := &r.Entry
		copyFlow(&en.flow, e)
		en.l7, en.tcpState = L7{}, TCPNone
		if e.status&statusL7 != 0 {
			en.l7 = *s.l7(idx)
		}
		if p.tuple.Proto == protoTCP {
			en.tcpState = s.tcp(idx).state
		}
		r.Ref = Ref{t: t, shard: si, idx: idx, gen: e.gen}
		if v == vKill {
			r.Entry.status |= StatusDying
			t.removeConfirmed(s, h, idx)
			s.n.deleted++
		}
		return
	}

	// No connection. A tuple that cannot be inverted cannot start one
	// (init_conntrack fails before allocating).
	if _, ok := p.tuple.Invert(); !ok {
		r.Info, r.Reason = CtInvalid, ReasonICMPType
		s.n.invalid++
		return
	}
	// The kernel allocates (and may early-drop) before the protocol decides
	// whether the packet may create a connection, so a full table drops even
	// packets that would only have been INVALID.
	if n := t.count.Add(1); t.max > 0 && n > t.max {
		if !t.earlyDrop(s, h, now) {
			t.count.Add(-1)
			t.pressure.Store(true)
			s.n.drop++
			r.Info, r.Reason, r.Drop = CtInvalid, ReasonTableFull, true
			return
		}
	}
	if reason := t.canCreate(p); reason != ReasonNone {
		t.count.Add(-1)
		r.Info, r.Reason = CtInvalid, reason
		s.n.invalid++
		return
	}
	t.sweepLocked(s, now, allocSweep)
	idx := s.alloc()
	e := s.flow(idx)
	e.orig = p.tuple
	e.created, e.lastSeen = now, now
	v, reason := t.handle(s, idx, e, DirOriginal, p, now, false)
	if v == vInvalid || v == vRepeat || v == vKill {
		s.release(idx)
		t.count.Add(-1)
		r.Info, r.Reason = CtInvalid, reason
		s.n.invalid++
		return
	}
	s.n.created++
	r.Info, r.Dir = CtNew, DirOriginal
	s.load(idx, &r.Entry)
	r.Ref = Ref{t: t, shard: si, idx: idx, gen: e.gen}
}

// allocSweep is how many slab positions every new connection sweeps in its
// shard, so that expired entries are reclaimed at the rate new ones arrive
// even without the background sweeper.
const allocSweep = 4

// canCreate is the protocol's "may this packet start a connection" check,
// made before allocating.
func (t *Table) canCreate(p *pkt) Reason {
	switch p.tuple.Proto {
	case protoTCP:
		if p.reason != ReasonNone {
			return p.reason
		}
		ns := tcpTransitions[DirOriginal][p.tcp.index][TCPNone]
		if ns >= sIV || (ns != TCPSynSent && t.cfg.TCPNoPickup) {
			return ReasonTCPNew
		}
	case protoUDP, protoUDPLite:
		return p.reason
	case protoICMP:
		if !icmpValidNew(p.tuple.ICMPType()) {
			return ReasonICMPType
		}
	}
	return ReasonNone
}

// handle runs the protocol tracker for a packet on e, the flow at slab
// index idx of s (nf_conntrack_handle_packet).
func (t *Table) handle(s *shard, idx uint32, e *flow, dir Dir, p *pkt, now int64, confirmed bool) (verdict, Reason) {
	switch e.orig.Proto {
	case protoTCP:
		if p.reason != ReasonNone {
			return vInvalid, p.reason
		}
		return t.tcpPacket(e, s.tcp(idx), dir, p, now, confirmed)
	case protoUDP, protoUDPLite:
		if p.reason != ReasonNone {
			return vInvalid, p.reason
		}
		t.udpPacket(e, dir, p, now)
		return vAccept, ReasonNone
	case protoICMP:
		if !icmpValidNew(e.orig.ICMPType()) {
			return vInvalid, ReasonICMPType
		}
		t.refresh(e, dir, p, now, t.timeouts[toICMP])
		return vAccept, ReasonNone
	}
	t.refresh(e, dir, p, now, t.timeouts[toGeneric])
	return vAccept, ReasonNone
}

// refresh is nf_ct_refresh_acct: set the timeout (relative while
// unconfirmed) and account the packet.
func (t *Table) refresh(e *flow, dir Dir, p *pkt, now, timeout int64) {
	if e.status&StatusFixedTimeout == 0 {
		if e.status&StatusConfirmed != 0 {
			e.expires = now + timeout
		} else {
			e.expires = timeout
		}
	}
	e.account(dir, p, now)
}

func (e *flow) account(dir Dir, p *pkt, now int64) {
	e.packets[dir]++
	e.bytes[dir] += uint64(p.ipLen)
	e.lastSeen = now
}

// removeConfirmed deletes a confirmed entry from index and slab.
func (t *Table) removeConfirmed(s *shard, h uint64, idx uint32) {
	s.unindex(h, idx)
	s.release(idx)
	t.count.Add(-1)
}

// earlyDrop is the kernel's early_drop: look at the entries near the new
// tuple's place in the index and evict one that is not ASSURED, reaping
// any expired ones met on the way. It reports whether room was made.
func (t *Table) earlyDrop(s *shard, h uint64, now int64) bool {
	const maxSlots, maxEntries = 64, 16
	var victims [maxEntries]uint32
	var expired [maxEntries]bool
	n := 0
	if len(s.slots) > 0 {
		mask := len(s.slots) - 1
		pos := int(uint32(h)) & mask
		for i := 0; i < maxSlots && n < maxEntries; i++ {
			if sl := s.slots[pos]; sl != 0 {
				e := s.flow(sl.idx() - 1)
				switch {
				case e.expires <= now:
					victims[n], expired[n] = sl.idx()-1, true
					n++
				case e.status&StatusAssured == 0:
					victims[n] = sl.idx() - 1
					n++
					i = maxSlots // one eviction is enough
				}
			}
			pos = (pos + 1) & mask
		}
	}
	for i := 0; i < n; i++ {
		e := s.flow(victims[i])
		t.removeConfirmed(s, t.seed.hash(&e.orig), victims[i])
		if expired[i] {
			s.n.expired++
		} else {
			s.n.earlyDrop++
		}
	}
	return n > 0
}

// confirm inserts an unconfirmed entry into the index.
func (t *Table) confirm(ref Ref, now int64, snap *Entry) (Ref, bool) {
	s := &t.shards[ref.shard]
	s.lock()
	defer s.mu.Unlock()
	if ref.idx >= s.used {
		return Ref{}, false
	}
	e := s.flow(ref.idx)
	if !e.inUse() || e.gen != ref.gen {
		return Ref{}, false // reclaimed as abandoned, or already discarded
	}
	if e.status&StatusConfirmed != 0 {
		return ref, true
	}
	h := t.seed.hash(&e.orig)
	if widx, _, ok := t.find(s, h, &e.orig, now); ok {
		// Another packet of this connection was confirmed first.
		w := s.flow(widx)
		if p := e.orig.Proto; p == protoUDP || p == protoUDPLite {
			// allow_clash: the packet joins the winner.
			for d := range 2 {
				w.packets[d] += e.packets[d]
				w.bytes[d] += e.bytes[d]
			}
			s.release(ref.idx)
			t.count.Add(-1)
			s.n.clashResolved++
			s.load(widx, snap)
			return Ref{t: t, shard: ref.shard, idx: widx, gen: w.gen}, true
		}
		s.release(ref.idx)
		t.count.Add(-1)
		s.n.insertFailed++
		s.n.drop++
		return Ref{}, false
	}
	if e.status&StatusFixedTimeout == 0 {
		e.expires += now // the timer starts at confirmation
	}
	e.status |= StatusConfirmed
	s.insert(h, ref.idx)
	s.n.inserted++
	s.load(ref.idx, snap)
	return ref, true
}

func (t *Table) discard(ref Ref) {
	s := &t.shards[ref.shard]
	s.lock()
	if ref.idx < s.used {
		if e := s.flow(ref.idx); e.inUse() && e.gen == ref.gen && e.status&StatusConfirmed == 0 {
			s.release(ref.idx)
			t.count.Add(-1)
		}
	}
	s.mu.Unlock()
}

// Lookup returns the connection one of whose tuples is tu, and tu's
// direction in it. Expired connections are not found.
func (t *Table) Lookup(tu Tuple, now time.Time) (e Entry, dir Dir, ok bool) {
	h := t.seed.hash(&tu)
	s, _ := t.shardFor(h)
	s.mu.Lock()
	if idx, d, found := t.find(s, h, &tu, now.UnixNano()); found {
		s.load(idx, &e)
		dir, ok = d, true
	}
	s.mu.Unlock()
	return e, dir, ok
}

// Delete removes the connection one of whose tuples is tu (what a kernel
// destroy event asks for). It reports whether there was one.
func (t *Table) Delete(tu Tuple) bool {
	h := t.seed.hash(&tu)
	s, _ := t.shardFor(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	pos, idx, _, ok := s.lookup(h, &tu)
	if !ok {
		return false
	}
	s.removeAt(pos)
	s.release(idx)
	t.count.Add(-1)
	s.n.deleted++
	return true
}
