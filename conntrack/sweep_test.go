package conntrack

import (
	"sync"
	"testing"
	"time"
)

// TestSweepRecheck: the sweeper notes expired entries under the lock,
// lets go of it, and unlinks them under it again. An entry a packet
// refreshed in between, or one freed and reused by another connection
// (which must not be unlinked under the old one's hash), is left alone.
func TestSweepRecheck(t *testing.T) {
	h := newHarness(t, Config{Shards: 1})
	for i := range 10 {
		h.send(udpOut(t, i)) // expires at t0+30s
	}
	at := t0.Add(31 * time.Second)
	w := &sweeper{t: h.tab, now: at.UnixNano()}
	s := &h.tab.shards[0]
	s.mu.Lock()
	n := w.scan(s, 0, s.used)
	s.mu.Unlock()
	if n != 10 {
		t.Fatalf("scan noted %d victims, want 10", n)
	}

	// Meanwhile: flow 0 gets a packet (its timer restarts), flow 1 is
	// deleted and its slot reused by flow 100, itself already expired
	// by the sweeper's clock.
	h.now = t0.Add(29 * time.Second)
	h.send(udpOut(t, 0))
	if !h.tab.Delete(udpTuple(1)) {
		t.Fatal("delete failed")
	}
	h.now = t0
	if r := h.send(udpOut(t, 100)); r.Ref.idx != w.victims[1].idx {
		t.Fatalf("flow 100 took slot %d, not flow 1's %d", r.Ref.idx, w.victims[1].idx)
	}

	vs := w.victims[:n]
	for i := range vs {
		vs[i].h = h.tab.seed.hash(&vs[i].orig)
	}
	s.mu.Lock()
	w.unlink(s, vs)
	s.mu.Unlock()
	checkInvariants(t, h.tab)
	if w.st.Expired != 8 || h.tab.Len() != 2 {
		t.Fatalf("unlinked %d, %d left; want 8 and 2", w.st.Expired, h.tab.Len())
	}
	for _, i := range []int{0, 100} {
		if _, _, ok := h.tab.Lookup(udpTuple(i), t0.Add(29*time.Second)); !ok {
			t.Fatalf("flow %d was unlinked", i)
		}
	}
	// The next pass takes flow 100, whose time has come.
	if st := h.tab.Sweep(at); st.Expired != 1 || h.tab.Len() != 1 {
		t.Fatalf("second sweep %+v, %d left", st, h.tab.Len())
	}
	checkInvariants(t, h.tab)
}

// TestSweepConcurrent: sweeps racing with packets that create, refresh and
// delete connections leave the table consistent (run with -race).
func TestSweepConcurrent(t *testing.T) {
	tab := New(Config{Shards: 2, MaxEntries: -1, Timeouts: Timeouts{UDP: 50 * time.Millisecond}})
	const flows = 3000
	frames := make([][]byte, flows)
	for i := range frames {
		frames[i] = udpOut(t, i)
	}
	var wg sync.WaitGroup
	for g := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			now := t0
			for round := range 20 {
				for i := g; i < flows; i += 2 {
					now = now.Add(10 * time.Microsecond)
					r := tab.Track(decode(t, frames[i]), now)
					if r.HasEntry() && !r.Entry.Confirmed() {
						r.Confirm(now)
					}
					if (i+round)%17 == 0 {
						tab.Delete(udpTuple(i))
					}
				}
			}
		}()
	}
	for k := range 200 {
		tab.Sweep(t0.Add(time.Duration(k) * time.Millisecond))
	}
	wg.Wait()
	checkInvariants(t, tab)
	tab.Sweep(t0.Add(time.Hour))
	if tab.Len() != 0 {
		t.Fatalf("%d entries left after everything expired", tab.Len())
	}
	checkInvariants(t, tab)
}
