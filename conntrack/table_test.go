package conntrack

import (
	"context"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

func clientIP(i int) net.IP { return net.IP{10, byte(i >> 16), byte(i >> 8), byte(i)} }

func udpOut(tb testing.TB, i int) []byte {
	return udpFrame(tb, clientIP(i), ipServer, uint16(1024+i%60000), 53, []byte("q"))
}

func udpBack(tb testing.TB, i int) []byte {
	return udpFrame(tb, ipServer, clientIP(i), 53, uint16(1024+i%60000), []byte("a"))
}

func udpTuple(i int) Tuple {
	return TupleFrom(addr(clientIP(i)), addr(ipServer), 17, uint16(1024+i%60000), 53)
}

func TestEntrySize(t *testing.T) {
	// A connection costs its share of a slab chunk (flow, TCP slot, L7
	// slot) plus index cells: the index holds 8-byte slots at most 3/4
	// full and at least 3/8 full after doubling, 10.7 to 21.3 bytes per
	// entry.
	// A chunk in mapped memory takes whole pages (chunkStride).
	slotBytes := unsafe.Sizeof(slot(0))
	slab := max(slabBytes, float64(chunkStride)/chunkSize)
	worst := slab + float64(slotBytes)*8/3
	t.Logf("slab %.1f bytes (%.1f mapped), Entry %d bytes, slot %d bytes, worst case per flow %.1f bytes",
		slabBytes, slab, unsafe.Sizeof(Entry{}), slotBytes, worst)
	if worst > 256 {
		t.Fatalf("%.1f bytes per flow, over the 256-byte budget", worst)
	}
	if n := unsafe.Sizeof(chunk{}); n > 32<<10 || n < 31<<10 {
		t.Fatalf("chunk is %d bytes, not a snug fit for the 32 KiB size class", n)
	}
	if n := unsafe.Sizeof(Result{}); n > 192 {
		t.Fatalf("Result is %d bytes", n)
	}
}

// TestSlabAlignment checks what the per-packet cost rests on: every flow
// starts a 128-byte aligned pair of cache lines and every TCP slot a cache
// line. (Go does not promise this alignment; its allocator gives a 32 KiB
// object a span of its own, page-aligned. Should that change, this test
// says so before the benchmarks do.)
func TestSlabAlignment(t *testing.T) {
	var s shard
	for range 3 * chunkSize {
		s.alloc()
	}
	for idx := uint32(0); idx < s.used; idx++ {
		f, tc := uintptr(unsafe.Pointer(s.flow(idx))), uintptr(unsafe.Pointer(s.tcp(idx)))
		if f%128 != 0 || tc%64 != 0 {
			t.Fatalf("entry %d: flow at %#x, TCP slot at %#x", idx, f, tc)
		}
	}
}

func TestHashIsDirectionFree(t *testing.T) {
	tab := New(Config{})
	tuples := []Tuple{
		TupleFrom(addr(ipClient), addr(ipServer), 6, 40000, 80),
		TupleFrom(addr(ipServer), addr(ipClient), 17, 53, 53),
		TupleFrom(addr(ipClient), addr(ipClient), 17, 1, 2),
		TupleFrom(addr(ipClient), addr(ipServer), 1, 77, 8<<8),
		TupleFrom(addr(ipClient), addr(ipServer), 1, 77, 13<<8|1),
		TupleFrom(addr(ipClient), addr(ipServer), 47, 0, 0),
	}
	seen := map[uint64]bool{}
	for _, tu := range tuples {
		inv, ok := tu.Invert()
		if !ok {
			t.Fatalf("%v: not invertible", tu)
		}
		if a, b := tab.seed.hash(&tu), tab.seed.hash(&inv); a != b {
			t.Errorf("%+v: hash %x, inverse %x", tu, a, b)
		}
		if back, _ := inv.Invert(); back != tu {
			t.Errorf("double inversion changed %+v", tu)
		}
		seen[tab.seed.hash(&tu)] = true
	}
	if len(seen) != len(tuples) {
		t.Errorf("distinct flows collided: %d hashes for %d flows", len(seen), len(tuples))
	}
	if _, ok := TupleFrom(addr(ipClient), addr(ipServer), 1, 1, 3<<8).Invert(); ok {
		t.Error("an ICMP error type inverted")
	}
}

func TestEarlyDrop(t *testing.T) {
	h := newHarness(t, Config{MaxEntries: 4, Shards: 1})
	for i := range 4 {
		h.send(udpOut(t, i))
	}
	r := h.send(udpOut(t, 4))
	if r.Info != CtNew || r.Drop {
		t.Fatalf("fifth flow: %v", r)
	}
	st := h.tab.Stats()
	if st.EarlyDrop != 1 || st.Entries != 4 {
		t.Fatalf("after early drop: %+v", st)
	}
	// Make every entry assured: a reply, then a packet after 2 s.
	h.advance(time.Second)
	var live []int
	for i := range 5 {
		if _, _, ok := h.tab.Lookup(udpTuple(i), h.now); ok {
			live = append(live, i)
			h.send(udpBack(t, i))
		}
	}
	h.advance(2 * time.Second)
	for _, i := range live {
		if r := h.send(udpOut(t, i)); r.Entry.Status()&StatusAssured == 0 {
			t.Fatalf("flow %d not assured: %v", i, r)
		}
	}
	// Full of assured connections: new ones are dropped before the rules,
	// even packets that would only have been INVALID.
	for name, f := range map[string][]byte{
		"udp":              udpOut(t, 9),
		"tcp fin":          tcpFrame(t, seg{src: ipClient, dst: ipServer, sport: 1, dport: 2, flags: "FA", seq: 1, ack: 1}),
		"unsolicited pong": icmpFrame(t, ipClient, ipServer, 0, 0, 1, 1, nil),
	} {
		r := h.send(f)
		if !r.Drop || r.Reason != ReasonTableFull || r.HasEntry() {
			t.Fatalf("%s into a full table: %v", name, r)
		}
	}
	// A type that cannot form a tuple never gets as far.
	if r := h.send(icmpFrame(t, ipClient, ipServer, 9, 0, 1, 1, nil)); r.Drop || r.Info != CtInvalid {
		t.Fatalf("router advertisement: %v", r)
	}
	// Established connections are unaffected.
	if r := h.send(udpBack(t, live[0])); r.Info != CtEstablished {
		t.Fatalf("existing flow: %v", r)
	}
	if st := h.tab.Stats(); st.Drop != 3 || st.Entries != 4 || st.EarlyDrop != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestEarlyDropUnderPressureSweep(t *testing.T) {
	h := newHarness(t, Config{MaxEntries: 2, Shards: 1})
	// An assured TCP connection in TIME_WAIT and an assured UDP stream.
	runTCP := func(steps []step) {
		for _, st := range steps {
			h.send(st.frame(t))
		}
	}
	runTCP(with(handshake,
		step{flags: "FA", seq: 1001, ack: 5001},
		step{srv: true, flags: "FA", seq: 5001, ack: 1002},
		step{flags: "A", seq: 1002, ack: 5002},
	))
	h.send(udpOut(t, 1))
	h.send(udpBack(t, 1))
	h.advance(3 * time.Second)
	h.send(udpOut(t, 1))
	if r := h.send(udpOut(t, 2)); !r.Drop {
		t.Fatalf("table should be full: %v", r)
	}
	// The sweeper, seeing the pressure, evicts what the kernel's gc worker
	// would: the closing TCP connection, not the assured UDP stream.
	st := h.tab.Sweep(h.now)
	if st.EarlyDrop != 1 {
		t.Fatalf("sweep under pressure: %+v", st)
	}
	if _, _, ok := h.tab.Lookup(clientTuple, h.now); ok {
		t.Fatal("TIME_WAIT connection survived")
	}
	if r := h.send(udpOut(t, 2)); r.Info != CtNew || r.Drop {
		t.Fatalf("after the sweep: %v", r)
	}
}

func TestUnlimited(t *testing.T) {
	h := newHarness(t, Config{MaxEntries: -1, Shards: 2})
	for i := range 3000 {
		if r := h.tab.Track(decode(t, udpOut(t, i)), h.now); r.Info != CtNew || !r.Confirm(h.now) {
			t.Fatalf("flow %d: %v", i, r)
		}
	}
	checkInvariants(t, h.tab)
	if st := h.tab.Stats(); st.Entries != 3000 || st.EarlyDrop != 0 {
		t.Fatalf("%+v", st)
	}
}

func TestConfirmClash(t *testing.T) {
	for _, c := range []struct {
		name  string
		frame func(tb testing.TB) []byte
		merge bool
	}{
		{"udp merges", func(tb testing.TB) []byte { return udpOut(tb, 1) }, true},
		{"tcp drops", func(tb testing.TB) []byte {
			return tcpFrame(tb, seg{src: ipClient, dst: ipServer, sport: cPort, dport: sPort, flags: "S", seq: 1})
		}, false},
		{"icmp drops", func(tb testing.TB) []byte { return icmpFrame(tb, ipClient, ipServer, 8, 0, 1, 1, nil) }, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			tab := New(Config{})
			f := c.frame(t)
			// Two workers see the connection's first packets at once.
			r1 := tab.Track(decode(t, f), t0)
			r2 := tab.Track(decode(t, f), t0)
			if r1.Info != CtNew || r2.Info != CtNew || r1.Ref == r2.Ref || tab.Len() != 2 {
				t.Fatalf("%v %v len %d", r1, r2, tab.Len())
			}
			if !r1.Confirm(t0) {
				t.Fatal("first confirm failed")
			}
			ok := r2.Confirm(t0)
			checkInvariants(t, tab)
			st := tab.Stats()
			if ok != c.merge || tab.Len() != 1 {
				t.Fatalf("second confirm %v, len %d", ok, tab.Len())
			}
			if c.merge {
				if r2.Ref != r1.Ref || r2.Entry.Packets(DirOriginal) != 2 || st.ClashResolved != 1 {
					t.Fatalf("merge: %+v, packets %d", st, r2.Entry.Packets(DirOriginal))
				}
			} else if st.InsertFailed != 1 || st.Drop != 1 {
				t.Fatalf("clash: %+v", st)
			}
		})
	}
}

func TestDiscardAndAbandoned(t *testing.T) {
	tab := New(Config{})
	r := tab.Track(decode(t, udpOut(t, 1)), t0)
	r.Discard()
	if tab.Len() != 0 {
		t.Fatal("discard left the entry")
	}
	r.Discard() // twice is harmless
	if r.Confirm(t0) {
		t.Fatal("confirm after discard succeeded")
	}
	// Discard on a confirmed connection does nothing.
	r = tab.Track(decode(t, udpOut(t, 2)), t0)
	r.Confirm(t0)
	r.Discard()
	if tab.Len() != 1 {
		t.Fatal("discard removed a confirmed entry")
	}
	// Forgotten unconfirmed entries are reclaimed after a minute.
	r = tab.Track(decode(t, udpOut(t, 3)), t0)
	if st := tab.Sweep(t0.Add(59 * time.Second)); st.Abandoned != 0 || st.Expired != 1 {
		t.Fatalf("reclaimed too early: %+v", st)
	}
	if st := tab.Sweep(t0.Add(61 * time.Second)); st.Abandoned != 1 || st.Expired != 0 {
		t.Fatalf("sweep: %+v", st)
	}
	if r.Confirm(t0) || tab.Len() != 0 {
		t.Fatalf("late confirm of a reclaimed entry: len %d", tab.Len())
	}
	checkInvariants(t, tab)
}

func TestRefs(t *testing.T) {
	h := newHarness(t, Config{Shards: 1})
	r := h.send(udpOut(t, 1))
	if m, ok := r.Ref.UpdateMark(0, 0x10); !ok || m != 0x10 {
		t.Fatalf("set: %#x %v", m, ok)
	}
	// --set-xmark 0x3/0xff: clear the low byte, then XOR.
	if m, _ := r.Ref.UpdateMark(0xff, 0x3); m != 0x3 {
		t.Fatalf("xmark: %#x", m)
	}
	if m, _ := r.Ref.UpdateMark(0, 0x1); m != 0x2 {
		t.Fatalf("xor: %#x", m)
	}
	if l, ok := r.Ref.UpdateLabels(Labels{}, Labels{}.With(3).With(127)); !ok || !l.Has(3) || !l.Has(127) || l.Has(4) {
		t.Fatalf("labels %v", l)
	}
	if !r.Ref.SetL7(L7{ID: 7, Data: [4]byte{1}}) {
		t.Fatal("SetL7")
	}
	e, ok := r.Ref.Load()
	if !ok || e.Mark() != 2 || e.L7().ID != 7 || !e.Labels().Has(127) {
		t.Fatalf("load: %v %s", ok, e.Format(h.now))
	}
	// Later packets see the mark.
	if r2 := h.send(udpBack(t, 1)); r2.Entry.Mark() != 2 {
		t.Fatalf("mark on the reply: %#x", r2.Entry.Mark())
	}
	// Expire and reuse the slot for another flow: the old Ref is stale.
	h.advance(time.Hour)
	h.tab.Sweep(h.now)
	r3 := h.send(udpOut(t, 2))
	if r3.Ref.idx != r.Ref.idx {
		t.Fatalf("slot not reused (%d vs %d)", r3.Ref.idx, r.Ref.idx)
	}
	if _, ok := r.Ref.UpdateMark(0, 1); ok || r.Ref.Valid() {
		t.Fatal("stale Ref still works")
	}
	if r3.Entry.Mark() != 0 || r3.Entry.L7() != (L7{}) {
		t.Fatal("reused entry kept old data")
	}
	var zero Ref
	if zero.Valid() {
		t.Fatal("zero Ref valid")
	}
}

func TestSweepAndRange(t *testing.T) {
	h := newHarness(t, Config{Shards: 4})
	h.fast = true
	for i := range 1000 {
		h.advance(10 * time.Millisecond)
		h.send(udpOut(t, i))
	}
	// Flow i was created at t0+(i+1)*10ms and expires 30 s later.
	at := t0.Add(35 * time.Second)
	live := 0
	for i := range 1000 {
		if t0.Add(time.Duration(i+1) * 10 * time.Millisecond).Add(30 * time.Second).After(at) {
			live++
		}
	}
	n := 0
	h.tab.Range(at, func(e *Entry) bool { n++; return true })
	if n != live {
		t.Fatalf("Range saw %d, want %d", n, live)
	}
	st := h.tab.Sweep(at)
	if st.Expired != 1000-live || h.tab.Len() != live {
		t.Fatalf("sweep %+v, len %d, want %d live", st, h.tab.Len(), live)
	}
	checkInvariants(t, h.tab)
	// Range stops when told to.
	n = 0
	h.tab.Range(at, func(e *Entry) bool { n++; return n < 3 })
	if n != 3 {
		t.Fatalf("Range did not stop: %d", n)
	}
}

// TestAllocSweep: without any Sweep call, creating connections reclaims
// expired ones, so the slab does not grow with churn.
func TestAllocSweep(t *testing.T) {
	h := newHarness(t, Config{Shards: 1})
	h.fast = true
	for i := range 100 {
		h.send(udpOut(t, i))
	}
	h.advance(31 * time.Second)
	for i := 100; i < 200; i++ {
		h.send(udpOut(t, i))
	}
	s := &h.tab.shards[0]
	if st := h.tab.Stats(); st.Expired != 100 || s.used != 100 {
		t.Fatalf("expired %d, slab %d", st.Expired, s.used)
	}
	checkInvariants(t, h.tab)
}

func TestIndexChurn(t *testing.T) {
	h := newHarness(t, Config{Shards: 1, MaxEntries: -1})
	const n = 5000
	for i := range n {
		r := h.tab.Track(decode(t, udpOut(t, i)), h.now)
		r.Confirm(h.now)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	gone := map[int]bool{}
	for _, i := range rng.Perm(n)[:n/2] {
		if !h.tab.Delete(udpTuple(i)) {
			t.Fatalf("delete %d failed", i)
		}
		gone[i] = true
	}
	checkInvariants(t, h.tab)
	for i := range n {
		_, _, ok := h.tab.Lookup(udpTuple(i), h.now)
		if ok == gone[i] {
			t.Fatalf("flow %d: found %v, deleted %v", i, ok, gone[i])
		}
	}
	if h.tab.Delete(udpTuple(n + 1)) {
		t.Fatal("deleted a flow that never existed")
	}
}

func TestRun(t *testing.T) {
	tab := New(Config{SweepInterval: time.Millisecond})
	for i := range 100 {
		r := tab.Track(decode(t, udpOut(t, i)), t0)
		r.Confirm(t0)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		tab.Run(ctx, func() time.Time { return t0.Add(time.Hour) })
		close(done)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for tab.Len() != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
	if tab.Len() != 0 {
		t.Fatalf("sweeper left %d entries", tab.Len())
	}
}

// TestConcurrent runs workers tracking distinct and shared flows in both
// directions, confirming and discarding, while the sweeper runs; under
// -race this is the locking test.
func TestConcurrent(t *testing.T) {
	tab := New(Config{Shards: 8, SweepInterval: time.Millisecond})
	const workers, own, shared, rounds = 4, 200, 20, 3
	frames := make([][]byte, workers*own)
	for i := range frames {
		frames[i] = udpOut(t, i)
	}
	sharedOut, sharedBack := make([][]byte, shared), make([][]byte, shared)
	for i := range shared {
		sharedOut[i] = udpOut(t, 100000+i)
		sharedBack[i] = udpBack(t, 100000+i)
	}
	syn := tcpFrame(t, seg{src: ipClient, dst: ipServer, sport: cPort, dport: sPort, flags: "S", seq: 1})
	var clock atomic.Int64
	clock.Store(t0.UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }

	ctx, cancel := context.WithCancel(context.Background())
	var sweeper sync.WaitGroup
	sweeper.Add(1)
	go func() { defer sweeper.Done(); tab.Run(ctx, now) }()

	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 9))
			for range rounds {
				for i := range own {
					r := tab.Track(decode(t, frames[w*own+i]), now())
					if rng.IntN(10) == 0 {
						r.Discard()
					} else {
						r.Confirm(now())
					}
				}
				for i := range shared {
					f := sharedOut[i]
					if rng.IntN(2) == 0 {
						f = sharedBack[i]
					}
					r := tab.Track(decode(t, f), now())
					r.Ref.UpdateMark(0, 1)
					r.Confirm(now())
				}
				r := tab.Track(decode(t, syn), now())
				r.Confirm(now())
				clock.Add(int64(time.Millisecond))
			}
		}()
	}
	wg.Wait()
	cancel()
	sweeper.Wait()
	checkInvariants(t, tab)
	// Every own flow was confirmed at least once in three rounds unless
	// discarded every time (1 in 1000); shared flows exist once each.
	got := tab.Len()
	if got < workers*own-workers*own/50+shared+1 || got > workers*own+shared+1 {
		t.Fatalf("%d entries", got)
	}
	if st := tab.Stats(); st.InsertFailed+st.ClashResolved == 0 && st.Found == 0 {
		t.Fatalf("no sharing happened: %+v", st)
	}
}
