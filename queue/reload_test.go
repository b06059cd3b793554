package queue

import (
	"bytes"
	"io"
	"os"
	"sync"
	"testing"

	"github.com/qtables/qtables/matchers"
)

const reloadA = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -p tcp -m tcp --dport 80 -j ACCEPT
-A FORWARD -p tcp -m tcp --dport 81 -j ACCEPT
-A FORWARD -p udp -j ACCEPT
-A FORWARD -p udp -j ACCEPT
COMMIT
`

// reloadB keeps rule 1 (spelled differently: the canonical text is what
// counts), changes rule 2, keeps one of the two identical udp rules, adds
// a rule, and keeps the FORWARD policy.
const reloadB = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -p icmp -j ACCEPT
-A FORWARD -p 6 --dport 80 -j ACCEPT
-A FORWARD -p tcp -m tcp --dport 82 -j ACCEPT
-A FORWARD -p udp -j ACCEPT
COMMIT
`

func TestReloadKeepsCounters(t *testing.T) {
	var logs bytes.Buffer
	d := testDaemon(t, reloadA, io.Discard, &logs)
	w := d.newWorker()
	q := &fakeQueue{}
	send := func(p []byte, n int) {
		for i := 0; i < n; i++ {
			d.handle(w, &job{q: q, id: 1, data: p, hook: uint8(matchers.HookForward)})
		}
	}
	send(tcpSyn("10.0.1.2", "10.0.2.2", 1, 80), 3)
	send(tcpSyn("10.0.1.2", "10.0.2.2", 1, 81), 2)
	send(udp("10.0.1.2", "10.0.2.2", 1, 53), 4) // the first udp rule
	send(tcpSyn("10.0.1.2", "10.0.2.2", 1, 99), 5)
	if err := os.WriteFile(d.cfg.RulesPath, []byte(reloadB), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.Reload(); err != nil {
		t.Fatal(err)
	}
	fwd := d.Rules().Set.Table("filter").Chain("FORWARD")
	want := [][2]uint64{{0, 0}, {3, 120}, {0, 0}, {4, 128}}
	for i, r := range fwd.Rules {
		if p, b := r.Counters.Get(); p != want[i][0] || b != want[i][1] {
			t.Errorf("rule %d (%s): %d/%d, want %d/%d", i+1, r, p, b, want[i][0], want[i][1])
		}
	}
	if p, _ := fwd.Counters.Get(); p != 5 {
		t.Errorf("FORWARD policy: %d packets, want the 5 it had", p)
	}
	// A changed policy starts again.
	if err := os.WriteFile(d.cfg.RulesPath, []byte(reloadB[:len("*filter\n:INPUT ACCEPT [0:0]\n")]+":FORWARD ACCEPT [7:700]\n"+
		reloadB[len("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n"):]), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.Reload(); err != nil {
		t.Fatal(err)
	}
	fwd = d.Rules().Set.Table("filter").Chain("FORWARD")
	if p, b := fwd.Counters.Get(); p != 7 || b != 700 {
		t.Errorf("changed policy: %d/%d, want the file's 7/700", p, b)
	}
	if p, _ := fwd.Rules[1].Counters.Get(); p != 3 {
		t.Errorf("port 80 after the second reload: %d", p)
	}
}

// TestReloadUnderLoad: reloads while workers judge packets lose no count:
// the kept rule's counter equals the packets sent.
func TestReloadUnderLoad(t *testing.T) {
	var logs bytes.Buffer
	d := testDaemon(t, reloadA, io.Discard, &logs)
	d.reloadMu.Lock()
	d.pool = []*worker{d.newWorker(), d.newWorker()}
	d.reloadMu.Unlock()
	const perWorker = 20000
	var wg sync.WaitGroup
	for _, w := range d.pool {
		wg.Add(1)
		go func(w *worker) {
			defer wg.Done()
			q := &discardQueue{}
			p := tcpSyn("10.0.1.2", "10.0.2.2", 1, 80)
			for i := 0; i < perWorker; i++ {
				w.mu.Lock()
				d.handle(w, &job{q: q, id: 1, data: p, hook: uint8(matchers.HookForward)})
				w.mu.Unlock()
			}
		}(w)
	}
	files := []string{reloadB, reloadA}
	for i := 0; i < 50; i++ {
		if err := os.WriteFile(d.cfg.RulesPath, []byte(files[i%2]), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := d.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	var port80 *uint64
	for _, r := range d.Rules().Set.Table("filter").Chain("FORWARD").Rules {
		if r.String() == "-p tcp -m tcp --dport 80 -j ACCEPT" {
			p, _ := r.Counters.Get()
			port80 = &p
		}
	}
	if port80 == nil || *port80 != 2*perWorker {
		t.Errorf("port 80 rule counted %v packets, want %d", port80, 2*perWorker)
	}
}

// discardQueue takes verdicts and forgets them.
type discardQueue struct{}

func (discardQueue) Verdict(uint32, int, uint32, bool) error { return nil }
