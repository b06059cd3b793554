package conntrack

import (
	"bytes"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/qtables/qtables/packet"
)

// batchTraffic is a packet stream mixing every kind of packet the tracker
// distinguishes: TCP connections through handshake, data, FIN or RST
// teardown and stray segments; UDP request/response; ICMP echo; ICMP
// errors quoting earlier flows; garbage. Each flow's script is played in
// order, flows interleaved at random, and the clock advances now and then
// so that entries also expire on the way.
func batchTraffic(tb testing.TB, rng *rand.Rand, flows int) (frames [][]byte, gaps []time.Duration) {
	var scripts [][][]byte
	for i := range flows {
		cli := net.IP{10, 1, byte(i >> 8), byte(i)}
		sp := uint16(20000 + i)
		c2s := func(flags string, seq, ack uint32, data int) []byte {
			return tcpFrame(tb, seg{src: cli, dst: ipServer, sport: sp, dport: 80, flags: flags, seq: seq, ack: ack, data: data})
		}
		s2c := func(flags string, seq, ack uint32, data int) []byte {
			return tcpFrame(tb, seg{src: ipServer, dst: cli, sport: 80, dport: sp, flags: flags, seq: seq, ack: ack, data: data})
		}
		var sc [][]byte
		switch i % 6 {
		case 0: // full TCP connection, FIN teardown
			sc = [][]byte{c2s("S", 100, 0, 0), s2c("SA", 500, 101, 0), c2s("A", 101, 501, 0),
				c2s("PA", 101, 501, 10), s2c("A", 501, 111, 0), s2c("PA", 501, 111, 20),
				c2s("FA", 111, 521, 0), s2c("FA", 521, 112, 0), c2s("A", 112, 522, 0)}
		case 1: // TCP reset by the server, then stray segments
			sc = [][]byte{c2s("S", 7, 0, 0), s2c("RA", 0, 8, 0), c2s("A", 8, 1, 0), s2c("F", 9, 9, 0)}
		case 2: // picked up mid-stream, out-of-window junk, a retransmission
			sc = [][]byte{c2s("A", 1000, 2000, 5), s2c("A", 2000, 1005, 0), c2s("A", 1000, 2000, 5),
				c2s("A", 1000, 2000, 5), s2c("A", 90000000, 1005, 0), c2s("SF", 1, 1, 0)}
		case 3: // UDP both ways, and an ICMP error quoting it
			q := udpFrame(tb, cli, ipServer, sp, 53, []byte("q"))
			sc = [][]byte{q, udpFrame(tb, ipServer, cli, 53, sp, []byte("r")), q,
				icmpErrorFrame(tb, ipRouter, cli, 3, 3, udpFrame(tb, cli, ipServer, sp, 53, []byte("q")), 28)}
		case 4: // ICMP echo, reply, and a reply without request
			sc = [][]byte{icmpFrame(tb, cli, ipServer, 8, 0, uint16(i), 1, nil),
				icmpFrame(tb, ipServer, cli, 0, 0, uint16(i), 1, nil),
				icmpFrame(tb, ipServer, cli, 0, 0, uint16(i+1), 1, nil)}
		case 5: // garbage: truncated, a quoting error of nothing, generic protocol
			sc = [][]byte{rawFrame(tb, 6, cli, ipServer, []byte{1, 2}),
				icmpErrorFrame(tb, ipRouter, cli, 11, 0, rawFrame(tb, 17, ipOther, cli, make([]byte, 8)), 28),
				rawFrame(tb, 47, cli, ipServer, []byte{0, 0, 8, 0}),
				rawFrame(tb, 47, ipServer, cli, []byte{0, 0, 8, 0})}
		}
		scripts = append(scripts, sc)
	}
	for live := len(scripts); live > 0; {
		i := rng.IntN(len(scripts))
		if len(scripts[i]) == 0 {
			continue
		}
		frames = append(frames, scripts[i][0])
		scripts[i] = scripts[i][1:]
		if len(scripts[i]) == 0 {
			live--
		}
		gap := time.Duration(0)
		if rng.IntN(100) == 0 {
			gap = time.Duration(rng.IntN(20)) * time.Second
		}
		gaps = append(gaps, gap)
	}
	return frames, gaps
}

