package queue

import (
	"bytes"
	"io"
	"strings"
	"testing"

	nfqueue "github.com/florianl/go-nfqueue/v2"

	"github.com/qtables/qtables/matchers"
	"github.com/qtables/qtables/packet"
)

func viewOf(t *testing.T, data []byte) *packet.View {
	t.Helper()
	dec, err := packet.NewDecoder(packet.LinkTypeRaw)
	if err != nil {
		t.Fatal(err)
	}
	v := &packet.View{}
	dec.Decode(data, v)
	return v
}

func TestFlowTable(t *testing.T) {
	ft := newFlowTable(4)
	out := func(sport, dport uint16) *packet.View { return viewOf(t, tcpSyn("10.0.1.2", "10.0.2.2", sport, dport)) }
	back := func(sport, dport uint16) *packet.View { return viewOf(t, tcpSyn("10.0.2.2", "10.0.1.2", sport, dport)) }

	// Four packets, both directions: the fourth offloads, and the flow is
	// forgotten (a later packet starts counting again).
	steps := []struct {
		v    *packet.View
		want bool
	}{{out(1000, 80), false}, {back(80, 1000), false}, {out(1000, 80), false}, {out(1000, 80), true}, {out(1000, 80), false}}
	for i, s := range steps {
		if got := ft.observe(s.v, matchers.Accept, false, 100); got != s.want {
			t.Errorf("step %d: offload %v, want %v", i+1, got, s.want)
		}
	}
	// One direction only (a scan, a flood): never.
	for i := 0; i < 10; i++ {
		if ft.observe(out(2000, 80), matchers.Accept, false, 100) {
			t.Fatal("a one-way flow was offloaded")
		}
	}
	// A tainted flow (marked or logged once): never.
	ft.observe(out(3000, 80), matchers.Accept, true, 100)
	for i := 0; i < 10; i++ {
		if ft.observe(back(80, 3000), matchers.Accept, false, 100) {
			t.Fatal("a tainted flow was offloaded")
		}
	}
	// Drops do not count and never offload.
	for i := 0; i < 10; i++ {
		if ft.observe(out(4000, 81), matchers.Drop, false, 100) || ft.observe(back(81, 4000), matchers.Drop, false, 100) {
			t.Fatal("a dropped flow was offloaded")
		}
	}
	if _, ok := ft.m[flowKey{}]; ok {
		t.Error("zero key stored")
	}
	// Idle flows are swept.
	n := len(ft.m)
	if n == 0 {
		t.Fatal("no flows remembered")
	}
	ft.sweep(100 + flowIdle + 1)
	if len(ft.m) != 0 {
		t.Errorf("%d flows left after the idle sweep", len(ft.m))
	}
}

func TestFlowKeyCanonical(t *testing.T) {
	a, da := keyOf(viewOf(t, tcpSyn("10.0.1.2", "10.0.2.2", 1000, 80)))
	b, db := keyOf(viewOf(t, tcpSyn("10.0.2.2", "10.0.1.2", 80, 1000)))
	if a != b || da == db {
		t.Errorf("keys %v/%d and %v/%d", a, da, b, db)
	}
	c, _ := keyOf(viewOf(t, udp("10.0.1.2", "10.0.2.2", 1000, 80)))
	if c == a {
		t.Error("the protocol is not part of the key")
	}
}

// With the fast path, the daemon's verdict for the settling packet is
// NF_REPEAT with the offload bits added to the packet mark.
func TestDaemonOffload(t *testing.T) {
	var logs bytes.Buffer
	d := testDaemon(t, testRules, io.Discard, &logs)
	d.cfg.Hooks.OffloadMask = 0x40000000
	d.cfg.OffloadAfter = 3
	w := d.newWorker()
	q := &fakeQueue{}
	icmp := icmpEcho("10.0.1.2", "10.0.2.2") // accepted, no mark, no event
	// FORWARD rule 4 accepts ICMP both ways.
	reply := ipv4(1, "10.0.2.2", "10.0.1.2", []byte{0, 0, 0, 0, 0, 1, 0, 1})
	for i, p := range [][]byte{icmp, reply, icmp} {
		d.handle(w, &job{q: q, id: uint32(i + 1), data: p, hook: uint8(matchers.HookForward)})
	}
	if len(q.v) != 3 || q.v[0].verdict != nfqueue.NfAccept || q.v[1].verdict != nfqueue.NfAccept ||
		q.v[2].verdict != nfqueue.NfRepeat || q.v[2].opts != 1 {
		t.Errorf("verdicts %+v, want ACCEPT, ACCEPT, REPEAT with a mark", q.v)
	}
	// A packet arriving with the offload bits is never repeated again.
	q.v = nil
	for i := 0; i < 5; i++ {
		d.handle(w, &job{q: q, id: 10, data: icmp, mark: 0x40000000, hook: uint8(matchers.HookForward)})
	}
	for _, v := range q.v {
		if v.verdict != nfqueue.NfAccept {
			t.Errorf("marked packet got verdict %d", v.verdict)
		}
	}
	// Port 80 gets a MARK from the rules: its flow is never offloaded.
	q.v = nil
	for i := 0; i < 6; i++ {
		d.handle(w, &job{q: q, id: 20, data: tcpSyn("10.0.1.2", "10.0.2.2", 5000, 80), hook: uint8(matchers.HookForward)})
	}
	for _, v := range q.v {
		if v.verdict == nfqueue.NfRepeat {
			t.Error("a flow the rules mark was offloaded")
		}
	}
	if st := d.Stats(); st.Offloaded != 1 {
		t.Errorf("offloaded %d flows, want 1", st.Offloaded)
	}
	if strings.Contains(logs.String(), "panic") {
		t.Error(logs.String())
	}
}
