package queue

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/qtables/qtables/conntrack"
	"github.com/qtables/qtables/matchers"
)

// batchRules: a packet marked 0x1 is dropped before anything else; known
// connections pass; new TCP to port 22 and new UDP to port 5353 pass (the
// UDP ones marked 0x7 by CONNMARK); the rest meets the DROP policy. The
// rule numbers say what the rules saw: 2 ESTABLISHED or RELATED, 3 a NEW
// TCP packet, 5 a NEW UDP packet.
const batchRules = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A FORWARD -m mark --mark 0x1 -j DROP
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -p tcp -m conntrack --ctstate NEW -m tcp --dport 22 -j ACCEPT
-A FORWARD -p udp -m conntrack --ctstate NEW -m udp --dport 5353 -j CONNMARK --set-xmark 0x7/0xffffffff
-A FORWARD -p udp -m conntrack --ctstate NEW -m udp --dport 5353 -j ACCEPT
COMMIT
`

// batchPacket is one packet of a test batch.
type batchPacket struct {
	data []byte
	mark uint32
}

// judgeAsBatch judges pkts as one batch (Begin, Add, Track, Eval) at the
// FORWARD hook, all at time now.
func judgeAsBatch(j *Judge, r *Rules, now time.Time, pkts []batchPacket) []Outcome {
	j.Begin()
	for _, p := range pkts {
		m := fwdMeta()
		m.Now, m.Mark = now, p.mark
		j.Add(r, p.data, &m)
	}
	j.Track(now)
	outs := make([]Outcome, len(pkts))
	for i := range pkts {
		outs[i] = j.Eval(r, i)
	}
	return outs
}

func onlyFlow(t *testing.T, ct *conntrack.Table, now time.Time) conntrack.Entry {
	t.Helper()
	var es []conntrack.Entry
	ct.Range(now, func(e *conntrack.Entry) bool { es = append(es, *e); return true })
	if len(es) != 1 {
		t.Fatalf("%d flows in the table, want 1", len(es))
	}
	return es[0]
}

// A SYN and its retransmission in one read are judged as one at a time:
// the retransmission is tracked after the first SYN was confirmed, finds
// its connection and passes as NEW in it (not counted: the kernel's
// tcp_packet returns before the accounting on a SYN retransmitted in
// SYN_SENT). Looked up together, the second would have had an entry of
// its own and lost the confirm clash (TCP does not merge).
func TestJudgeBatchSynRetransmit(t *testing.T) {
	r := mustRules(t, batchRules)
	j, ct := ctJudge(t, matchers.HookForward)
	now := time.Unix(1700000000, 0)
	syn := tcpSyn("10.0.1.2", "10.0.2.2", 40000, 22)
	outs := judgeAsBatch(j, r, now, []batchPacket{{data: syn}, {data: syn}})
	for i, o := range outs {
		if o.Verdict != matchers.Accept || o.Decided.Rule != 3 || o.CtDrop {
			t.Errorf("SYN %d: %+v, want ACCEPT as NEW by rule 3", i, o)
		}
	}
	e := onlyFlow(t, ct, now)
	if e.TCPState() != conntrack.TCPSynSent || e.Packets(conntrack.DirOriginal) != 1 || !e.Confirmed() {
		t.Errorf("flow %s: want one confirmed SYN_SENT flow of 1 packet", e.Format(now))
	}
	if st := ct.Stats(); st.New != 1 || st.Found != 1 || st.Inserted != 1 || st.InsertFailed != 0 || st.Entries != 1 {
		t.Errorf("stats %+v, want 1 new, 1 found, 1 inserted, no clash, 1 entry", st)
	}
	// The next read has the server's answer.
	synAck := tcpSynAck("10.0.2.2", "10.0.1.2", 22, 40000, 5000, 1001)
	outs = judgeAsBatch(j, r, now.Add(time.Millisecond), []batchPacket{{data: synAck}})
	if o := outs[0]; o.Verdict != matchers.Accept || o.Decided.Rule != 2 {
		t.Errorf("SYN/ACK: %+v, want ESTABLISHED (rule 2)", o)
	}
}

// A SYN the rules drop and its retransmission that they accept, in one
// read: the first is discarded, so the second's entry is the one
// confirmed (the first confirmed wins, whatever the batch order).
func TestJudgeBatchSynDroppedThenAccepted(t *testing.T) {
	r := mustRules(t, batchRules)
	j, ct := ctJudge(t, matchers.HookForward)
	now := time.Unix(1700000000, 0)
	syn := tcpSyn("10.0.1.2", "10.0.2.2", 40000, 22)
	outs := judgeAsBatch(j, r, now, []batchPacket{{data: syn, mark: 1}, {data: syn}})
	if o := outs[0]; o.Verdict != matchers.Drop || o.Decided.Rule != 1 || o.CtDrop {
		t.Errorf("marked SYN: %+v, want DROP by rule 1", o)
	}
	if o := outs[1]; o.Verdict != matchers.Accept || o.Decided.Rule != 3 || o.CtDrop {
		t.Errorf("retransmitted SYN: %+v, want ACCEPT as NEW by rule 3", o)
	}
	if e := onlyFlow(t, ct, now); e.TCPState() != conntrack.TCPSynSent || e.Packets(conntrack.DirOriginal) != 1 {
		t.Errorf("flow %s", e.Format(now))
	}
	if st := ct.Stats(); st.InsertFailed != 0 || st.Inserted != 1 {
		t.Errorf("stats %+v, want 1 inserted, no clash", st)
	}
}

// A UDP request and a second datagram of the same flow in one read: the
// second is tracked after the first was confirmed, so, as one at a time,
// it finds the connection (no reply yet: still NEW to the rules) and
// one connection counts both datagrams, without a clash. Its reply then
// sees the mark CONNMARK set.
func TestJudgeBatchUDPSecondDatagram(t *testing.T) {
	r := mustRules(t, batchRules)
	j, ct := ctJudge(t, matchers.HookForward)
	now := time.Unix(1700000000, 0)
	q := udp("10.0.1.2", "10.0.2.2", 4000, 5353)
	outs := judgeAsBatch(j, r, now, []batchPacket{{data: q}, {data: q}})
	for i, o := range outs {
		if o.Verdict != matchers.Accept || o.Decided.Rule != 5 || o.CtDrop {
			t.Errorf("datagram %d: %+v, want ACCEPT as NEW by rule 5", i, o)
		}
	}
	e := onlyFlow(t, ct, now)
	if e.Packets(conntrack.DirOriginal) != 2 || e.Bytes(conntrack.DirOriginal) != 64 || e.Mark() != 7 {
		t.Errorf("flow %s, want 2 packets, 64 bytes, mark 7", e.Format(now))
	}
	if st := ct.Stats(); st.New != 1 || st.Found != 1 || st.Inserted != 1 || st.ClashResolved != 0 || st.InsertFailed != 0 {
		t.Errorf("stats %+v, want 1 new, 1 found, 1 inserted, no clash", st)
	}
	outs = judgeAsBatch(j, r, now.Add(time.Millisecond), []batchPacket{{data: udp("10.0.2.2", "10.0.1.2", 5353, 4000)}})
	if o := outs[0]; o.Verdict != matchers.Accept || o.Decided.Rule != 2 {
		t.Errorf("reply: %+v, want ESTABLISHED (rule 2)", o)
	}
	if e := onlyFlow(t, ct, now); e.Packets(conntrack.DirReply) != 1 {
		t.Errorf("flow %s, want the reply counted", e.Format(now))
	}
}

// TestJudgeBatchAsOneByOne: traffic judged in batches gets the same
// outcomes, and leaves the same flows and table counters, as judged one
// packet at a time, however many packets of one flow a batch holds. The
// traffic
// mixes new, established and rejected flows of TCP, UDP and ICMP,
// undecodable packets, marked packets the rules drop, and packets at a
// hook that is not tracked.
func TestJudgeBatchAsOneByOne(t *testing.T) {
	r := mustRules(t, batchRules)
	// Tracked at FORWARD and OUTPUT, not at POSTROUTING (OUTPUT is
	// hooked: the packet was tracked there).
	hooks := []matchers.Hook{matchers.HookForward, matchers.HookOutput, matchers.HookPostrouting}
	one, ctOne := ctJudge(t, hooks...)
	bat, ctBat := ctJudge(t, hooks...)
	rng := rand.New(rand.NewPCG(1, 2))
	type flow struct{ q, a []byte }
	var flows []flow
	for i := range 60 {
		c := fmt.Sprintf("10.0.1.%d", 1+i%50)
		sp := uint16(30000 + i)
		switch i % 3 {
		case 0:
			flows = append(flows, flow{udp(c, "10.0.2.2", sp, 5353), udp("10.0.2.2", c, 5353, sp)})
		case 1:
			flows = append(flows, flow{udp(c, "10.0.2.2", sp, 53), udp("10.0.2.2", c, 53, sp)}) // never admitted
		default:
			flows = append(flows, flow{icmpEcho(c, "10.0.2.2"), tcpSyn(c, "10.0.2.2", sp, 22)})
		}
	}
	type pkt struct {
		data []byte
		hook matchers.Hook
		mark uint32
		flow int // -1: none
	}
	var pkts []pkt
	for range 3000 {
		f := rng.IntN(len(flows))
		p := pkt{data: flows[f].q, hook: matchers.HookForward, flow: f}
		switch x := rng.IntN(20); {
		case x < 8:
			p.data = flows[f].a
		case x == 8:
			p.data, p.flow = []byte{0x45, 0, 0}, -1
		case x == 9:
			p.mark = 1
		case x == 10:
			// Not tracked: the rules see INVALID (no chain here either).
			p.hook = matchers.HookPostrouting
		case x == 11:
			p.hook = matchers.HookOutput
		}
		pkts = append(pkts, p)
	}
	now := time.Unix(1700000000, 0)
	batches, repeats := 0, 0
	for len(pkts) > 0 {
		now = now.Add(50 * time.Millisecond)
		// A batch of up to judgeBatch packets (of random length, to vary
		// where the segments fall); count the packets of a flow that an
		// earlier packet of the batch has.
		n := min(len(pkts), 1+rng.IntN(judgeBatch))
		seen := map[int]bool{}
		for _, p := range pkts[:n] {
			if p.flow >= 0 {
				if seen[p.flow] {
					repeats++
				}
				seen[p.flow] = true
			}
		}
		batch := pkts[:n]
		pkts = pkts[n:]
		batches++
		metas := make([]Meta, n)
		bat.Begin()
		for i, p := range batch {
			metas[i] = fwdMeta()
			metas[i].Hook, metas[i].Mark, metas[i].Now = p.hook, p.mark, now
			if p.hook == matchers.HookOutput {
				metas[i].In = ""
			}
			bat.Add(r, p.data, &metas[i])
		}
		bat.Track(now)
		for i, p := range batch {
			got := bat.Eval(r, i)
			m := metas[i]
			want := one.Judge(r, p.data, &m)
			if got != want {
				t.Fatalf("batch %d packet %d (hook %v, mark %d): batched %+v, one by one %+v", batches, i, p.hook, p.mark, got, want)
			}
		}
	}
	dump := func(ct *conntrack.Table) map[conntrack.Tuple]string {
		out := map[conntrack.Tuple]string{}
		ct.Range(now, func(e *conntrack.Entry) bool {
			// Format prints the state, counters, timeout and mark.
			out[e.Orig()] = e.Format(now)
			return true
		})
		return out
	}
	a, b := dump(ctOne), dump(ctBat)
	if len(a) == 0 || len(a) != len(b) {
		t.Fatalf("%d flows one by one, %d batched", len(a), len(b))
	}
	for k, v := range a {
		if b[k] != v {
			t.Errorf("flow %v: one by one %s, batched %s", k, v, b[k])
		}
	}
	so, sb := ctOne.Stats(), ctBat.Stats()
	if so != sb {
		t.Errorf("stats one by one %+v, batched %+v", so, sb)
	}
	if batches*4 > 3000 || repeats < 100 {
		t.Errorf("%d batches, %d packets of a flow an earlier packet of their batch has: the batches are not exercised", batches, repeats)
	}
}

// tcpSynAck builds a SYN/ACK with sequence seq acknowledging ack.
func tcpSynAck(src, dst string, sport, dport uint16, seq, ack uint32) []byte {
	h := make([]byte, 20)
	binary.BigEndian.PutUint16(h[0:], sport)
	binary.BigEndian.PutUint16(h[2:], dport)
	binary.BigEndian.PutUint32(h[4:], seq)
	binary.BigEndian.PutUint32(h[8:], ack)
	h[12] = 5 << 4
	h[13] = 0x12
	binary.BigEndian.PutUint16(h[14:], 64240)
	return ipv4(6, src, dst, h)
}