// TestTrackBatchEqualsTrackInto plays the same traffic through two tables
// with the same hash seed, one packet at a time (TrackInto) and in batches
// of random size (TrackBatch), confirming or discarding every packet's
// entry after its batch in both. Every result, the counters and the final
// table must be identical.
func TestTrackBatchEqualsTrackInto(t *testing.T) {
	// The default limit (index sized up front), a tiny limit (early drop,
	// drops), and no limit (indexes and slabs grow during the batches).
	for _, cfg := range []Config{{Shards: 4}, {Shards: 1, MaxEntries: 40}, {Shards: 2, MaxEntries: -1}} {
		rng := rand.New(rand.NewPCG(1, 2))
		frames, gaps := batchTraffic(t, rng, 600)
		one, batch := New(cfg), New(cfg)
		batch.seed = one.seed
		views := make([]*packet.View, len(frames))
		for i, f := range frames {
			views[i] = decode(t, f)
		}
		now := t0
		var infos [CtUntracked]int
		want := make([]Result, 70)
		got := make([]Result, 70)
		for pos := 0; pos < len(views); {
			n := min(1+rng.IntN(70), len(views)-pos)
			vs := views[pos : pos+n]
			for i, v := range vs {
				one.TrackInto(&want[i], v, now)
			}
			batch.TrackBatch(vs, now, got[:n])
			for i := range n {
				w, g := &want[i], &got[i]
				if w.Info != g.Info || w.Dir != g.Dir || w.Reason != g.Reason || w.Drop != g.Drop ||
					w.Entry != g.Entry || w.Ref.shard != g.Ref.shard || w.Ref.idx != g.Ref.idx ||
					w.Ref.gen != g.Ref.gen || (w.Ref.t == nil) != (g.Ref.t == nil) {
					t.Fatalf("packet %d: TrackInto %v ref %+v, TrackBatch %v ref %+v", pos+i, w, w.Ref, g, g.Ref)
				}
				infos[w.Info]++
				// Drop the first packet of every seventh flow, as a rule set
				// would, in both.
				if rng.IntN(7) == 0 {
					w.Discard()
					g.Discard()
				} else if w.Confirm(now) != g.Confirm(now) {
					t.Fatalf("packet %d: confirm differs", pos+i)
				}
			}
			for _, gap := range gaps[pos : pos+n] {
				now = now.Add(gap)
			}
			pos += n
		}
		checkInvariants(t, batch)
		if a, b := one.Stats(), batch.Stats(); a != b {
			t.Fatalf("stats differ:\nTrackInto  %+v\nTrackBatch %+v", a, b)
		}
		var a, b bytes.Buffer
		one.WriteConntrackL(&a, now)
		batch.WriteConntrackL(&b, now)
		if a.String() != b.String() {
			t.Fatalf("tables differ:\n%s\nvs\n%s", a.String(), b.String())
		}
		st := one.Stats()
		t.Logf("%+v; INVALID, NEW, ESTABLISHED, RELATED: %v", st, infos)
		if st.Inserted == 0 || st.Expired+st.Deleted == 0 || st.InsertFailed == 0 ||
			slices.Contains(infos[:], 0) {
			t.Fatalf("traffic does not exercise the table: %+v %v", st, infos)
		}
	}
}

// TestTrackBatchConcurrent runs TrackBatch from several goroutines, on
// flows that are created, confirmed, answered and expire, while Sweep runs
// beside them: under -race this checks that the prefetch stages' lock-free
// reads of the index and slab tables only meet atomic writes.
func TestTrackBatchConcurrent(t *testing.T) {
	tab := New(Config{Shards: 4, MaxEntries: -1, Timeouts: Timeouts{UDP: time.Second}})
	const workers, rounds = 4, 60
	var wg sync.WaitGroup
	var clock atomic.Int64
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fs := &flowSet{n: 1 << 12, server: byte(10 + w)}
			bvs := make([]benchView, 32)
			views := make([]*packet.View, 32)
			for i := range bvs {
				views[i] = &bvs[i].View
			}
			results := make([]Result, 32)
			for r := range rounds {
				now := t0.Add(time.Duration(clock.Add(1)) * 50 * time.Millisecond)
				for i := range bvs {
					fs.fill(&bvs[i], (r*7+i)%fs.n, (r+i)%3 == 0)
				}
				tab.TrackBatch(views, now, results)
				for i := range results {
					if i%5 == 0 {
						results[i].Discard()
					} else {
						results[i].Confirm(now)
					}
				}
			}
		}()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for clock.Load() < workers*rounds {
			tab.Sweep(t0.Add(time.Duration(clock.Load()) * 50 * time.Millisecond))
		}
	}()
	wg.Wait()
	<-done
	checkInvariants(t, tab)
	if st := tab.Stats(); st.Inserted == 0 || st.Found == 0 || st.Expired == 0 {
		t.Fatalf("not exercised: %+v", st)
	}
}

// TestTrackBatchAllocs checks that a batch of established flows allocates
// nothing.
func TestTrackBatchAllocs(t *testing.T) {
	fs := newUDPFlows(1 << 12)
	tab := New(Config{})
	fs.establish(t, tab, t0)
	bvs := make([]benchView, 32)
	views := make([]*packet.View, 32)
	for i := range bvs {
		views[i] = &bvs[i].View
	}
	results := make([]Result, 32)
	i := 0
	allocs := testing.AllocsPerRun(100, func() {
		for j := range bvs {
			fs.fill(&bvs[j], (i*32+j)%fs.n, j&1 == 1)
		}
		i++
		tab.TrackBatch(views, t0.Add(time.Second), results)
		for j := range results {
			if results[j].Info != CtEstablished {
				t.Fatalf("%v", results[j])
			}
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per batch", allocs)
	}
}

// TestTrackBatchShortResults checks the documented panic.
func TestTrackBatchShortResults(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	New(Config{}).TrackBatch(make([]*packet.View, 2), t0, make([]Result, 1))
}

// TestResolveStaleHint feeds resolve the hints that TrackBatch's stage 2
// can hand stage 3 once the index has changed under it (another packet of
// the batch or another worker removed, moved or reused cells): a cell
// naming another flow, the right cell at a wrong position, a position past
// the end. Each must give what no hint gives: the packet's own flow, in
// the right direction.
func TestResolveStaleHint(t *testing.T) {
	tab := New(Config{Shards: 1})
	now := t0
	cli := func(i int) net.IP { return net.IP{10, 9, 0, byte(i)} }
	const n = 40
	for i := range n {
		r := tab.Track(decode(t, udpFrame(t, cli(i), ipServer, 4000, 53, []byte("q"))), now)
		if r.Info != CtNew || !r.Confirm(now) {
			t.Fatalf("flow %d: %v", i, r)
		}
	}
	s := &tab.shards[0]
	cellOf := func(idx uint32) (slot, int) {
		for pos, c := range s.slots {
			if c != 0 && c.idx() == idx+1 {
				return c, pos
			}
		}
		t.Fatalf("entry %d not indexed", idx)
		return 0, 0
	}
	for i := range n {
		for _, reply := range []bool{false, true} {
			frame := udpFrame(t, cli(i), ipServer, 4000, 53, []byte("q"))
			wantDir := DirOriginal
			if reply {
				frame = udpFrame(t, ipServer, cli(i), 53, 4000, []byte("a"))
				wantDir = DirReply
			}
			v := decode(t, frame)
			var p pkt
			if reason := p.parse(v, false); reason != ReasonNone {
				t.Fatal(reason)
			}
			h := tab.seed.hash4(&p.tuple)
			var plain Result
			s.lock()
			tab.resolve(&plain, s, 0, h, &p, now.UnixNano(), 0, 0)
			s.mu.Unlock()
			if plain.Info != CtEstablished && !(plain.Info == CtNew && !reply) || plain.Dir != wantDir {
				t.Fatalf("flow %d reply=%v: %v", i, reply, plain)
			}
			own, ownPos := cellOf(plain.Ref.idx)
			other, otherPos := cellOf((plain.Ref.idx + 1) % n)
			hints := []struct {
				name string
				c    slot
				pos  int
			}{
				{"own", own, ownPos},
				{"other flow's cell", other, otherPos},
				{"own cell, wrong position", own, otherPos},
				{"other flow's cell at own position", other, ownPos},
				{"past the end", own, len(s.slots) + 3},
				{"negative", own, -1},
			}
			for _, hint := range hints {
				var r Result
				s.lock()
				tab.resolve(&r, s, 0, h, &p, now.UnixNano(), hint.c, hint.pos)
				s.mu.Unlock()
				if r.Ref.idx != plain.Ref.idx || r.Dir != wantDir || r.Entry.Orig() != plain.Entry.Orig() ||
					r.Info == CtInvalid {
					t.Errorf("flow %d reply=%v, hint %s: got %v (entry %d), want entry %d", i, reply,
						hint.name, r, r.Ref.idx, plain.Ref.idx)
				}
			}
		}
	}
	checkInvariants(t, tab)
	// Past the timeout the lookup reaps the entry it finds, at the
	// position it was found: a hint taken at the wrong position must not
	// remove another flow's cell. (Creating the packet's new entry also
	// sweeps a few slab positions, which reaps some flows ahead of their
	// turn.)
	later := now.Add(time.Hour).UnixNano()
	reaped := 0
	for i := range n {
		v := decode(t, udpFrame(t, cli(i), ipServer, 4000, 53, []byte("q")))
		var p pkt
		p.parse(v, false)
		h := tab.seed.hash4(&p.tuple)
		idx, _, ok := tab.find(s, h, &p.tuple, now.UnixNano())
		if !ok {
			continue // swept
		}
		reaped++
		own, _ := cellOf(idx)
		otherPos := -1
		for pos, c := range s.slots {
			if c != 0 && c != own {
				otherPos = pos
				break
			}
		}
		if otherPos < 0 {
			continue // the last flow: no other cell to aim at
		}
		var r Result
		s.lock()
		tab.resolve(&r, s, 0, h, &p, later, own, otherPos)
		s.mu.Unlock()
		if r.Info != CtNew || r.Entry.Confirmed() {
			t.Fatalf("flow %d after expiry: %v", i, r)
		}
		r.Discard()
		checkInvariants(t, tab)
	}
	if st := tab.Stats(); reaped < 5 || st.Expired+1 < n || tab.Len() > 1 {
		t.Fatalf("after expiry (%d reaped through a hint): %+v, %d entries", reaped, st, tab.Len())
	}
}
